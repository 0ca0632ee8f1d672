"""Losses for backward-compatible training, added to the new model's own cross-entropy.

Both are called on tensors like any torch loss, new model's output first (``bct(new_embeddings,
targets)``, ``l2(new_embeddings, old_embeddings)``), in your own training loop or, passed in
``loss_terms``, by :func:`regfree.training.fit` (which reads the tensors from each step).

- :class:`BackwardCompatibleLoss` (BCT, Shen et al. CVPR 2020): the new embeddings must be
  classified correctly by the frozen old head.
- :class:`EmbeddingRegressionLoss`: the L2 baseline, pulling each new embedding onto the old
  model's embedding of the same sample (in ``fit``, cached by dataset index).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from regfree.compat.heads import freeze
from regfree.training.steps import TrainStep, step_embeddings, step_indices

_UNSEEN_POLICIES = ("error", "ignore")


def _check_weight(weight: float) -> float:
    if not (isinstance(weight, (int, float)) and np.isfinite(weight) and weight >= 0):
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
    return float(weight)


def _check_shares(values: Optional[Sequence[float]], count: Optional[int], argument: str,
                  each: str) -> Optional[list[float]]:
    """``values`` as floats: ``count`` (any number when None) finite numbers >= 0, not all 0;
    None stays None. ``argument`` and ``each`` ("old head", ...) word the error."""
    if values is None:
        return None
    checked = list(values)
    expected = len(checked) if count is None else count
    if len(checked) != expected or not checked or not any(checked) or not all(
            isinstance(v, (int, float)) and np.isfinite(v) and v >= 0 for v in checked):
        number = "" if count is None else f"{count} "
        raise ValueError(f"{argument} must be {number}finite numbers >= 0, not all 0 (one per "
                         f"{each}), got {values!r}")
    return [float(v) for v in checked]


def _check_batch(new_embeddings: torch.Tensor, targets: torch.Tensor) -> None:
    """A ``(B, D)`` batch of embeddings and its ``(B,)`` targets, or an error naming them."""
    if new_embeddings.dim() != 2:
        raise ValueError(f"new_embeddings must have shape (B, D), got "
                         f"{tuple(new_embeddings.shape)}")
    if targets.shape != new_embeddings.shape[:1]:
        raise ValueError(f"targets must have shape ({new_embeddings.shape[0]},), got "
                         f"{tuple(targets.shape)}")


def _as_cache(array, name: str) -> torch.Tensor:
    """A float32 copy of an ``(N, D)`` array of old embeddings (``name`` words the error)."""
    cache = array.detach() if isinstance(array, torch.Tensor) else torch.as_tensor(
        np.asarray(array))
    if cache.dim() != 2 or not cache.is_floating_point():
        raise ValueError(f"{name} must be a float (N, D) array, got shape {tuple(cache.shape)} "
                         f"and dtype {cache.dtype}")
    return cache.float().clone()


def _class_ids(labels: Any, count: int, each: str) -> torch.Tensor:
    """``labels`` as ``(count,)`` int64 class ids, or an error naming ``labels`` (``each``, e.g.
    "pair", says what one label belongs to)."""
    array = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labels must be ({count},) integer class ids, one per {each}, got "
                         f"shape {array.shape} and dtype {array.dtype}")
    return torch.as_tensor(array, dtype=torch.long)


def _check_temperature(temperature: float) -> float:
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature)
            and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0 (e.g. 0.1), got "
                         f"{temperature!r}")
    return float(temperature)


def _as_caches(old_embeddings) -> list[torch.Tensor]:
    """One float32 ``(N, D)`` copy per earlier version from an array or a sequence of them
    (oldest first), all of one shape, or an error naming ``old_embeddings``."""
    several = isinstance(old_embeddings, (list, tuple))
    arrays = list(old_embeddings) if several else [old_embeddings]
    if not arrays:
        raise ValueError("old_embeddings must be an (N, D) array or a non-empty sequence "
                         "of them (one per earlier version), got an empty sequence")
    caches = [_as_cache(a, f"old_embeddings[{p}]") for p, a in enumerate(arrays)]
    if len({tuple(c.shape) for c in caches}) != 1:
        raise ValueError("old_embeddings must all have the same shape (N, D): the same "
                         "training set and the new model's embedding size, got "
                         f"{[tuple(c.shape) for c in caches]}")
    return caches


def _rows_at(caches: list[torch.Tensor], step: TrainStep, owner: str, device: torch.device
             ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The caches on ``device`` (moved once, kept by the caller) and their rows at the step's
    sample indices; an error when the indices reach past the cached training set."""
    indices = step_indices(step, owner).cpu()
    if indices.numel() and int(indices.max()) >= len(caches[0]):
        raise ValueError(f"step.indices reach {int(indices.max())} but old_embeddings has "
                         f"{len(caches[0])} rows; cache the whole training set")
    caches = [c if c.device == device else c.to(device) for c in caches]
    indices = indices.to(device)
    return caches, [c[indices] for c in caches]


class BackwardCompatibleLoss(nn.Module):
    """BCT influence loss ``weight * CE(old_head(new_embeddings), targets)``, old head frozen.

    Called like a torch loss: ``bct(new_embeddings, targets)`` with ``(B, D)`` embeddings of the
    new model and ``(B,)`` int64 class ids, returning a scalar tensor to add to the new model's
    cross-entropy (in your own loop, or by :func:`regfree.training.fit`, which passes each
    step's embeddings and targets).

    Several earlier heads (``[v1_head, v2_head]``, oldest first) keep a new version compatible
    with every version whose embeddings are still in a gallery: the term is then the weighted
    mean ``weight * sum_h w_h CE(head_h(new_embeddings), targets) / sum_h w_h`` (``head_weights``
    ``w_h``, 1 each by default). Trained through the last head only, compatibility does not carry
    down a chain (v3 through v2's head stays far from v1's space).

    The loss keeps a frozen copy of ``old_head`` (``requires_grad=False``, eval mode): gradients
    flow through it into the new embeddings but it is never updated and stores no ``.grad``.
    For classes the old head never saw, either extend it first with
    :func:`~regfree.compat.extend_head` or pass ``unseen="ignore"`` to leave those samples out
    of this term.

    When v2's embedding size differs from v1's, pass a learned ``projection`` from v2's space
    into v1's: the loss becomes ``weight * CE(old_head(projection(new_embeddings)), targets)``.
    The projection is a trainable submodule of this term, and :func:`regfree.training.fit`
    optimises (and, under ``torchrun``, averages) module loss-term parameters with the model's.
    After training, serve with ``ProjectedModel(v2, bct.projection)``: native embeddings for a
    new gallery, projected ones for the old gallery. (Training a ``ProjectedModel`` directly,
    whose forward returns projected embeddings, with ``projection=None`` is equivalent.)

    After each call, ``last_old_head_accuracy`` holds the share of the batch (of the samples the
    term used) that the old head classifies correctly from the new embeddings, and
    ``last_used`` how many samples the term used.

    Args:
        old_head: the old model's head (``nn.Linear``, :class:`CosineClassifier`, any module
            mapping embeddings to logits), or a sequence of earlier versions' heads that all take
            the same embedding size. Frozen copies are stored (``old_heads``; ``old_head`` is the
            last one); the originals are untouched.
        weight: lambda, the multiplier of the cross-entropy through the old head(s).
        head_weights: with several heads, each head's share of the term (non-negative, not all
            zero); None weighs them equally.
        projection: optional trainable module mapping new embeddings ``(B, D_new)`` to the old
            space ``(B, D_old)``.
        unseen: ``"error"`` (default) raises on targets the old head has no output for;
            ``"ignore"`` leaves those samples out of the term.
        name: label of the term in the training history.

    Example:
        >>> old_head = nn.Linear(4, 3)
        >>> bct = BackwardCompatibleLoss(old_head, weight=0.5)
        >>> new_embeddings = torch.randn(2, 4, requires_grad=True)
        >>> value = bct(new_embeddings, torch.tensor([0, 1]))
        >>> value.backward()
        >>> value.dim(), new_embeddings.grad is not None, old_head.weight.grad is None
        (0, True, True)
    """

    def __init__(self, old_head: Union[nn.Module, Sequence[nn.Module]], weight: float = 1.0,
                 projection: Optional[nn.Module] = None, unseen: str = "error",
                 name: str = "bct", *,
                 head_weights: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        heads = [old_head] if isinstance(old_head, nn.Module) else list(old_head)
        if not heads or not all(isinstance(h, nn.Module) for h in heads):
            raise ValueError("old_head must be an nn.Module or a non-empty sequence of them, got "
                             f"{type(old_head).__name__}")
        if unseen not in _UNSEEN_POLICIES:
            raise ValueError(f"unseen must be one of {_UNSEEN_POLICIES}, got {unseen!r}")
        if projection is not None and not isinstance(projection, nn.Module):
            raise ValueError(f"projection must be an nn.Module or None, got "
                             f"{type(projection).__name__}")
        self.old_heads = nn.ModuleList(freeze(h) for h in heads)
        self.head_weights = (_check_shares(head_weights, len(heads), "head_weights", "old head")
                             or [1.0] * len(heads))
        self.projection = projection
        self.weight = _check_weight(weight)
        self.unseen = unseen
        self.name = name
        self.last_old_head_accuracy: Optional[float] = None
        self.last_used = 0

    @property
    def old_head(self) -> nn.Module:
        """The frozen copy of the (last, most recent) old head."""
        return self.old_heads[-1]

    def train(self, mode: bool = True) -> BackwardCompatibleLoss:
        super().train(mode)
        self.old_heads.eval()  # old heads never run in training mode (dropout, batch norm)
        return self

    def forward(self, new_embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``weight * CE(old_head(projection(new_embeddings)), targets)``, a scalar tensor.

        Args:
            new_embeddings: ``(B, D)`` embeddings of the new model (in the old space unless a
                projection is set).
            targets: ``(B,)`` int64 class ids.

        Returns:
            The weighted mean cross-entropy (0 when no sample is usable under ``unseen="ignore"``).
        """
        _check_batch(new_embeddings, targets)
        if self.projection is not None:
            new_embeddings = self.projection(new_embeddings)
        total, used, accuracy = new_embeddings.sum() * 0.0, [], None
        for head, share in zip(self.old_heads, self.head_weights):
            logits = head(new_embeddings)
            known = targets < logits.shape[1]
            if not bool(known.all()) and self.unseen == "error":
                unseen = sorted(set(targets[~known].tolist()))
                raise ValueError(
                    f"targets has classes {unseen} the old head ({logits.shape[1]} outputs) never "
                    "saw; extend it with extend_head(...) or pass unseen='ignore'")
            used.append(int(known.sum()))
            if used[-1] and share:
                total = total + share * F.cross_entropy(logits[known], targets[known])
            if head is self.old_head and used[-1]:
                with torch.no_grad():
                    accuracy = float((logits[known].argmax(1) == targets[known]).float().mean())
        self.last_used = used[-1]
        self.last_old_head_accuracy = accuracy
        return self.weight * total / sum(self.head_weights)

    def step_arguments(self, step: TrainStep) -> tuple[torch.Tensor, torch.Tensor]:
        """What :func:`regfree.training.fit` passes: the step's embeddings and targets."""
        return step_embeddings(step, "BackwardCompatibleLoss"), step.targets


class EmbeddingRegressionLoss(nn.Module):
    """L2 baseline ``weight * mean_i ||new_i - old_i||^2`` to the old embedding of each sample.

    Called like a torch loss: ``l2(new_embeddings, old_embeddings)`` on two ``(B, D)`` batches
    (the old side is detached: only the new model learns). To pass it to
    :func:`regfree.training.fit`, give it the old model's embeddings of the whole training set
    (``old_embeddings``, computed once with the frozen old model): ``fit`` then looks up each
    step's rows by dataset index, so the training data must be map-style (arrays, a Dataset or
    a DataLoader over one), not an IterableDataset.

    Args:
        old_embeddings: ``(N, D_old)`` old-model embeddings of the whole training set, in
            dataset order; needed only inside ``fit``.
        weight: lambda, the multiplier of the squared distance.
        normalize: compare unit vectors (for cosine galleries) instead of raw embeddings.
        name: label of the term in the training history.

    Example:
        >>> l2 = EmbeddingRegressionLoss(weight=1.0)
        >>> float(l2(torch.ones(2, 3), torch.zeros(2, 3)))
        3.0
    """

    def __init__(self, old_embeddings=None, weight: float = 1.0, normalize: bool = False,
                 name: str = "l2") -> None:
        super().__init__()
        cache = None if old_embeddings is None else _as_cache(old_embeddings, "old_embeddings")
        # a plain attribute, not a buffer: DistributedDataParallel would broadcast a buffer from
        # rank 0 at every step, and every process already holds the same cache
        self.old_embeddings: Optional[torch.Tensor] = cache
        self.weight = _check_weight(weight)
        self.normalize = bool(normalize)
        self.name = name

    def forward(self, new_embeddings: torch.Tensor, old_embeddings: torch.Tensor) -> torch.Tensor:
        """``weight * mean_i ||new_i - old_i||^2`` between two ``(B, D)`` batches.

        Args:
            new_embeddings: ``(B, D)`` embeddings of the new model.
            old_embeddings: ``(B, D)`` old-model embeddings of the same samples (detached,
                moved to ``new_embeddings``' device and dtype).

        Returns:
            A scalar tensor, differentiable in ``new_embeddings``.
        """
        if new_embeddings.shape != old_embeddings.shape:
            raise ValueError(f"new_embeddings {tuple(new_embeddings.shape)} and old_embeddings "
                             f"{tuple(old_embeddings.shape)} must have the same shape")
        old_embeddings = old_embeddings.detach().to(new_embeddings.device, new_embeddings.dtype)
        if self.normalize:
            new_embeddings = F.normalize(new_embeddings, dim=1)
            old_embeddings = F.normalize(old_embeddings, dim=1)
        return self.weight * (new_embeddings - old_embeddings).pow(2).sum(dim=1).mean()

    def step_arguments(self, step: TrainStep) -> tuple[torch.Tensor, torch.Tensor]:
        """What :func:`regfree.training.fit` passes: the step's embeddings and their cached
        old embeddings (looked up by ``step.indices``)."""
        embeddings = step_embeddings(step, "EmbeddingRegressionLoss")
        if self.old_embeddings is None:
            raise ValueError("EmbeddingRegressionLoss in fit needs old_embeddings, the old "
                             "model's (N, D) embeddings of the whole training set: "
                             "EmbeddingRegressionLoss(old_embeddings, ...)")
        (self.old_embeddings,), (rows,) = _rows_at([self.old_embeddings], step,
                                                   "EmbeddingRegressionLoss", embeddings.device)
        return embeddings, rows
