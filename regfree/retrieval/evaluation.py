"""Retrieval quality of a gallery: top-k accuracy and mAP of labelled queries.

The numbers come from :mod:`regfree.metrics.retrieval` (numpy only, with its conventions for
ties and AP@K); this module runs the searches and turns the returned ids into ranked labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from regfree.metrics.retrieval import (
    DEFAULT_KS,
    TIE_TOLERANCE,
    RetrievalScores,
    tied_to_previous,
)
from regfree.retrieval._checks import as_ids, as_matrix, as_numpy, check_positive_int
from regfree.retrieval.gallery import Gallery

_QUERY_CHUNK = 1024


class LabelLookup:
    """Maps gallery ids to class labels. ``labels`` is either a mapping ``{id: label}`` or an
    array indexed by id (``labels[id]``, the usual case of ids ``0..n-1``)."""

    def __init__(self, labels: Any) -> None:
        if isinstance(labels, Mapping):
            keys = np.fromiter(labels.keys(), dtype=np.int64, count=len(labels))
            values = np.fromiter(labels.values(), dtype=np.int64, count=len(labels))
            order = np.argsort(keys)
            self._keys, self._values = keys[order], values[order]
            self._by_position = None
        else:
            array = as_numpy(labels)
            if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
                raise ValueError("gallery_labels must be a 1-D integer array indexed by id, or a "
                                 f"mapping {{id: label}}; got shape {array.shape}, dtype {array.dtype}")
            self._by_position = array.astype(np.int64)
        values = self._values if self._by_position is None else self._by_position
        if values.size and values.min() < 0:
            raise ValueError("gallery_labels must be non-negative class ids")

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """Labels of ``ids``; ``-1`` ids (missing results) give label ``-1``."""
        out = np.full(ids.shape, -1, dtype=np.int64)
        valid = ids >= 0
        wanted = ids[valid]
        if self._by_position is not None:
            if wanted.size and wanted.max() >= self._by_position.size:
                raise ValueError(f"gallery_labels has {self._by_position.size} entries but the "
                                 f"gallery holds id {int(wanted.max())}")
            out[valid] = self._by_position[wanted]
            return out
        positions = np.searchsorted(self._keys, wanted)
        positions = np.minimum(positions, max(self._keys.size - 1, 0))
        if self._keys.size == 0 or np.any(self._keys[positions] != wanted):
            raise ValueError("gallery_labels has no label for some gallery ids")
        out[valid] = self._values[positions]
        return out


def evaluate(query_embeddings: Any, query_labels: Any, gallery: Gallery, gallery_labels: Any,
             *, ks: Sequence[int] = DEFAULT_KS, map_k: Optional[int] = None,
             query_ids: Any = None, ap_denominator: str = "relevant") -> dict[str, float]:
    """Top-k accuracy and mAP of searching ``gallery`` with labelled queries.

    A query counts as a top-k hit when any of its ``k`` nearest gallery items has the query's
    label. mAP ranks the whole gallery (``map_k=None``) or its first ``map_k`` items (AP@K,
    divided by ``min(relevant items, map_k)``, or with ``ap_denominator="hits"`` by the relevant
    items found in the first ``map_k``). Items with tied scores are scored as one block, so no
    number depends on ids or insertion order: AP as scikit-learn's ``average_precision_score``,
    top-k by the expected hit under a random order of the tied items (the search looks past the
    cut-off until the tied block ends); see :mod:`regfree.metrics.retrieval`.

    Leave-one-out: when the queries are gallery items themselves (queries and gallery are the same
    items, as in most papers' protocols), ``query_ids`` gives each query's own gallery id; that
    item is left out of the query's ranking and of its relevant items, so a query cannot find
    itself. Queries are searched in chunks, so memory stays ``O(1024 * ranking length)``.

    Args:
        query_embeddings: ``(nq, dim)`` embeddings of the queries (any model version).
        query_labels: ``(nq,)`` non-negative class ids.
        gallery: the :class:`Gallery` to search (items of any mix of versions).
        gallery_labels: class id of every gallery item: an array indexed by id, or ``{id: label}``.
        ks: top-k cut-offs.
        map_k: ranking length for mAP; ``None`` ranks the whole gallery.
        query_ids: ``(nq,)`` gallery id of each query's own item, to leave it out; ``None``
            leaves nothing out.
        ap_denominator: ``"relevant"`` or ``"hits"``, as above.

    Returns:
        ``{"top1": ..., "top5": ..., "top10": ..., "mAP": ...}``.

    Example:
        >>> import numpy as np
        >>> g = Gallery(dim=2)
        >>> g.add(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), ids=[0, 1, 2], version="v1")
        >>> evaluate(np.array([[1.0, 0.05]]), [0], g, gallery_labels=[0, 1, 0], ks=(1, 2))
        {'top1': 1.0, 'top2': 1.0, 'mAP': 0.8333333333333333}
        >>> evaluate(np.array([[1.0, 0.0]]), [0], g, [0, 1, 0], ks=(1,), query_ids=[0])
        {'top1': 0.0, 'mAP': 0.5}
    """
    queries = as_matrix(query_embeddings, "query_embeddings", gallery.dim)
    labels = as_numpy(query_labels)
    if labels.shape != (queries.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"query_labels must be {queries.shape[0]} integer class ids, got shape "
                         f"{labels.shape}, dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if len(gallery) == 0:
        raise ValueError("gallery is empty: nothing to evaluate")
    lookup = LabelLookup(gallery_labels)
    classes, counts = np.unique(lookup(gallery.ids()), return_counts=True)
    accumulator = RetrievalScores(ks, map_k=map_k, ap_denominator=ap_denominator)
    own = None if query_ids is None else _own_items(query_ids, queries.shape[0], gallery)
    ranked = len(gallery) - (own is not None)
    if ranked == 0:
        raise ValueError("leave-one-out needs a gallery of at least two items")
    need = ranked if map_k is None else min(check_positive_int(map_k, "map_k"), ranked)
    need = max(need, max(accumulator.ks))
    for start in range(0, queries.shape[0], _QUERY_CHUNK):
        chunk = slice(start, start + _QUERY_CHUNK)
        chunk_own = None if own is None else own[chunk]
        scores, ids = _search_past_ties(gallery, queries[chunk], need, chunk_own)
        chunk_labels = labels[chunk]
        slot = np.searchsorted(classes, chunk_labels).clip(0, max(classes.size - 1, 0))
        relevant = np.where(classes[slot] == chunk_labels, counts[slot], 0)
        if chunk_own is not None:  # the query's own item is not among its relevant items
            relevant = relevant - (lookup(chunk_own) == chunk_labels)
        accumulator.update(chunk_labels, lookup(ids), num_relevant=relevant,
                           neighbour_scores=scores)
    return accumulator.compute()


def _own_items(query_ids: Any, n_queries: int, gallery: Gallery) -> np.ndarray:
    ids = as_ids(query_ids, "query_ids", n_queries)
    absent = ~np.isin(ids, gallery.ids())
    if absent.any():
        raise ValueError(f"query_ids must be ids of gallery items (the queries' own items); "
                         f"{int(absent.sum())} are not in the gallery, e.g. {int(ids[absent][0])}")
    return ids


def _search_past_ties(gallery: Gallery, queries: np.ndarray, need: int,
                      own: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The ranked ``(scores, ids)`` of each query, at least ``need`` long, with the tied block
    at position ``need`` complete (searched deeper until it ends); ``own`` ids are left out.
    Rows shorter than the longest are padded with id ``-1`` and score NaN."""
    total = len(gallery)
    extra = 0 if own is None else 1
    depth = min(need + 1 + extra, max(total, need + extra))
    scores, ids = _search_without_own(gallery, queries, depth, own)
    while depth < total:
        open_rows = _tie_runs_past(scores, ids, need)
        if not open_rows.any():
            break
        depth = min(2 * depth, total)
        more_scores, more_ids = _search_without_own(
            gallery, queries[open_rows], depth, None if own is None else own[open_rows])
        width = more_ids.shape[1]
        scores = np.pad(scores, ((0, 0), (0, width - scores.shape[1])), constant_values=np.nan)
        ids = np.pad(ids, ((0, 0), (0, width - ids.shape[1])), constant_values=-1)
        scores[open_rows], ids[open_rows] = more_scores, more_ids
    return scores, ids


def _search_without_own(gallery: Gallery, queries: np.ndarray, depth: int,
                        own: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    scores, ids = gallery.search(queries, depth)
    if own is None:
        return scores, ids
    # drop the query's own item, or the last column where it ranked beyond the list
    keep = ids != own[:, None]
    keep[keep.all(axis=1), -1] = False
    width = depth - 1
    return scores[keep].reshape(-1, width), ids[keep].reshape(-1, width)


def _tie_runs_past(scores: np.ndarray, ids: np.ndarray, need: int) -> np.ndarray:
    """Rows whose tied block at position ``need - 1`` runs to the end of the retrieved list."""
    tied = tied_to_previous(scores, ids, TIE_TOLERANCE)
    return tied[:, need:].all(axis=1)


