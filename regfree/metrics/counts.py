"""The update step: a batch of predictions -> sufficient statistics (integer counts).

All of :class:`~regfree.metrics.FlipReport` follows from one table,
``joint[true class, new prediction, old model right]``, filled by a single ``np.bincount`` over
combined codes. Counts add, so streaming, merging across workers and the one-shot call agree
to the last digit by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from regfree.metrics.inputs import iter_flip_inputs

MAX_REPORT_CLASSES = 4096  # the joint table has 2 * K**2 cells


@dataclass(frozen=True)
class FlipCounts:
    """Sufficient statistics of a flip report.

    Attributes:
        joint: int64 array of shape ``(K, K, 2)``; ``joint[y, p, c]`` counts samples of true class
            ``y`` that the new model predicts as ``p``, with ``c = 1`` where the old model was right.
    """

    joint: np.ndarray

    @property
    def num_classes(self) -> int:
        return self.joint.shape[0]

    def padded(self, num_classes: int) -> FlipCounts:
        """The same counts over ``num_classes >= self.num_classes`` classes (zeros appended)."""
        extra = num_classes - self.num_classes
        if extra < 0:
            raise ValueError(f"num_classes: cannot shrink {self.num_classes} classes to {num_classes}")
        if extra == 0:
            return self
        return FlipCounts(np.pad(self.joint, ((0, extra), (0, extra), (0, 0))))

    def __add__(self, other: FlipCounts) -> FlipCounts:
        if self.num_classes == other.num_classes:
            return FlipCounts(self.joint + other.joint)
        k = max(self.num_classes, other.num_classes)
        return FlipCounts(self.padded(k).joint + other.padded(k).joint)

    @classmethod
    def zeros(cls, num_classes: int) -> FlipCounts:
        return cls(np.zeros((num_classes, num_classes, 2), dtype=np.int64))


def check_num_classes(num_classes: int) -> None:
    if num_classes > MAX_REPORT_CLASSES:
        raise ValueError(f"num_classes: flip reports support up to {MAX_REPORT_CLASSES} classes, "
                         f"got {num_classes}; use the scalar metrics for more")


def joint_codes(y: np.ndarray, old: np.ndarray, new: np.ndarray, num_classes: int) -> np.ndarray:
    """Flat index into ``joint`` for each sample: ``(y * K + new) * 2 + (old == y)``."""
    codes = np.multiply(y, 2 * num_classes, dtype=np.intp)
    np.add(codes, new, out=codes, casting="unsafe")
    np.add(codes, new, out=codes, casting="unsafe")
    codes += old == y
    return codes


def add_codes(flat: np.ndarray, codes: np.ndarray) -> None:
    """Add one count per code into ``flat`` in place, picking the cheaper way for the sizes."""
    if codes.size * 16 < flat.size:  # few samples, big table: avoid a table-sized bincount
        cells, counts = np.unique(codes, return_counts=True)
        flat[cells] += counts
    else:
        flat += np.bincount(codes, minlength=flat.size)


def flip_counts(
    y_true: Any,
    old_pred: Any,
    new_pred: Any,
    *,
    num_classes: Optional[int] = None,
    validate: bool = True,
) -> FlipCounts:
    """Count one batch (the update step behind :func:`flip_report` and :class:`FlipCounter`).

    Args:
        y_true: 1-D true class ids.
        old_pred: old model's class ids (1-D) or scores (2-D).
        new_pred: new model's class ids (1-D) or scores (2-D).
        num_classes: class count; found from the data (largest id + 1, or score width) if None.
        validate: check the inputs; ``False`` skips the checks for speed.

    Returns:
        :class:`FlipCounts` for this batch.

    Example:
        >>> counts = flip_counts([0, 1, 1], [0, 1, 0], [1, 1, 1])
        >>> int(counts.joint[0, 1, 1])  # class 0, new says 1, old was right: a negative flip
        1
    """
    counts: Optional[FlipCounts] = None
    for y, old, new, k in iter_flip_inputs(y_true, old_pred, new_pred, num_classes=num_classes,
                                           validate=validate, need_num_classes=True):
        if counts is None:
            check_num_classes(k)
            counts = FlipCounts.zeros(k)
        elif k > counts.num_classes:  # a later slice holds a higher class id
            check_num_classes(k)
            counts = counts.padded(k)
        add_codes(counts.joint.reshape(-1), joint_codes(y, old, new, counts.num_classes))
    if counts is None:  # empty input without validation
        return FlipCounts.zeros(num_classes or 1)
    return counts
