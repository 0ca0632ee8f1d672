"""The cheap positive-congruent terms: top-k logit-difference inhibition and ramped weights."""

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from regfree.pctraining import (
    DistillationTerm,
    FocalDistillationLoss,
    OldLogitCache,
    ScheduledTerm,
    TopKLogitInhibitionLoss,
    linear_ramp,
    margin_logit_distance,
    topk_logit_distance,
)
from regfree.pctraining.topk import topk_class_mask
from regfree.training import StepTerm, TrainStep, fit, predict_logits

NEW = torch.tensor([[4.0, 1.0, 0.0, -1.0], [0.0, 0.5, 3.0, 1.0]])
OLD = torch.tensor([[1.0, 3.0, 0.0, 0.0], [2.0, 0.0, 1.0, 0.0]])


def test_mask_holds_the_union_of_both_models_top_k():
    mask = topk_class_mask(NEW, OLD, k=1)
    assert mask.tolist() == [[True, True, False, False], [True, False, True, False]]
    assert topk_class_mask(NEW, OLD, k=9).all()  # k beyond the class count: every class


def test_distance_matches_a_hand_computation_on_the_held_classes_only():
    # sample 0 holds classes 0 and 1 (gaps 3, 2), sample 1 classes 0 and 2 (gaps 2, 2)
    expected = [(3 - 0.5) ** 2 + (2 - 0.5) ** 2, 2 * (2 - 0.5) ** 2]
    assert_allclose(topk_logit_distance(NEW, OLD, k=1, margin=0.5).numpy(), expected, rtol=1e-6)


def test_distance_over_every_class_is_the_elodi_distance():
    got = topk_logit_distance(NEW, OLD, k=4, margin=0.3, power=2.0)
    assert_allclose(got.numpy(), margin_logit_distance(NEW, OLD, margin=0.3).numpy(), rtol=1e-6)


def test_gradient_reaches_only_the_held_logits():
    new = NEW.clone().requires_grad_(True)
    topk_logit_distance(new, OLD, k=1).sum().backward()
    held = topk_class_mask(NEW, OLD, k=1)
    assert (new.grad[~held] == 0).all()
    assert (new.grad[held] != 0).all()


def test_loss_weights_samples_focally_and_scales_by_weight():
    targets = torch.tensor([1, 3])  # old right on sample 0 only
    distances = topk_logit_distance(NEW, OLD, k=1, margin=0.5)
    loss = TopKLogitInhibitionLoss(k=1, margin=0.5, weight=0.2, alpha=1.0, beta=4.0)
    expected = 0.2 * (5.0 * distances[0] + 1.0 * distances[1]) / 2
    assert loss(NEW, OLD, targets).item() == pytest.approx(float(expected), rel=1e-6)
    assert loss.last_stats["old_correct_share"] == 0.5


def test_loss_compares_shared_classes_when_the_old_model_knew_fewer():
    loss = TopKLogitInhibitionLoss(k=1, margin=0.0, weight=1.0)
    value = loss(NEW, OLD[:, :3], torch.tensor([0, 3]))  # target 3 is new: not distilled
    expected = topk_logit_distance(NEW[:1, :3], OLD[:1, :3], k=1, margin=0.0) / 2
    assert value.item() == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k must be >= 1"),
    ({"margin": -1.0}, "margin must be >= 0"),
    ({"alpha": 0.0, "beta": 0.0}, "alpha and beta must be >= 0 and not both 0"),
    ({"weight": -0.1}, "weight must be >= 0"),
])
def test_loss_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TopKLogitInhibitionLoss(**kwargs)


def test_training_with_the_term_pulls_v2_toward_v1_on_its_top_classes(tmp_path, make_data,
                                                                       make_model):
    x, y = make_data(96, classes=4)
    v1 = make_model(1, classes=4)
    fit(v1, (x[:32], y[:32]), epochs=3, optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        progress=False)
    cache = OldLogitCache.build(v1, (x, y), tmp_path / "v1")
    old = torch.from_numpy(predict_logits(v1, x))
    distances = []
    for weight in (0.0, 1.0):
        v2 = make_model(2, classes=4)
        term = DistillationTerm(TopKLogitInhibitionLoss(k=2, margin=0.0, weight=weight), cache)
        fit(v2, (x, y), loss_terms=[term], epochs=4, batch_size=16, seed=0,
            optimizer=lambda p: torch.optim.Adam(p, lr=1e-2), progress=False)
        new = torch.from_numpy(predict_logits(v2, x))
        distances.append(float(topk_logit_distance(new, old, k=2).mean()))
    assert distances[1] < 0.5 * distances[0]


def test_linear_ramp_rises_to_one_and_stays():
    assert [linear_ramp(3)(e) for e in range(5)] == [0.0, 0.5, 1.0, 1.0, 1.0]
    assert [linear_ramp(3, start=0.5)(e) for e in range(3)] == [0.5, 0.75, 1.0]
    assert linear_ramp(1)(0) == 1.0
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        linear_ramp(0)
    with pytest.raises(ValueError, match=r"start must be in \[0, 1\]"):
        linear_ramp(3, start=1.5)


def test_scheduled_term_scales_the_term_by_the_epoch_factor(make_model):
    torch.manual_seed(0)
    x, y = torch.randn(8, 6), torch.arange(8) % 3
    v1, v2 = make_model(1), make_model(2)
    inner = DistillationTerm(FocalDistillationLoss(weight=1.0), teacher=v1)
    term = ScheduledTerm(inner, linear_ramp(5))
    full = StepTerm(inner)(TrainStep(x, y, torch.arange(8), v2(x), epoch=4)).item()
    for epoch, factor in ((0, 0.0), (2, 0.5), (4, 1.0)):
        step = TrainStep(x, y, torch.arange(8), v2(x), epoch=epoch)
        assert term(step).item() == pytest.approx(factor * full, rel=1e-6)
    assert term.name == "fd_kl"


def test_scheduled_term_in_fit_is_zero_in_the_first_epoch_only(make_data, make_model):
    x, y = make_data(48)
    term = ScheduledTerm(DistillationTerm(FocalDistillationLoss(weight=1.0),
                                          teacher=make_model(1)), linear_ramp(3), name="ramped")
    history = fit(make_model(2), (x, y), loss_terms=[term], epochs=3, batch_size=16,
                  optimizer=lambda p: torch.optim.Adam(p, lr=1e-2), progress=False)
    values = history.term("ramped")
    assert values[0] == 0.0
    assert values[1] > 0 and values[2] > 0


def test_scheduled_term_refuses_bad_input(make_model):
    with pytest.raises(TypeError, match="schedule a callable"):
        ScheduledTerm(DistillationTerm(FocalDistillationLoss(), teacher=make_model(1)), 0.5)
    term = ScheduledTerm(DistillationTerm(FocalDistillationLoss(), teacher=make_model(1)),
                         lambda epoch: -1.0)
    x = torch.randn(4, 6)
    with pytest.raises(ValueError, match="schedule gave factor -1.0 at epoch 0"):
        term(TrainStep(x, torch.arange(4) % 3, torch.arange(4), make_model(2)(x)))


def test_top_names_are_exported_lazily():
    import regfree.pctraining as pct

    assert {"ScheduledTerm", "TopKLogitInhibitionLoss", "linear_ramp",
            "topk_logit_distance"} <= set(pct.__all__)
    assert np.isfinite(float(pct.topk_logit_distance(NEW, OLD).sum()))
