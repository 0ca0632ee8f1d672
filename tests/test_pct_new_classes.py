"""A v1 that knows fewer classes than v2 (MPT's setting): the training-free blend over v1's
classes, and the seen / unseen rows of experiments/pct_study/new_classes.py."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from pct_study.cheap import PREVIOUS_PICK, TABLE_RECIPES  # noqa: E402
from pct_study.new_classes import RECIPES, V1_CLASSES, new_class_rows  # noqa: E402
from pct_study.recipes import Run  # noqa: E402
from pct_study.settings import Data, Setup, load_data  # noqa: E402
from regfree.pctraining import LogitBlend, blend_sweep, fit_blend  # noqa: E402


def scores(seed: int, n: int = 200):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    new = rng.normal(size=(n, 4)) + 2.0 * np.eye(4)[y]
    old = rng.normal(size=(n, 2)) + 2.0 * np.eye(4)[y][:, :2]  # v1 knows classes 0 and 1
    return y, old, new


@pytest.mark.parametrize("kind", ["weighted", "gate"])
def test_blend_gives_the_classes_v1_never_saw_probability_zero(kind):
    _, old, new = scores(0)
    padded = np.hstack([softmax(old, axis=1), np.zeros((len(old), 2))])
    blend = LogitBlend(kind, 0.4)
    from_logits = blend.predict(old, new)
    from_padded = LogitBlend(kind, 0.4, scores="probabilities").predict(padded,
                                                                          softmax(new, axis=1))
    np.testing.assert_array_equal(from_logits, from_padded)
    # the blend really mixes: v1 moves some answers, and only ever towards its own classes
    moved = from_logits != new.argmax(1)
    assert moved.any() and (from_logits[moved] < 2).all()


def test_blend_with_fewer_old_classes_cuts_nfr_within_the_error_budget():
    y, old, new = scores(1, n=2000)
    points = blend_sweep(y, old, new)
    v2_alone = points[0]
    chosen = fit_blend(y, old, new, max_error_increase=0.02)
    best = next(p for p in points if (p.kind, p.knob) == (chosen.kind, chosen.knob))
    assert best.nfr < v2_alone.nfr  # on this data v1 is right where v2 errs often enough
    assert best.error_rate <= v2_alone.error_rate + 0.02 + 1e-12


def test_blend_refuses_an_old_model_with_more_classes_or_other_rows():
    y, old, new = scores(2)
    with pytest.raises(ValueError, match="old_val_scores no more classes than new_val_scores"):
        fit_blend(y, new, old)
    with pytest.raises(ValueError, match="old_scores and new_scores must have one row per"):
        LogitBlend("weighted", 0.5).predict(old[:5], new)


def test_v1_subset_keeps_only_the_classes_v1_learns():
    setup = Setup(num_samples=600, eval_samples=200, v1_classes=V1_CLASSES)
    data = load_data(setup)
    everything = load_data(Setup(num_samples=600, eval_samples=200))
    assert set(np.unique(data.y_train[data.v1_subset])) == set(range(V1_CLASSES))
    expected = everything.v1_subset[everything.y_train[everything.v1_subset] < V1_CLASSES]
    np.testing.assert_array_equal(data.v1_subset, expected)


def test_rows_score_seen_classes_apart_from_unseen_ones():
    y = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 2)
    seen = y < V1_CLASSES
    rng = np.random.default_rng(0)
    v1_logits = rng.normal(size=(len(y), V1_CLASSES)) + 5.0 * np.eye(10)[y][:, :V1_CLASSES]
    v1_logits[0] = [0, 9, 0, 0, 0]  # v1 wrong on one sample of a seen class
    teachers = {"v1_test": v1_logits.argmax(1), "v1_val": v1_logits.argmax(1),
                "v1_test_logits": v1_logits, "v1_val_logits": v1_logits}
    data = Data(y[:, None].astype("float32"), y, y[:, None], y, y[:, None], y, np.arange(20))
    plain = y.copy()
    plain[[1, 2]] = [7, 3]  # a seen-class flip to a new class and one to another seen class
    plain[[5, 6]] = 0  # two unseen-class errors
    fd = y.copy()
    fd[1] = 7  # keeps one of plain's two flips
    results = []
    for terms, pred in zip(RECIPES, (plain, fd, y.copy(), y.copy(), y.copy(), y.copy())):
        logits = 6.0 * np.eye(10)[pred]
        results.append({"run": Run(0, terms), "seconds": 1.0, "val": pred, "test": pred,
                        "val_logits": logits, "test_logits": logits})
    rows = {r["row"]: r for r in new_class_rows(results, data, teachers)}
    plain_row = rows["plain"]
    assert plain_row["nfr"] == [pytest.approx(2 / seen.sum())]
    assert plain_row["error"] == [pytest.approx(2 / seen.sum())]
    assert plain_row["error_unseen"] == [pytest.approx(2 / (~seen).sum())]
    assert plain_row["error_all"] == [pytest.approx(4 / len(y))]
    assert plain_row["flips_to_new_classes"] == pytest.approx(0.5)
    fd_row = rows[Run(0, TABLE_RECIPES[1]).label()]
    assert fd_row["nfr_vs_plain"] == pytest.approx(0.5)
    assert fd_row["flips_to_new_classes"] == pytest.approx(1.0)
    assert fd_row["pfr"] == [pytest.approx(1 / seen.sum())]  # v1's one seen-class error, fixed
    chosen = rows[Run(0, PREVIOUS_PICK).label()]
    assert chosen["nfr"] == [0.0] and chosen["error_unseen"] == [0.0]
    assert any(label.startswith("blend of v1 and plain v2") for label in rows)
    # a seed missing one of the five runs leaves the table
    assert new_class_rows(results[:-1], data, teachers) == []


def np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_zero_rule_is_kl_from_v1_padded_with_probability_zero():
    import torch

    from regfree.pctraining import FocalDistillationLoss

    rng = np.random.default_rng(3)
    new = rng.normal(size=(4, 5)) * 3
    old = rng.normal(size=(4, 3)) * 3
    y = np.array([0, 1, 2, 4])  # the last sample is of a class v1 never saw
    t = 2.0
    p_old, p_new = np_softmax(old / t), np_softmax(new / t)
    kl = t * t * np.sum(p_old * (np.log(p_old) - np.log(p_new[:, :3])), axis=1)
    weights = 1.0 + 5.0 * (old.argmax(1) == y)
    weights[3] = 0.0
    loss = FocalDistillationLoss(alpha=1.0, beta=5.0, temperature=t, weight=1.0,
                                 new_classes="zero")
    value = loss(torch.tensor(new, dtype=torch.float64), torch.tensor(old), torch.tensor(y))
    assert value.item() == pytest.approx(float(np.mean(weights * kl)), rel=1e-9)


def test_zero_rule_pushes_new_class_logits_down_where_the_shared_rule_does_not():
    import torch

    from regfree.pctraining import FocalDistillationLoss, KnowledgeDistillationLoss

    new = torch.tensor([[2.0, 0.0, 2.0], [0.0, 2.0, 1.0], [0.0, 0.0, 3.0]])
    old = torch.tensor([[3.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    y = torch.tensor([0, 1, 2])
    grads = {}
    for rule in ("ignore", "zero"):
        for loss in (FocalDistillationLoss(new_classes=rule),
                     KnowledgeDistillationLoss(new_classes=rule)):
            leaf = new.clone().requires_grad_(True)
            loss(leaf, old, y).backward()
            grads[rule, type(loss).__name__] = leaf.grad
    for name in ("FocalDistillationLoss", "KnowledgeDistillationLoss"):
        assert torch.all(grads["ignore", name][:, 2] == 0)
        # a positive gradient: descent lowers the new class's logit on seen-class samples
        assert torch.all(grads["zero", name][:2, 2] > 0)
        assert torch.all(grads["zero", name][2] == 0)  # the new-class sample: not distilled


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "logit", "new_classes": "zero"}, "new_classes='zero' needs a probability distance"),
    ({"new_classes": "pad"}, r"new_classes must be one of \('ignore', 'zero'\)"),
])
def test_new_class_rule_refuses_bad_settings(kwargs, match):
    from regfree.pctraining import FocalDistillationLoss

    with pytest.raises(ValueError, match=match):
        FocalDistillationLoss(**kwargs)


def test_the_study_adds_zero_rule_rows_that_say_so_and_survive_their_record():
    from pct_study.recipes import FocalDistillation, run_from_record

    assert RECIPES[:len(TABLE_RECIPES)] == TABLE_RECIPES and len(RECIPES) == 6
    zero = Run(1, (FocalDistillation("kl", 1.0, 5.0, 100.0, 0.005, new_classes="zero"),))
    assert zero.label() == "FD-KL a=1 b=5 T=100 w=0.005, new classes: zero"
    assert zero in [Run(1, terms) for terms in RECIPES]
    assert run_from_record(zero.record()) == zero
    assert FocalDistillation("kl", weight=0.01, ramp=True, new_classes="zero").label() == (
        "FD-KL w=0.01, new classes: zero, ramped 0->w")
