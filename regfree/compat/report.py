"""Cross-version retrieval: the compatibility matrix, the empirical criterion, update gain and
the multi-version scores (CoReS: AC, AM).

``C[i][j]`` is the retrieval metric with queries embedded by version ``i`` searching a gallery
embedded by version ``j`` (versions in release order; only ``i >= j`` is filled: a new model
queries galleries built by itself or older ones).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np

from regfree.metrics.retrieval import DEFAULT_KS
from regfree.retrieval import RetrievalMatrix, retrieval_matrix

EmbedderSpec = Union[Callable[[Any], Any], Mapping[str, Callable[[Any], Any]]]


@dataclass
class CompatibilityReport:
    """Cross-version retrieval of several model versions, and what it says about compatibility.

    Attributes:
        scores: the :class:`~regfree.retrieval.RetrievalMatrix` (entry ``[i, j]``: version-``i``
            queries on the version-``j`` gallery, NaN where not computed); the criterion, update
            gain, AC and AM are read from it.

    Example:
        >>> from regfree.retrieval import retrieval_matrix
        >>> x = np.eye(4, dtype=np.float32); labels = np.array([0, 0, 1, 1])
        >>> report = CompatibilityReport(retrieval_matrix({"v1": x, "v2": x}, labels,
        ...                                               {"v1": x, "v2": x}, labels))
        >>> report.criterion("v2", "v1"), report.average_multimodel_accuracy("mAP")
        (False, 0.75)
    """

    scores: RetrievalMatrix

    def __post_init__(self) -> None:
        if 1 not in self.scores.ks:
            raise ValueError(f"scores must include top-1 (ks={self.scores.ks})")

    @property
    def versions(self) -> list[str]:
        """Version names in release order (oldest first)."""
        return self.scores.versions

    @property
    def ks(self) -> tuple[int, ...]:
        """The cut-offs of the top-k accuracies."""
        return self.scores.ks

    @property
    def protocol(self) -> dict[str, Any]:
        """How retrieval was done (similarity, backend, sizes)."""
        return self.scores.protocol

    def matrix(self, metric: str = "top1") -> np.ndarray:
        """The ``(V, V)`` matrix of ``metric``: ``"mAP"`` or ``"top<k>"`` for a k in ``ks``."""
        return self.scores.matrix(metric)

    def _index(self, version: str, argument: str) -> int:
        return self.scores.index(version, argument)

    def value(self, query: str, gallery: str, metric: str = "top1") -> float:
        """``C[query][gallery]`` for ``metric``."""
        return self.scores.value(query, gallery, metric)

    def criterion(self, new: str, old: str, metric: str = "top1") -> bool:
        """The empirical compatibility criterion ``M(new, old) > M(old, old)``."""
        if self._index(new, "new") <= self._index(old, "old"):
            raise ValueError(f"new ({new!r}) must be a later version than old ({old!r})")
        return self.value(new, old, metric) > self.value(old, old, metric)

    def update_gain(self, new: str, old: str, metric: str = "top1") -> float:
        """``(M(new, old) - M(old, old)) / (M(new, new) - M(old, old))``: the share of the full
        (backfilled) improvement that the compatible update gets without backfilling. NaN when
        the new model is no better than the old one on its own gallery."""
        return self.recovered_share(self.value(new, old, metric), new, old, metric)

    def recovered_share(self, score: float, new: str, old: str, metric: str = "top1") -> float:
        """``(score - M(old, old)) / (M(new, new) - M(old, old))``: the share of the full
        (backfilled) improvement that a retrieval ``score`` of the same queries and gallery
        items reaches, e.g. v2 through a post-hoc adapter on v1's gallery. NaN when the new
        model is no better than the old one on its own gallery.

        Example:
            >>> from regfree.retrieval import retrieval_matrix
            >>> x = np.eye(4, dtype=np.float32); labels = np.array([0, 1, 0, 1])
            >>> report = CompatibilityReport(retrieval_matrix(
            ...     {"v1": x, "v2": x}, labels, {"v1": x[::-1], "v2": x}, labels, ks=(1,)))
            >>> report.recovered_share(0.5, "v2", "v1")
            0.5
        """
        if self._index(new, "new") <= self._index(old, "old"):
            raise ValueError(f"new ({new!r}) must be a later version than old ({old!r})")
        old_old = self.value(old, old, metric)
        full = self.value(new, new, metric) - old_old
        if not full > 0:
            return math.nan
        return (float(score) - old_old) / full

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


def _as_embeddings(values, argument: str, rows: int) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != rows:
        raise ValueError(f"{argument} must return an array of shape ({rows}, D), got "
                         f"{array.shape}")
    return array


def compatibility_report(query: Any, gallery: Any, embedders: Mapping[str, EmbedderSpec],
                         query_labels: Any, gallery_labels: Any, *,
                         ks: Sequence[int] = DEFAULT_KS, similarity: str = "cosine",
                         leave_one_out: bool = False) -> CompatibilityReport:
    """Embed query and gallery with every version and fill ``C[i][j]`` for ``i >= j``.

    Retrieval protocol: :func:`regfree.retrieval.retrieval_matrix` (each query searches the whole
    gallery in an exact FAISS index by ``similarity``: ``"cosine"``, L2-normalised inner product,
    or ``"l2"``, Euclidean); top-k accuracy is the share of queries with a same-label item among
    the k nearest, and mAP averages the precision at every same-label item over the full
    ranking of the gallery (tied scores as scikit-learn scores them). Embeddings the caller
    already holds go to ``retrieval_matrix`` and ``CompatibilityReport`` directly.

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
        leave_one_out: ``query`` and ``gallery`` are the same items: each query's own item is
            left out of its ranking.

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
    if similarity not in ("cosine", "l2"):  # checked before any embedder runs
        raise ValueError(f"similarity must be 'cosine' or 'l2', got {similarity!r}")
    query_labels = np.asarray(query_labels).reshape(-1)
    gallery_labels = np.asarray(gallery_labels).reshape(-1)
    galleries = {name: _as_embeddings(plans[name][name](gallery), f"embedders[{name!r}] on "
                                      "gallery", len(gallery_labels)) for name in versions}
    queries: dict[str, dict[str, np.ndarray]] = {}
    embedded: dict[int, np.ndarray] = {}  # one pass over the queries per distinct embedder
    for new in versions:
        queries[new] = {}
        for old, function in plans[new].items():
            if id(function) not in embedded:
                embedded[id(function)] = _as_embeddings(
                    function(query), f"embedders[{new!r}] on query for gallery {old!r}",
                    len(query_labels))
            found = embedded[id(function)]
            if found.shape[1] != galleries[old].shape[1]:
                raise ValueError(f"embedders[{new!r}] gives {found.shape[1]}-d queries for "
                                 f"the {galleries[old].shape[1]}-d {old!r} gallery; map "
                                 f"{old!r} to a projected embedder")
            queries[new][old] = found
    return CompatibilityReport(retrieval_matrix(queries, query_labels, galleries, gallery_labels,
                                                ks=ks, similarity=similarity,
                                                leave_one_out=leave_one_out))
