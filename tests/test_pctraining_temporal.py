"""TemporalEnsemble: the per-sample moving average of the model's own logits as a KD teacher,
checked by hand, inside fit (shuffled batches, checkpoints, torchrun) and against bad input."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from regfree.pctraining import (
    DistillationTerm,
    FocalDistillationLoss,
    KnowledgeDistillationLoss,
    NoisyDistillationTerm,
    TemporalEnsemble,
)
from regfree.training import TrainStep, fit, latest_checkpoint, load_checkpoint

MOMENTUM = 0.6


def adam(params):
    return torch.optim.Adam(params, lr=1e-2)


class Spy(nn.Module):
    """A zero loss term that records each step's sample positions and logits."""

    name = "spy"

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, step: TrainStep) -> torch.Tensor:
        self.steps.append((step.indices.clone(), step.logits.detach().clone()))
        return step.logits.sum() * 0


def by_hand(steps, num_samples: int, num_classes: int) -> np.ndarray:
    average = np.zeros((num_samples, num_classes))
    seen = np.zeros(num_samples, dtype=bool)
    for indices, logits in steps:
        for i, row in zip(indices.tolist(), logits.double().numpy()):
            average[i] = MOMENTUM * average[i] + (1 - MOMENTUM) * row if seen[i] else row
            seen[i] = True
    return average


def kd_term(num_samples: int, num_classes: int = 3, weight: float = 0.5) -> DistillationTerm:
    return DistillationTerm(KnowledgeDistillationLoss(temperature=4.0, weight=weight),
                            TemporalEnsemble(num_samples, num_classes, momentum=MOMENTUM))


def test_exchange_gives_the_past_average_then_folds_the_batch_in():
    ensemble = TemporalEnsemble(4, 2, momentum=MOMENTUM)
    first, second, third = (torch.tensor([[1.0, -1.0], [0.0, 2.0]]),
                            torch.tensor([[3.0, 1.0], [2.0, 0.0]]),
                            torch.tensor([[5.0, 5.0], [7.0, 7.0]]))
    at = torch.tensor([2, 0])
    torch.testing.assert_close(ensemble.exchange(at, first), first)  # first visit: itself
    torch.testing.assert_close(ensemble.exchange(at, second), first)  # then the past only
    torch.testing.assert_close(ensemble.exchange(at, third), MOMENTUM * first
                               + (1 - MOMENTUM) * second)
    assert ensemble.seen.tolist() == [True, False, True, False]
    assert ensemble.average[1].abs().sum() == 0  # samples never seen keep nothing


def test_the_first_visit_adds_no_loss_and_no_gradient():
    term = kd_term(8, num_classes=3)
    logits = torch.randn(4, 3, requires_grad=True)
    step = TrainStep(torch.zeros(4, 2), torch.tensor([0, 1, 2, 0]), torch.arange(4), logits)
    value = term(*term.step_arguments(step))
    value.backward()
    assert value.item() == pytest.approx(0.0, abs=1e-7)
    assert logits.grad.abs().max().item() < 1e-6


def test_inside_fit_the_averages_follow_the_shuffled_batches(make_data, make_model):
    x, y = make_data(40)
    spy, term = Spy(), kd_term(len(y))
    history = fit(make_model(0), (x, y), loss_terms=[spy, term], epochs=3,
                  batch_size=16, optimizer=adam, seed=1, progress=False)
    np.testing.assert_allclose(term.temporal.average.double().numpy(),
                               by_hand(spy.steps, len(y), 3), rtol=1e-5, atol=1e-6)
    assert bool(term.temporal.seen.all())
    kd = history.term("kd")
    assert kd[0] == pytest.approx(0.0, abs=1e-7) and kd[1] > 0 and kd[2] > 0


def test_resume_continues_with_the_saved_averages(make_data, make_model, tmp_path):
    x, y = make_data(40)

    def train(epochs, folder, resume=False):
        term = kd_term(len(y))
        model = make_model(0)
        history = fit(model, (x, y), loss_terms=[term], epochs=epochs, batch_size=16,
                      optimizer=adam, seed=1, progress=False, checkpoint_dir=folder,
                      resume=resume)
        return model, term, history

    whole, whole_term, whole_history = train(3, tmp_path / "whole")
    train(2, tmp_path / "cut")
    resumed, resumed_term, resumed_history = train(3, tmp_path / "cut", resume=True)
    np.testing.assert_allclose(resumed_term.temporal.average.numpy(),
                               whole_term.temporal.average.numpy(), rtol=1e-5, atol=1e-6)
    for key, value in whole.state_dict().items():
        np.testing.assert_allclose(resumed.state_dict()[key].numpy(), value.numpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(resumed_history.term("kd"), whole_history.term("kd"), rtol=1e-5)
    saved = load_checkpoint(latest_checkpoint(tmp_path / "whole"))
    assert set(saved["loss_terms"]["kd"]) == {"loss.temporal.average", "loss.temporal.seen"}


@pytest.mark.parametrize("arguments, message", [
    ((0, 3), "num_samples must be a positive int"),
    ((5, 2.0), "num_classes must be a positive int"),
    ((5, 3, 1.0), r"momentum must be a float in \[0, 1\)"),
    ((5, 3, -0.1), r"momentum must be a float in \[0, 1\)"),
])
def test_bad_settings_are_named(arguments, message):
    num_samples, num_classes, *momentum = arguments
    with pytest.raises(ValueError, match=message):
        TemporalEnsemble(num_samples, num_classes, **({"momentum": momentum[0]} if momentum else {}))


def test_bad_batches_are_named_and_change_nothing():
    ensemble = TemporalEnsemble(5, 3)
    with pytest.raises(ValueError, match=r"logits must have shape \(B, 3\)"):
        ensemble.exchange(torch.arange(2), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"indices must have shape \(2,\)"):
        ensemble.exchange(torch.arange(3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"in \[0, 5\).*num_samples the training set's size"):
        ensemble.exchange(torch.tensor([1, 5]), torch.ones(2, 3))
    assert not bool(ensemble.seen.any()) and ensemble.average.abs().sum() == 0
    # numpy integers (len() of an array, y.max() + 1) are sizes like any other
    assert TemporalEnsemble(np.int64(5), np.int64(3)).average.shape == (5, 3)


def test_a_noisy_term_and_data_without_positions_are_refused(make_model):
    with pytest.raises(ValueError, match="TemporalEnsemble has no logits for perturbed inputs"):
        NoisyDistillationTerm(FocalDistillationLoss(), TemporalEnsemble(5, 2), noise_std=0.1)
    term = kd_term(5, num_classes=2)
    step = TrainStep(torch.zeros(2, 4), torch.tensor([0, 1]), None, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="its TemporalEnsemble.*no sample positions"):
        term(*term.step_arguments(step))


def test_the_cheap_study_builds_its_own_average_rows():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from pct_study.recipes import (
        FocalDistillation,
        Run,
        TemporalKnowledgeDistillation,
        run_from_record,
    )

    run = Run(3, (FocalDistillation("kl"), TemporalKnowledgeDistillation(4.0, 0.5)))
    assert run.label() == "FD-KL defaults + own-average KD T=4 w=0.5 m=0.6"
    assert run.family == "FD-KL+TE-KD"
    assert run_from_record(run.record()) == run


def test_every_rank_holds_every_samples_average_under_torchrun(tmp_path, make_data, make_model):
    from conftest import launch_ranks

    done = launch_ranks(__file__, str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    averages = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # each rank computes half of every batch: without the gather each would hold half the rows
    assert bool(averages[0]["seen"].all()) and bool(averages[1]["seen"].all())
    torch.testing.assert_close(averages[1]["average"], averages[0]["average"], rtol=0, atol=0)
    single = train_for_ranks(make_data, make_model)
    torch.testing.assert_close(averages[0]["average"], single.temporal.average,
                               rtol=1e-4, atol=1e-5)


def train_for_ranks(make_data, make_model) -> DistillationTerm:
    # 45 samples in global batches of 8: the last batch (5) splits unevenly across two ranks
    x, y = make_data(45)
    term = kd_term(len(y))
    fit(make_model(0), (x, y), loss_terms=[term], epochs=3, batch_size=8,
        optimizer=adam, seed=1, progress=False)
    return term


if __name__ == "__main__":  # run by torchrun from the test above: one process per rank
    torch.set_num_threads(1)
    from conftest import blobs, mlp

    term = train_for_ranks(blobs, mlp)
    rank = int(os.environ["RANK"])
    torch.save({"average": term.temporal.average, "seen": term.temporal.seen},
               Path(sys.argv[1]) / f"rank{rank}.pt")
    (Path(sys.argv[1]) / f"done{rank}.json").write_text(json.dumps(True))
