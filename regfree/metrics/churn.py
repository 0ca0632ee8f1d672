"""Label-free churn: how many predictions an update changes, and from which class to which.

Needs no labels, so it gates unlabelled (shadow) traffic: ``churn = changed / n``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from regfree.metrics.classes import check_class_names, encode_flip_inputs
from regfree.metrics.counts import add_codes, check_num_classes
from regfree.metrics.inputs import as_class_ids
from regfree.metrics.report import json_safe
from regfree.metrics.stats import wilson_interval


@dataclass(frozen=True, eq=False)
class ChurnReport:
    """Predictions that changed between an old and a new model, without labels.

    Attributes:
        n: number of samples.
        changed: samples whose predicted class changed.
        churn: ``changed / n``.
        churn_ci: 95% Wilson interval of ``churn``.
        change_confusion: int array ``(K, K)``; ``[o, p]`` counts samples the old model put in
            class ``o`` and the new one in ``p != o`` (the diagonal is 0).
        class_names: the name of each class id, or None.
    """

    n: int
    changed: int
    churn: float
    churn_ci: tuple[float, float]
    change_confusion: np.ndarray
    class_names: Optional[tuple[str, ...]] = None

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values under the attribute names."""
        return {"n": self.n, "changed": self.changed, "churn": self.churn,
                "churn_ci": list(self.churn_ci),
                "change_confusion": self.change_confusion.tolist(),
                "class_names": None if self.class_names is None else list(self.class_names)}

    def to_json(self, indent: Optional[int] = 2) -> str:
        """Valid JSON of :meth:`to_dict`."""
        return json.dumps(json_safe(self.to_dict()), indent=indent, allow_nan=False)


class ChurnCounter:
    """Counts old -> new prediction pairs batch by batch (update / merge / reset / compute).

    Example:
        >>> counter = ChurnCounter()
        >>> counter.update([0, 1, 2], [0, 2, 2])
        >>> counter.update([1], [1])
        >>> counter.compute().churn
        0.25
    """

    def __init__(self, num_classes: Optional[int] = None, *,
                 class_names: Optional[Sequence[str]] = None, validate: bool = True) -> None:
        self.class_names = None if class_names is None else check_class_names(class_names)
        self.num_classes = len(self.class_names) if self.class_names else num_classes
        self.validate = validate
        self._table: Optional[np.ndarray] = None

    def _grow(self, k: int) -> np.ndarray:
        check_num_classes(k)
        if self._table is None:
            self._table = np.zeros((k, k), dtype=np.int64)
        elif k > len(self._table):
            extra = k - len(self._table)
            self._table = np.pad(self._table, ((0, extra), (0, extra)))
        return self._table

    def update(self, old_pred: Any, new_pred: Any) -> None:
        """Count one batch of old and new predictions (class ids, names or scores).

        With ``validate=False`` and ``num_classes`` set, the batch must be two 1-D arrays of
        class ids below ``num_classes`` (nothing is checked; the fast path of a reader that
        checked them already).
        """
        if not self.validate and self.num_classes is not None:
            if len(old_pred):
                table = self._grow(self.num_classes)
                codes = np.multiply(old_pred, len(table), dtype=np.intp)
                codes += new_pred
                add_codes(table.reshape(-1), codes)
            return
        if self.class_names is not None:
            old_pred, new_pred, _, _ = encode_flip_inputs(old_pred, new_pred, old_pred[:0],
                                                          self.class_names)
        old, width_old = as_class_ids(old_pred, "old_pred")
        new, width_new = as_class_ids(new_pred, "new_pred")
        if len(old) != len(new):
            raise ValueError(f"new_pred: has {len(new)} rows but old_pred has {len(old)}")
        if len(old) == 0:
            return
        k = max(int(old.max()) + 1, int(new.max()) + 1, width_old or 0, width_new or 0,
                self.num_classes or 0)
        if self.num_classes is not None and k > self.num_classes:
            raise ValueError(f"old_pred: class id {k - 1} is out of range for "
                             f"{self.num_classes} classes")
        table = self._grow(k)
        size = len(table)
        codes = np.multiply(old, size, dtype=np.intp)
        codes += new
        add_codes(table.reshape(-1), codes)

    def merge(self, other: ChurnCounter) -> ChurnCounter:
        """Add another counter's counts into this one; returns self."""
        if not isinstance(other, ChurnCounter):
            raise TypeError(f"other: expected a ChurnCounter, got {type(other).__name__}")
        if other._table is not None:
            table = self._grow(len(other._table))
            table[:len(other._table), :len(other._table)] += other._table
        return self

    def reset(self) -> None:
        """Forget all counts."""
        self._table = None

    @property
    def table(self) -> Optional[np.ndarray]:
        """``table[o, p]``: samples the old model put in class ``o`` and the new one in ``p``."""
        return self._table

    def compute(self) -> ChurnReport:
        """The :class:`ChurnReport` of everything counted so far."""
        if self._table is None:
            raise ValueError("ChurnCounter: no samples; call update() with data first")
        if self.class_names is not None and len(self._table) < len(self.class_names):
            self._grow(len(self.class_names))
        return churn_from_table(self._table, class_names=self.class_names)


def churn_from_table(table: np.ndarray, *,
                     class_names: Optional[Sequence[str]] = None) -> ChurnReport:
    """Reduce an old x new prediction table (see :attr:`ChurnCounter.table`) to a report.

    Example:
        >>> churn_from_table(np.array([[3, 1], [0, 4]])).churn
        0.125
    """
    n = int(table.sum())
    if n == 0:
        raise ValueError("table: no samples were counted")
    same = int(np.trace(table))
    confusion = np.array(table, dtype=np.int64)
    np.fill_diagonal(confusion, 0)
    names = None if class_names is None else tuple(str(c) for c in class_names)
    return ChurnReport(n, n - same, (n - same) / n, wilson_interval(n - same, n), confusion, names)


def churn_report(old_pred: Any, new_pred: Any, *,
                 class_names: Optional[Sequence[str]] = None) -> ChurnReport:
    """Share of predictions an update changes, with its interval and the change confusion.

    Args:
        old_pred: old model's class ids or names (1-D) or scores (2-D).
        new_pred: new model's class ids or names (1-D) or scores (2-D).
        class_names: the name of each class id (fixes the order of names; default sorted).

    Returns:
        A :class:`ChurnReport`.

    Example:
        >>> report = churn_report(["cat", "dog", "dog"], ["cat", "cat", "dog"])
        >>> report.changed, report.class_names, report.change_confusion.tolist()
        (1, ('cat', 'dog'), [[0, 0], [1, 0]])
    """
    old, new, _, names = encode_flip_inputs(old_pred, new_pred, np.asarray(old_pred)[:0],
                                            class_names)
    counter = ChurnCounter(class_names=names)
    counter.update(old, new)
    return counter.compute()
