"""The upgrade check a model-upgrade pipeline calls: flips, retrieval compatibility, a gate.

:func:`evaluate_upgrade` runs v1 and v2 once over the evaluation data (and, when a gallery is
given, over the gallery), and gathers what the rooms measure: the :class:`FlipReport`, the
cross-version retrieval matrix (v2 queries on v1's FAISS gallery with no backfill, and on its own),
the partial-backfill curve, and, with post-hoc adapters (a v2 not trained for compatibility),
v2 through the adapter on v1's gallery and the share of the full-backfill gain it recovers. Models are plain ``torch.nn.Module`` s; embedders are a method
name, a callable on an input batch or ``"auto"`` (what the forward returns, else
``forward_features``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from regfree.compat import CompatibilityReport
from regfree.metrics import FlipReport, correct_mask, flip_report, json_safe
from regfree.retrieval import BackfillCurve, retrieval_matrix
from regfree.training.predict import AUTO, Embedder, run_models
from regfree.training.predict import run_model as run_model  # re-exported: callers import it here
from regfree.upgrade_adapters import (  # noqa: F401  (names re-exported for users and tests)
    ADAPTER_SUFFIX,
    BACKFILL_MAP_K,
    GALLERY_TRANSFORMED,
    NEW,
    OLD,
    QUERY_ADAPTED,
    QUERY_ADAPTER_SUFFIX,
    adapted_scores,
    check_adapter_arguments,
    ready_adapters,
    upgrade_backfill,
)


@dataclass
class UpgradeReport:
    """What :func:`evaluate_upgrade` measured.

    Attributes:
        flips: v1 -> v2 negative flips on the evaluation data.
        retrieval: the cross-version retrieval report (query version x gallery version, v1 and
            v2) when a gallery was given; ``value("v2", "v1")`` is v2 searching v1's gallery, no backfill.
        backfill: retrieval of v2 queries while v1's gallery is re-embedded, per order.
        max_nfr: the gate; ``None`` means no gate.
        class_names: names of the classes, for the page.
        negative_flip_mask: per sample of the evaluation data (in order), True where v1 was
            right and v2 is wrong; for comparing several v2s sample by sample.
        adapted: with adapters, ``{entry: {score name: value}}`` for :data:`QUERY_ADAPTED`
            (v2 queries mapped into v1's space, on v1's gallery) and/or
            :data:`GALLERY_TRANSFORMED` (v2 queries on v1's gallery mapped into v2's space).
        adapter_pairs: how many gallery items the adapters were fitted on (``adapter="fit"``),
            else ``None``.
    """

    flips: FlipReport
    retrieval: Optional[CompatibilityReport] = None
    backfill: Optional[BackfillCurve] = None
    max_nfr: Optional[float] = None
    class_names: Optional[list[str]] = field(default=None, repr=False)
    negative_flip_mask: Optional[np.ndarray] = field(default=None, repr=False)
    adapted: Optional[dict[str, dict[str, float]]] = None
    adapter_pairs: Optional[int] = None

    @property
    def passed(self) -> bool:
        """True unless NFR is above the gate."""
        return self.max_nfr is None or self.flips.nfr <= self.max_nfr

    def gain_recovered(self, entry: str, metric: str = "top1") -> float:
        """Share of the full-backfill gain an adapter entry recovers:
        ``(M(entry) - M(v1, v1)) / (M(v2, v2) - M(v1, v1))`` (1: as good as re-embedding every
        item; NaN when v2 is no better than v1 on its own gallery).

        Args:
            entry: :data:`QUERY_ADAPTED` or :data:`GALLERY_TRANSFORMED`.
            metric: ``"top1"``, ``"top5"``, ``"top10"`` or ``"mAP"``.
        """
        if self.retrieval is None or not self.adapted:
            raise ValueError("no adapter was evaluated: pass gallery= and adapter= or "
                             "query_adapter= to evaluate_upgrade")
        if entry not in self.adapted:
            raise ValueError(f"entry must be one of {list(self.adapted)}, got {entry!r}")
        return self.retrieval.recovered_share(self.adapted[entry][metric], NEW, OLD, metric)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``flips``, ``retrieval``, ``adapter`` (scores and the share of the
        full-backfill gain of each adapter entry), ``backfill``, ``gate``."""
        backfill = None
        if self.backfill is not None:
            backfill = {"fractions": self.backfill.fractions.tolist(),
                        "scores": {order: {name: values.tolist() for name, values in s.items()}
                                   for order, s in self.backfill.scores.items()}}
        adapter = None
        if self.adapted:
            adapter = {"pairs": self.adapter_pairs, "entries": {
                entry: {"scores": dict(scores),
                        "gain_recovered": {m: self.gain_recovered(entry, m) for m in scores}}
                for entry, scores in self.adapted.items()}}
        return {
            "flips": self.flips.to_dict(),
            "retrieval": self.retrieval.to_dict() if self.retrieval else None,
            "adapter": adapter,
            "backfill": backfill,
            "gate": {"max_nfr": self.max_nfr, "passed": self.passed},
        }

    def to_json(self, indent: int = 2) -> str:
        """:meth:`to_dict` as JSON (NaN written as ``null``)."""
        return json.dumps(json_safe(self.to_dict()), indent=indent)

    def summary(self) -> str:
        """A few readable lines: the flip summary, retrieval without backfill, the gate."""
        lines = [self.flips.summary()]
        if self.retrieval is not None:
            c = self.retrieval
            raw = c.value(NEW, OLD)
            lines.append(
                f"retrieval top-1: v1/v1 {c.value(OLD, OLD):.1%}, v2/v1 (no backfill) "
                f"{_share(raw, '.1%', 'n/a (another size)')}, v2/v2 {c.value(NEW, NEW):.1%}; "
                f"compatible: {'n/a' if np.isnan(raw) else 'yes' if c.criterion(NEW, OLD) else 'no'}")
        for entry, scores in (self.adapted or {}).items():
            lines.append(f"adapter: {entry} top-1 {scores['top1']:.1%}, "
                         f"{_share(self.gain_recovered(entry), '.0%')} of the full-backfill gain")
        if self.max_nfr is not None:
            verdict = "PASS" if self.passed else "FAIL"
            lines.append(f"gate: NFR {self.flips.nfr:.2%} vs max {self.max_nfr:.2%} -> {verdict}")
        return "\n".join(lines)

    def to_html(self, path: str, title: str = "regfree upgrade report") -> None:
        """Write one self-contained page: the flip report, the retrieval matrix and the
        backfill curve (written atomically)."""
        from regfree.reporting import write_text_atomic
        from regfree.reporting.upgrade_page import upgrade_page

        write_text_atomic(path, upgrade_page(
            self.flips, retrieval=self.retrieval, backfill=self.backfill, max_nfr=self.max_nfr,
            passed=self.passed, class_names=self.class_names, title=title,
            adapted=self.adapted))


def _share(value: float, spec: str, missing: str = "n/a") -> str:
    return missing if np.isnan(value) else format(value, spec)


def evaluate_upgrade(
    old: nn.Module,
    new: nn.Module,
    data: Any,
    *,
    gallery: Any = None,
    max_nfr: Optional[float] = None,
    old_embedder: Embedder = AUTO,
    new_embedder: Embedder = AUTO,
    new_native_embedder: Optional[Embedder] = None,
    adapter: Any = None,
    query_adapter: Any = None,
    adapter_pairs: float = 0.1,
    adapter_kind: Optional[str] = None,
    backfill_orders: Sequence[str] = ("random", "margin"),
    backfill_fractions: Sequence[float] = tuple(np.linspace(0.0, 1.0, 11)),
    class_names: Optional[Sequence[str]] = None,
    label_key: Optional[str] = None,
    device: Union[str, torch.device, None] = None,
    batch_size: int = 512,
    seed: int = 0,
    progress: bool = True,
    num_workers: int = 0,
) -> UpgradeReport:
    """Check an upgrade from ``old`` (v1) to ``new`` (v2): negative flips, and, with a gallery,
    whether v2 can search v1's gallery without backfilling it.

    Retrieval protocol: the samples of ``data`` are the queries, the samples of ``gallery`` the
    indexed items (labels from both), cosine similarity in an exact FAISS index; the matrix holds
    v1/v1, v2/v1 (v2 queries on v1's gallery, no backfill) and v2/v2 (everything re-embedded).
    The backfill curve (top-1, top-5, mAP@100) re-embeds v1's gallery with v2 in each order of
    ``backfill_orders`` (``"random"``, ``"margin"``, ``"entropy"``: see
    :func:`regfree.retrieval.plan_backfill`).

    Post-hoc adapters (for a v2 not trained to be compatible; :func:`regfree.compat.fit_adapter`)
    act on v2's own (native) embeddings. ``adapter`` maps v1's embeddings into v2's space: v2
    queries search v1's stored gallery transformed (:data:`GALLERY_TRANSFORMED`, FCT-style), and
    the backfill curve gains, for each order, a curve ``"<order> + adapter"`` whose items not yet
    re-embedded are the transformed ones. ``query_adapter`` maps v2's queries into v1's space to
    search v1's gallery as stored (:data:`QUERY_ADAPTED`, Drift-Adapter-style; a SLERP adapter,
    ``fit_adapter(..., kind="orthogonal", blend=t)``, is blended with v1's embedding of each
    query), and the curve gains ``"<order> + query adapter"``: items not yet re-embedded stay in
    v1's space and the adapted queries reach them, ranked with the re-embedded items on cosine.
    ``"fit"`` fits either on the first ``adapter_pairs`` share of the gallery items (the items a
    team re-embeds first), of kind ``adapter_kind``: those items count as re-embedded, so the
    transformed gallery stores them as v2 embeds them (the rest through the adapter) and the
    adapter curves start with them re-embedded; a fitted adapter passed in transforms every item.
    :meth:`UpgradeReport.gain_recovered` gives the share of the full-backfill gain each
    recovers. When v2's embeddings are not v1's size, the raw v2/v1 entry and the raw backfill
    curve cannot exist and are left out (an adapter is then required).

    Args:
        old, new: the two models; they return logits, ``(logits, embeddings)``, a mapping or an
            object with ``.logits`` (HuggingFace); mapping inputs go in as keyword arguments.
        data: the evaluated samples (the queries): an ``(inputs, labels)`` pair of arrays, a
            map-style Dataset, an IterableDataset or a DataLoader (used as given). v1 and v2 run
            on each batch as it is read; rows are put back in dataset order.
        gallery: the items to index, in the same forms; ``None`` skips retrieval.
        max_nfr: the gate: :attr:`UpgradeReport.passed` is False when NFR is above it.
        old_embedder: v1's embeddings: ``"auto"`` takes those its forward returns beside the
            logits (one backbone pass per batch), else calls ``forward_features``;
            ``"outputs"`` only the former; a method name or a callable on an input batch is
            called (a second pass). See :mod:`regfree.training.embedders`.
        new_embedder: v2's, the same way, for searching v1's gallery (for a v2 with a learned
            projection, its projected embeddings, e.g. ``"compatible_embeddings"``).
        new_native_embedder: v2's embedder for its own gallery, when it differs from
            ``new_embedder`` (e.g. ``"native_embeddings"``); default: ``new_embedder``.
        adapter: ``None``, ``"fit"`` or an object with ``transform`` (e.g. an
            :class:`~regfree.compat.EmbeddingAdapter`) from v1's embeddings to v2's native ones.
        query_adapter: ``None``, ``"fit"`` or an object with ``transform`` from v2's native
            embeddings to v1's.
        adapter_pairs: share of the gallery, in (0, 1], that ``"fit"`` fits on.
        adapter_kind: the kind ``"fit"`` fits (one of :data:`regfree.compat.ADAPTER_KINDS`);
            None: :func:`~regfree.compat.fit_adapter`'s default.
        backfill_orders: orders of the backfill curve; empty skips the curve.
        backfill_fractions: backfilled shares at which the curve is measured.
        class_names: names of the classes, for the report.
        label_key: the key of the labels in mapping batches; default ``"label"``/``"labels"``.
        device: where to run the models (moved there for the call); default: where each is.
        batch_size: samples per forward pass (a DataLoader keeps its own).
        seed: the random backfill order's seed.
        progress: show progress bars.
        num_workers: worker processes reading a Dataset (a DataLoader keeps its own).

    Returns:
        An :class:`UpgradeReport`.

    Example:
        >>> from regfree.models import MLP
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(40, 4)).astype("float32"), np.arange(40) % 2
        >>> report = evaluate_upgrade(MLP(4, 2), MLP(4, 2), (x, y), gallery=(x, y), max_nfr=1.0,
        ...                           progress=False)
        >>> report.passed, report.retrieval.versions
        (True, ['v1', 'v2'])
        >>> adapted = evaluate_upgrade(MLP(4, 2), MLP(4, 2), (x, y), gallery=(x, y),
        ...                            adapter="fit", adapter_pairs=0.5, progress=False)
        >>> list(adapted.adapted), adapted.adapter_pairs
        (['v2/v1 transformed'], 20)
    """
    if max_nfr is not None and not (isinstance(max_nfr, (int, float)) and 0.0 <= max_nfr <= 1.0):
        raise ValueError(f"max_nfr must be a number in [0, 1], got {max_nfr!r}")
    for name, model in (("old", old), ("new", new)):
        if not isinstance(model, nn.Module):
            raise ValueError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    with_gallery = gallery is not None
    check_adapter_arguments(adapter, query_adapter, adapter_pairs, with_gallery, adapter_kind)
    common = {"label_key": label_key, "device": device, "batch_size": batch_size,
              "progress": progress, "num_workers": num_workers}
    embedders = _embedders(old_embedder, new_embedder, new_native_embedder, with_gallery)
    (old_q,), (new_q, *native) = run_models(
        [(old, embedders[0]), (new, embedders[1])], data, desc="v1 and v2 on data", **common)
    flips = flip_report(old_q.labels, old_q.logits, new_q.logits)
    negative_flips = (correct_mask(old_q.labels, old_q.logits, validate=False)
                      & ~correct_mask(old_q.labels, new_q.logits, validate=False))
    report = UpgradeReport(flips, max_nfr=max_nfr,
                           class_names=list(class_names) if class_names is not None else None,
                           negative_flip_mask=negative_flips)
    if not with_gallery:
        return report

    raw_cross = new_q.embeddings.shape[1] == old_q.embeddings.shape[1]
    if not raw_cross and adapter is None and query_adapter is None:
        raise ValueError(
            f"new_embedder gives {new_q.embeddings.shape[1]}-d embeddings but v1's gallery is "
            f"{old_q.embeddings.shape[1]}-d: pass v2's projection into v1's space as "
            "new_embedder (e.g. 'compatible_embeddings') and its own as new_native_embedder, "
            "or a post-hoc adapter (adapter= or query_adapter=, e.g. 'fit')")
    (old_g,), (new_g, *native_items) = run_models(
        [(old, embedders[0]), (new, embedders[1])], gallery, name="gallery",
        desc="v1 and v2 on gallery", **common)
    native_q, native_g = (native[0], native_items[0]) if native else (new_q, new_g)
    cross = {OLD: new_q.embeddings} if raw_cross else {}
    report.retrieval = CompatibilityReport(retrieval_matrix(
        {OLD: old_q.embeddings, NEW: {NEW: native_q.embeddings, **cross}},
        old_q.labels, {OLD: old_g.embeddings, NEW: native_g.embeddings}, old_g.labels))
    ready = ready_adapters(adapter, query_adapter, old_g.embeddings, native_g.embeddings,
                           share=adapter_pairs, kind=adapter_kind, progress=progress)
    report.adapter_pairs = ready.pairs
    report.adapted = adapted_scores(ready, old_g, native_g, native_q, old_q)
    if backfill_orders:
        report.backfill = upgrade_backfill(old_g, new_g if raw_cross else None, new_q, native_g,
                                           native_q, old_q, ready, backfill_orders,
                                           backfill_fractions, seed, progress)
    return report


def _embedders(old_embedder: Embedder, new_embedder: Embedder,
               new_native_embedder: Optional[Embedder], with_gallery: bool
               ) -> tuple[list[tuple[str, Embedder]], list[tuple[str, Embedder]]]:
    """What run_models reads of v1 and v2 (nothing but logits without a gallery)."""
    if not with_gallery:
        return [], []
    new = [("new_embedder", new_embedder)]
    if new_native_embedder is not None:
        new.append(("new_native_embedder", new_native_embedder))
    return [("old_embedder", old_embedder)], new

