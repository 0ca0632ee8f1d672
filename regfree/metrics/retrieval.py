"""Retrieval metrics from ranked neighbour labels: top-k accuracy and mean average precision.

Pure numpy. A search result is described by the class labels of the ranked neighbours of each
query, ``neighbour_labels`` of shape ``(n_queries, L)``, best first; ``-1`` marks a missing
neighbour (the gallery held fewer than ``L`` items). Labels are non-negative integers. A
neighbour is relevant when its label is the query's.

Ties. With ``neighbour_scores`` (the similarities or distances of the ranked neighbours), items
with equal scores form one tied block, and no result depends on how the search ordered a block:

- average precision follows scikit-learn's ``average_precision_score``: a tied block is one
  threshold step, so every relevant item of a block counts with the precision at the block's end
  (``hits up to the block's end / items up to the block's end``);
- top-k accuracy counts a query by its expected hit under a random order of the tied items: when
  the first ``k`` positions cut a block of ``b`` items holding ``h`` relevant ones and take ``s``
  of them, a query with no hit before the block scores ``1 - C(b - h, s) / C(b, s)``;
- a block that the AP cut-off ``K`` cuts contributes its expected share of hits, ``h * s / b``,
  at the precision of position ``K``.

Scores within ``tie_tolerance`` times the largest ``|score|`` of the query's list are tied (with a
chain rule: each item compared with the one before it); the default absorbs the last-bit
differences of float32 search scores of identical items. Without scores, every position is its
own block (the order given is the ranking).

AP of one query, cut at ``K`` positions (``map_k``; default: the whole list), divided by

- ``ap_denominator="relevant"`` (default): ``min(R, K)``, where ``R`` is the number of gallery items
  sharing the query's label (``num_relevant``). With ``K`` covering the gallery this is the usual
  full-ranking AP (scikit-learn's); with a shorter list it is AP@K as in most retrieval papers.
  Without ``num_relevant``, ``R`` is taken as the hits in the first ``K``;
- ``ap_denominator="hits"``: the relevant items found in the first ``K`` (torchmetrics'
  ``RetrievalMAP(top_k=K)``), which does not penalise relevant items ranked after ``K``.

A query with a zero denominator has AP 0; mAP is the mean AP over queries.

The one-shot :func:`retrieval_scores` and the streaming :class:`RetrievalScores` share one
update step (batch -> sums) and one reduce step (sums -> numbers), so they agree exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from regfree.metrics.inputs import as_numpy

__all__ = ["AP_DENOMINATORS", "DEFAULT_KS", "TIE_TOLERANCE", "RetrievalScores",
           "retrieval_scores", "tied_to_previous"]

DEFAULT_KS = (1, 5, 10)
AP_DENOMINATORS = ("relevant", "hits")
TIE_TOLERANCE = 1e-6


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks!r}")
    return tuple(int(k) for k in ks)


def _check_options(map_k: Optional[int], ap_denominator: str, tie_tolerance: float) -> None:
    if map_k is not None and (isinstance(map_k, bool) or int(map_k) != map_k or map_k < 1):
        raise ValueError(f"map_k must be a positive integer or None, got {map_k!r}")
    if ap_denominator not in AP_DENOMINATORS:
        raise ValueError(f"ap_denominator must be one of {AP_DENOMINATORS}, got {ap_denominator!r}")
    if not (isinstance(tie_tolerance, (int, float)) and 0.0 <= tie_tolerance < 1.0):
        raise ValueError(f"tie_tolerance must be a number in [0, 1), got {tie_tolerance!r}")


def tied_to_previous(neighbour_scores: np.ndarray, neighbour_labels: np.ndarray,
                     tie_tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """``(n, L)`` bool: True where a neighbour's score ties with the previous neighbour's.

    Two neighbours tie when their scores differ by at most ``tie_tolerance`` times the largest
    ``|score|`` of the row. Column 0 is always False; missing neighbours (label ``-1``) never tie.

    Example:
        >>> tied_to_previous(np.array([[0.9, 0.9, 0.5]]), np.array([[0, 1, 1]])).tolist()
        [[False, True, False]]
    """
    scores = np.asarray(neighbour_scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    valid = neighbour_labels >= 0
    magnitude = np.abs(scores)
    scale = np.max(np.where(valid & np.isfinite(magnitude), magnitude, 0), axis=1, initial=0)
    tied = np.zeros(scores.shape, dtype=bool)
    with np.errstate(invalid="ignore"):  # inf - inf (missing neighbours) is never a tie
        tied[:, 1:] = np.abs(np.diff(scores, axis=1)) <= (tie_tolerance * scale)[:, None]
    tied[:, 1:] &= valid[:, 1:] & valid[:, :-1]
    return tied


def _block_at(new_block: np.ndarray, cut: int) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) of the tied block holding position ``cut - 1``;
    ``new_block[:, p]`` is True where position ``p`` starts a block (always at 0)."""
    length = new_block.shape[1]
    start = cut - 1 - np.argmax(new_block[:, cut - 1::-1], axis=1)
    tail = new_block[:, cut:]
    if tail.shape[1] == 0:
        return start, np.full(new_block.shape[0], length)
    return start, np.where(tail.any(axis=1), cut + np.argmax(tail, axis=1), length)


def _split_block(cumulative: np.ndarray, new_block: np.ndarray, cut: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the block holding position ``cut - 1``: (hits before it, its hits, its size, the
    number of its items inside the first ``cut``)."""
    rows = np.arange(cumulative.shape[0])
    start, end = _block_at(new_block, cut)
    before = np.where(start > 0, cumulative[rows, np.maximum(start - 1, 0)], 0.0)
    block_hits = cumulative[rows, end - 1] - before
    return before, block_hits, (end - start).astype(np.float64), (cut - start).astype(np.float64)


def _top_k_hits(cumulative: np.ndarray, new_block: np.ndarray, cut: int) -> float:
    before, block_hits, size, taken = _split_block(cumulative, new_block, cut)
    hit = (before + block_hits > 0).astype(np.float64)
    partial = np.flatnonzero((before == 0) & (block_hits > 0) & (taken < size))
    for row in partial:  # rare: the k-th position cuts a tied block holding a hit
        b, h, s = int(size[row]), int(block_hits[row]), int(taken[row])
        hit[row] = 1.0 - math.comb(b - h, s) / math.comb(b, s)
    return float(hit.sum())


def _precision_sum(relevant: np.ndarray, cumulative: np.ndarray, new_block: np.ndarray,
                   cut: int) -> np.ndarray:
    """Sum of precision at the hits of every tied block that ends within the first ``cut``
    positions, each block one threshold step (scikit-learn's rule); a block the cut splits is
    left to the caller."""
    n, length = new_block.shape
    block_end = np.empty((n, cut), dtype=bool)
    block_end[:, :-1] = new_block[:, 1:cut]
    block_end[:, -1] = new_block[:, cut] if cut < length else True
    relevant, cumulative, starts = relevant[:, :cut], cumulative[:, :cut], new_block[:, :cut]
    positions = np.arange(1, cut + 1, dtype=np.float64)
    if starts.all():  # every item its own block: the precision at each hit
        return np.where(relevant & block_end, cumulative / positions, 0.0).sum(axis=1)
    # hits before each position's block (cumulative never decreases, so a running max works)
    before = np.maximum.accumulate(np.where(starts, cumulative - relevant, 0.0), axis=1)
    return np.where(block_end, (cumulative - before) * cumulative / positions, 0.0).sum(axis=1)


def _update(query_labels: Any, neighbour_labels: Any, ks: tuple[int, ...],
            num_relevant: Any = None, neighbour_scores: Any = None, map_k: Optional[int] = None,
            ap_denominator: str = "relevant",
            tie_tolerance: float = TIE_TOLERANCE) -> tuple[int, np.ndarray, float]:
    """Turn one batch into sufficient statistics: (queries, hits per k, sum of AP)."""
    labels = as_numpy(query_labels)
    ranked = as_numpy(neighbour_labels)
    if labels.ndim != 1:
        raise ValueError(f"query_labels must be 1-D, got shape {labels.shape}")
    if ranked.ndim != 2 or ranked.shape[0] != labels.shape[0]:
        raise ValueError(
            f"neighbour_labels must have shape (n_queries={labels.shape[0]}, L), got {ranked.shape}")
    if ranked.shape[1] == 0:
        raise ValueError("neighbour_labels must have at least one column")
    if labels.size and labels.min() < 0:
        raise ValueError("query_labels must be non-negative integers (-1 marks missing neighbours)")
    n, length = ranked.shape
    relevant = ranked == labels[:, None]
    if neighbour_scores is None:
        new_block = np.ones(ranked.shape, dtype=bool)
    else:
        scores = as_numpy(neighbour_scores)
        if scores.shape != ranked.shape:
            raise ValueError(f"neighbour_scores must have the shape of neighbour_labels "
                             f"{ranked.shape}, got {scores.shape}")
        new_block = ~tied_to_previous(scores, ranked, tie_tolerance)
    cumulative = np.cumsum(relevant, axis=1, dtype=np.float64)
    cut = length if map_k is None else min(int(map_k), length)
    precision_sum = _precision_sum(relevant, cumulative, new_block, cut)
    # a block the cut splits adds its expected hits at the precision of the cut
    before, cut_hits, size, taken = _split_block(cumulative, new_block, cut)
    split = taken < size
    expected = np.where(split, cut_hits * taken / size, 0.0)
    precision_sum += np.where(split, expected * (before + expected) / cut, 0.0)
    denominator = np.where(split, before + expected, before + cut_hits)  # hits in the cut
    if num_relevant is not None:
        total = _check_num_relevant(num_relevant, labels, cumulative)
        if ap_denominator == "relevant":
            denominator = np.minimum(total, cut)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(denominator > 0, precision_sum / denominator, 0.0)
    hits = np.array([_top_k_hits(cumulative, new_block, min(k, length)) for k in ks],
                    dtype=np.float64)
    return n, hits, float(ap.sum())


def _check_num_relevant(num_relevant: Any, labels: np.ndarray,
                        cumulative: np.ndarray) -> np.ndarray:
    total = as_numpy(num_relevant).astype(np.int64)
    if total.shape != labels.shape:
        raise ValueError(f"num_relevant must have shape {labels.shape}, got {total.shape}")
    if np.any(total < cumulative[:, -1]):
        raise ValueError("num_relevant is smaller than the hits found in neighbour_labels")
    return total.astype(np.float64)


def _reduce(n_queries: int, hits: np.ndarray, ap_sum: float, ks: tuple[int, ...]) -> dict[str, float]:
    if n_queries == 0:
        raise ValueError("no queries: retrieval scores need at least one query")
    scores = {f"top{k}": float(h) / n_queries for k, h in zip(ks, hits)}
    scores["mAP"] = ap_sum / n_queries
    return scores


def retrieval_scores(query_labels: Any, neighbour_labels: Any, ks: Sequence[int] = DEFAULT_KS,
                     num_relevant: Any = None, *, neighbour_scores: Any = None,
                     map_k: Optional[int] = None, ap_denominator: str = "relevant",
                     tie_tolerance: float = TIE_TOLERANCE) -> dict[str, float]:
    """Top-k accuracy and mAP of ranked search results (conventions in the module docstring).

    Args:
        query_labels: ``(n_queries,)`` non-negative class ids of the queries.
        neighbour_labels: ``(n_queries, L)`` class ids of each query's ranked neighbours, best
            first; ``-1`` marks a missing neighbour.
        ks: the cut-offs for top-k accuracy (a ``k`` larger than ``L`` counts the whole list).
        num_relevant: optional ``(n_queries,)`` number of gallery items with the query's label.
        neighbour_scores: optional ``(n_queries, L)`` scores of the neighbours; equal scores are
            tied and scored as one block.
        map_k: AP@K cut-off ``K`` (``None``: the whole list).
        ap_denominator: ``"relevant"`` (``min(num_relevant, K)``) or ``"hits"`` (the relevant
            items found in the first ``K``).
        tie_tolerance: relative score difference below which neighbours are tied.

    Returns:
        ``{"top1": ..., "top5": ..., "top10": ..., "mAP": ...}`` (one ``top{k}`` per k), floats
        in [0, 1].

    Example:
        >>> retrieval_scores([0, 1], [[0, 1], [0, 1]], ks=(1, 2))
        {'top1': 0.5, 'top2': 1.0, 'mAP': 0.75}
        >>> retrieval_scores([1], [[0, 1]], ks=(1,), neighbour_scores=[[0.9, 0.9]])  # a tie
        {'top1': 0.5, 'mAP': 0.5}
    """
    ks = _check_ks(ks)
    _check_options(map_k, ap_denominator, tie_tolerance)
    return _reduce(*_update(query_labels, neighbour_labels, ks, num_relevant, neighbour_scores,
                            map_k, ap_denominator, tie_tolerance), ks)


class RetrievalScores:
    """Streaming form of :func:`retrieval_scores`: :meth:`update` per batch of queries,
    :meth:`merge` accumulators of other workers, :meth:`compute` the scores at the end.

    Args:
        ks, map_k, ap_denominator, tie_tolerance: as in :func:`retrieval_scores`.

    Example:
        >>> acc = RetrievalScores(ks=(1,))
        >>> acc.update([0], [[0, 1]])
        >>> acc.update([1], [[0, 1]])
        >>> acc.compute()
        {'top1': 0.5, 'mAP': 0.75}
    """

    def __init__(self, ks: Sequence[int] = DEFAULT_KS, *, map_k: Optional[int] = None,
                 ap_denominator: str = "relevant",
                 tie_tolerance: float = TIE_TOLERANCE) -> None:
        self.ks = _check_ks(ks)
        _check_options(map_k, ap_denominator, tie_tolerance)
        self.options = {"map_k": map_k, "ap_denominator": ap_denominator,
                        "tie_tolerance": tie_tolerance}
        self.reset()

    def update(self, query_labels: Any, neighbour_labels: Any, num_relevant: Any = None, *,
               neighbour_scores: Any = None) -> None:
        """Add one batch of queries (same arguments as :func:`retrieval_scores`)."""
        n, hits, ap_sum = _update(query_labels, neighbour_labels, self.ks, num_relevant,
                                  neighbour_scores, **self.options)
        self.n_queries += n
        self.hits += hits
        self.ap_sum += ap_sum

    def merge(self, other: RetrievalScores) -> RetrievalScores:
        """Add another accumulator's statistics (e.g. from another worker) into this one, in
        place; returns self."""
        if other.ks != self.ks or other.options != self.options:
            raise ValueError(f"other has ks={other.ks}, {other.options}; expected ks={self.ks}, "
                             f"{self.options}")
        self.n_queries += other.n_queries
        self.hits += other.hits
        self.ap_sum += other.ap_sum
        return self

    def reset(self) -> None:
        """Forget every query seen so far."""
        self.n_queries = 0
        self.hits = np.zeros(len(self.ks), dtype=np.float64)
        self.ap_sum = 0.0

    def compute(self) -> dict[str, float]:
        """The scores over every query seen so far."""
        return _reduce(self.n_queries, self.hits, self.ap_sum, self.ks)
