import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from regfree.metrics import mcnemar_one_sided_p as rise_p
from regfree.training import (
    History,
    IndexedDataset,
    NFRRiseWarning,
    TrainStep,
    fit,
    fit_adam_cosine,
    latest_checkpoint,
    load_checkpoint,
    predict_logits,
)
from regfree.training.data import epoch_permutation, local_batches
from regfree.training.history import EpochStats
from regfree.training.nfr_watch import NFRWatch
from regfree.training.options import FitOptions


def adam(params):
    return torch.optim.Adam(params, lr=1e-2)


def weights(model):
    return [p.detach().clone() for p in model.state_dict().values()]


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(weights(a), weights(b)))


class ConstantTerm(nn.Module):
    name = "const"

    def forward(self, step: TrainStep) -> torch.Tensor:
        return step.logits.sum() * 0 + 0.25


def test_fit_learns_and_records_each_term(make_data, make_model):
    x, y = make_data()
    model = make_model()
    history = fit(model, (x, y), loss_terms=[ConstantTerm()], epochs=6, optimizer=adam,
                  batch_size=32, val_data=(x, y), old_val_preds=y, progress=False)
    assert isinstance(history, History) and len(history) == 6
    assert [e.epoch for e in history.epochs] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(history.term("const"), 0.25, rtol=1e-6)
    np.testing.assert_allclose(np.array(history.train_loss) - np.array(history.train_ce), 0.25,
                               rtol=1e-5)
    assert history.train_ce[-1] < history.train_ce[0]
    assert history.val_error[-1] < 0.2
    # old predictions equal the labels: every new error is a negative flip, no positive flips
    assert history.val_nfr == history.val_error
    assert history.val_pfr == [0.0] * 6
    with pytest.raises(ValueError, match="no loss term named"):
        history.term("missing")


def test_same_seed_same_weights_and_callers_rng_untouched(make_data, make_model):
    x, y = make_data()
    a, b, c = make_model(), make_model(), make_model()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    fit(a, (x, y), epochs=2, optimizer=adam, batch_size=16, seed=5, progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    fit(b, (x, y), epochs=2, optimizer=adam, batch_size=16, seed=5, progress=False)
    fit(c, (x, y), epochs=2, optimizer=adam, batch_size=16, seed=6, progress=False)
    assert same_weights(a, b)
    assert not same_weights(a, c)


def test_dataset_input_matches_array_input_and_indices_reach_terms(make_data, make_model):
    x, y = make_data(n=50)
    seen = []

    class IndexCheck(nn.Module):
        name = "index_check"

        def forward(self, step):
            assert step.indices.device.type == "cpu" and step.indices.dtype == torch.int64
            expected = torch.from_numpy(x)[step.indices]
            seen.append(bool(torch.equal(step.inputs, expected)))
            return step.logits.new_zeros(())

    a, b = make_model(), make_model()
    fit(a, (x, y), loss_terms=[IndexCheck()], epochs=2, optimizer=adam, batch_size=8,
        progress=False)
    dataset = IndexedDataset(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)))
    fit(b, dataset, epochs=2, optimizer=adam, batch_size=8, progress=False)
    assert seen and all(seen) and len(seen) == 2 * 7
    assert same_weights(a, b)


def test_dataloader_workers_give_the_same_batches_indices_and_weights(make_data, make_model):
    x, y = make_data(n=50)
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    seen = []

    class IndexCheck(nn.Module):
        name = "index_check"

        def forward(self, step):
            seen.append(bool(torch.equal(step.inputs, torch.from_numpy(x)[step.indices])))
            return step.logits.new_zeros(())

    a, b = make_model(), make_model()
    in_process = fit(a, dataset, epochs=2, optimizer=adam, batch_size=8, val_data=dataset,
                     progress=False)
    workers = fit(b, dataset, loss_terms=[IndexCheck()], epochs=2, optimizer=adam,
                  batch_size=8, val_data=dataset, progress=False, num_workers=2)
    assert seen and all(seen) and len(seen) == 2 * 7
    assert same_weights(a, b)
    assert workers.val_error == in_process.val_error
    with pytest.raises(ValueError, match="num_workers must be a non-negative integer"):
        fit(make_model(), dataset, epochs=1, optimizer=adam, num_workers=-1, progress=False)


def test_ready_optimizer_equals_factory(make_data, make_model):
    x, y = make_data()
    a, b = make_model(), make_model()
    fit(a, (x, y), epochs=2, optimizer=adam, batch_size=32, progress=False)
    fit(b, (x, y), epochs=2, optimizer=torch.optim.Adam(b.parameters(), lr=1e-2),
        batch_size=32, progress=False)
    assert same_weights(a, b)


class Projection(nn.Module):
    """A loss term with its own trainable parameters (like a learned projection)."""

    name = "proj"

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, step):
        return ((step.logits * self.scale) ** 2).mean() * 1e-3


def test_resume_continues_to_identical_weights(tmp_path, make_data, make_model):
    x, y = make_data()
    sched = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)  # noqa: E731
    straight, term_a = make_model(), Projection()
    full = fit(straight, (x, y), loss_terms=[term_a], epochs=4, optimizer=adam, batch_size=16,
               val_data=(x, y), old_val_preds=y, scheduler=sched, seed=3, progress=False)

    interrupted, term_b = make_model(), Projection()
    fit(interrupted, (x, y), loss_terms=[term_b], epochs=2, optimizer=adam, batch_size=16,
        val_data=(x, y), old_val_preds=y, scheduler=sched, seed=3, progress=False,
        checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0001.pt", "epoch_0002.pt"]
    resumed, term_c = make_model(seed=99), Projection()  # different init: resume must overwrite
    history = fit(resumed, (x, y), loss_terms=[term_c], epochs=4, optimizer=adam, batch_size=16,
                  val_data=(x, y), old_val_preds=y, scheduler=sched, seed=3, progress=False,
                  checkpoint_dir=tmp_path, resume=True)
    assert same_weights(straight, resumed)
    assert torch.equal(term_a.scale, term_c.scale) and term_a.scale.item() != 1.0
    assert history.val_nfr == full.val_nfr and history.train_loss == full.train_loss
    assert latest_checkpoint(tmp_path).name == "epoch_0004.pt"
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state["epoch"] == 4 and len(state["history"]["epochs"]) == 4
    with pytest.raises(ValueError, match="was trained with seed=3, this call has 4"):
        fit(make_model(), (x, y), loss_terms=[Projection()], epochs=5, optimizer=adam,
            batch_size=16, seed=4, progress=False, checkpoint_dir=tmp_path, resume=True)


def test_resume_without_checkpoint_starts_fresh(tmp_path, make_data, make_model):
    x, y = make_data(n=40)
    a, b = make_model(), make_model()
    fit(a, (x, y), epochs=1, optimizer=adam, batch_size=16, progress=False)
    fit(b, (x, y), epochs=1, optimizer=adam, batch_size=16, progress=False,
        checkpoint_dir=tmp_path / "new", resume=True)
    assert same_weights(a, b)
    assert not list((tmp_path / "new").glob("*.tmp"))


class TurnAgainstLabels(nn.Module):
    """Pushes predictions to a wrong class, harder each epoch, so validation NFR rises."""

    name = "sabotage"

    def forward(self, step):
        wrong = (step.targets + 1) % step.logits.shape[1]
        return [0.0, 1.0, 3.0, 10.0][step.epoch] * nn.functional.cross_entropy(step.logits, wrong)


def test_nfr_warning_fires_once_when_nfr_rises_beyond_noise(make_data, make_model):
    x, y = make_data(n=150)
    alarm = r"rose from .* fixed \(one-sided McNemar p = "
    with pytest.warns(NFRRiseWarning, match=alarm) as caught:
        history = fit(make_model(), (x, y), loss_terms=[TurnAgainstLabels()], epochs=4,
                      optimizer=adam, batch_size=32, val_data=(x, y), old_val_preds=y,
                      progress=False)
    nfr = history.val_nfr
    assert nfr[1] < nfr[2] < nfr[3]
    assert len([w for w in caught if w.category is NFRRiseWarning]) == 1  # once per run
    with warnings.catch_warnings():
        warnings.simplefilter("error", NFRRiseWarning)
        fit(make_model(), (x, y), loss_terms=[TurnAgainstLabels()], epochs=4, optimizer=adam,
            batch_size=32, val_data=(x, y), progress=False)  # no v1 predictions: no NFR, no warning


def test_nfr_watch_compares_paired_flips_with_the_best_epoch():
    watch = NFRWatch()
    flips = np.zeros(200, bool)
    flips[:10] = True
    assert watch.update(1, flips) is None and watch.best_epoch == 1
    noisy = flips.copy()
    noisy[:4], noisy[10:16] = False, True  # 6 new flips, 4 fixed: noise
    assert watch.update(2, noisy) is None
    fewer = np.zeros(200, bool)
    fewer[:5] = True
    assert watch.update(3, fewer) is None and watch.best_epoch == 3
    worse = fewer.copy()
    worse[20:34] = True  # 14 new flips, none fixed: p = 2**-14
    message = watch.update(4, worse)
    assert "rose from 2.50% (epoch 3) to 9.50% at epoch 4: 14 new negative flips against 0" \
        in message
    assert watch.update(5, worse | flips) is None  # reported once
    assert rise_p(14, 0) == pytest.approx(2.0 ** -14)
    assert rise_p(12, 2) == pytest.approx(106 / 2 ** 14)  # (C(14,12) + 14 + 1) / 2^14
    assert rise_p(3, 3) == 1.0


def test_nfr_warning_false_alarms_on_plain_runs_are_rare(make_data, make_model):
    """20 plain runs of tiny data with noisy labels, where NFR wanders from epoch to epoch (the
    old rule, NFR up two epochs in a row, fired on such noise): the paired test must stay quiet
    in at least 19."""
    alarms = 0
    for seed in range(20):
        x, y = make_data(n=600, seed=seed)
        rng = np.random.default_rng(seed)
        y = np.where(rng.random(len(y)) < 0.15, rng.integers(0, 3, len(y)), y)
        v1 = make_model(100 + seed)
        fit(v1, (x[:100], y[:100]), epochs=3, batch_size=32, seed=seed, optimizer=adam,
            progress=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(make_model(seed), (x[:300], y[:300]), epochs=10, batch_size=32, seed=seed,
                optimizer=adam, progress=False, val_data=(x[300:], y[300:]),
                old_val_preds=predict_logits(v1, x[300:]).argmax(1))
        alarms += any(w.category is NFRRiseWarning for w in caught)
    assert alarms <= 1


def test_history_round_trip():
    h = History([EpochStats(1, 1.0, 0.5, {"a": 0.5}, 0.1, 0.02, 0.03, 1e-3, 0.4)])
    assert History.from_dict(h.to_dict()) == h


def test_sample_order_and_batch_slices():
    order = epoch_permutation(10, seed=1, epoch=0)
    assert sorted(order.tolist()) == list(range(10))
    assert not np.array_equal(order, epoch_permutation(10, seed=1, epoch=1))
    one = [b.tolist() for b, _ in local_batches(order, 4)]
    two = [list(local_batches(order, 4, rank=r, world_size=2)) for r in range(2)]
    # the two processes' slices of each global batch join to the one-process batch
    for k, batch in enumerate(one):
        (a, sa), (b, sb) = two[0][k], two[1][k]
        assert a.tolist() + b.tolist() == batch and sa + sb == pytest.approx(1.0)
    # a last batch of 1 sample: the second process gets a placeholder with weight 0
    (last, share), = list(local_batches(np.arange(5), 4, rank=1, world_size=2))[-1:]
    assert share == 0.0 and last.tolist() == [4]


def test_predict_logits_matches_model(make_data, make_model):
    x, _ = make_data(n=30)
    model = make_model()
    model.train()
    logits = predict_logits(model, x, batch_size=7)
    assert logits.dtype == np.float32 and logits.shape == (30, 3)
    np.testing.assert_allclose(logits, model(torch.from_numpy(x)).detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    assert model.training


def test_bad_arguments_name_the_argument(make_data, make_model):
    x, y = make_data(n=20)
    model = make_model()
    base = dict(epochs=1, optimizer=adam, progress=False)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        fit(model, (x, y), **{**base, "epochs": 0})
    with pytest.raises(ValueError, match="optimizer must be a torch.optim.Optimizer"):
        fit(model, (x, y), **{**base, "optimizer": "adam"})
    with pytest.raises(ValueError, match="old_val_preds has 5 entries but val_data has 20"):
        fit(model, (x, y), val_data=(x, y), old_val_preds=y[:5], **base)
    with pytest.raises(ValueError, match="old_val_preds needs val_data"):
        fit(model, (x, y), old_val_preds=y, **base)
    with pytest.raises(ValueError, match="train_data: x has 20 samples but y has 3"):
        fit(model, (x, y[:3]), **base)
    with pytest.raises(ValueError, match="loss_terms need unique names"):
        fit(model, (x, y), loss_terms=[ConstantTerm(), ConstantTerm()], **base)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        fit(model, (x, y), resume=True, **base)

    class VectorTerm(nn.Module):
        name = "vector"

        def forward(self, step):
            return step.logits.sum(1)

    with pytest.raises(ValueError, match="'vector' must return a scalar"):
        fit(model, (x, y), loss_terms=[VectorTerm()], **base)


def test_fit_adam_cosine_is_fit_with_adam_and_a_cosine_schedule(make_data, make_model):
    x, y = make_data()
    by_hand, recipe = make_model(), make_model()
    expected = fit(by_hand, (x, y), epochs=3, batch_size=32, seed=4, progress=False,
                   optimizer=lambda p: torch.optim.Adam(p, lr=5e-3),
                   scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, 3))
    got = fit_adam_cosine(recipe, (x, y), epochs=3, lr=5e-3, batch_size=32, seed=4,
                          progress=False)
    # same process, same shapes, same operations: the same numbers exactly
    assert [e.train_loss for e in got.epochs] == [e.train_loss for e in expected.epochs]
    assert [e.lr for e in got.epochs] == pytest.approx([5e-3 * 0.75, 5e-3 * 0.25, 0.0])
    for a, b in zip(by_hand.parameters(), recipe.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match="fit_adam_cosine sets optimizer itself; call fit"):
        fit_adam_cosine(make_model(), (x, y), epochs=1, lr=1e-3, optimizer=adam)


def test_fit_adam_cosine_lr_floor_ends_the_cosine_at_a_fraction_of_lr(make_data, make_model):
    x, y = make_data()
    history = fit_adam_cosine(make_model(), (x, y), epochs=3, lr=4e-3, lr_floor=0.25,
                              batch_size=32, seed=4, progress=False)
    # cosine from 4e-3 to 1e-3: 1e-3 + 3e-3 * (1 + cos(pi * epoch / 3)) / 2 after each epoch
    assert [e.lr for e in history.epochs] == pytest.approx([3.25e-3, 1.75e-3, 1e-3])
    constant = fit_adam_cosine(make_model(), (x, y), epochs=2, lr=4e-3, lr_floor=1.0,
                               batch_size=32, seed=4, progress=False)
    assert [e.lr for e in constant.epochs] == pytest.approx([4e-3, 4e-3])
    for bad in (-0.1, 1.5, "0.1"):
        with pytest.raises(ValueError, match=r"lr_floor must be a fraction of lr in \[0, 1\]"):
            fit_adam_cosine(make_model(), (x, y), epochs=1, lr=1e-3, lr_floor=bad)


def test_fit_options_check_and_normalise_what_fit_was_given():
    options = FitOptions(epochs=2.0, optimizer=adam, batch_size=16.0, seed=np.int64(3))
    assert (options.epochs, options.batch_size, options.seed) == (2, 16, 3)
    assert type(options.seed) is int
    assert options.resume_key(100) == {"seed": 3, "batch_size": 16, "num_samples": 100,
                                       "ema_decay": None}
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer, got 2\.5"):
        FitOptions(epochs=1, optimizer=adam, batch_size=2.5)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        FitOptions(epochs=1, optimizer=adam, resume=True)
