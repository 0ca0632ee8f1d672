"""Positive-congruent training: train v2 to keep v1's correct predictions.

The trainer lives in :mod:`regfree.training` (shared with backward-compatible training) and is
re-exported here.
"""

from regfree.training import History, IndexedDataset, NFRRiseWarning, fit

__all__ = ["History", "IndexedDataset", "NFRRiseWarning", "fit"]
