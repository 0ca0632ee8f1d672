"""A cross-model supervised contrastive loss: new queries must find old embeddings of their class.

What a compatible gallery needs is exactly this: a query embedded by the new version lands
nearer to the old version's embeddings of its class than to the old embeddings of any other
class. The influence loss (BCT) reaches it through the old head, the L2 pull through one target
point per sample; this loss asks for it directly, on the cosine similarities a gallery ranks by
(in the spirit of the new-to-old contrastive terms of Hot-Refresh / RACT, Zhang et al. ICLR 2022,
and LCE, Meng et al. 2021). Classes an old version never trained on need nothing special: the
old model embeds every sample, whatever its class.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from regfree.compat.losses import (
    _as_caches,
    _check_batch,
    _check_shares,
    _check_temperature,
    _check_weight,
    _rows_at,
)
from regfree.training.steps import TrainStep, step_embeddings

OldBatch = Union[torch.Tensor, Sequence[torch.Tensor]]


class CrossModelContrastiveLoss(nn.Module):
    """Supervised contrastive loss between new embeddings and old models' embeddings of a batch.

    For new embeddings ``q_i`` and an old model's embeddings ``k_j`` of the same batch (both
    L2-normalised), ``s_ij = q_i . k_j / temperature``; each ``q_i``'s positives are the ``k_j``
    of its class (``j = i`` included), and the term is
    ``mean_i mean_{j: y_j = y_i} -log(exp(s_ij) / sum_l exp(s_il))``: a new query must rank the
    old embeddings of its class above those of every other class, which is what a search of an
    old gallery scores. Only the new side learns (old embeddings are detached).

    Several earlier versions (oldest first, each with the new model's embedding size) give one
    such term each, combined as ``weight * sum_v w_v L_v / sum_v w_v`` (``version_weights``
    ``w_v``, 1 each by default), so a new version stays searchable on every gallery still in use.

    Called like a torch loss: ``loss(new_embeddings, old_embeddings, targets)`` with ``(B, D)``
    new embeddings, the old embeddings of the same samples as a ``(B, D)`` tensor or a sequence
    of them (one per earlier version) and ``(B,)`` int64 class ids. For
    :func:`regfree.training.fit`, give it each old model's embeddings of the whole training set
    (computed once, in dataset order): ``fit`` then looks up each step's rows by dataset index,
    so the training data must be map-style (arrays, a Dataset or a DataLoader over one).

    Args:
        old_embeddings: ``(N, D)`` old-model embeddings of the whole training set, or a
            sequence of them (oldest first, one per earlier version); needed only inside
            ``fit``.
        weight: lambda, the multiplier of the term.
        temperature: divides the cosine similarities (smaller: sharper contrast).
        name: label of the term in the training history.
        version_weights: with several earlier versions, each one's share of the term
            (non-negative, not all zero); None weighs them equally.

    Example:
        >>> loss = CrossModelContrastiveLoss(weight=1.0, temperature=0.5)
        >>> new = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
        >>> targets = torch.tensor([0, 1])
        >>> aligned, swapped = torch.eye(2), torch.eye(2).flip(0)  # old embeddings of the batch
        >>> bool(loss(new, aligned, targets) < loss(new, swapped, targets))
        True
        >>> loss(new, [aligned, swapped], targets).backward()  # two earlier versions
        >>> new.grad.shape
        torch.Size([2, 2])
    """

    def __init__(self, old_embeddings=None, weight: float = 1.0, temperature: float = 0.1,
                 name: str = "contrastive", *,
                 version_weights: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        caches = None if old_embeddings is None else _as_caches(old_embeddings)
        # plain attributes, not buffers: DistributedDataParallel would broadcast a buffer from
        # rank 0 at every step, and every process already holds the same caches
        self.old_embeddings: Optional[list[torch.Tensor]] = caches
        versions = None if caches is None else len(caches)
        self.version_weights = _check_shares(version_weights, versions, "version_weights",
                                             "earlier version")
        self.weight = _check_weight(weight)
        self.name = name

    def forward(self, new_embeddings: torch.Tensor, old_embeddings: OldBatch,
                targets: torch.Tensor) -> torch.Tensor:
        """The weighted contrastive term of one batch, a scalar tensor.

        Args:
            new_embeddings: ``(B, D)`` embeddings of the new model.
            old_embeddings: ``(B, D)`` old-model embeddings of the same samples, or a sequence
                of them (oldest first); detached, moved to ``new_embeddings``' device and dtype.
            targets: ``(B,)`` int64 class ids.

        Returns:
            A scalar tensor, differentiable in ``new_embeddings`` only.
        """
        _check_batch(new_embeddings, targets)
        olds = [old_embeddings] if isinstance(old_embeddings, torch.Tensor) \
            else list(old_embeddings)
        if not olds:
            raise ValueError("old_embeddings must be a (B, D) tensor or a non-empty sequence of "
                             "them, got an empty sequence")
        shares = self.version_weights or [1.0] * len(olds)
        if len(shares) != len(olds):
            raise ValueError(f"old_embeddings has {len(olds)} versions but version_weights has "
                             f"{len(shares)}; pass one (B, D) tensor per earlier version")
        query = F.normalize(new_embeddings, dim=1)
        positives = (targets[:, None] == targets[None, :]).to(query.dtype)
        total = query.sum() * 0.0
        for position, (old, share) in enumerate(zip(olds, shares)):
            if old.shape != new_embeddings.shape:
                raise ValueError(f"old_embeddings[{position}] {tuple(old.shape)} must have the "
                                 f"shape of new_embeddings {tuple(new_embeddings.shape)}")
            keys = F.normalize(old.detach().to(query.device, query.dtype), dim=1)
            log_softmax = F.log_softmax(query @ keys.T / self.temperature, dim=1)
            per_query = -(log_softmax * positives).sum(1) / positives.sum(1)
            total = total + share * per_query.mean()
        return self.weight * total / sum(shares)

    def step_arguments(self, step: TrainStep) -> tuple[torch.Tensor, list[torch.Tensor],
                                                        torch.Tensor]:
        """What :func:`regfree.training.fit` passes: the step's embeddings, their cached old
        embeddings (looked up by ``step.indices``, one per earlier version) and targets."""
        embeddings = step_embeddings(step, "CrossModelContrastiveLoss")
        if self.old_embeddings is None:
            raise ValueError("CrossModelContrastiveLoss in fit needs old_embeddings, each old "
                             "model's (N, D) embeddings of the whole training set: "
                             "CrossModelContrastiveLoss([v1_embeddings, ...], ...)")
        self.old_embeddings, rows = _rows_at(self.old_embeddings, step,
                                             "CrossModelContrastiveLoss", embeddings.device)
        return embeddings, rows, step.targets
