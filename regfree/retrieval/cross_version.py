"""Retrieval across model versions: the matrix of every (query version, gallery version) pair,
and the cross-model table that adds partly re-embedded (mixed) galleries.

``C[i][j]`` is a retrieval score of queries embedded by version ``i`` searching the gallery
embedded by version ``j`` (versions in release order; only ``i >= j`` is filled: a new model
queries galleries built by itself or older ones). Each gallery is an exact (flat)
:class:`Gallery` scored by :func:`evaluate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from regfree.metrics.retrieval import DEFAULT_KS
from regfree.retrieval._checks import as_matrix, as_numpy
from regfree.retrieval.evaluation import evaluate
from regfree.retrieval.gallery import Gallery

_SIMILARITIES = ("cosine", "l2")


@dataclass
class RetrievalMatrix:
    """Retrieval scores of every (query version, gallery version) pair, as
    :func:`retrieval_matrix` returns.

    Attributes:
        versions: version names in release order (oldest first).
        ks: the cut-offs of the top-k accuracies.
        scores: ``{score name: (V, V) array}`` for ``"top<k>"`` and ``"mAP"``; entry ``[i, j]``
            is version-``i`` queries on the version-``j`` gallery (NaN where not computed).
        protocol: how retrieval was done (similarity, sizes, mAP cut-off, leave-one-out).
    """

    versions: list[str]
    ks: tuple[int, ...]
    scores: dict[str, np.ndarray]
    protocol: dict[str, Any] = field(default_factory=dict)

    def matrix(self, metric: str = "top1") -> np.ndarray:
        """The ``(V, V)`` matrix of ``metric``: ``"mAP"`` or ``"top<k>"`` for a k in ``ks``."""
        if metric not in self.scores:
            raise ValueError(f"metric must be one of {list(self.scores)}, got {metric!r}")
        return self.scores[metric]

    def index(self, version: str, argument: str = "version") -> int:
        """Position of ``version`` in :attr:`versions` (ValueError naming ``argument``)."""
        if version not in self.versions:
            raise ValueError(f"{argument} must be one of {self.versions}, got {version!r}")
        return self.versions.index(version)

    def value(self, query: str, gallery: str, metric: str = "top1") -> float:
        """``C[query][gallery]`` for ``metric`` (NaN when the pair was not computed)."""
        return float(self.matrix(metric)[self.index(query, "query"),
                                         self.index(gallery, "gallery")])

    def pairs(self) -> list[tuple[str, str]]:
        """The computed ``(query, gallery)`` pairs, query version by query version."""
        if "mAP" not in self.scores:
            return []
        filled = ~np.isnan(self.scores["mAP"])
        return [(q, g) for i, q in enumerate(self.versions) for j, g in enumerate(self.versions)
                if filled[i, j]]


def _query_plans(query_embeddings: Mapping[str, Any], versions: list[str],
                 n_queries: Optional[int]) -> dict[str, dict[str, np.ndarray]]:
    """``{query version: {gallery version: (nq, dim) array}}`` for every pair to compute."""
    unknown = [v for v in query_embeddings if v not in versions]
    missing = [v for v in versions if v not in query_embeddings]
    if missing or unknown:
        raise ValueError(f"query_embeddings must have one entry per gallery version {versions}; "
                         f"missing {missing}, unknown {unknown}")
    plans: dict[str, dict[str, np.ndarray]] = {}
    for i, name in enumerate(versions):
        spec = query_embeddings[name]
        if isinstance(spec, Mapping):
            wrong = [g for g in spec if g not in versions[:i + 1]]
            if wrong:
                raise ValueError(f"query_embeddings[{name!r}] names galleries {wrong} that are "
                                 f"not this version or an older one ({versions[:i + 1]})")
            chosen = {g: as_matrix(spec[g], f"query_embeddings[{name!r}][{g!r}]") for g in spec}
        else:
            array = as_matrix(spec, f"query_embeddings[{name!r}]")
            chosen = {g: array for g in versions[:i + 1]}
        for gallery_version, array in chosen.items():
            if n_queries is not None and array.shape[0] != n_queries:
                raise ValueError(f"query_embeddings[{name!r}] has {array.shape[0]} rows for "
                                 f"{n_queries} query_labels (gallery {gallery_version!r})")
        plans[name] = chosen
    return plans


def _gallery_vectors(gallery_embeddings: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(gallery_embeddings, Mapping) or not gallery_embeddings:
        raise ValueError("gallery_embeddings must be a non-empty mapping {version: (n, dim)}")
    stored = {v: as_matrix(e, f"gallery_embeddings[{v!r}]") for v, e in gallery_embeddings.items()}
    n_items = next(iter(stored.values())).shape[0]
    for version, vectors in stored.items():
        if vectors.shape[0] != n_items:
            raise ValueError(f"gallery_embeddings[{version!r}] has {vectors.shape[0]} rows, "
                             f"expected {n_items} (the same items for every version)")
    return stored


def exact_gallery(embeddings: np.ndarray, version: str, similarity: str) -> Gallery:
    """An exact CPU :class:`Gallery` holding ``embeddings`` under ids ``0..n-1``."""
    gallery = Gallery(embeddings.shape[1], similarity=similarity, device="cpu")
    gallery.add(embeddings, np.arange(len(embeddings)), version=version)
    return gallery


def retrieval_matrix(query_embeddings: Mapping[str, Any], query_labels: Any,
                     gallery_embeddings: Mapping[str, Any], gallery_labels: Any, *,
                     ks: Sequence[int] = DEFAULT_KS, similarity: str = "cosine",
                     map_k: Optional[int] = None, leave_one_out: bool = False,
                     ap_denominator: str = "relevant") -> RetrievalMatrix:
    """Score every newer-or-equal query version on every gallery version (``C[i][j]``, ``i >= j``).

    Versions are ordered as the keys of ``gallery_embeddings`` (oldest first). Row ``r`` of every
    gallery array is item id ``r``. Embeddings of different sizes cannot search one index: such a
    pair raises a ValueError (it is never skipped); a version whose queries differ per gallery
    (e.g. native for its own gallery, projected into an older space) gives a mapping
    ``{gallery version: queries}``, and the galleries it leaves out stay empty (NaN).

    Args:
        query_embeddings: ``{version: (nq, dim)}`` queries embedded by each version, or
            ``{version: {gallery version: (nq, dim)}}`` per gallery it searches.
        query_labels: ``(nq,)`` class ids of the queries.
        gallery_embeddings: ``{version: (n, dim)}`` the same gallery items embedded by each
            version.
        gallery_labels: ``(n,)`` class ids of the gallery items.
        ks, map_k, ap_denominator: as in :func:`evaluate`.
        similarity: ``"cosine"`` or ``"l2"``.
        leave_one_out: the queries are the gallery items (query ``r`` is item ``r``): each
            query's own item is left out of its ranking.

    Returns:
        A :class:`RetrievalMatrix`.

    Example:
        >>> x = np.eye(4, dtype=np.float32); labels = np.array([0, 0, 1, 1])
        >>> m = retrieval_matrix({"v1": x, "v2": x}, labels, {"v1": x, "v2": x + 1}, labels,
        ...                      ks=(1,))
        >>> m.value("v1", "v1"), m.pairs()
        (1.0, [('v1', 'v1'), ('v2', 'v1'), ('v2', 'v2')])
    """
    if similarity not in _SIMILARITIES:
        raise ValueError(f"similarity must be one of {_SIMILARITIES}, got {similarity!r}")
    stored = _gallery_vectors(gallery_embeddings)
    versions = list(stored)
    n_items = stored[versions[0]].shape[0]
    labels = as_numpy(gallery_labels)
    if labels.shape != (n_items,):
        raise ValueError(f"gallery_labels must have shape ({n_items},), got {labels.shape}")
    n_queries = len(as_numpy(query_labels))
    if leave_one_out and n_queries != n_items:
        raise ValueError(f"leave_one_out needs the queries to be the gallery items, got "
                         f"{n_queries} queries for {n_items} items")
    plans = _query_plans(query_embeddings, versions, n_queries)
    for name, chosen in plans.items():
        for gallery_version, queries in chosen.items():
            dim = stored[gallery_version].shape[1]
            if queries.shape[1] != dim:
                raise ValueError(
                    f"query_embeddings[{name!r}] are {queries.shape[1]}-d but gallery "
                    f"{gallery_version!r} is {dim}-d: embeddings of different sizes cannot "
                    f"search one index; give {name!r} a mapping {{gallery version: queries}} "
                    "with queries in each gallery's space (e.g. projected)")
    options = {"map_k": map_k, "ap_denominator": ap_denominator,
               "query_ids": np.arange(n_items) if leave_one_out else None}
    size = len(versions)
    scores: dict[str, np.ndarray] = {}
    galleries: dict[str, Gallery] = {}
    for i, name in enumerate(versions):
        for gallery_version, queries in plans[name].items():
            if gallery_version not in galleries:
                galleries[gallery_version] = exact_gallery(stored[gallery_version],
                                                           gallery_version, similarity)
            result = evaluate(queries, query_labels, galleries[gallery_version], labels, ks=ks,
                              **options)
            for key, value in result.items():
                scores.setdefault(key, np.full((size, size), np.nan))[
                    i, versions.index(gallery_version)] = value
    protocol = {"similarity": similarity, "queries": n_queries, "gallery": n_items,
                "backend": "faiss flat (exact)", "ks": [int(k) for k in ks], "map_k": map_k,
                "leave_one_out": leave_one_out}
    return RetrievalMatrix(versions, tuple(int(k) for k in ks), scores, protocol)


@dataclass
class CrossModelTable:
    """Rows of (query model, gallery) -> retrieval scores, as :func:`cross_model_table` returns.

    ``rows`` are dicts with ``query``, ``gallery`` and the score keys (``top1``, ..., ``mAP``).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)

    def get(self, query: str, gallery: str) -> dict[str, Any]:
        """The row for ``query`` model on ``gallery`` (e.g. ``get("new", "old")``)."""
        for row in self.rows:
            if row["query"] == query and row["gallery"] == gallery:
                return row
        raise KeyError(f"no row for query={query!r}, gallery={gallery!r}")

    def to_markdown(self, digits: int = 3) -> str:
        """The table as GitHub markdown."""
        if not self.rows:
            return ""
        score_keys = [key for key in self.rows[0] if key not in ("query", "gallery")]
        lines = ["| query | gallery | " + " | ".join(score_keys) + " |",
                 "|---|---|" + "---:|" * len(score_keys)]
        for row in self.rows:
            cells = [f"{row[key]:.{digits}f}" for key in score_keys]
            lines.append(f"| {row['query']} | {row['gallery']} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def cross_model_table(query_embeddings: Mapping[str, Any], query_labels: Any,
                      gallery_embeddings: Mapping[str, Any], gallery_labels: Any, *,
                      ks: Sequence[int] = DEFAULT_KS, similarity: str = "cosine",
                      mixed_fractions: Sequence[float] = (0.5,), map_k: Optional[int] = None,
                      leave_one_out: bool = False, ap_denominator: str = "relevant",
                      seed: int = 0) -> CrossModelTable:
    """The :func:`retrieval_matrix` as rows, plus mixed galleries (a share of items re-embedded
    by a newer model, the rest left as the oldest).

    Rows: for each version ``i`` and each gallery ``j <= i`` it searches, query ``i`` on gallery
    ``j`` (old/old, new/old, new/new for two versions); then for each newer version ``i`` and
    fraction ``f``, query ``i`` on a gallery where a random ``f`` of the items (``seed``) carry
    version ``i``'s embeddings, named ``"<oldest>+<i>@<f%>"``. A mixed gallery holds both spaces
    in one index, so it needs version ``i``'s queries as one array of the oldest's size (pass
    ``mixed_fractions=()`` otherwise).

    Args:
        query_embeddings, query_labels, gallery_embeddings, gallery_labels, ks, similarity,
            map_k, leave_one_out, ap_denominator: as in :func:`retrieval_matrix`.
        mixed_fractions: shares of re-embedded items for the mixed galleries (empty: none).
        seed: which items the mixed galleries re-embed.

    Returns:
        A :class:`CrossModelTable`.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(20, 4)); y = np.arange(20) % 2
        >>> t = cross_model_table({"old": x, "new": x}, y, {"old": x, "new": x}, y, ks=(1,))
        >>> [(r["query"], r["gallery"]) for r in t.rows]
        [('old', 'old'), ('new', 'old'), ('new', 'new'), ('new', 'old+new@50%')]
    """
    for fraction in mixed_fractions:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"mixed_fractions must be in [0, 1], got {fraction}")
    stored = _gallery_vectors(gallery_embeddings)
    versions = list(stored)
    for newer in versions[1:] if mixed_fractions else []:
        if isinstance(query_embeddings.get(newer), Mapping):
            raise ValueError(f"mixed galleries need query_embeddings[{newer!r}] as one array "
                             "searching every gallery; pass mixed_fractions=() for versions "
                             "that query per gallery")
        if stored[newer].shape[1] != stored[versions[0]].shape[1]:
            raise ValueError(f"mixed galleries put gallery_embeddings[{newer!r}] "
                             f"({stored[newer].shape[1]}-d) in the {versions[0]!r} index "
                             f"({stored[versions[0]].shape[1]}-d); pass mixed_fractions=()")
    matrix = retrieval_matrix(query_embeddings, query_labels, stored, gallery_labels, ks=ks,
                              similarity=similarity, map_k=map_k, leave_one_out=leave_one_out,
                              ap_denominator=ap_denominator)
    table = CrossModelTable([{"query": q, "gallery": g,
                              **{key: matrix.value(q, g, key) for key in matrix.scores}}
                             for q, g in matrix.pairs()])
    oldest, n_items = versions[0], matrix.protocol["gallery"]
    labels = as_numpy(gallery_labels)
    query_ids = np.arange(n_items) if leave_one_out else None
    order = np.random.default_rng(seed).permutation(n_items)
    for newer in versions[1:]:
        for fraction in mixed_fractions:
            chosen = order[: int(round(fraction * n_items))]
            gallery = exact_gallery(stored[oldest], oldest, similarity)
            if chosen.size:
                gallery.replace(stored[newer][chosen], chosen, version=newer)
            name = f"{oldest}+{newer}@{100 * fraction:g}%"
            table.rows.append({"query": newer, "gallery": name,
                               **evaluate(query_embeddings[newer], query_labels, gallery, labels,
                                          ks=ks, map_k=map_k, query_ids=query_ids,
                                          ap_denominator=ap_denominator)})
    return table
