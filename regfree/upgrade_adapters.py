"""The post-hoc adapter part of :func:`regfree.evaluate_upgrade`: checking and fitting the
adapters, scoring v2 through them, and the backfill curves that use them.

One meaning of "the transformed gallery" throughout (as in the demo and the experiments): with
``adapter="fit"`` the paired items, the first ``adapter_pairs`` share of the gallery that the
adapter was fitted on, have been re-embedded by v2 already, so they are stored as v2 embeds them
and every other item goes through the adapter. A fitted adapter that is passed in comes with no
such items: then every item goes through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from regfree.compat import ADAPTER_KINDS, fit_adapter
from regfree.retrieval import BackfillCurve, Gallery, backfill_curve, evaluate, plan_backfill
from regfree.retrieval._checks import adapted, check_adapter
from regfree.retrieval.cross_version import exact_gallery
from regfree.training.predict import ModelRun

OLD, NEW = "v1", "v2"
# The backfill curve searches the gallery once per step and order; ranking all of it for mAP
# at every step costs far more than a top-100 search, so the curve reports mAP@100.
BACKFILL_MAP_K = 100
# The two post-hoc entries beside the matrix (names in UpgradeReport.adapted).
QUERY_ADAPTED = "v2 adapted query/v1"
GALLERY_TRANSFORMED = "v2/v1 transformed"
ADAPTER_SUFFIX = " + adapter"  # backfill-curve orders whose old items go through the adapter
QUERY_ADAPTER_SUFFIX = " + query adapter"  # ... whose queries reach the old items through one


@dataclass
class ReadyAdapters:
    """The adapters :func:`regfree.evaluate_upgrade` scores v2 through.

    Attributes:
        adapter: v1 -> v2 (the stored gallery transformed), or None.
        query_adapter: v2 -> v1 (v2 queries on v1's gallery as stored), or None.
        pairs: with ``"fit"``, how many gallery items (the first ones) both were fitted on and
            count as re-embedded; None when every adapter was given fitted.
    """

    adapter: Any = None
    query_adapter: Any = None
    pairs: Optional[int] = None


def check_adapter_arguments(adapter: Any, query_adapter: Any, adapter_pairs: float,
                            with_gallery: bool, adapter_kind: Optional[str] = None) -> None:
    """Refuse bad adapter arguments before any model runs."""
    for name, value in (("adapter", adapter), ("query_adapter", query_adapter)):
        if value is None:
            continue
        if not with_gallery:
            raise ValueError(f"{name} needs gallery= (the items v1 indexed) to evaluate it")
        if isinstance(value, str) and value != "fit":
            raise ValueError(f"{name} must be 'fit', an EmbeddingAdapter or None, got {value!r}")
        if not isinstance(value, str):
            check_adapter(value, name)
    if not (isinstance(adapter_pairs, (int, float)) and 0.0 < adapter_pairs <= 1.0):
        raise ValueError(f"adapter_pairs must be a share in (0, 1], got {adapter_pairs!r}")
    if adapter_kind is not None:
        if adapter_kind not in ADAPTER_KINDS:
            raise ValueError(f"adapter_kind must be one of {ADAPTER_KINDS} (or None for "
                             f"fit_adapter's default), got {adapter_kind!r}")
        if "fit" not in (adapter, query_adapter):
            raise ValueError("adapter_kind chooses the kind that adapter='fit' or "
                             "query_adapter='fit' fits; neither is 'fit' here")


class _Anchored:
    """A SLERP adapter bound to v1's embeddings of the queries it will be given."""

    def __init__(self, adapter: Any, anchor: np.ndarray) -> None:
        self.adapter, self.anchor = adapter, anchor
        self.source_dim, self.target_dim = adapter.source_dim, adapter.target_dim

    def transform(self, x: Any) -> Any:  # x: exactly the rows the anchor embeds
        return self.adapter.transform(x, anchor=self.anchor)


def _blends(adapter: Any) -> bool:
    return getattr(adapter, "blend", None) is not None


def _ready_one(value: Any, name: str, source: np.ndarray, target: np.ndarray, pairs: int,
               kind: Optional[str], progress: bool) -> Any:
    """The adapter to use: fitted on the first ``pairs`` items for ``"fit"``; a given one is
    checked against both spaces' sizes on one item."""
    if value is None:
        return None
    if isinstance(value, str):
        options = {} if kind is None else {"kind": kind}
        try:
            return fit_adapter(source[:pairs], target[:pairs], progress=progress, **options)
        except ValueError as error:
            raise ValueError(f"{name}='fit' on the first {pairs} gallery items failed ({error}): "
                             "raise adapter_pairs, or pass a fitted adapter") from error
    check_adapter(value, name, source_dim=source.shape[1], target_dim=target.shape[1])
    if _blends(value) and name != "query_adapter":
        raise ValueError(f"{name} is a SLERP adapter (blend={value.blend}), which blends with v1's "
                         "own embedding of each query: pass it as query_adapter")
    probe = _Anchored(value, target[:1]) if _blends(value) else value
    adapted(probe, source[:1], name, what="one gallery item", target_dim=target.shape[1])
    return value


def ready_adapters(adapter: Any, query_adapter: Any, old_gallery: np.ndarray,
                   native_gallery: np.ndarray, *, share: float, kind: Optional[str],
                   progress: bool) -> ReadyAdapters:
    """Fit (``"fit"``) or check the two adapters on v1's and v2's gallery embeddings."""
    pairs = max(1, int(round(share * len(old_gallery))))
    fitted = "fit" in (adapter, query_adapter)
    return ReadyAdapters(
        adapter=_ready_one(adapter, "adapter", old_gallery, native_gallery, pairs, kind,
                           progress),
        query_adapter=_ready_one(query_adapter, "query_adapter", native_gallery, old_gallery,
                                 pairs, kind, progress),
        pairs=pairs if fitted else None)


def _transformed(ready: ReadyAdapters, old_g: ModelRun, native_g: ModelRun) -> np.ndarray:
    """v1's gallery in v2's space: paired items as v2 embeds them, the rest through the
    adapter (every item when the adapter was given fitted)."""
    stored = np.array(ready.adapter.transform(old_g.embeddings), dtype=np.float32)
    if ready.pairs is not None:
        stored[:ready.pairs] = native_g.embeddings[:ready.pairs]
    return stored


def _query_side(ready: ReadyAdapters, old_q: ModelRun) -> Any:
    return (_Anchored(ready.query_adapter, old_q.embeddings) if _blends(ready.query_adapter)
            else ready.query_adapter)


def adapted_scores(ready: ReadyAdapters, old_g: ModelRun, native_g: ModelRun,
                   native_q: ModelRun, old_q: ModelRun) -> Optional[dict[str, dict[str, float]]]:
    """Retrieval of v2 through each adapter (exact galleries, as the matrix is scored)."""
    scores: dict[str, dict[str, float]] = {}
    if ready.query_adapter is not None:
        stored = exact_gallery(old_g.embeddings, OLD, "cosine")
        queries = _query_side(ready, old_q).transform(native_q.embeddings)
        scores[QUERY_ADAPTED] = evaluate(queries, old_q.labels, stored, old_g.labels)
    if ready.adapter is not None:
        transformed = exact_gallery(_transformed(ready, old_g, native_g), OLD, "cosine")
        scores[GALLERY_TRANSFORMED] = evaluate(native_q.embeddings, old_q.labels, transformed,
                                               old_g.labels)
    return scores or None


def upgrade_backfill(old_g: ModelRun, new_g: Optional[ModelRun], new_q: ModelRun,
                     native_g: ModelRun, native_q: ModelRun, old_q: ModelRun,
                     ready: ReadyAdapters, orders: Sequence[str], fractions: Sequence[float],
                     seed: int, progress: bool) -> Optional[BackfillCurve]:
    """v2 queries on v1's gallery re-embedded in each order: raw (v2's queries for v1's gallery,
    when it has v1's size); with ``adapter``, the not-yet-re-embedded items transformed into v2's
    space (``"<order> + adapter"``); with ``query_adapter``, those items left in v1's space and
    reached by the adapted queries (``"<order> + query adapter"``). With ``"fit"`` the paired
    items count as re-embedded from the start of the adapter curves."""
    index = Gallery(dim=old_g.embeddings.shape[1], device="cpu")
    ids = np.arange(len(old_g.labels))
    index.add(old_g.embeddings, ids=ids, version=OLD)
    plans = {order: plan_backfill(index, order, logits=old_g.logits, seed=seed)
             for order in orders}
    options = {"gallery_ids": ids, "ks": (1, 5), "map_k": BACKFILL_MAP_K, "old_version": OLD,
               "new_version": NEW, "progress": progress,
               "backfilled": None if ready.pairs is None else ids[:ready.pairs]}
    curves = []
    if new_g is not None:
        curves.append(("", backfill_curve(new_q.embeddings, old_q.labels, old_g.embeddings,
                                          new_g.embeddings, old_g.labels, plans, fractions,
                                          **{**options, "backfilled": None})))
    if ready.adapter is not None:
        curves.append((ADAPTER_SUFFIX, backfill_curve(
            native_q.embeddings, old_q.labels, old_g.embeddings, native_g.embeddings,
            old_g.labels, plans, fractions, adapter=ready.adapter, **options)))
    if ready.query_adapter is not None:
        curves.append((QUERY_ADAPTER_SUFFIX, backfill_curve(
            native_q.embeddings, old_q.labels, old_g.embeddings, native_g.embeddings,
            old_g.labels, plans, fractions, query_adapter=_query_side(ready, old_q),
            **options)))
    if not curves:
        return None
    return BackfillCurve(curves[0][1].fractions, {
        order + suffix: values for suffix, curve in curves for order, values in curve.scores.items()})
