"""Training-free blends of v1's and v2's scores, chosen on validation data."""

import json

import numpy as np
import pytest

from regfree.pctraining.blend import (
    BlendPoint,
    LogitBlend,
    blend_sweep,
    fit_blend,
    pareto_front,
)


def hand_made():
    # sample 0: v1 right and sure, v2 wrong but unsure -> a negative flip a blend can undo
    # sample 1: both right; sample 2: v1 wrong and unsure, v2 right and sure (a positive flip)
    # sample 3: v1 right but barely, v2 wrong and sure -> only v1 alone would keep it
    y = np.array([0, 1, 1, 0])
    old = np.log(np.array([[0.95, 0.05], [0.1, 0.9], [0.6, 0.4], [0.55, 0.45]]))
    new = np.log(np.array([[0.45, 0.55], [0.2, 0.8], [0.05, 0.95], [0.1, 0.9]]))
    return y, old, new


def test_sweep_numbers_on_a_hand_made_case():
    y, old, new = hand_made()
    points = {(p.kind, p.knob): p for p in blend_sweep(y, old, new)}
    alone = points[("weighted", 0.0)]
    assert (alone.error_rate, alone.nfr) == (0.5, 0.5)  # samples 0 and 3 wrong, both flips
    assert (points[("weighted", 1.0)].error_rate, points[("weighted", 1.0)].nfr) == (0.25, 0.0)
    # w = 0.5: sample 0 -> (0.70, 0.30) right; sample 2 -> (0.325, 0.675) right; sample 3 wrong
    assert (points[("weighted", 0.5)].error_rate, points[("weighted", 0.5)].nfr) == (0.25, 0.25)
    # gate at margin 0.3: v1 is surer than v2 by 0.40 on sample 0 only
    assert (points[("gate", 0.3)].error_rate, points[("gate", 0.3)].nfr) == (0.25, 0.25)


def test_fit_blend_takes_least_nfr_within_the_allowed_error():
    y, old, new = hand_made()
    chosen = fit_blend(y, old, new)
    assert chosen.predict(old, new).tolist() != (new.argmax(1)).tolist()
    wrong = chosen.predict(old, new) != y
    assert wrong.mean() <= 0.5 and (wrong & (old.argmax(1) == y)).mean() == 0.0
    again = LogitBlend.from_dict(json.loads(chosen.to_json()))
    assert again == chosen


def test_nothing_helps_gives_v2_alone():
    y = np.array([0, 1])
    old = np.array([[0.0, 5.0], [5.0, 0.0]])  # v1 always wrong: no negative flips possible
    new = np.array([[5.0, 0.0], [0.0, 5.0]])
    assert fit_blend(y, old, new) == LogitBlend("weighted", 0.0)


def test_pareto_front_drops_dominated_points():
    points = [BlendPoint("weighted", 0.0, 0.10, 0.05), BlendPoint("weighted", 0.5, 0.12, 0.03),
              BlendPoint("gate", 0.2, 0.13, 0.04), BlendPoint("weighted", 1.0, 0.20, 0.0)]
    assert [(p.kind, p.knob) for p in pareto_front(points)] == [
        ("weighted", 1.0), ("weighted", 0.5), ("weighted", 0.0)]


def test_probability_inputs_and_refusals():
    y, old, new = hand_made()
    probs = fit_blend(y, np.exp(old), np.exp(new), scores="probabilities")
    assert probs.scores == "probabilities"
    with pytest.raises(ValueError, match="scores='probabilities' needs non-negative rows"):
        fit_blend(y, old, new, scores="probabilities")
    with pytest.raises(ValueError, match="max_error_increase must be a finite number >= 0"):
        fit_blend(y, old, new, max_error_increase=-0.1)
    with pytest.raises(ValueError, match="y_val must be 1-D integer class ids, one per row"):
        fit_blend(y[:3], old, new)
    with pytest.raises(ValueError, match="old_val_scores contains NaN or inf in 2 rows"):
        fit_blend(y, np.where(np.eye(4, 2, dtype=bool), np.nan, old), new)
    with pytest.raises(ValueError, match="old_scores and new_scores must have one row per sample each"):
        LogitBlend("gate", 0.2).predict(old, new[:2])
    with pytest.raises(ValueError, match="knob must be a number in"):
        LogitBlend("gate", 1.5)
    with pytest.raises(ValueError, match="not a regfree LogitBlend"):
        LogitBlend.from_dict({"kind": "gate"})
