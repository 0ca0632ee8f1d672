"""fit's ema_decay: the exponential moving average of the weights, validated, checkpointed and
returned."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from regfree.training import TrainStep, fit, latest_checkpoint, load_checkpoint
from regfree.training.options import FitOptions

DECAY = 0.8


def sgd(params):
    return torch.optim.SGD(params, lr=0.2, momentum=0.5)


def batchnorm_net(seed: int = 0) -> nn.Module:
    """A tiny model with batch-norm buffers, so the average must cover buffers too."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 3))


def float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # integer buffers (BatchNorm's num_batches_tracked) are counters, not averaged quantities
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if v.is_floating_point()}


class Recorder(nn.Module):
    """A zero loss term that records the model at each step: the parameters the step starts
    from and the buffers its forward pass has just updated (the optimizer leaves buffers be)."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.params: list[dict[str, torch.Tensor]] = []
        self.buffers_after: list[dict[str, torch.Tensor]] = []

    def forward(self, step: TrainStep) -> torch.Tensor:
        self.params.append({k: p.detach().clone() for k, p in step.model.named_parameters()})
        self.buffers_after.append({k: b.detach().clone() for k, b in step.model.named_buffers()
                                   if b.is_floating_point()})
        return step.logits.sum() * 0


def train(data, *, epochs=3, **options):
    model = batchnorm_net()
    history = fit(model, data, epochs=epochs, optimizer=sgd, batch_size=16, seed=3,
                  progress=False, **options)
    return model, history


def test_final_weights_are_the_hand_computed_moving_average(make_data):
    data = make_data(64)
    recorder = Recorder()
    raw, _ = train(data, loss_terms=[recorder])  # 3 epochs of 4 steps, no averaging
    # weights after step t: the next step's starting point; after the last step: raw's own
    after = recorder.params[1:] + [{k: p.detach() for k, p in raw.named_parameters()}]
    per_step = [{**p, **b} for p, b in zip(after, recorder.buffers_after)]
    expected = dict(per_step[0])  # the first step's weights are taken as they are
    for state in per_step[1:]:
        expected = {k: DECAY * expected[k] + (1 - DECAY) * state[k] for k in expected}

    averaged, _ = train(data, ema_decay=DECAY)
    got = float_state(averaged)
    assert len(per_step) == 12 and set(got) == set(expected)
    for key in expected:
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=key)
    # counters are copied, not averaged: batch norm has counted every step
    assert int(averaged[1].num_batches_tracked) == int(raw[1].num_batches_tracked) == 12
    # the average is not the last step's weights
    assert not np.allclose(got["3.weight"].numpy(), float_state(raw)["3.weight"].numpy(),
                           atol=1e-3)


def test_each_epoch_is_validated_on_the_averaged_weights(make_data, tmp_path):
    x, y = make_data(64)
    old = np.where(np.arange(64) % 2 == 0, y, (y + 1) % 3)
    val = {"val_data": (x, y), "old_val_preds": old}
    averaged, history = train((x, y), epochs=2, ema_decay=0.99, checkpoint_dir=tmp_path, **val)
    raw, raw_history = train((x, y), epochs=2, **val)

    def error(model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            preds = model(torch.from_numpy(x)).argmax(1).numpy()
        return float(np.mean(preds != y))

    # epoch 1 from the checkpoint's average, epoch 2 from the returned model (which holds it)
    first = batchnorm_net()
    first.load_state_dict({k.removeprefix("module."): v for k, v in
                           load_checkpoint(tmp_path / "epoch_0001.pt")["averaged_model"].items()
                           if k.startswith("module.")})
    assert history.val_error == pytest.approx([error(first), error(averaged)])
    # a slow average of 8 steps lags far behind the raw weights: validation tells them apart
    assert history.val_error[-1] != raw_history.val_error[-1]
    assert raw_history.val_error[-1] == pytest.approx(error(raw))


def test_resume_equals_an_uninterrupted_run(make_data, tmp_path):
    data = make_data(64)
    whole, whole_history = train(data, epochs=3, ema_decay=DECAY,
                                 checkpoint_dir=tmp_path / "whole")
    train(data, epochs=2, ema_decay=DECAY, checkpoint_dir=tmp_path / "cut")
    resumed, resumed_history = train(data, epochs=3, ema_decay=DECAY,
                                     checkpoint_dir=tmp_path / "cut", resume=True)
    for key, value in float_state(whole).items():
        np.testing.assert_allclose(float_state(resumed)[key].numpy(), value.numpy(),
                                   rtol=1e-6, atol=1e-7, err_msg=key)
    np.testing.assert_allclose(resumed_history.train_loss, whole_history.train_loss, rtol=1e-6)
    saved = load_checkpoint(latest_checkpoint(tmp_path / "whole"))
    assert int(saved["averaged_model"]["n_averaged"]) == 12
    with pytest.raises(ValueError, match=r"ema_decay=0\.8, this call has 0\.9"):
        train(data, epochs=4, ema_decay=0.9, checkpoint_dir=tmp_path / "whole", resume=True)


@pytest.mark.parametrize("decay, error", [(1.0, ValueError), (0.0, ValueError),
                                          (-0.5, ValueError), (1.5, ValueError),
                                          ("0.99", TypeError), (True, TypeError)])
def test_bad_decay_is_refused_naming_the_argument(make_data, decay, error):
    with pytest.raises(error, match=r"ema_decay must be (in|a float in) \(0, 1\)"):
        train(make_data(32), epochs=1, ema_decay=decay)
    with pytest.raises(error, match="ema_decay"):
        FitOptions(epochs=1, optimizer=sgd, ema_decay=decay)


def test_off_by_default_training_and_checkpoints_unchanged(make_data, tmp_path):
    data = make_data(64)
    plain, _ = train(data, checkpoint_dir=tmp_path / "plain")
    averaged, _ = train(data, ema_decay=DECAY, checkpoint_dir=tmp_path / "ema")
    plain_saved = load_checkpoint(latest_checkpoint(tmp_path / "plain"))
    ema_saved = load_checkpoint(latest_checkpoint(tmp_path / "ema"))
    assert plain_saved["averaged_model"] is None
    assert plain_saved["config"]["ema_decay"] is None
    # averaging only watches: the raw trajectory is the plain run's, which returns its last step
    for key, value in float_state(plain).items():
        np.testing.assert_allclose(ema_saved["model"][key].numpy(), value.numpy(),
                                   rtol=1e-6, atol=1e-7, err_msg=key)
        np.testing.assert_allclose(plain_saved["model"][key].numpy(), value.numpy(),
                                   rtol=1e-6, atol=1e-7, err_msg=key)


def test_the_cheap_study_trains_its_ema_rows_with_fit_ema_decay():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from pct_study.recipes import FocalDistillation, Run, WeightAveraging, run_from_record

    run = Run(2, (FocalDistillation("kl", 1.0, 5.0, 100.0, 0.005), WeightAveraging(0.998)))
    assert run.label() == "FD-KL a=1 b=5 T=100 w=0.005 + EMA 0.998"
    assert run.family == "FD-KL+EMA"
    assert run.fit_options(75 * 30) == {"ema_decay": 0.998}  # mnist1d's run: as stated
    # a run of 480 steps (MNIST-5k) averages over the same share of itself
    assert run.fit_options(480)["ema_decay"] == pytest.approx(1 - 0.002 * 2250 / 480)
    assert Run(2, (FocalDistillation("kl"),)).fit_options(480) == {}
    assert run_from_record(run.record()) == run
    # averaging is a training option, not a loss term: only the distillation term is built
    assert WeightAveraging(0.99).build(context=None) is None


def test_every_process_holds_the_same_average_under_torchrun(tmp_path):
    from conftest import launch_ranks

    done = launch_ranks(__file__, str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # each rank's batch-norm statistics see its half of every batch: the averaged buffers agree
    # only because fit hands every rank rank 0's average
    assert set(states[0]) == set(states[1])
    for key in states[0]:
        torch.testing.assert_close(states[1][key], states[0][key], rtol=0, atol=0, msg=key)
    histories = [json.loads((tmp_path / f"history{r}.json").read_text()) for r in range(2)]
    assert [e["val_error"] for e in histories[0]["epochs"]] == [
        e["val_error"] for e in histories[1]["epochs"]]


if __name__ == "__main__":  # run by torchrun from the test above: one process per rank
    torch.set_num_threads(1)
    from conftest import blobs

    x, y = blobs(80, seed=0)
    target = Path(sys.argv[1])
    model = batchnorm_net()
    history = fit(model, (x[:64], y[:64]), epochs=2, optimizer=sgd, batch_size=16, seed=3,
                  val_data=(x[64:], y[64:]), progress=False, ema_decay=DECAY)
    rank = int(os.environ["RANK"])
    torch.save(model.state_dict(), target / f"rank{rank}.pt")
    (target / f"history{rank}.json").write_text(json.dumps(history.to_dict()))
