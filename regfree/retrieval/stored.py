"""Read the vectors a gallery's FAISS index stores, with their ids (for re-expressing them).

flat and hnsw galleries wrap their index in ``IndexIDMap2``: the vectors come from the inner
index in insertion order and the ids from the id map (stale hnsw nodes, labelled ``-1``, are
skipped). ivf galleries (``IndexIVFFlat``) store raw float32 vectors in their inverted lists,
read list by list. Either way the result is sorted by id, the gallery's own order.

Example:
    >>> import numpy as np
    >>> from regfree.retrieval.index_types import INDEX_TYPES, faiss_metric
    >>> index = INDEX_TYPES["flat"].build(2, faiss_metric("l2"), {})
    >>> index.add_with_ids(np.array([[1, 2], [3, 4]], dtype="float32"), np.array([9, 4]))
    >>> ids, vectors = stored_vectors(index)
    >>> ids.tolist(), vectors.tolist()
    ([4, 9], [[3.0, 4.0], [1.0, 2.0]])
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from regfree.retrieval.stale import STALE


def stored_vectors(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, vectors)`` of every live item in ``index``, sorted by id (copies)."""
    if hasattr(index, "id_map"):
        labels = faiss.vector_to_array(index.id_map)
        vectors = index.index.reconstruct_n(0, labels.size) if labels.size else \
            np.empty((0, index.d), dtype=np.float32)
        live = labels != STALE
        labels, vectors = labels[live], vectors[live]
    else:
        labels, vectors = _ivf_flat_vectors(index)
    order = np.argsort(labels, kind="stable")
    return labels[order].astype(np.int64), np.ascontiguousarray(vectors[order], dtype=np.float32)


def _ivf_flat_vectors(index: Any) -> tuple[np.ndarray, np.ndarray]:
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    if not isinstance(ivf, faiss.IndexIVFFlat):
        raise TypeError(f"cannot read vectors back from a {type(ivf).__name__}")
    lists = ivf.invlists
    ids, vectors = [np.empty(0, dtype=np.int64)], [np.empty((0, ivf.d), dtype=np.float32)]
    for list_no in range(ivf.nlist):
        n = lists.list_size(list_no)
        if n == 0:
            continue
        ids.append(faiss.rev_swig_ptr(lists.get_ids(list_no), n).copy())
        codes = faiss.rev_swig_ptr(lists.get_codes(list_no), n * lists.code_size).copy()
        vectors.append(codes.view(np.float32).reshape(n, ivf.d))
    return np.concatenate(ids), np.concatenate(vectors)
