"""A cross-model neighbourhood loss: a new query's neighbours in an old gallery share its class.

A gallery search ranks the old model's embeddings of every gallery item by their cosine
similarity to the new model's query. Neighbourhood component analysis (NCA, Goldberger et al.
2004) turns the chance that a query's nearest neighbour has its class into a smooth objective;
here the query comes from the new model and the neighbours from each earlier version's
embeddings of the whole training set (the memory, standing in for the gallery that version
indexed). Unlike :class:`~regfree.compat.CrossModelContrastiveLoss`, whose keys are the old
embeddings of the same batch, every query meets every old embedding of the training set, and
a sample's own old embedding is left out, as a test query meets a gallery that does not hold it:
the new model is asked to search the old gallery well, not to copy the old model (which the L2
pull asks, and which can at best search as well as the old model does).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from regfree.compat.losses import (
    _as_caches,
    _check_batch,
    _check_shares,
    _check_temperature,
    _check_weight,
    _class_ids,
)
from regfree.training.steps import TrainStep, step_embeddings, step_indices


class CrossModelNCALoss(nn.Module):
    """NCA between new queries and each earlier version's embeddings of the training set.

    For a new embedding ``q_i`` of a training sample ``i`` and an earlier version's embeddings
    ``k_j`` of the ``N`` training samples (both L2-normalised), ``s_ij = q_i . k_j /
    temperature`` and the term is ``-log(sum_{j != i, y_j = y_i} exp(s_ij) / sum_{j != i}
    exp(s_ij))``: minus the log of the (soft) chance that the query's nearest old neighbour,
    itself left out, has its class. Queries without another sample of their class in the memory
    are skipped. Only the new model learns (the memory is fixed).

    Several earlier versions (oldest first, each ``(N, D)`` with the new model's embedding size)
    give one such term each, combined as ``weight * sum_v w_v L_v / sum_v w_v``
    (``version_weights`` ``w_v``, 1 each by default), so a new version searches every gallery
    still in use.

    Called like a torch loss: ``loss(new_embeddings, targets, indices)`` with ``(B, D)`` new
    embeddings, ``(B,)`` int64 class ids and the ``(B,)`` rows of the batch's samples in the
    memory (left out of their own neighbours; None when the queries are not memory samples).
    In :func:`regfree.training.fit` the indices are the samples' dataset positions, so the
    memory must be the old models' embeddings of the whole training set in dataset order and the
    training data map-style (arrays, a Dataset or a DataLoader over one).

    Each step compares the batch with all ``N`` memory rows per earlier version (a ``B x N``
    product): cheap beside the model for galleries of tens of thousands, not for millions.

    Args:
        old_embeddings: ``(N, D)`` old-model embeddings of the training set, or a sequence of
            them (oldest first, one per earlier version).
        labels: ``(N,)`` class ids of the memory rows (the training labels).
        weight: lambda, the multiplier of the term.
        temperature: divides the cosine similarities (smaller: nearer to the hard nearest
            neighbour).
        name: label of the term in the training history.
        version_weights: with several earlier versions, each one's share of the term
            (non-negative, not all zero); None weighs them equally.

    Example:
        >>> memory = torch.eye(2).repeat(2, 1)  # rows 0, 2 point one way, 1, 3 the other
        >>> labels = torch.tensor([0, 1, 0, 1])
        >>> loss = CrossModelNCALoss(memory, labels, temperature=0.5)
        >>> new = torch.tensor([[1.0, 0.1], [0.1, 1.0]], requires_grad=True)
        >>> right, wrong = torch.tensor([0, 1]), torch.tensor([1, 0])
        >>> bool(loss(new, right, torch.tensor([0, 1])) < loss(new, wrong, torch.tensor([0, 1])))
        True
    """

    def __init__(self, old_embeddings, labels, weight: float = 1.0, temperature: float = 0.1,
                 name: str = "nca", *, version_weights: Optional[Sequence[float]] = None
                 ) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        caches = _as_caches(old_embeddings)
        class_ids = _class_ids(labels, len(caches[0]), "row of old_embeddings")
        # plain attributes, not buffers: DistributedDataParallel would broadcast a buffer from
        # rank 0 at every step, and every process already holds the same memory
        self.memory = [F.normalize(c, dim=1) for c in caches]
        self.labels = class_ids
        self.version_weights = _check_shares(version_weights, len(caches), "version_weights",
                                             "earlier version")
        self.weight = _check_weight(weight)
        self.name = name

    def _on(self, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
        if self.labels.device != device:  # moved once, then kept where training runs
            self.memory = [m.to(device) for m in self.memory]
            self.labels = self.labels.to(device)
        return self.memory, self.labels

    def forward(self, new_embeddings: torch.Tensor, targets: torch.Tensor,
                indices: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The weighted term of one batch, a scalar tensor.

        Args:
            new_embeddings: ``(B, D)`` embeddings of the new model.
            targets: ``(B,)`` int64 class ids.
            indices: ``(B,)`` rows of the batch's samples in the memory, left out of their own
                neighbours; None keeps every row (queries from outside the memory).

        Returns:
            A scalar tensor, differentiable in ``new_embeddings`` only.
        """
        _check_batch(new_embeddings, targets)
        memory, labels = self._on(new_embeddings.device)
        if new_embeddings.shape[1] != memory[0].shape[1]:
            raise ValueError(f"new_embeddings has {new_embeddings.shape[1]} dimensions but "
                             f"old_embeddings {memory[0].shape[1]}")
        query = F.normalize(new_embeddings, dim=1)
        same = targets.to(labels.device)[:, None] == labels[None, :]
        others = None
        if indices is not None:
            indices = torch.as_tensor(indices, device=labels.device).long()
            if indices.shape != targets.shape or (indices.numel() and (
                    int(indices.min()) < 0 or int(indices.max()) >= len(labels))):
                raise ValueError(f"indices must be ({len(targets)},) rows of the memory, in "
                                 f"[0, {len(labels)}), got {indices.tolist()[:8]}")
            others = torch.ones_like(same)
            others[torch.arange(len(indices), device=labels.device), indices] = False
            same = same & others
        counted = same.any(1)
        if not bool(counted.any()):
            return query.sum() * 0.0
        shares = self.version_weights or [1.0] * len(memory)
        total = query.sum() * 0.0
        for keys, share in zip(memory, shares):
            similarity = query @ keys.to(query.dtype).T / self.temperature
            if others is not None:
                similarity = similarity.masked_fill(~others, float("-inf"))
            everyone = torch.logsumexp(similarity, dim=1)
            neighbours = torch.logsumexp(similarity.masked_fill(~same, float("-inf")), dim=1)
            total = total + share * (everyone - neighbours)[counted].mean()
        return self.weight * total / sum(shares)

    def step_arguments(self, step: TrainStep) -> tuple[torch.Tensor, torch.Tensor,
                                                        torch.Tensor]:
        """What :func:`regfree.training.fit` passes: the step's embeddings, targets and sample
        indices (the memory rows to leave out)."""
        embeddings = step_embeddings(step, "CrossModelNCALoss")
        return embeddings, step.targets, step_indices(step, "CrossModelNCALoss")
