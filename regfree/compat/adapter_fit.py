"""Learning an :class:`EmbeddingAdapter` from a paired sample: items embedded by both models.

- ``"orthogonal"``: Procrustes, ``W = U V^T`` from the SVD of ``source^T target``; semi-orthogonal
  when the widths differ (the same as zero-padding the narrower side). Keeps cosine geometry and
  needs few pairs, so it cannot move items that the source model confuses.
- ``"affine"``: ridge regression with a bias, optionally rank-limited (reduced-rank regression).
- ``"mlp"``: the affine map plus a residual ReLU branch, trained with a cosine loss (squared
  error when ``normalize=False``), starting from the ridge solution with the branch at zero.
  Given the pairs' class ``labels``, it is trained instead so that each mapped source row's
  nearest target rows (its own left out) share its class (:class:`CrossModelNCALoss` with the
  target rows as the memory): a query adapter that searches the target gallery as well as it can,
  rather than one that copies the target model (which can at best search as well as it does).
- ``"orthogonal"`` with ``blend=t`` (SLERP, query side): the Procrustes map, then a spherical
  interpolation from the target model's own embedding of the same input (t = 0) to the mapped
  one (t = 1); training-free, but the target model (v1) runs on every query.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from regfree.compat.adapter import ADAPTER_KINDS, EmbeddingAdapter, _l2_normalise
from regfree.compat.losses import _check_temperature, _class_ids
from regfree.compat.nca import CrossModelNCALoss
from regfree.progress import progress_bar

_MAX_EPOCHS = 200
_STEP_BUDGET = 4000  # optimiser steps the default epochs aim for on large paired samples
# chosen on validation: experiments/compat_new_class_adapter.py
_LABELLED_TEMPERATURE = 0.02
_LABELLED_ANCHOR = 1.0


def _as_pairs(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (items x dims), got shape "
                         f"{array.shape}")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise ValueError(f"{name} has NaN or inf in {bad} rows")
    return array


def _orthogonal(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(source.T @ target, full_matrices=False)
    return u @ vt


def _ridge(source: np.ndarray, target: np.ndarray, ridge: float,
           rank: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    n, dim = source.shape
    design = np.hstack([source, np.ones((n, 1))])
    penalty = np.eye(dim + 1) * ridge * n
    penalty[dim, dim] = 0.0  # the bias is not shrunk
    solution = np.linalg.solve(design.T @ design + penalty, design.T @ target)
    if rank is not None and rank < min(solution.shape):
        _, _, vt = np.linalg.svd(design @ solution, full_matrices=False)
        keep = vt[:rank].T
        solution = solution @ keep @ keep.T
    return solution[:dim], solution[dim]


def _cosine_gap(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − the mean cosine similarity of each mapped row with its target row."""
    return 1 - torch.nn.functional.cosine_similarity(out, target, dim=1).mean()


def _train_residual(source: np.ndarray, target: np.ndarray, weight: np.ndarray,
                    bias: np.ndarray, *, normalize: bool, hidden: int, epochs: int, lr: float,
                    batch_size: int, seed: int, progress: bool,
                    labels: Optional[torch.Tensor] = None, temperature: float = 0.1,
                    anchor_weight: float = 0.0) -> dict[str, np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(source, dtype=torch.float32)
    y = torch.as_tensor(target, dtype=torch.float32)
    linear = torch.nn.Linear(source.shape[1], target.shape[1])
    first = torch.nn.Linear(source.shape[1], hidden)
    last = torch.nn.Linear(hidden, target.shape[1])
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight.T))
        linear.bias.copy_(torch.as_tensor(bias))
        bound = 1.0 / np.sqrt(source.shape[1])
        first.weight.uniform_(-bound, bound, generator=generator)
        first.bias.uniform_(-bound, bound, generator=generator)
        last.weight.zero_()
        last.bias.zero_()
    modules = torch.nn.ModuleList([linear, first, last])
    optimiser = torch.optim.Adam(modules.parameters(), lr=lr)
    nca = None if labels is None else CrossModelNCALoss(y, labels, temperature=temperature)
    for _ in progress_bar(range(epochs), desc="fit_adapter(mlp)", unit="epoch",
                          enabled=progress):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            out = linear(x[batch]) + last(torch.relu(first(x[batch])))
            if nca is not None:
                loss = nca(out, nca.labels[batch], batch)
                if anchor_weight:
                    loss = loss + anchor_weight * _cosine_gap(out, y[batch])
            elif normalize:
                loss = _cosine_gap(out, y[batch])
            else:
                loss = (out - y[batch]).pow(2).sum(1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    detach = {"weight": linear.weight.T, "bias": linear.bias, "hidden_weight": first.weight.T,
              "hidden_bias": first.bias, "out_weight": last.weight.T, "out_bias": last.bias}
    return {name: value.detach().numpy().copy() for name, value in detach.items()}


def _check_number(value: Any, name: str, *, low: float, integer: bool = False) -> None:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not np.isfinite(value) \
            or value < low:
        expected = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {expected} >= {low}, got {value!r}")


def fit_adapter(source: Any, target: Any, *, kind: str = "affine", normalize: bool = True,
                ridge: float = 1e-3, rank: Optional[int] = None, hidden: Optional[int] = None,
                epochs: Optional[int] = None, lr: float = 1e-2, batch_size: int = 256, seed: int = 0,
                blend: Optional[float] = None, labels: Any = None,
                temperature: Optional[float] = None, anchor_weight: Optional[float] = None,
                progress: bool = True) -> EmbeddingAdapter:
    """Learn a map from ``source`` embeddings to ``target`` embeddings of the same items.

    Row ``i`` of both arrays embeds the same item: v1 -> v2 pairs give an adapter for the stored
    gallery, v2 -> v1 pairs one for new queries against the old index.

    Args:
        source: ``(n, source_dim)`` embeddings the adapter will take.
        target: ``(n, target_dim)`` embeddings of the same ``n`` items in the other space.
        kind: ``"orthogonal"``, ``"affine"`` or ``"mlp"`` (see the module docs). ``"affine"``
            is the default because it recovered the most of the full-backfill top-1 gain across
            datasets and paired-sample sizes up to 10% of the gallery in
            ``experiments/posthoc_adapters.py``, fitting in milliseconds; ``"mlp"`` did better
            on mAP from a few percent and on both from about 30%.
        normalize: L2-normalise both sides (cosine galleries); ``False`` for L2 galleries.
        ridge: ``"affine"``/``"mlp"``: penalty per pair on the squared weights.
        rank: ``"affine"``/``"mlp"``: keep only this many output directions (None: all).
        hidden: ``"mlp"``: width of the residual branch (None: twice the target width).
        epochs: ``"mlp"``: passes over the pairs (None: 200, or fewer when that would exceed
            about 4,000 optimiser steps, so a large paired sample does not train for hours).
        lr, batch_size, seed: ``"mlp"``: Adam training of the residual map.
        blend: ``"orthogonal"`` only: make a SLERP adapter whose :meth:`~EmbeddingAdapter.
            transform` takes ``anchor=`` (the target model's embeddings of the same inputs) and
            returns ``slerp(anchor, mapped, blend)``; 1 is plain Procrustes, 0 the anchor.
            Needs ``normalize=True``. None (default): no blend.
        labels: ``"mlp"`` only: ``(n,)`` class ids of the paired items; the map is then trained
            so that its outputs' nearest target rows (each item's own left out) share their
            class, instead of to reproduce the target rows. Useful when the target model
            searches poorly for some classes (e.g. ones it never trained on). None: regression.
        temperature: with ``labels`` only: divides the cosine similarities of the
            neighbourhood objective (smaller: nearer to the hard nearest neighbour that a
            top-1 search counts). None: the default chosen on validation data in
            ``experiments/compat_new_class_adapter.py``.
        anchor_weight: with ``labels`` only: weight of the cosine pull of each mapped row onto
            the target row of the same item, added to the neighbourhood objective; it keeps
            queries near where the target model puts them, so the map cannot lean on a few
            target rows that a larger gallery crowds out. None: the default chosen beside
            ``temperature``.
        progress: show a progress bar over ``"mlp"`` epochs.

    Returns:
        The fitted :class:`EmbeddingAdapter`.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> v1 = rng.normal(size=(200, 8))
        >>> v2 = np.tanh(v1 @ rng.normal(size=(8, 6)))
        >>> adapter = fit_adapter(v1, v2, kind="affine")
        >>> adapter.transform(v1[:3]).shape
        (3, 6)
    """
    if kind not in ADAPTER_KINDS:
        raise ValueError(f"kind must be one of {ADAPTER_KINDS}, got {kind!r}")
    source = _as_pairs(source, "source")
    target = _as_pairs(target, "target")
    if len(source) != len(target):
        raise ValueError(f"source and target must pair the same items: got {len(source)} and "
                         f"{len(target)} rows")
    _check_number(ridge, "ridge", low=0)
    if blend is not None:
        _check_number(blend, "blend", low=0)
        if blend > 1:
            raise ValueError(f"blend must be a finite number in [0, 1], got {blend!r}")
        if kind != "orthogonal" or not normalize:
            raise ValueError("blend (SLERP) applies to kind='orthogonal' with normalize=True, "
                             f"got kind={kind!r}, normalize={normalize}")
    needed = source.shape[1] + 1 if kind != "orthogonal" and ridge == 0 else 2
    if len(source) < needed:
        raise ValueError(f"kind {kind!r} needs at least {needed} pairs, got {len(source)} "
                         "(pass more pairs, or ridge > 0)")
    label_ids = None
    if labels is not None:
        if kind != "mlp" or not normalize:
            raise ValueError(f"labels (the neighbourhood objective, by cosine) apply to "
                             f"kind='mlp' with normalize=True, got kind={kind!r}, "
                             f"normalize={normalize}")
        label_ids = _class_ids(labels, len(source), "pair")
    for name, value in (("temperature", temperature), ("anchor_weight", anchor_weight)):
        if value is not None and label_ids is None:
            raise ValueError(f"{name} applies to the neighbourhood objective (labels=), got "
                             f"{name}={value!r} without labels")
    anchor_weight = _LABELLED_ANCHOR if anchor_weight is None else anchor_weight
    _check_number(anchor_weight, "anchor_weight", low=0)
    temperature = _check_temperature(_LABELLED_TEMPERATURE if temperature is None
                                      else temperature)
    if rank is not None:
        _check_number(rank, "rank", low=1, integer=True)
    _check_number(batch_size, "batch_size", low=1, integer=True)
    if epochs is None:
        batches = -(-len(source) // batch_size)
        epochs = max(1, min(_MAX_EPOCHS, -(-_STEP_BUDGET // batches)))
    _check_number(epochs, "epochs", low=1, integer=True)
    _check_number(lr, "lr", low=0)
    if normalize:
        source, target = _l2_normalise(source), _l2_normalise(target)
    settings: dict[str, Any] = {"pairs": len(source)}
    if kind == "orthogonal":
        weight, bias = _orthogonal(source, target), np.zeros(target.shape[1])
        params = {"weight": weight, "bias": bias}
        if blend is not None:
            settings["blend"] = float(blend)
    else:
        weight, bias = _ridge(source, target, float(ridge), rank)
        settings.update(ridge=float(ridge), rank=rank)
        params = {"weight": weight, "bias": bias}
        if kind == "mlp":
            width = int(hidden) if hidden is not None else 2 * target.shape[1]
            _check_number(width, "hidden", low=1, integer=True)
            settings.update(hidden=width, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                            objective="regression" if label_ids is None else "neighbours")
            if label_ids is not None:
                settings.update(temperature=temperature, anchor_weight=float(anchor_weight))
            params = _train_residual(source, target, weight, bias, normalize=normalize,
                                     hidden=width, epochs=epochs, lr=lr, batch_size=batch_size,
                                     seed=seed, progress=progress, labels=label_ids,
                                     temperature=temperature,
                                     anchor_weight=float(anchor_weight))
    params = {name: np.ascontiguousarray(value, dtype=np.float32)
              for name, value in params.items()}
    return EmbeddingAdapter(kind=kind, params=params, normalize=normalize, settings=settings)
