"""Removing items from a FAISS index that cannot remove vectors (hnsw), without a rebuild per call.

FAISS's HNSW graph cannot delete a node, and rebuilding the graph costs a whole build. So for an
index type whose entry says ``removes_natively=False`` the gallery:

- marks a removed item's label :data:`STALE` in the ``IndexIDMap2`` id map (:func:`mark_stale`);
  the node stays in the graph and still routes searches, but is never returned;
- adds a replacement vector as a new node (FAISS inserts into an existing graph at the cost of
  one search per vector);
- searches with an id selector that skips stale labels (:func:`search_live`);
- rebuilds the index from the live vectors (:func:`rebuild_live`) when stale nodes pile up.

Example:
    >>> import numpy as np
    >>> from regfree.retrieval.index_types import INDEX_TYPES, faiss_metric
    >>> hnsw = INDEX_TYPES["hnsw"]
    >>> index = hnsw.build(2, faiss_metric("l2"), {"hnsw_m": 8, "ef_construction": 40,
    ...                                             "ef_search": 16})
    >>> index.add_with_ids(np.array([[0, 0], [5, 5]], dtype="float32"), np.array([7, 8]))
    >>> mark_stale(index, np.array([7]))
    >>> search_live(index, np.zeros((1, 2), dtype="float32"), 2, hnsw, live=1)[1].tolist()
    [[8, -1]]
"""

from __future__ import annotations

from typing import Any, Callable

import faiss
import numpy as np

from regfree.retrieval.index_types import IndexType

STALE = -1  # FAISS's own "no result" label; caller ids are non-negative


def mark_stale(index: Any, ids: np.ndarray) -> None:
    """Mark the nodes labelled ``ids`` (all present, live) in an ``IndexIDMap2`` stale."""
    labels = faiss.vector_to_array(index.id_map)
    hit = np.isin(labels, ids)
    if int(hit.sum()) != ids.size:  # the gallery's metadata said they were there
        raise RuntimeError(f"FAISS holds {int(hit.sum())} of {ids.size} ids; gallery is "
                           "inconsistent")
    labels[hit] = STALE
    faiss.copy_array_to_vector(labels, index.id_map)
    index.construct_rev_map()  # so index.reconstruct(id) never returns a removed vector


def search_live(index: Any, queries: np.ndarray, k: int, kind: IndexType,
                live: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` that skips stale nodes; ``live`` items of ``index.ntotal`` are live, and
    the search effort is widened by ``ntotal / live`` (see ``IndexType.filtered_search``)."""
    negative = faiss.IDSelectorRange(np.iinfo(np.int64).min, 0)  # [min, 0): stale labels
    selector = faiss.IDSelectorNot(negative)
    params = kind.filtered_search(index, index.ntotal / max(live, 1))
    params.sel = selector
    return index.search(queries, k, params=params)


def rebuild_live(index: Any, build: Callable[[], Any]) -> Any:
    """A fresh index (from ``build()``) holding only the live nodes of ``index``, in their order."""
    labels = faiss.vector_to_array(index.id_map)
    live = labels != STALE
    fresh = build()
    if live.any():
        vectors = index.index.reconstruct_n(0, labels.size)[live]
        fresh.add_with_ids(np.ascontiguousarray(vectors), labels[live])
    return fresh
