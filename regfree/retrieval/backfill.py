"""Partial backfill: in which order to re-embed gallery items, and what each step buys.

After an update the gallery still holds v1 embeddings. Re-embedding ("backfilling") every item
with v2 costs a full pass of v2 over the gallery; with a backward-compatible v2 the service can
search the old gallery meanwhile and backfill gradually. FastFill (Jaeckle et al., ICLR 2023)
observed that the *order* matters: re-embedding the items whose old embeddings are least
reliable first gains most of the accuracy early. Here the reliability proxy is v1's own
classifier confidence on the item (small top-1/top-2 margin or high entropy = unreliable), which
needs no v2 pass; random order is the baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from regfree.metrics.retrieval import DEFAULT_KS
from regfree.progress import progress_bar
from regfree.retrieval._checks import Version, adapted, as_ids, as_matrix, as_numpy, check_adapter
from regfree.retrieval.evaluation import evaluate
from regfree.retrieval.gallery import Gallery

ORDERS = ("random", "margin", "entropy", "scores")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=1, keepdims=True)


def plan_backfill(gallery: Gallery, order: str = "random", *, version: Optional[Version] = None,
                  logits: Any = None, scores: Any = None, ids: Any = None,
                  seed: int = 0) -> np.ndarray:
    """The order in which to re-embed gallery items, most useful first.

    Args:
        gallery: the gallery to backfill.
        order: ``"random"`` (a seeded permutation); ``"margin"`` (smallest gap between v1's
            two most probable classes first); ``"entropy"`` (highest entropy of v1's softmax
            first); ``"scores"`` (highest caller-given priority first).
        version: only plan items currently of this version (default: every item).
        logits: ``(n, C)`` v1 classifier logits of the items, for margin/entropy.
        scores: ``(n,)`` priorities, for ``"scores"``.
        ids: ``(n,)`` the item id of each row of ``logits``/``scores`` (default: the gallery's
            sorted ids, i.e. row ``r`` is the ``r``-th smallest id). Must cover every planned item.
        seed: the random order's seed (also breaks exact ties of the informed orders).

    Returns:
        int64 ids of the planned items, first to re-embed first.

    Example:
        >>> import numpy as np
        >>> g = Gallery(dim=2)
        >>> g.add(np.eye(2).repeat(2, axis=0) + 0.1, ids=[0, 1, 2, 3], version="v1")
        >>> logits = np.array([[5.0, 0.0], [0.1, 0.0], [0.0, 3.0], [0.0, 9.0]])
        >>> plan_backfill(g, "margin", logits=logits).tolist()
        [1, 2, 0, 3]
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    planned = gallery.ids(version)
    if planned.size == 0:
        raise ValueError(f"the gallery has no items of version {version!r} to backfill"
                         if version is not None else "the gallery is empty: nothing to backfill")
    rng = np.random.default_rng(seed)
    if order == "random":
        return rng.permutation(planned)
    if order == "scores":
        if scores is None:
            raise ValueError("order='scores' needs scores (one priority per item)")
        priority = as_numpy(scores).astype(np.float64)
        if priority.ndim != 1 or not np.isfinite(priority).all():
            raise ValueError(f"scores must be 1-D and finite, got shape {priority.shape}")
    else:
        if logits is None:
            raise ValueError(f"order={order!r} needs logits (v1's class logits per item)")
        probs = _softmax(as_matrix(logits, "logits").astype(np.float64))
        if probs.shape[1] < 2:
            raise ValueError("logits must have at least two classes")
        if order == "margin":
            top2 = np.sort(probs, axis=1)[:, -2:]
            priority = -(top2[:, 1] - top2[:, 0])
        else:
            priority = -(probs * np.log(np.clip(probs, 1e-300, None))).sum(axis=1)
    row_ids = gallery.ids() if ids is None else as_ids(ids)
    if row_ids.size != priority.shape[0]:
        raise ValueError(f"{'scores' if order == 'scores' else 'logits'} has "
                         f"{priority.shape[0]} rows but ids has {row_ids.size}")
    by_id = np.argsort(row_ids)
    sorted_ids, sorted_priority = row_ids[by_id], priority[by_id]
    where = np.searchsorted(sorted_ids, planned).clip(0, sorted_ids.size - 1)
    if np.any(sorted_ids[where] != planned):
        raise ValueError("ids does not cover every item to backfill")
    item_priority = sorted_priority[where]
    tiebreak = rng.permutation(planned.size)
    return planned[np.lexsort((tiebreak, -item_priority))]


@dataclass
class BackfillCurve:
    """Retrieval scores as the backfilled share of the gallery grows, for each order.

    Attributes:
        fractions: ``(m,)`` shares of items re-embedded, ascending, in [0, 1].
        scores: ``{order name: {score name: (m,) values}}``, score names as :func:`evaluate`'s.
    """

    fractions: np.ndarray
    scores: dict[str, dict[str, np.ndarray]]

    def area(self, order: str, metric: str = "top1") -> float:
        """Mean score over the backfill (trapezoid area under the curve / fraction range);
        higher means the order gains accuracy earlier."""
        values = self.scores[order][metric]
        span = self.fractions[-1] - self.fractions[0]
        if span == 0:
            return float(values.mean())
        widths = np.diff(self.fractions)
        return float(np.sum(widths * (values[1:] + values[:-1]) / 2) / span)

    def to_markdown(self, metric: str = "top1", digits: int = 3) -> str:
        """One row per order, one column per fraction, plus the area."""
        header = " | ".join(f"{100 * f:g}%" for f in self.fractions)
        lines = [f"| order | {header} | area |", "|---|" + "---:|" * (len(self.fractions) + 1)]
        for name, values in self.scores.items():
            cells = " | ".join(f"{v:.{digits}f}" for v in values[metric])
            lines.append(f"| {name} | {cells} | {self.area(name, metric):.{digits}f} |")
        return "\n".join(lines)


def backfill_curve(query_embeddings: Any, query_labels: Any, old_embeddings: Any,
                   new_embeddings: Any, gallery_labels: Any, orders: Mapping[str, Any],
                   fractions: Sequence[float] = tuple(np.linspace(0.0, 1.0, 11)), *,
                   gallery_ids: Any = None, similarity: str = "cosine",
                   index_type: str = "flat", ks: Sequence[int] = DEFAULT_KS,
                   map_k: Optional[int] = None, ap_denominator: str = "relevant",
                   index_params: Optional[Mapping[str, int]] = None,
                   old_version: Version = "old", new_version: Version = "new",
                   adapter: Any = None, query_adapter: Any = None, backfilled: Any = None,
                   progress: bool = True) -> BackfillCurve:
    """Measure retrieval while a gallery is backfilled from old to new embeddings, per order.

    For each order a real :class:`Gallery` is built from ``old_embeddings``; at each fraction
    ``f`` the next items of the order are :meth:`Gallery.replace`-d by their new embeddings until
    ``round(f * n)`` are new, and the new model's queries are evaluated with :func:`evaluate`.
    At ``f = 0`` this is new/old retrieval, at ``f = 1`` new/new. With ``adapter`` (a post-hoc
    map from the old space into the new one, e.g. :class:`regfree.compat.EmbeddingAdapter`), the
    items not yet backfilled are stored as ``adapter.transform(old_embeddings)`` instead of raw:
    ``f = 0`` is then the new queries on the transformed gallery, and every search compares
    vectors of the new space only.

    With ``query_adapter`` instead (a map from the new space into the old one), the items not
    yet backfilled stay as stored, in the old space, and each query reaches them through the
    adapter while it searches the backfilled items natively; the two result lists are ranked
    together on their cosine scores. One index does exactly that merge: queries are stored as
    ``[q, query_adapter(q)]``, backfilled items as ``[new, 0]`` and the others as ``[0, old]``
    (each block unit-norm), so a query meets each item only in that item's own space. ``f = 0``
    is then the adapted queries on the old gallery as stored. Cosine only.

    ``backfilled``: ids already re-embedded before the curve starts (e.g. the paired sample an
    adapter was fitted on): they are stored with their new embeddings from ``f = 0`` on.

    Args:
        query_embeddings: ``(nq, dim)`` queries embedded by the new model.
        query_labels: ``(nq,)`` their class ids.
        old_embeddings: ``(n, dim)`` the gallery items embedded by the old model.
        new_embeddings: ``(n, dim)`` the same items embedded by the new model.
        gallery_labels: ``(n,)`` class ids of the items (row order).
        orders: ``{name: ids}``, each a permutation of ``gallery_ids`` (e.g. from
            :func:`plan_backfill`).
        fractions: ascending shares in [0, 1] at which to measure.
        gallery_ids: ``(n,)`` the id of each row (default ``0..n-1``).
        similarity, index_type, index_params: the :class:`Gallery` to build (``index_params`` are its
            keyword options such as ``nlist``; an ivf gallery is trained on ``old_embeddings``).
        ks, map_k, ap_denominator: as in :func:`evaluate`.
        old_version, new_version: version labels stored in the gallery.
        adapter: ``None`` or any object with ``transform(x)`` mapping ``(n, old dim)`` to
            ``(n, new dim)``: expresses the not-yet-backfilled items in the new space.
        query_adapter: ``None`` or any object with ``transform(x)`` mapping ``(nq, new dim)``
            to ``(nq, old dim)``: queries reach the not-yet-backfilled items through it (not
            with ``adapter``; ``similarity="cosine"`` only).
        backfilled: ``None`` or ids (of ``gallery_ids``) re-embedded before the first step.
        progress: a tqdm bar over the steps.

    Returns:
        A :class:`BackfillCurve`.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> old, new = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
        >>> labels = np.arange(30) % 3
        >>> curve = backfill_curve(new[:6], labels[:6], old, new, labels,
        ...                        {"random": rng.permutation(30)}, fractions=(0, 0.5, 1),
        ...                        ks=(1,), progress=False)
        >>> curve.scores["random"]["top1"].shape
        (3,)
    """
    old = as_matrix(old_embeddings, "old_embeddings")
    if adapter is not None and query_adapter is not None:
        raise ValueError("pass adapter (old items into the new space) or query_adapter (queries "
                         "into the old space), not both: each gives its own curve")
    if adapter is not None:
        check_adapter(adapter, source_dim=old.shape[1], context="old_embeddings")
        old = adapted(adapter, old, what="old_embeddings")
    new = as_matrix(new_embeddings, "new_embeddings",
                    None if query_adapter is not None else old.shape[1])
    if new.shape[0] != old.shape[0]:
        raise ValueError(f"new_embeddings has {new.shape[0]} rows, old_embeddings {old.shape[0]}")
    if query_adapter is not None:
        if similarity != "cosine":
            raise ValueError(f"query_adapter needs similarity='cosine' (scores of the two spaces "
                             f"are ranked together), got {similarity!r}")
        query_embeddings, old, new = _two_space_layout(query_adapter, query_embeddings, old, new)
    n_items = old.shape[0]
    row_ids = np.arange(n_items) if gallery_ids is None else as_ids(gallery_ids, "gallery_ids",
                                                                     n_items)
    steps = np.asarray(fractions, dtype=np.float64)
    if steps.ndim != 1 or steps.size == 0 or np.any(np.diff(steps) < 0) or steps.min() < 0 \
            or steps.max() > 1:
        raise ValueError(f"fractions must be a non-empty ascending sequence in [0, 1], got {fractions}")
    if not orders:
        raise ValueError("orders is empty: give at least one order, e.g. {'random': ...}")
    labels = as_numpy(gallery_labels)
    if labels.shape != (n_items,):
        raise ValueError(f"gallery_labels must have shape ({n_items},), got {labels.shape}")
    label_of = dict(zip(row_ids.tolist(), labels.tolist()))
    sorter = np.argsort(row_ids)
    early = np.empty(0, dtype=np.int64)
    if backfilled is not None:
        early_ids = as_ids(backfilled, "backfilled")
        if not np.isin(early_ids, row_ids).all():
            raise ValueError("backfilled must be ids of the gallery (gallery_ids)")
        early = sorter[np.searchsorted(row_ids[sorter], early_ids)]
    checked = {}
    for name, order in orders.items():
        order = as_ids(order, f"orders[{name!r}]", n_items)
        if not np.array_equal(np.sort(order), row_ids[sorter]):
            raise ValueError(f"orders[{name!r}] must be a permutation of the gallery ids")
        checked[name] = order
    params = dict(index_params or {})
    bar = progress_bar(total=len(checked) * steps.size, desc="backfill", enabled=progress,
                       leave=False)
    results: dict[str, dict[str, np.ndarray]] = {}
    for name, order in checked.items():
        rows = sorter[np.searchsorted(row_ids[sorter], order)]
        gallery = Gallery(old.shape[1], similarity=similarity, index_type=index_type,
                          device="cpu", **params)
        if gallery.needs_training:
            gallery.train(old if query_adapter is None else np.vstack([old, new]))
        gallery.add(old, row_ids, version=old_version)
        if early.size:
            gallery.replace(new[early], row_ids[early], version=new_version)
        done, measured = 0, []
        for fraction in steps:
            target = int(round(fraction * n_items))
            if target > done:
                chunk = rows[done:target]
                gallery.replace(new[chunk], row_ids[chunk], version=new_version)
                done = target
            measured.append(evaluate(query_embeddings, query_labels, gallery, label_of, ks=ks,
                                     map_k=map_k, ap_denominator=ap_denominator))
            bar.update()
        results[name] = {key: np.array([m[key] for m in measured]) for key in measured[0]}
    bar.close()
    return BackfillCurve(fractions=steps, scores=results)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _two_space_layout(query_adapter: Any, query_embeddings: Any, old: np.ndarray,
                      new: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries ``[q, A(q)]``, new items ``[new, 0]``, old items ``[0, old]``, blocks unit-norm:
    the inner product of a query with an item is the cosine in the item's own space (over the
    query's norm, the same for every item), so one ranking merges the per-space searches."""
    queries = as_matrix(query_embeddings, "query_embeddings", new.shape[1])
    check_adapter(query_adapter, "query_adapter", source_dim=new.shape[1],
                  target_dim=old.shape[1], context="query_embeddings -> old_embeddings")
    moved = adapted(query_adapter, queries, "query_adapter", what="query_embeddings",
                    target_dim=old.shape[1], context="query_embeddings -> old_embeddings")
    zeros_new = np.zeros((old.shape[0], new.shape[1]), dtype=np.float32)
    zeros_old = np.zeros((new.shape[0], old.shape[1]), dtype=np.float32)
    return (np.hstack([_unit(queries), _unit(moved)]), np.hstack([zeros_new, _unit(old)]),
            np.hstack([_unit(new), zeros_old]))
