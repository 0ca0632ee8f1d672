"""Cross-version retrieval: the compatibility matrix, the empirical criterion, update gain and
the multi-version scores (CoReS: AC, AM).

``C[i][j]`` is the retrieval metric with queries embedded by version ``i`` searching a gallery
embedded by version ``j`` (versions in release order; only ``i >= j`` is filled: a new model
queries galleries built by itself or older ones).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np

from regfree.retrieval import Gallery, evaluate

EmbedderSpec = Union[Callable[[Any], Any], Mapping[str, Callable[[Any], Any]]]


@dataclass
class CompatibilityReport:
    """Cross-version retrieval metrics of several model versions.

    Attributes:
        versions: version names in release order (oldest first).
        ks: the cut-offs of the top-k accuracies.
        topk: ``{k: (V, V) array}``; entry ``[i, j]`` is top-k accuracy of version-``i`` queries
            against the version-``j`` gallery (NaN where not computed).
        mean_ap: ``(V, V)`` array of mean average precision over the whole gallery.
        protocol: how retrieval was done (similarity, backend, sizes).
    """

    versions: list[str]
    ks: tuple[int, ...]
    topk: dict[int, np.ndarray]
    mean_ap: np.ndarray
    protocol: dict[str, Any] = field(default_factory=dict)

    def matrix(self, metric: str = "top1") -> np.ndarray:
        """The ``(V, V)`` matrix of ``metric``: ``"mAP"`` or ``"top<k>"`` for a k in ``ks``."""
        if metric == "mAP":
            return self.mean_ap
        if metric.startswith("top") and metric[3:].isdigit() and int(metric[3:]) in self.topk:
            return self.topk[int(metric[3:])]
        names = ["mAP"] + [f"top{k}" for k in self.ks]
        raise ValueError(f"metric must be one of {names}, got {metric!r}")

    def _index(self, version: str, argument: str) -> int:
        if version not in self.versions:
            raise ValueError(f"{argument} must be one of {self.versions}, got {version!r}")
        return self.versions.index(version)

    def value(self, query: str, gallery: str, metric: str = "top1") -> float:
        """``C[query][gallery]`` for ``metric``."""
        return float(self.matrix(metric)[self._index(query, "query"),
                                          self._index(gallery, "gallery")])

    def criterion(self, new: str, old: str, metric: str = "top1") -> bool:
        """The empirical compatibility criterion ``M(new, old) > M(old, old)``."""
        if self._index(new, "new") <= self._index(old, "old"):
            raise ValueError(f"new ({new!r}) must be a later version than old ({old!r})")
        return self.value(new, old, metric) > self.value(old, old, metric)

    def update_gain(self, new: str, old: str, metric: str = "top1") -> float:
        """``(M(new, old) - M(old, old)) / (M(new, new) - M(old, old))``: the share of the full
        (backfilled) improvement that the compatible update gets without backfilling. NaN when
        the new model is no better than the old one on its own gallery."""
        if self._index(new, "new") <= self._index(old, "old"):
            raise ValueError(f"new ({new!r}) must be a later version than old ({old!r})")
        old_old = self.value(old, old, metric)
        full = self.value(new, new, metric) - old_old
        if not full > 0:
            return math.nan
        return (self.value(new, old, metric) - old_old) / full

    def _pairs(self, metric: str) -> list[tuple[int, int]]:
        values = self.matrix(metric)
        return [(i, j) for i in range(len(self.versions)) for j in range(i)
                if not np.isnan(values[i, j])]

    def average_compatibility(self, metric: str = "top1") -> float:
        """CoReS' AC: share of filled pairs ``i > j`` with ``C[i][j] >= C[j][j]``."""
        values = self.matrix(metric)
        pairs = self._pairs(metric)
        if not pairs:
            return math.nan
        return float(np.mean([values[i, j] >= values[j, j] for i, j in pairs]))

    def average_multimodel_accuracy(self, metric: str = "top1") -> float:
        """CoReS' AM: mean of the filled entries ``i >= j`` of the matrix."""
        values = self.matrix(metric)
        lower = values[np.tril_indices(len(self.versions))]
        lower = lower[~np.isnan(lower)]
        return float(lower.mean()) if lower.size else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON-serialisable; NaN becomes ``None``)."""

        def clean(matrix: np.ndarray) -> list[list[Optional[float]]]:
            return [[None if np.isnan(v) else float(v) for v in row] for row in matrix]

        metrics = ["mAP"] + [f"top{k}" for k in self.ks]
        pairs = {}
        for i, new in enumerate(self.versions):
            for old in self.versions[:i]:
                if np.isnan(self.value(new, old, "top1")):
                    continue
                pairs[f"{new}/{old}"] = {
                    m: {"criterion": self.criterion(new, old, m),
                        "update_gain": _none_if_nan(self.update_gain(new, old, m))}
                    for m in metrics}
        return {
            "versions": list(self.versions),
            "ks": list(self.ks),
            "matrices": {m: clean(self.matrix(m)) for m in metrics},
            "pairs": pairs,
            "AC": {m: _none_if_nan(self.average_compatibility(m)) for m in metrics},
            "AM": {m: _none_if_nan(self.average_multimodel_accuracy(m)) for m in metrics},
            "protocol": dict(self.protocol),
        }

    def to_markdown(self, metrics: Sequence[str] = ("top1", "mAP"), digits: int = 1) -> str:
        """Markdown tables (in percent): one matrix per metric (rows: query version, columns:
        gallery version), then the criterion and update gain of each pair, then AC and AM."""
        lines: list[str] = []
        for metric in metrics:
            values = self.matrix(metric)
            lines += [f"**{metric}** (%, query \\ gallery)", "",
                      "| query \\ gallery | " + " | ".join(self.versions) + " |",
                      "|---" * (len(self.versions) + 1) + "|"]
            for i, name in enumerate(self.versions):
                cells = ["" if np.isnan(v) else f"{100 * v:.{digits}f}" for v in values[i]]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
        pair_rows = [(new, old) for i, new in enumerate(self.versions)
                     for old in self.versions[:i]
                     if not np.isnan(self.value(new, old, metrics[0]))]
        if pair_rows:
            lines += ["| new/old | " + " | ".join(
                f"{m} criterion | {m} update gain" for m in metrics) + " |",
                "|---" * (2 * len(metrics) + 1) + "|"]
            for new, old in pair_rows:
                cells = []
                for m in metrics:
                    met = self.criterion(new, old, m)
                    gain = self.update_gain(new, old, m)
                    cells += ["yes" if met else "no", "n/a" if np.isnan(gain) else f"{gain:.2f}"]
                lines.append(f"| {new}/{old} | " + " | ".join(cells) + " |")
            lines.append("")
        lines.append("; ".join(
            f"AC({m}) = {self.average_compatibility(m):.2f}, "
            f"AM({m}) = {100 * self.average_multimodel_accuracy(m):.{digits}f}%"
            for m in metrics))
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.to_markdown()


def _none_if_nan(value: float) -> Optional[float]:
    return None if np.isnan(value) else float(value)


def _resolve(embedders: Mapping[str, EmbedderSpec]) -> dict[str, dict[str, Callable]]:
    """``{query version: {gallery version: callable}}`` for every pair ``i >= j`` that can be
    computed (a mapping spec names the galleries it can search)."""
    if not isinstance(embedders, Mapping) or not embedders:
        raise ValueError("embedders must be a non-empty mapping {version name: embedder}")
    versions = list(embedders)
    plans: dict[str, dict[str, Callable]] = {}
    for i, name in enumerate(versions):
        spec = embedders[name]
        if callable(spec):
            plans[name] = {old: spec for old in versions[:i + 1]}
        elif isinstance(spec, Mapping):
            if name not in spec:
                raise ValueError(f"embedders[{name!r}] must map {name!r} itself to the "
                                 "embedder of its own gallery")
            unknown = [key for key in spec if key not in versions[:i + 1]]
            if unknown:
                raise ValueError(f"embedders[{name!r}] names galleries {unknown} that are not "
                                 f"this version or an older one ({versions[:i + 1]})")
            if not all(callable(f) for f in spec.values()):
                raise ValueError(f"embedders[{name!r}] values must be callables")
            plans[name] = dict(spec)
        else:
            raise ValueError(f"embedders[{name!r}] must be a callable or a mapping of gallery "
                             f"version to callable, got {type(spec).__name__}")
    return plans


def _search_metrics(queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray,
                    gallery_labels: np.ndarray, ks: Sequence[int],
                    similarity: str) -> dict[str, float]:
    """Index ``gallery`` in an exact FAISS gallery and score the queries (full-ranking mAP)."""
    index = Gallery(dim=gallery.shape[1], similarity=similarity, index_type="flat", device="cpu")
    index.add(gallery, ids=np.arange(len(gallery)), version="gallery")
    return evaluate(queries, query_labels, index, gallery_labels, ks=ks)


def _as_embeddings(values, argument: str, rows: int) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != rows:
        raise ValueError(f"{argument} must return an array of shape ({rows}, D), got "
                         f"{array.shape}")
    return array


def compatibility_report(query, gallery, embedders: Mapping[str, EmbedderSpec], query_labels,
                         gallery_labels, ks: Sequence[int] = (1, 5),
                         similarity: str = "cosine") -> CompatibilityReport:
    """Embed query and gallery with every version and fill ``C[i][j]`` for ``i >= j``.

    Retrieval protocol: each query is searched against the whole gallery, held in an exact
    FAISS index (:class:`regfree.retrieval.Gallery`, scored by :func:`regfree.retrieval.evaluate`),
    by ``similarity`` (``"cosine"``: L2-normalised inner product; ``"l2"``: Euclidean); top-k accuracy
    is the share of queries with a same-label item among the k nearest, and mAP averages the
    precision at every same-label item over the full ranking of the gallery.

    Args:
        query: query inputs (anything the embedders accept).
        gallery: gallery inputs.
        embedders: ``{version: embedder}`` in release order (oldest first). An embedder is a
            callable ``inputs -> (N, D)`` used for every gallery, or a mapping
            ``{gallery version: callable}`` when a version embeds differently per gallery (e.g.
            ``{"v2": native, "v1": projected}``); pairs it does not name are left empty.
        query_labels: ``(Nq,)`` class ids of the queries.
        gallery_labels: ``(Ng,)`` class ids of the gallery.
        ks: top-k cut-offs; 1 is always included.
        similarity: ``"cosine"`` or ``"l2"``.

    Returns:
        A :class:`CompatibilityReport`.

    Example:
        >>> x = np.eye(4, dtype=np.float32)
        >>> labels = np.array([0, 0, 1, 1])
        >>> report = compatibility_report(x, x, {"v1": lambda a: a, "v2": lambda a: a + 1},
        ...                               labels, labels)
        >>> report.value("v1", "v1", "top1")
        1.0
    """
    plans = _resolve(embedders)
    versions = list(plans)
    ks = tuple(sorted({1, *(int(k) for k in ks)}))
    if ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if similarity not in ("cosine", "l2"):
        raise ValueError(f"similarity must be 'cosine' or 'l2', got {similarity!r}")
    query_labels = np.asarray(query_labels).reshape(-1)
    gallery_labels = np.asarray(gallery_labels).reshape(-1)
    galleries = {name: _as_embeddings(plans[name][name](gallery), f"embedders[{name!r}] on "
                                      "gallery", len(gallery_labels)) for name in versions}
    size = len(versions)
    topk = {k: np.full((size, size), np.nan) for k in ks}
    mean_ap = np.full((size, size), np.nan)
    embedded: dict[int, np.ndarray] = {}  # one pass over the queries per distinct embedder
    for i, new in enumerate(versions):
        for j, old in enumerate(versions[:i + 1]):
            if old not in plans[new]:
                continue
            function = plans[new][old]
            if id(function) not in embedded:
                embedded[id(function)] = _as_embeddings(
                    function(query), f"embedders[{new!r}] on query for gallery {old!r}",
                    len(query_labels))
            queries = embedded[id(function)]
            if queries.shape[1] != galleries[old].shape[1]:
                raise ValueError(f"embedders[{new!r}] gives {queries.shape[1]}-d queries for "
                                 f"the {galleries[old].shape[1]}-d {old!r} gallery; map "
                                 f"{old!r} to a projected embedder")
            result = _search_metrics(queries, query_labels, galleries[old], gallery_labels,
                                     ks, similarity)
            for k in ks:
                topk[k][i, j] = result[f"top{k}"]
            mean_ap[i, j] = result["mAP"]
    protocol = {"similarity": similarity, "queries": int(len(query_labels)),
                "gallery": int(len(gallery_labels)), "backend": "faiss flat (exact)",
                "ks": list(ks)}
    return CompatibilityReport(versions, ks, topk, mean_ap, protocol)
