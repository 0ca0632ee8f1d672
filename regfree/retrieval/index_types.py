"""The FAISS index types a :class:`~regfree.retrieval.Gallery` can use, as data.

Each type is one :class:`IndexType` entry in :data:`INDEX_TYPES`: how its FAISS index is built,
whether it needs training before the first add, whether FAISS removes vectors from it natively,
whether FAISS can search it on a GPU, and how to search it with an id filter. The gallery and its
callers ask the entry (``gallery.needs_training``) instead of testing a type's name, so adding a
type is one new entry here.

The FAISS labels are the caller's 64-bit ids: every index is built either with ids stored natively
(ivf) or wrapped in ``IndexIDMap2`` (flat, hnsw).

Example:
    >>> INDEX_TYPES["ivf"].needs_training, INDEX_TYPES["hnsw"].removes_natively
    (True, False)
    >>> index = INDEX_TYPES["flat"].build(4, faiss_metric("cosine"), {})
    >>> type(index).__name__, index.d
    ('IndexIDMap2', 4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import faiss

SIMILARITIES = ("cosine", "l2")


def faiss_metric(similarity: str) -> int:
    """The FAISS metric for a similarity: cosine is an inner product of normalised vectors."""
    return faiss.METRIC_INNER_PRODUCT if similarity == "cosine" else faiss.METRIC_L2


@dataclass(frozen=True)
class IndexType:
    """One kind of FAISS index and what it can do.

    Args:
        name: the ``index_type=`` string.
        summary: one line for the docs and ``repr``.
        build: ``(dim, faiss_metric, params) -> index``, an empty index labelled by caller ids;
            ``params`` holds the Gallery's tuning keywords (``nlist``, ``hnsw_m``, ...).
        needs_training: ``index.train`` must run on a sample before the first ``add``.
        removes_natively: ``index.remove_ids`` works; otherwise the gallery marks removed items
            stale and filters them out at search time (see ``regfree.retrieval.stale``).
        runs_on_gpu: ``faiss.index_cpu_to_gpu`` supports it.
        filtered_search: ``(index, widen) -> faiss.SearchParameters`` for a search with an id
            selector: the index's current search effort (``efSearch``, ``nprobe``) times
            ``widen`` (>= 1, nodes per live item) where skipped nodes would otherwise use up
            the effort meant for live ones.
    """

    name: str
    summary: str
    build: Callable[[int, int, Mapping[str, int]], Any]
    needs_training: bool
    removes_natively: bool
    runs_on_gpu: bool
    filtered_search: Callable[[Any, float], Any]


def _build_flat(dim: int, metric: int, params: Mapping[str, int]) -> Any:
    return faiss.IndexIDMap2(faiss.IndexFlat(dim, metric))


def _build_hnsw(dim: int, metric: int, params: Mapping[str, int]) -> Any:
    graph = faiss.IndexHNSWFlat(dim, params["hnsw_m"], metric)
    graph.hnsw.efConstruction = params["ef_construction"]
    graph.hnsw.efSearch = params["ef_search"]
    return faiss.IndexIDMap2(graph)


def _build_ivf(dim: int, metric: int, params: Mapping[str, int]) -> Any:
    quantizer = faiss.IndexFlat(dim, metric)
    ivf = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], metric)
    ivf.nprobe = params["nprobe"]
    return ivf


def _hnsw_search_params(index: Any, widen: float) -> Any:
    # FAISS's filtered HNSW search keeps skipped nodes in its efSearch-long candidate list, so a
    # graph with stale nodes needs a longer list to examine as many live items as a fresh one
    graph = faiss.downcast_index(index.index)
    return faiss.SearchParametersHNSW(efSearch=math.ceil(graph.hnsw.efSearch * widen))


def _ivf_search_params(index: Any, widen: float) -> Any:
    return faiss.SearchParametersIVF(nprobe=index.nprobe)  # skipped ids cost no list visits


INDEX_TYPES: dict[str, IndexType] = {
    entry.name: entry for entry in (
        IndexType("flat", "exact search", _build_flat, needs_training=False,
                  removes_natively=True, runs_on_gpu=True,
                  filtered_search=lambda index, widen: faiss.SearchParameters()),
        IndexType("hnsw", "graph (approximate); removed items stay as stale nodes until compacted",
                  _build_hnsw, needs_training=False, removes_natively=False, runs_on_gpu=False,
                  filtered_search=_hnsw_search_params),
        IndexType("ivf", "inverted lists (approximate); needs train() before add()", _build_ivf,
                  needs_training=True, removes_natively=True, runs_on_gpu=True,
                  filtered_search=_ivf_search_params),
    )
}


def lookup_index_type(name: Any) -> IndexType:
    """The entry for ``name``, or a ValueError listing the known types."""
    if name not in INDEX_TYPES:
        raise ValueError(f"index_type must be one of {tuple(INDEX_TYPES)}, got {name!r}")
    return INDEX_TYPES[name]
