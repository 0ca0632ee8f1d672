"""Retrieval metrics from ranked neighbour labels: top-k accuracy and mean average precision.

Pure numpy. A search result is described by the class labels of the ranked neighbours of each
query, ``neighbour_labels`` of shape ``(n_queries, K)``; ``-1`` marks a missing neighbour (the
gallery held fewer than ``K`` items). Labels are non-negative integers.

- top-k accuracy: share of queries with at least one neighbour of the query's label among the
  first ``k``.
- average precision of one query: ``sum_i precision@i * rel_i / min(R, K)`` over the ranked list,
  where ``R`` is the number of gallery items sharing the query's label (``num_relevant``). With
  ``K`` = gallery size this is the usual full-ranking AP; with a shorter list it is AP@K. Without
  ``num_relevant``, ``R`` is taken as the number of hits in the list. A query with ``R = 0`` has AP 0.
- mAP: the mean AP over queries.

The one-shot :func:`retrieval_scores` and the streaming :class:`RetrievalScores` share one
update step (batch -> sums) and one reduce step (sums -> numbers), so they agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from regfree.metrics.inputs import as_numpy

__all__ = ["RetrievalScores", "retrieval_scores"]


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks!r}")
    return tuple(int(k) for k in ks)


def _update(query_labels: Any, neighbour_labels: Any, ks: tuple[int, ...],
            num_relevant: Any = None) -> tuple[int, np.ndarray, float]:
    """Turn one batch into sufficient statistics: (queries, hits per k, sum of AP)."""
    labels = as_numpy(query_labels)
    ranked = as_numpy(neighbour_labels)
    if labels.ndim != 1:
        raise ValueError(f"query_labels must be 1-D, got shape {labels.shape}")
    if ranked.ndim != 2 or ranked.shape[0] != labels.shape[0]:
        raise ValueError(
            f"neighbour_labels must have shape (n_queries={labels.shape[0]}, K), got {ranked.shape}")
    if ranked.shape[1] == 0:
        raise ValueError("neighbour_labels must have at least one column")
    if labels.size and labels.min() < 0:
        raise ValueError("query_labels must be non-negative integers (-1 marks missing neighbours)")
    relevant = ranked == labels[:, None]
    hits_per_query = relevant.sum(axis=1)
    if num_relevant is None:
        denominator = hits_per_query.astype(np.float64)
    else:
        total = as_numpy(num_relevant).astype(np.int64)
        if total.shape != labels.shape:
            raise ValueError(f"num_relevant must have shape {labels.shape}, got {total.shape}")
        if np.any(total < hits_per_query):
            raise ValueError("num_relevant is smaller than the hits found in neighbour_labels")
        denominator = np.minimum(total, ranked.shape[1]).astype(np.float64)
    ranks = np.arange(1, ranked.shape[1] + 1, dtype=np.float64)
    precision_at_hits = np.cumsum(relevant, axis=1) / ranks * relevant
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(denominator > 0, precision_at_hits.sum(axis=1) / denominator, 0.0)
    hits = np.array([relevant[:, :k].any(axis=1).sum() for k in ks], dtype=np.int64)
    return labels.shape[0], hits, float(ap.sum())


def _reduce(n_queries: int, hits: np.ndarray, ap_sum: float, ks: tuple[int, ...]) -> dict[str, float]:
    if n_queries == 0:
        raise ValueError("no queries: retrieval scores need at least one query")
    scores = {f"top{k}": float(h) / n_queries for k, h in zip(ks, hits)}
    scores["mAP"] = ap_sum / n_queries
    return scores


def retrieval_scores(query_labels: Any, neighbour_labels: Any, ks: Sequence[int] = (1, 5, 10),
                     num_relevant: Any = None) -> dict[str, float]:
    """Top-k accuracy and mAP of ranked search results.

    Args:
        query_labels: ``(n_queries,)`` non-negative class ids of the queries.
        neighbour_labels: ``(n_queries, K)`` class ids of each query's ranked neighbours, best
            first; ``-1`` marks a missing neighbour.
        ks: the cut-offs for top-k accuracy (a ``k`` larger than ``K`` counts the whole list).
        num_relevant: optional ``(n_queries,)`` number of gallery items with the query's label;
            AP is normalised by ``min(num_relevant, K)``. Without it, by the hits in the list.

    Returns:
        ``{"top1": ..., "top5": ..., "top10": ..., "mAP": ...}`` (one ``top{k}`` per k), floats in [0, 1].

    Example:
        >>> retrieval_scores([0, 1], [[0, 1], [0, 1]], ks=(1, 2))
        {'top1': 0.5, 'top2': 1.0, 'mAP': 0.75}
    """
    ks = _check_ks(ks)
    return _reduce(*_update(query_labels, neighbour_labels, ks, num_relevant), ks)


class RetrievalScores:
    """Streaming form of :func:`retrieval_scores`: update per batch of queries, compute at the end.

    Example:
        >>> acc = RetrievalScores(ks=(1,))
        >>> acc.update([0], [[0, 1]]).update([1], [[0, 1]]).compute()
        {'top1': 0.5, 'mAP': 0.75}
    """

    def __init__(self, ks: Sequence[int] = (1, 5, 10)) -> None:
        self.ks = _check_ks(ks)
        self.n_queries = 0
        self.hits = np.zeros(len(self.ks), dtype=np.int64)
        self.ap_sum = 0.0

    def update(self, query_labels: Any, neighbour_labels: Any,
               num_relevant: Any = None) -> RetrievalScores:
        """Add one batch of queries (same arguments as :func:`retrieval_scores`); returns self."""
        n, hits, ap_sum = _update(query_labels, neighbour_labels, self.ks, num_relevant)
        self.n_queries += n
        self.hits += hits
        self.ap_sum += ap_sum
        return self

    def merge(self, other: RetrievalScores) -> RetrievalScores:
        """Add another accumulator's statistics (e.g. from another worker); returns self."""
        if other.ks != self.ks:
            raise ValueError(f"other has ks={other.ks}, expected {self.ks}")
        self.n_queries += other.n_queries
        self.hits += other.hits
        self.ap_sum += other.ap_sum
        return self

    def compute(self) -> dict[str, float]:
        """The scores over every query seen so far."""
        return _reduce(self.n_queries, self.hits, self.ap_sum, self.ks)
