"""Scalar flip metrics between an old and a new model (formulas in docs/design.md).

Every metric is a ratio of four counts (:class:`FlipTotals`), so the one-shot functions, the
report and the streaming counter share the same formulas.

Zero denominators give ``nan`` (written as ``null`` in JSON):
relative NFR when ``ER_new == 0`` or ``ER_old == 1``; NFI and BEC when the new model makes no
errors; BTC (backward trust compatibility) when the old model is never right. In each case the
numerator is zero as well, so the metric is undefined rather than infinite.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from regfree.metrics.inputs import as_class_ids, iter_flip_inputs


def _ratio(num: int, den: float) -> float:
    return num / den if den else float("nan")


class FlipTotals(NamedTuple):
    """The four counts every scalar flip metric is computed from."""

    n: int
    old_correct: int
    new_correct: int
    both_correct: int

    @property
    def negative_flips(self) -> int:
        """Samples the old model got right and the new one gets wrong."""
        return self.old_correct - self.both_correct

    @property
    def positive_flips(self) -> int:
        """Samples the old model got wrong and the new one gets right."""
        return self.new_correct - self.both_correct

    @property
    def both_wrong(self) -> int:
        return self.n - self.old_correct - self.new_correct + self.both_correct

    @property
    def error_rate_old(self) -> float:
        return _ratio(self.n - self.old_correct, self.n)

    @property
    def error_rate_new(self) -> float:
        return _ratio(self.n - self.new_correct, self.n)

    @property
    def nfr(self) -> float:
        return _ratio(self.negative_flips, self.n)

    @property
    def pfr(self) -> float:
        return _ratio(self.positive_flips, self.n)

    @property
    def relative_nfr(self) -> float:
        # NFR / ((1 - ER_old) * ER_new), rewritten on counts: nf * n / (old_correct * new_errors)
        return _ratio(self.negative_flips * self.n,
                      float(self.old_correct) * (self.n - self.new_correct))

    @property
    def nfi(self) -> float:
        return _ratio(self.negative_flips, self.n - self.new_correct)

    @property
    def btc(self) -> float:
        return _ratio(self.both_correct, self.old_correct)

    @property
    def bec(self) -> float:
        return _ratio(self.both_wrong, self.n - self.new_correct)


def flip_totals(y_true: Any, old_pred: Any, new_pred: Any, *, validate: bool = True) -> FlipTotals:
    """Count samples, old-correct, new-correct and both-correct in one pass over the data.

    Example:
        >>> flip_totals([0, 1, 2, 2], [0, 1, 0, 2], [0, 2, 2, 2])
        FlipTotals(n=4, old_correct=3, new_correct=3, both_correct=2)
    """
    n = old_correct = new_correct = both_correct = 0
    for y, old, new, _ in iter_flip_inputs(y_true, old_pred, new_pred, validate=validate):
        old_ok = old == y
        new_ok = new == y
        n += len(y)
        old_correct += int(np.count_nonzero(old_ok))
        new_correct += int(np.count_nonzero(new_ok))
        both_correct += int(np.count_nonzero(np.logical_and(old_ok, new_ok, out=old_ok)))
    return FlipTotals(n, old_correct, new_correct, both_correct)


def error_rate(y_true: Any, pred: Any, *, validate: bool = True) -> float:
    """Share of samples one model gets wrong: ``mean(pred != y_true)``.

    Args:
        y_true: 1-D true class ids.
        pred: class ids (1-D) or scores (2-D, reduced by argmax).
        validate: check the inputs (see :func:`~regfree.metrics.inputs.iter_flip_inputs`).

    Returns:
        The error rate in ``[0, 1]``.

    Example:
        >>> error_rate([0, 1, 2, 2], [0, 1, 0, 2])
        0.25
    """
    correct = correct_mask(y_true, pred, validate=validate)
    return _ratio(len(correct) - int(np.count_nonzero(correct)), len(correct))


def negative_flip_rate(y_true: Any, old_pred: Any, new_pred: Any, *,
                       validate: bool = True) -> float:
    """NFR: share of samples the old model got right and the new model gets wrong.

    Args:
        y_true: 1-D true class ids.
        old_pred: old model's class ids (1-D) or scores (2-D).
        new_pred: new model's class ids (1-D) or scores (2-D).
        validate: check the inputs; ``False`` skips the checks for speed.

    Returns:
        NFR in ``[0, 1]``.

    Example:
        >>> negative_flip_rate([0, 1, 2, 2], [0, 1, 0, 2], [0, 2, 2, 2])
        0.25
    """
    return flip_totals(y_true, old_pred, new_pred, validate=validate).nfr


def positive_flip_rate(y_true: Any, old_pred: Any, new_pred: Any, *,
                       validate: bool = True) -> float:
    """PFR: share of samples the old model got wrong and the new model gets right.

    Args and Returns as :func:`negative_flip_rate`.

    Example:
        >>> positive_flip_rate([0, 1, 2, 2], [0, 1, 0, 2], [0, 2, 2, 2])
        0.25
    """
    return flip_totals(y_true, old_pred, new_pred, validate=validate).pfr


def relative_nfr(y_true: Any, old_pred: Any, new_pred: Any, *, validate: bool = True) -> float:
    """NFR divided by the NFR two independent models would show: ``NFR / ((1-ER_old) * ER_new)``.

    Below 1 means the new model's errors avoid the samples the old model got right more than
    chance would. ``nan`` when ``ER_new == 0`` or ``ER_old == 1``.

    Args and Returns as :func:`negative_flip_rate` (the ratio is >= 0, not bounded by 1).

    Example:
        >>> relative_nfr([0, 1, 2, 2], [0, 1, 0, 2], [0, 2, 2, 2])
        1.3333333333333333
    """
    return flip_totals(y_true, old_pred, new_pred, validate=validate).relative_nfr


def negative_flip_impact(y_true: Any, old_pred: Any, new_pred: Any, *,
                         validate: bool = True) -> float:
    """NFI: share of the new model's errors that are negative flips. ``nan`` if it makes none.

    Args and Returns as :func:`negative_flip_rate`.

    Example:
        >>> negative_flip_impact([0, 1, 2, 2], [0, 1, 0, 2], [0, 2, 2, 2])
        1.0
    """
    return flip_totals(y_true, old_pred, new_pred, validate=validate).nfi


def compatibility_score(y_true: Any, old_pred: Any, new_pred: Any, *,
                        validate: bool = True) -> float:
    """Backward trust compatibility (BTC, Bansal et al. 2019): both right / old right.

    Equals ``1 - NFR / (1 - ER_old)``; ``nan`` when the old model is never right.

    Args and Returns as :func:`negative_flip_rate`.

    Example:
        >>> round(compatibility_score([0, 1, 2, 2], [0, 1, 0, 2], [0, 2, 2, 2]), 4)
        0.6667
    """
    return flip_totals(y_true, old_pred, new_pred, validate=validate).btc


def backward_error_compatibility(y_true: Any, old_pred: Any, new_pred: Any, *,
                                 validate: bool = True) -> float:
    """BEC: share of the new model's errors the old model made too (both wrong / new wrong).

    regfree divides by the *new* model's errors (Srivastava et al. 2020), so BEC answers "how
    many of today's errors are old news"; Microsoft's BackwardCompatibilityML divides by the
    old model's errors instead. ``nan`` when the new model makes no errors.

    Args and Returns as :func:`negative_flip_rate`.

    Example:
        >>> backward_error_compatibility([0, 1, 2, 2], [0, 0, 0, 2], [0, 1, 0, 1])
        0.5
    """
    return flip_totals(y_true, old_pred, new_pred, validate=validate).bec


def correct_mask(y_true: Any, pred: Any, *, name: str = "pred", validate: bool = True) -> np.ndarray:
    """Boolean array: where ``pred`` (ids or scores) equals ``y_true``.

    Args:
        y_true: 1-D true class ids.
        pred: class ids (1-D) or scores (2-D).
        name: how error messages call ``pred``.
        validate: check the inputs; ``False`` skips the checks for speed.

    Returns:
        A boolean array as long as ``y_true``.

    Example:
        >>> correct_mask([0, 1], [[0.9, 0.1], [0.8, 0.2]]).tolist()
        [True, False]
    """
    y, _ = as_class_ids(y_true, "y_true", allow_scores=False, validate=validate)
    ids, width = as_class_ids(pred, name, validate=validate)
    if validate:
        if len(y) == 0:
            raise ValueError("y_true: is empty")
        if len(ids) != len(y):
            raise ValueError(f"{name}: has {len(ids)} rows but y_true has {len(y)}")
        if width is not None and y.max() >= width:
            raise ValueError(f"y_true: class id {int(y.max())} is out of range for {width} "
                             f"classes (from {name})")
    return ids == y
