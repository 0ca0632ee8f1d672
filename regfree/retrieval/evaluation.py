"""Retrieval quality of a gallery: top-k accuracy and mAP, and the cross-model table.

The numbers come from :mod:`regfree.metrics.retrieval` (numpy only); this module runs the
searches and turns the returned ids into ranked labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from regfree.metrics.retrieval import RetrievalScores
from regfree.retrieval._checks import as_matrix, as_numpy, check_positive_int
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
             ks: Sequence[int] = (1, 5, 10), map_k: Optional[int] = None) -> dict[str, float]:
    """Top-k accuracy and mAP of searching ``gallery`` with labelled queries.

    A query counts as a top-k hit when any of its ``k`` nearest gallery items has the query's
    label. mAP ranks the whole gallery (``map_k=None``) or its first ``map_k`` items (AP
    normalised by ``min(relevant items, map_k)``); see :mod:`regfree.metrics.retrieval`.
    Queries are searched in chunks, so memory stays ``O(1024 * ranking length)``.

    Args:
        query_embeddings: ``(nq, dim)`` embeddings of the queries (any model version).
        query_labels: ``(nq,)`` non-negative class ids.
        gallery: the :class:`Gallery` to search (items of any mix of versions).
        gallery_labels: class id of every gallery item: an array indexed by id, or ``{id: label}``.
        ks: top-k cut-offs.
        map_k: ranking length for mAP; ``None`` ranks the whole gallery.

    Returns:
        ``{"top1": ..., "top5": ..., "top10": ..., "mAP": ...}``.

    Example:
        >>> import numpy as np
        >>> g = Gallery(dim=2)
        >>> g.add(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), ids=[0, 1, 2], version="v1")
        >>> evaluate(np.array([[1.0, 0.05]]), [0], g, gallery_labels=[0, 1, 0], ks=(1, 2))
        {'top1': 1.0, 'top2': 1.0, 'mAP': 0.8333333333333333}
    """
    queries = as_matrix(query_embeddings, "query_embeddings", gallery.dim)
    labels = as_numpy(query_labels)
    if labels.shape != (queries.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"query_labels must be {queries.shape[0]} integer class ids, got shape "
                         f"{labels.shape}, dtype {labels.dtype}")
    if len(gallery) == 0:
        raise ValueError("gallery is empty: nothing to evaluate")
    lookup = LabelLookup(gallery_labels)
    classes, counts = np.unique(lookup(gallery.ids()), return_counts=True)
    accumulator = RetrievalScores(ks)
    depth = len(gallery) if map_k is None else check_positive_int(map_k, "map_k")
    depth = max(depth, max(accumulator.ks))
    for start in range(0, queries.shape[0], _QUERY_CHUNK):
        chunk = slice(start, start + _QUERY_CHUNK)
        _, ids = gallery.search(queries[chunk], depth)
        chunk_labels = labels[chunk].astype(np.int64)
        slot = np.searchsorted(classes, chunk_labels).clip(0, max(classes.size - 1, 0))
        relevant = np.where(classes[slot] == chunk_labels, counts[slot], 0)
        accumulator.update(chunk_labels, lookup(ids), num_relevant=relevant)
    return accumulator.compute()


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
                      gallery_embeddings: Mapping[str, Any], gallery_labels: Any,
                      ks: Sequence[int] = (1, 5, 10), metric: str = "cosine",
                      mixed_fractions: Sequence[float] = (0.5,), map_k: Optional[int] = None,
                      seed: int = 0) -> CrossModelTable:
    """Retrieval scores of every newer-or-equal query model on every gallery version, plus mixed
    galleries (a share of items re-embedded by a newer model, the rest left as the oldest).

    Versions are ordered as the keys of ``gallery_embeddings`` (oldest first). Rows: for each
    version ``i`` and each ``j <= i``, query ``i`` on gallery ``j`` (old/old, new/old, new/new
    for two versions); then for each newer version ``i`` and fraction ``f``, query ``i`` on a
    gallery where a random ``f`` of the items (``seed``) carry version ``i``'s embeddings, named
    ``"<oldest>+<i>@<f%>"``. Each gallery is an exact (flat) :class:`Gallery`. Pairs whose
    embedding sizes differ cannot share an index and are left out.

    Args:
        query_embeddings: ``{version: (nq, dim)}`` queries embedded by each version.
        query_labels: ``(nq,)`` class ids of the queries.
        gallery_embeddings: ``{version: (n, dim)}`` the same gallery items embedded by each
            version (row ``r`` is item id ``r``).
        gallery_labels: ``(n,)`` class ids of the gallery items.
        ks, map_k: as in :func:`evaluate`.
        metric: ``"cosine"`` or ``"l2"``.
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
    versions = list(gallery_embeddings)
    missing = [v for v in versions if v not in query_embeddings]
    if missing:
        raise ValueError(f"query_embeddings has no entry for gallery version(s) {missing}")
    stored = {v: as_matrix(gallery_embeddings[v], f"gallery_embeddings[{v!r}]") for v in versions}
    n_items = stored[versions[0]].shape[0]
    for version, vectors in stored.items():
        if vectors.shape[0] != n_items:
            raise ValueError(f"gallery_embeddings[{version!r}] has {vectors.shape[0]} rows, "
                             f"expected {n_items} (the same items for every version)")
    for fraction in mixed_fractions:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"mixed_fractions must be in [0, 1], got {fraction}")
    labels = as_numpy(gallery_labels)
    ids = np.arange(n_items)

    def score(query_version: str, gallery: Gallery) -> dict[str, float]:
        return evaluate(query_embeddings[query_version], query_labels, gallery, labels, ks, map_k)

    table = CrossModelTable()
    for i, query_version in enumerate(versions):
        for gallery_version in versions[: i + 1]:
            vectors = stored[gallery_version]
            if vectors.shape[1] != stored[query_version].shape[1]:
                continue  # different embedding sizes cannot search each other
            gallery = Gallery(vectors.shape[1], similarity=metric, device="cpu")
            gallery.add(vectors, ids, version=gallery_version)
            table.rows.append({"query": query_version, "gallery": gallery_version,
                               **score(query_version, gallery)})
    oldest = versions[0]
    order = np.random.default_rng(seed).permutation(n_items)
    for newer in versions[1:]:
        if stored[newer].shape[1] != stored[oldest].shape[1]:
            continue  # different spaces cannot share one index
        for fraction in mixed_fractions:
            chosen = order[: int(round(fraction * n_items))]
            gallery = Gallery(stored[oldest].shape[1], similarity=metric, device="cpu")
            gallery.add(stored[oldest], ids, version=oldest)
            if chosen.size:
                gallery.replace(stored[newer][chosen], chosen, version=newer)
            name = f"{oldest}+{newer}@{100 * fraction:g}%"
            table.rows.append({"query": newer, "gallery": name, **score(newer, gallery)})
    return table
