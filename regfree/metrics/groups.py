"""Flip totals per slice (country, device, ...): is there a segment where the update regresses?"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from regfree.metrics.flips import FlipTotals

_FIELDS = ("n", "old_correct", "new_correct", "both_correct", "same")


class GroupCounter:
    """Per-group counts of samples, old/new/both right and unchanged predictions.

    Groups are integer codes ``0 .. G-1`` (the caller maps slice names to codes); labels are
    optional (without them only ``n`` and ``same`` are counted). Streaming contract:
    ``update -> None``, ``merge -> self``, ``reset -> None``, ``compute``.

    Example:
        >>> counter = GroupCounter()
        >>> counter.update([0, 0, 1], [0, 1, 1], [0, 1, 1], [0, 1, 0])
        >>> counter.compute()[1].nfr
        1.0
    """

    def __init__(self) -> None:
        self._counts: Optional[np.ndarray] = None  # (5, G) int64

    def update(self, groups: Any, y_true: Optional[Any], old_pred: Any, new_pred: Any) -> None:
        """Count one batch of 1-D group codes, labels (or None) and old/new class ids."""
        g = np.asarray(groups, dtype=np.intp)
        if len(g) == 0:
            return
        size = int(g.max()) + 1
        old, new = np.asarray(old_pred), np.asarray(new_pred)
        rows = [np.bincount(g, minlength=size)]
        if y_true is None:
            rows += [np.zeros(size, np.int64)] * 3
        else:
            y = np.asarray(y_true)
            old_ok, new_ok = old == y, new == y
            rows += [np.bincount(g, old_ok, size), np.bincount(g, new_ok, size),
                     np.bincount(g, old_ok & new_ok, size)]
        rows.append(np.bincount(g, old == new, size))
        self._add(np.stack(rows).astype(np.int64))

    def _add(self, counts: np.ndarray) -> None:
        if self._counts is None:
            self._counts = counts.copy()
            return
        width = max(self._counts.shape[1], counts.shape[1])
        if width > self._counts.shape[1]:
            self._counts = np.pad(self._counts, ((0, 0), (0, width - self._counts.shape[1])))
        self._counts[:, :counts.shape[1]] += counts

    def merge(self, other: GroupCounter) -> GroupCounter:
        """Add another counter's counts into this one; returns self."""
        if not isinstance(other, GroupCounter):
            raise TypeError(f"other: expected a GroupCounter, got {type(other).__name__}")
        if other._counts is not None:
            self._add(other._counts)
        return self

    def reset(self) -> None:
        """Forget all counts."""
        self._counts = None

    def compute(self) -> dict[int, FlipTotals]:
        """``{group code: FlipTotals}`` for every group seen (labels absent: zeros)."""
        return {code: FlipTotals(*(int(v) for v in col[:4]))
                for code, col in enumerate(self._counts.T if self._counts is not None else [])
                if col[0] > 0}

    def unchanged(self) -> dict[int, int]:
        """``{group code: samples whose prediction did not change}``."""
        if self._counts is None:
            return {}
        return {code: int(col[4]) for code, col in enumerate(self._counts.T) if col[0] > 0}
