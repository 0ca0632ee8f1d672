"""Streaming form of :func:`flip_report`: count batch by batch, merge workers, reduce once."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from regfree.metrics.classes import check_class_names, encode_flip_inputs, is_names
from regfree.metrics.counts import FlipCounts, check_num_classes, flip_counts
from regfree.metrics.inputs import as_numpy
from regfree.metrics.report import FlipReport, report_from_counts


class FlipCounter:
    """Accumulates flip counts over batches; :meth:`compute` equals the one-shot report exactly.

    The streaming contract (shared with :class:`~regfree.metrics.RetrievalScores`):
    ``update(...) -> None``, ``merge(other) -> self`` (in place), ``reset() -> None`` (back to
    empty) and ``compute()`` (the result).

    Args:
        num_classes: fixed class count, or None to grow with the largest id / score width seen.
        class_names: the name of each class id; batches may then hold names (fixed order).
        validate: check every batch; ``False`` skips the checks for speed.

    Example:
        >>> from regfree.metrics import flip_report
        >>> counter = FlipCounter()
        >>> counter.update([0, 1], [0, 1], [0, 0])
        >>> counter.update([2, 2], [0, 2], [2, 2])
        >>> counter.compute() == flip_report([0, 1, 2, 2], [0, 1, 0, 2], [0, 0, 2, 2])
        True
    """

    def __init__(self, num_classes: Optional[int] = None, validate: bool = True, *,
                 class_names: Optional[Sequence[str]] = None) -> None:
        self.class_names = None if class_names is None else check_class_names(class_names)
        if self.class_names is not None:
            if num_classes is not None and num_classes != len(self.class_names):
                raise ValueError(f"num_classes: is {num_classes} but class_names has "
                                 f"{len(self.class_names)}")
            num_classes = len(self.class_names)
        if num_classes is not None:
            check_num_classes(num_classes)
        self.num_classes = num_classes
        self.validate = validate
        self._counts: Optional[FlipCounts] = None

    @property
    def counts(self) -> Optional[FlipCounts]:
        """The sufficient statistics so far (None before the first non-empty batch)."""
        return self._counts

    def update(self, y_true: Any, old_pred: Any, new_pred: Any) -> None:
        """Count one batch (same inputs as :func:`~regfree.metrics.flip_report`).

        Empty batches are allowed and change nothing.
        """
        if all(len(as_numpy(x)) == 0 for x in (y_true, old_pred, new_pred)):
            return
        if any(is_names(as_numpy(x)) for x in (y_true, old_pred, new_pred)):
            if self.class_names is None:
                raise ValueError("y_true: holds class names; pass class_names= to FlipCounter "
                                 "(the order must be fixed before the first batch)")
            y_true, old_pred, new_pred, _ = encode_flip_inputs(y_true, old_pred, new_pred,
                                                               self.class_names)
        # Count the batch apart first, so a bad slice midway leaves the counter unchanged.
        batch = flip_counts(y_true, old_pred, new_pred, num_classes=self.num_classes,
                            validate=self.validate)
        self._counts = batch if self._counts is None else self._counts + batch

    def merge(self, other: FlipCounter) -> FlipCounter:
        """Add another counter's counts into this one (e.g. from another worker); returns self."""
        if not isinstance(other, FlipCounter):
            raise ValueError(f"other: expected a FlipCounter, got {type(other).__name__}")
        if other._counts is None:
            return self
        if self._counts is None:
            self._counts = FlipCounts(other._counts.joint.copy())
        else:
            self._counts = self._counts + other._counts
        return self

    def reset(self) -> None:
        """Forget all counts."""
        self._counts = None

    def compute(self) -> FlipReport:
        """The :class:`~regfree.metrics.FlipReport` of everything counted so far."""
        if self._counts is None:
            raise ValueError("FlipCounter: no samples; call update() with data first")
        return report_from_counts(self._counts, class_names=self.class_names)
