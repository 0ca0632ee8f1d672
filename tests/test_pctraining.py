import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from regfree.pctraining import (
    DistillationLoss,
    DistillationTerm,
    FocalDistillationLoss,
    KnowledgeDistillationLoss,
    NoisyDistillationTerm,
    OldLogitCache,
    margin_logit_distance,
    uniform_weights,
)
from regfree.pctraining.losses import DEFAULTS
from regfree.training import IndexedDataset, StepTerm, TrainStep, fit, predict_logits


def np_softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def np_kl(old, new, t):
    p, q = np_softmax(np.asarray(old) / t), np_softmax(np.asarray(new) / t)
    return float((p * np.log(p / q)).sum())


NEW = [[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]]
OLD = [[0.0, 1.0, 0.0], [0.0, 3.0, 0.0]]
TARGETS = [1, 2]  # sample 0: old right (argmax 1); sample 1: old wrong (argmax 1, target 2)


def case():
    return torch.tensor(NEW), torch.tensor(OLD), torch.tensor(TARGETS)


def test_fd_kl_matches_hand_computation():
    new, old, y = case()
    fd = FocalDistillationLoss(alpha=0.5, beta=2.0, temperature=2.0, kind="kl", weight=0.3)
    d = [4.0 * np_kl(OLD[i], NEW[i], 2.0) for i in range(2)]
    expected = 0.3 * ((0.5 + 2.0) * d[0] + 0.5 * d[1]) / 2
    assert fd(new, old, y).item() == pytest.approx(expected, rel=1e-5)


def test_fd_logit_matches_hand_computation():
    new, old, y = case()
    fd = FocalDistillationLoss(alpha=1.0, beta=5.0, kind="logit", weight=2.0, temperature=9.0)
    d0 = 0.5 * (1 + 1 + 0)  # 0.5 * ||[1,-1,0]||^2
    d1 = 0.5 * (0 + 1 + 1)  # 0.5 * ||[0,-1,-1]||^2
    assert fd(new, old, y).item() == pytest.approx(2.0 * (6 * d0 + 1 * d1) / 2)


def test_defaults_are_per_kind_and_unset_arguments_take_their_kind_default():
    new, old, y = case()
    lm = DEFAULTS["logit"]
    fd = FocalDistillationLoss(kind="logit", weight=2.0)  # weight set, alpha and beta defaulted
    assert (fd.alpha, fd.beta, fd.weight) == (lm["alpha"], lm["beta"], 2.0)
    d0, d1 = 1.0, 1.0  # 0.5 * ||[1,-1,0]||^2 and 0.5 * ||[0,-1,-1]||^2; sample 0 old right
    expected = 2.0 * ((lm["alpha"] + lm["beta"]) * d0 + lm["alpha"] * d1) / 2
    assert fd(new, old, y).item() == pytest.approx(expected)
    kl = FocalDistillationLoss()
    assert (kl.kind, kl.alpha, kl.beta, kl.temperature, kl.weight) == (
        "kl", *(DEFAULTS["kl"][k] for k in ("alpha", "beta", "temperature", "weight")))
    assert FocalDistillationLoss(kind="logit").weight == lm["weight"] != kl.weight


def test_alpha_zero_distils_only_where_old_was_right():
    new, old, y = case()
    fd = FocalDistillationLoss(alpha=0.0, beta=1.0, kind="logit", weight=1.0)
    assert fd(new, old, y).item() == pytest.approx(1.0 / 2)
    stats = fd.last_stats
    assert stats["old_correct_share"] == 0.5 and stats["distilled_share"] == 1.0
    assert stats["mean_weight"] == 0.5 and stats["mean_distance"] == pytest.approx(1.0)


def test_kd_is_uniformly_weighted_kl_with_temperature_squared():
    new, old, y = case()
    for t in (1.0, 3.0):
        kd = KnowledgeDistillationLoss(temperature=t, weight=0.7)
        expected = 0.7 * t * t * (np_kl(OLD[0], NEW[0], t) + np_kl(OLD[1], NEW[1], t)) / 2
        assert kd(new, old, y).item() == pytest.approx(expected, rel=1e-5)
    fd_uniform = FocalDistillationLoss(alpha=1.0, beta=0.0, temperature=3.0, weight=0.7)
    assert fd_uniform(new, old, y).item() == pytest.approx(kd(new, old, y).item(), rel=1e-6)


def test_high_temperature_kl_tends_to_centred_logit_distance():
    # T^2 * KL -> sum_c (d_c - mean d)^2 / (2C) as T grows (Hinton et al. 2015)
    new, old, y = case()
    new, old = new.double(), old.double()
    kd = KnowledgeDistillationLoss(temperature=1000.0, weight=1.0)
    diff = np.array(NEW) - np.array(OLD)
    centred = diff - diff.mean(axis=1, keepdims=True)
    limit = ((centred ** 2).sum(axis=1) / (2 * 3)).mean()
    assert kd(new, old, y).item() == pytest.approx(limit, rel=1e-3)


def test_gradients_reach_new_logits_only():
    new, old, y = case()
    new.requires_grad_(True)
    old.requires_grad_(True)
    FocalDistillationLoss(kind="kl")(new, old, y).backward()
    assert old.grad is None
    assert new.grad is not None and new.grad.abs().sum() > 0


def test_fewer_old_classes_compare_shared_classes_and_skip_new_class_samples():
    new = torch.tensor([[1.0, 0.0, 0.0, 5.0], [0.0, 2.0, -1.0, 7.0], [3.0, 1.0, 0.0, 9.0]],
                       requires_grad=True)
    old = torch.tensor([[0.0, 1.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0]])
    y = torch.tensor([1, 2, 3])  # sample 2 is of a class v1 never saw
    fd = FocalDistillationLoss(alpha=1.0, beta=1.0, kind="logit", weight=1.0)
    value = fd(new, old, y)
    # samples 0 and 1 on the first 3 logits; sample 2 contributes 0; mean over all 3 samples
    assert value.item() == pytest.approx((2 * 1.0 + 1 * 1.0) / 3)
    value.backward()
    assert torch.all(new.grad[:, 3] == 0) and torch.all(new.grad[2] == 0)
    assert fd.last_stats["distilled_share"] == pytest.approx(2 / 3)
    kd = KnowledgeDistillationLoss(temperature=2.0)
    expected = 4.0 * (np_kl(OLD[0], NEW[0], 2.0) + np_kl(OLD[1], NEW[1], 2.0)) / 3
    assert kd(new, old, y).item() == pytest.approx(expected, rel=1e-5)


def test_works_under_autocast_in_float32():
    new, old, y = case()
    reference = FocalDistillationLoss()(new, old, y)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        value = FocalDistillationLoss()(new.bfloat16(), old.bfloat16(), y)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(reference.item(), rel=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_works_on_cuda():
    new, old, y = case()
    reference = FocalDistillationLoss()(new, old, y)
    with torch.autocast(device_type="cuda", dtype=torch.float16):
        value = FocalDistillationLoss()(new.cuda().half(), old, y.cuda())  # old moved for us
    assert value.device.type == "cuda" and value.dtype == torch.float32
    assert value.item() == pytest.approx(reference.item(), rel=1e-2)


def test_custom_distance_composes_without_a_new_class():
    new, old, y = case()
    elodi = DistillationLoss(uniform_weights,
                             lambda n, o: margin_logit_distance(n, o, margin=0.5), weight=1.0)
    # |diff| = [1,1,0] and [0,1,1]; minus 0.5, clamp, squared, summed: 0.5 each
    assert elodi(new, old, y).item() == pytest.approx(0.5)


def test_bad_arguments_are_refused():
    new, old, y = case()
    with pytest.raises(ValueError, match="kind must be 'kl', 'logit' or a callable"):
        FocalDistillationLoss(kind="l1")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        FocalDistillationLoss(temperature=0)
    with pytest.raises(ValueError, match="alpha and beta must be >= 0 and not both 0"):
        FocalDistillationLoss(alpha=0, beta=0)
    with pytest.raises(ValueError, match="old_logits has 3 classes, more than new_logits"):
        FocalDistillationLoss()(new[:, :2], old, y)
    with pytest.raises(ValueError, match=r"targets must be \(2,\), got \(1,\)"):
        FocalDistillationLoss()(new, old, y[:1])


def test_cache_round_trip_and_ensemble(tmp_path, make_data, make_model):
    x, y = make_data(40)
    v1, other = make_model(1), make_model(2)
    cache = OldLogitCache.build(v1, (x, y), tmp_path / "c", batch_size=16)
    assert not list((tmp_path / "c").glob("*.tmp"))
    reopened = OldLogitCache.open(tmp_path / "c", data=(x, y), num_classes=3)
    assert isinstance(reopened.logits, np.memmap)
    # The cache ran v1 at batch size 16, predict_logits at its own: the same numbers up to
    # float rounding, which differs between CPUs and batch shapes (never bit for bit).
    expected = predict_logits(v1, x)
    np.testing.assert_allclose(reopened.lookup(torch.tensor([7, 0, 39])).numpy(),
                               expected[[7, 0, 39]], rtol=1e-5, atol=1e-6)
    # Within one cache, lookups and predictions read the same stored array: exact.
    np.testing.assert_array_equal(reopened.lookup(np.arange(40)).numpy(), cache.logits)
    np.testing.assert_array_equal(cache.predictions(), np.asarray(cache.logits).argmax(1))
    # Across the two batch sizes only argmaxes are exact, and only away from near-ties.
    top_two = np.sort(expected, axis=1)[:, -2:]
    assert (top_two[:, 1] - top_two[:, 0]).min() > 1e-4
    np.testing.assert_array_equal(cache.predictions(), expected.argmax(1))
    ensemble = OldLogitCache.build([v1, other], (x, y), tmp_path / "e")
    np.testing.assert_allclose(ensemble.lookup(np.arange(40)).numpy(),
                               (expected + predict_logits(other, x)) / 2, rtol=1e-6, atol=1e-7)
    assert ensemble.meta["ensemble_size"] == 2
    with pytest.raises(ValueError, match=r"indices must be in \[0, 40\)"):
        cache.lookup([40])


def test_cache_refuses_other_data(tmp_path, make_data, make_model):
    x, y = make_data(40)
    OldLogitCache.build(make_model(1), (x, y), tmp_path)
    with pytest.raises(ValueError, match="was built for 40 samples"):
        OldLogitCache.open(tmp_path, data=(x[:30], y[:30]))
    with pytest.raises(ValueError, match="was built for 40 samples"):
        OldLogitCache.open(tmp_path, num_samples=41)
    with pytest.raises(ValueError, match="has 3 classes, expected num_classes=10"):
        OldLogitCache.open(tmp_path, num_classes=10)
    with pytest.raises(ValueError, match="was built for other data"):
        OldLogitCache.open(tmp_path, data=(x, y[::-1].copy()))
    with pytest.raises(ValueError, match="no old-logit cache"):
        OldLogitCache.open(tmp_path / "missing")


def test_cached_and_live_teacher_train_the_same_and_teacher_stays_frozen(tmp_path, make_data,
                                                                         make_model):
    x, y = make_data(64)
    v1 = make_model(1)
    v1_before = [p.clone() for p in v1.parameters()]
    cache = OldLogitCache.build(v1, (x, y), tmp_path)
    dataset = IndexedDataset(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)))
    fd = dict(alpha=1.0, beta=5.0, temperature=4.0, kind="kl", weight=1.0)
    runs = []
    for teacher, train_data in ((cache, (x, y)), (v1, dataset)):
        new = make_model(7)
        start = [p.clone() for p in new.parameters()]
        term = DistillationTerm(FocalDistillationLoss(**fd), teacher=teacher)
        history = fit(new, train_data, loss_terms=[term], epochs=3, batch_size=16,
                      optimizer=lambda p: torch.optim.Adam(p, lr=1e-2), progress=False)
        assert any(not torch.equal(a, b) for a, b in zip(start, new.parameters()))
        assert term.loss.last_stats["distilled_share"] == 1.0
        runs.append((new, history))
    assert all(torch.equal(a, b) for a, b in zip(v1_before, v1.parameters()))
    assert all(p.grad is None for p in v1.parameters()) and not v1.training
    (a, ha), (b, hb) = runs
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert ha.term("fd_kl") == pytest.approx(hb.term("fd_kl"), rel=1e-5)
    assert all(v > 0 and math.isfinite(v) for v in ha.term("fd_kl"))


def test_distillation_pulls_new_model_towards_old_predictions(make_data, make_model):
    x, y = make_data(90)
    rng = np.random.default_rng(3)
    y_noisy = np.where(rng.random(90) < 0.5, (y + 1) % 3, y)  # labels the teacher disagrees with
    teacher = make_model(1)
    fit(teacher, (x, y), epochs=30, batch_size=30, progress=False,
        optimizer=lambda p: torch.optim.Adam(p, lr=3e-2))
    old_pred = predict_logits(teacher, x).argmax(1)
    agreement = []
    for weight in (0.0, 5.0):
        new = make_model(5)
        terms = [DistillationTerm(KnowledgeDistillationLoss(temperature=1.0, weight=weight),
                                  teacher)] if weight else []
        fit(new, (x, y_noisy), loss_terms=terms, epochs=30, batch_size=30, progress=False,
            optimizer=lambda p: torch.optim.Adam(p, lr=3e-2))
        agreement.append((predict_logits(new, x).argmax(1) == old_pred).mean())
    assert agreement[1] > agreement[0] + 0.15


def test_noisy_term_distils_on_the_same_perturbed_batch_for_both_models(make_data, make_model):
    x, y = make_data(8)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    old, new = make_model(1), make_model(2)
    std = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    term = NoisyDistillationTerm(FocalDistillationLoss(weight=1.0), old, noise_std=std)
    torch.manual_seed(3)
    value = term(new, inputs, targets)
    torch.manual_seed(3)
    noisy = inputs + std * torch.randn_like(inputs)
    expected = FocalDistillationLoss(weight=1.0)(new(noisy), old(noisy).detach(), targets)
    torch.testing.assert_close(value, expected)
    assert not torch.allclose(expected, FocalDistillationLoss(weight=1.0)(
        new(inputs), old(inputs).detach(), targets))
    value.backward()
    assert all(p.grad is not None for p in new.parameters())
    assert all(p.grad is None for p in old.parameters())
    assert term.name == "fd_kl_noisy"


def test_noisy_term_without_noise_trains_like_the_live_term_and_noise_repeats_by_seed(
        make_data, make_model):
    x, y = make_data(64)
    v1 = make_model(1)

    def train(term):
        new = make_model(7)
        fit(new, (x, y), loss_terms=[term], epochs=2, batch_size=16, seed=4, progress=False,
            optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
        return torch.cat([p.detach().ravel() for p in new.parameters()])

    loss = dict(alpha=1.0, beta=5.0, weight=1.0)
    live = train(DistillationTerm(FocalDistillationLoss(**loss), v1))
    silent = train(NoisyDistillationTerm(FocalDistillationLoss(**loss), v1, noise_std=0.0))
    torch.testing.assert_close(silent, live, rtol=1e-4, atol=1e-5)
    noisy = [train(NoisyDistillationTerm(FocalDistillationLoss(**loss), v1, noise_std=0.5))
             for _ in range(2)]
    assert torch.equal(noisy[0], noisy[1])
    assert (noisy[0] - live).abs().max() > 1e-3


def test_noisy_term_refuses_a_cache_bad_noise_and_a_step_without_model(tmp_path, make_data,
                                                                       make_model):
    x, y = make_data(40)
    cache = OldLogitCache.build(make_model(1), (x, y), tmp_path)
    with pytest.raises(ValueError, match="teacher must be a live old model"):
        NoisyDistillationTerm(FocalDistillationLoss(), cache, noise_std=0.1)
    for bad in (-0.1, float("nan"), torch.tensor([0.1, -1.0])):
        with pytest.raises(ValueError, match="noise_std must be finite and >= 0"):
            NoisyDistillationTerm(FocalDistillationLoss(), make_model(1), noise_std=bad)
    term = NoisyDistillationTerm(FocalDistillationLoss(), make_model(1), noise_std=0.1)
    inputs = torch.from_numpy(x)
    with pytest.raises(ValueError, match=r"loss term 'fd_kl_noisy' needs step\.model"):
        StepTerm(term)(TrainStep(inputs, torch.from_numpy(y), torch.arange(40),
                                 make_model(2)(inputs)))
    with pytest.raises(ValueError, match="which must be a floating-point tensor; got torch.int64"):
        term(make_model(2), inputs.long(), torch.from_numpy(y))


def test_noisy_term_resumes_to_the_same_weights(tmp_path, make_data, make_model):
    x, y = make_data(48)
    v1 = make_model(1)

    def run(epochs, **checkpoints):
        new = make_model(7)
        term = NoisyDistillationTerm(FocalDistillationLoss(weight=1.0), v1, noise_std=0.5)
        fit(new, (x, y), loss_terms=[term], epochs=epochs, batch_size=16, seed=2,
            progress=False, optimizer=lambda p: torch.optim.Adam(p, lr=1e-2), **checkpoints)
        return torch.cat([p.detach().ravel() for p in new.parameters()])

    straight = run(3)
    run(1, checkpoint_dir=tmp_path)
    assert torch.equal(run(3, checkpoint_dir=tmp_path, resume=True), straight)
