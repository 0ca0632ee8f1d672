"""Training-free positive-congruent updates: combine v1's and v2's scores at serving time.

Two ways to combine, each with one knob chosen on validation data:

- ``"weighted"``: ``argmax((1 - w) * p_new + w * p_old)`` over class probabilities.
- ``"gate"``: v2's class, except where v1 is more confident than v2 by more than ``margin``
  (max-probability difference); there v1's class.

v1 may know fewer classes than v2 (v2 added classes): its scores then have fewer columns, its
classes are taken to be v2's first ones (the distillation losses' rule) and it gives the others
probability 0.

``w = 0`` (or a margin above 1) is v2 alone. v1 keeps running beside v2 for either, so a blend
doubles the serving cost of a single model; the NFR it buys must be weighed against that.
Numpy and scipy only: it works from exported score files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import softmax

from regfree.metrics.inputs import as_numpy

BLEND_KINDS = ("weighted", "gate")
SCORE_KINDS = ("logits", "probabilities")
_GRID = {"weighted": np.round(np.linspace(0.0, 1.0, 21), 4),
         "gate": np.round(np.linspace(0.0, 1.0, 21), 4)}


def _probabilities(scores: Any, name: str, kind: str) -> np.ndarray:
    array = as_numpy(scores)
    if array.ndim != 2 or array.shape[1] < 2 or array.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be 2-D numeric scores (samples x classes, at least 2 "
                         f"classes), got shape {array.shape} and dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf in {int((~np.isfinite(array)).any(1).sum())} "
                         "rows")
    if kind == "logits":
        return softmax(array, axis=1)
    if (array < 0).any() or not np.allclose(array.sum(1), 1.0, atol=1e-3):
        raise ValueError(f"{name}: scores='probabilities' needs non-negative rows summing to 1; "
                         "pass scores='logits' for raw scores")
    return array


def _aligned(old_scores: Any, new_scores: Any, old_name: str, new_name: str,
             kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Both models' probabilities over v2's classes (v1's padded with 0 for classes it lacks)."""
    p_old = _probabilities(old_scores, old_name, kind)
    p_new = _probabilities(new_scores, new_name, kind)
    if len(p_old) != len(p_new) or p_old.shape[1] > p_new.shape[1]:
        raise ValueError(f"{old_name} and {new_name} must have one row per sample each, and "
                         f"{old_name} no more classes than {new_name} (v1's classes are v2's "
                         f"first ones); got shapes {p_old.shape} and {p_new.shape}")
    return np.pad(p_old, ((0, 0), (0, p_new.shape[1] - p_old.shape[1]))), p_new


def _combine(kind: str, knob: float, p_old: np.ndarray, p_new: np.ndarray) -> np.ndarray:
    if kind == "weighted":
        return ((1.0 - knob) * p_new + knob * p_old).argmax(1)
    prefer_old = p_old.max(1) - p_new.max(1) > knob
    return np.where(prefer_old, p_old.argmax(1), p_new.argmax(1))


@dataclass(frozen=True)
class LogitBlend:
    """A chosen combination of v1's and v2's scores.

    Args:
        kind: ``"weighted"`` or ``"gate"`` (see the module docs).
        knob: the blend weight of v1 (``"weighted"``) or the confidence margin (``"gate"``).
        scores: what the score arrays hold, ``"logits"`` or ``"probabilities"``.

    Example:
        >>> import numpy as np
        >>> blend = LogitBlend("weighted", 0.5)
        >>> old = np.array([[4.0, 0.0], [0.0, 4.0]])
        >>> new = np.array([[0.0, 1.0], [0.0, 1.0]])
        >>> blend.predict(old, new).tolist()
        [0, 1]
    """

    kind: str
    knob: float
    scores: str = "logits"

    def __post_init__(self) -> None:
        if self.kind not in BLEND_KINDS:
            raise ValueError(f"kind must be one of {BLEND_KINDS}, got {self.kind!r}")
        if self.scores not in SCORE_KINDS:
            raise ValueError(f"scores must be one of {SCORE_KINDS}, got {self.scores!r}")
        if not (isinstance(self.knob, (int, float)) and 0.0 <= self.knob <= 1.0):
            raise ValueError(f"knob must be a number in [0, 1], got {self.knob!r}")

    def predict(self, old_scores: Any, new_scores: Any) -> np.ndarray:
        """Class ids of the combined model.

        Args:
            old_scores: v1's ``(n, classes)`` scores (fewer classes than v2's: its classes are
                v2's first ones).
            new_scores: v2's scores for the same samples.
        """
        p_old, p_new = _aligned(old_scores, new_scores, "old_scores", "new_scores",
                                self.scores)
        return _combine(self.kind, self.knob, p_old, p_new)

    def to_dict(self) -> dict[str, Any]:
        """The blend as plain data (what ``regfree blend`` writes as JSON)."""
        return {"format": "regfree.LogitBlend/1", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogitBlend:
        """Rebuild a blend from :meth:`to_dict`'s output (for example read from JSON)."""
        if not isinstance(data, dict) or data.get("format") != "regfree.LogitBlend/1":
            raise ValueError("data is not a regfree LogitBlend (format 'regfree.LogitBlend/1')")
        return cls(kind=data["kind"], knob=float(data["knob"]), scores=data["scores"])

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict())


@dataclass(frozen=True)
class BlendPoint:
    """One candidate on validation data: its error rate and negative flip rate."""

    kind: str
    knob: float
    error_rate: float
    nfr: float


def blend_sweep(y_val: Any, old_val_scores: Any, new_val_scores: Any, *,
                scores: str = "logits") -> list[BlendPoint]:
    """Every candidate blend's validation error and NFR (both kinds, a grid of knobs each).

    Returns:
        All points, v2 alone first (``("weighted", 0.0)``); :func:`pareto_front` keeps the
        ones no other point beats on both error and NFR.
    """
    if scores not in SCORE_KINDS:
        raise ValueError(f"scores must be one of {SCORE_KINDS}, got {scores!r}")
    p_old, p_new = _aligned(old_val_scores, new_val_scores, "old_val_scores", "new_val_scores",
                            scores)
    y = as_numpy(y_val)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(p_old):
        raise ValueError(f"y_val must be 1-D integer class ids, one per row of the scores "
                         f"(got y_val {y.shape}, old {p_old.shape}, new {p_new.shape})")
    if len(y) == 0:
        raise ValueError("y_val is empty")
    old_right = p_old.argmax(1) == y
    points = []
    for kind in BLEND_KINDS:
        for knob in _GRID[kind]:
            wrong = _combine(kind, float(knob), p_old, p_new) != y
            points.append(BlendPoint(kind, float(knob), float(wrong.mean()),
                                     float((wrong & old_right).mean())))
    return points


def pareto_front(points: list[BlendPoint]) -> list[BlendPoint]:
    """The points that no other point beats on both error and NFR, sorted by NFR."""
    ordered = sorted(points, key=lambda p: (p.nfr, p.error_rate))
    front, best_error = [], np.inf
    for point in ordered:
        if point.error_rate < best_error:
            front.append(point)
            best_error = point.error_rate
    return front


def fit_blend(y_val: Any, old_val_scores: Any, new_val_scores: Any, *,
              max_error_increase: float = 0.0, scores: str = "logits") -> LogitBlend:
    """Choose the blend with the least validation NFR whose error stays within bounds.

    Args:
        y_val: validation labels (class ids).
        old_val_scores: v1's validation scores, ``(n, classes)``; a v1 with fewer classes than
            v2 has fewer columns (its classes are v2's first ones; probability 0 on the others).
        new_val_scores: v2's validation scores.
        max_error_increase: how much validation error (a fraction, 0.005 = half a point) the
            blend may add over v2 alone.
        scores: ``"logits"`` (softmax applied) or ``"probabilities"``.

    Returns:
        The chosen :class:`LogitBlend` (v2 alone, ``("weighted", 0.0)``, when nothing helps).

    Example:
        >>> import numpy as np
        >>> y = np.array([0, 1, 1, 0])
        >>> old = np.array([[3.0, 0.0], [0.0, 3.0], [2.0, 0.0], [2.0, 0.0]])
        >>> new = np.array([[0.0, 0.2], [0.0, 2.0], [0.0, 3.0], [3.0, 0.0]])
        >>> fit_blend(y, old, new).predict(old, new).tolist()
        [0, 1, 1, 0]

        v2 added class 2, which v1 never saw (v1's two columns are classes 0 and 1):

        >>> y3 = np.array([0, 1, 2, 0])
        >>> new3 = np.array([[0.0, 0.2, 0.1], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [3.0, 0.0, 0.0]])
        >>> fit_blend(y3, old, new3).predict(old, new3).tolist()
        [0, 1, 2, 0]
    """
    if not (isinstance(max_error_increase, (int, float)) and np.isfinite(max_error_increase)
            and max_error_increase >= 0):
        raise ValueError(f"max_error_increase must be a finite number >= 0, got "
                         f"{max_error_increase!r}")
    points = blend_sweep(y_val, old_val_scores, new_val_scores, scores=scores)
    limit = points[0].error_rate + max_error_increase + 1e-12
    allowed = [p for p in points if p.error_rate <= limit]
    best = min(allowed, key=lambda p: (p.nfr, p.error_rate, p.knob))
    return LogitBlend(best.kind, best.knob, scores=scores)
