"""A teacher that costs no training: the running average of the new model's own past logits.

Negative flips are partly the new model's run-to-run variance: a sample that one training run
gets wrong, another run of the same recipe gets right. Distilling from an ensemble of
independently trained new models removes much of that variance, but costs the ensemble's
trainings. Temporal ensembling (Laine and Aila, "Temporal ensembling for semi-supervised
learning", ICLR 2017) keeps, for every training sample, an exponential moving average of the
logits the model gave it at each earlier visit (once per epoch), read and updated in the same
step: an ensemble over the training trajectory, for the price of one lookup.
"""

from __future__ import annotations

from numbers import Integral

import torch
import torch.distributed as dist
from torch import nn


class TemporalEnsemble(nn.Module):
    """Per-sample moving average of a model's logits over its training epochs.

    Pass it as the teacher of a :class:`~regfree.pctraining.DistillationTerm`, usually with
    :class:`~regfree.pctraining.KnowledgeDistillationLoss`, beside focal distillation from the
    old model. Each step the term reads the average for the batch's samples, then folds the
    batch's (detached) logits in: ``average = momentum * average + (1 - momentum) * logits``.
    A sample seen for the first time gets its own current logits as its target, so it adds
    neither loss nor gradient in the first epoch.

    The averages are buffers (``num_samples x num_classes`` floats, on the device the term
    moves to) and are saved with :func:`~regfree.training.fit`'s checkpoints, so a resumed run
    continues with them. Under torchrun every rank gathers the other ranks' batches each step,
    so every rank holds the average of every sample. The training data must be map-style
    (samples have positions): arrays, a Dataset or a DataLoader over one.

    Args:
        num_samples: size of the training dataset (the range of the sample positions).
        num_classes: the model's outputs.
        momentum: weight of the past in each update, in [0, 1); per visit, i.e. per epoch.
            Laine and Aila's 0.6 keeps about the last two or three epochs.

    Example:
        >>> import numpy as np
        >>> from regfree.models import MLP
        >>> from regfree.pctraining import DistillationTerm, KnowledgeDistillationLoss
        >>> from regfree.training import fit
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        >>> y = np.arange(64) % 2
        >>> own = DistillationTerm(KnowledgeDistillationLoss(temperature=4.0, weight=0.5),
        ...                        teacher=TemporalEnsemble(len(y), num_classes=2))
        >>> history = fit(MLP(4, num_classes=2), (x, y), loss_terms=[own], epochs=2,
        ...               optimizer=lambda p: torch.optim.Adam(p), progress=False)
        >>> history.term("kd")[0] == 0.0, history.term("kd")[1] > 0.0
        (True, True)
    """

    carries_state = True  # fit checkpoints its buffers though it has no trainable parameters

    def __init__(self, num_samples: int, num_classes: int, *, momentum: float = 0.6) -> None:
        super().__init__()
        for name, value in (("num_samples", num_samples), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) \
                or not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be a float in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.register_buffer("average", torch.zeros(int(num_samples), int(num_classes)))
        self.register_buffer("seen", torch.zeros(int(num_samples), dtype=torch.bool))

    @property
    def num_samples(self) -> int:
        return self.average.shape[0]

    @property
    def num_classes(self) -> int:
        return self.average.shape[1]

    @torch.no_grad()
    def exchange(self, indices: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The averages of the samples at ``indices`` (before this step; a first visit gives
        ``logits`` back), then ``logits`` folded in. Returns a tensor on ``logits``' device."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must have shape (B, {self.num_classes}) (the "
                             f"TemporalEnsemble's num_classes), got {tuple(logits.shape)}")
        if indices.shape != logits.shape[:1]:
            raise ValueError(f"indices must have shape ({logits.shape[0]},) (one per logit row), "
                             f"got {tuple(indices.shape)}")
        device = self.average.device
        indices = indices.to(device=device, dtype=torch.long)
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= self.num_samples):
            raise ValueError(f"sample indices must lie in [0, {self.num_samples}) (the "
                             f"TemporalEnsemble's num_samples); got {int(indices.min())}.."
                             f"{int(indices.max())}: is num_samples the training set's size?")
        current = logits.detach().float().to(device)
        all_indices, all_current, start = _gather_across_ranks(indices, current)
        past = torch.where(self.seen[all_indices, None], self.average[all_indices], all_current)
        self.average[all_indices] = self.momentum * past + (1.0 - self.momentum) * all_current
        self.seen[all_indices] = True
        teacher = past[start:start + len(indices)]  # this rank's rows, read before the update
        return teacher.to(device=logits.device, dtype=logits.dtype)

    def extra_repr(self) -> str:
        return (f"num_samples={self.num_samples}, num_classes={self.num_classes}, "
                f"momentum={self.momentum}")


def _gather_across_ranks(indices: torch.Tensor, logits: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every rank's batch (indices and logits), in rank order, and where this rank's rows start;
    the batch itself (start 0) outside torchrun. Batches may differ in size across ranks (each
    is padded to the largest, then trimmed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return indices, logits, 0
    world = dist.get_world_size()
    size = torch.tensor([len(indices)], device=indices.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    largest = int(max(s.item() for s in sizes))
    padded_indices = torch.zeros(largest, dtype=indices.dtype, device=indices.device)
    padded_logits = torch.zeros(largest, logits.shape[1], dtype=logits.dtype,
                                device=logits.device)
    padded_indices[:len(indices)] = indices
    padded_logits[:len(logits)] = logits
    gathered_indices = [torch.empty_like(padded_indices) for _ in range(world)]
    gathered_logits = [torch.empty_like(padded_logits) for _ in range(world)]
    dist.all_gather(gathered_indices, padded_indices)
    dist.all_gather(gathered_logits, padded_logits)
    counts = [int(s.item()) for s in sizes]
    return (torch.cat([g[:n] for g, n in zip(gathered_indices, counts)]),
            torch.cat([g[:n] for g, n in zip(gathered_logits, counts)]),
            sum(counts[:dist.get_rank()]))
