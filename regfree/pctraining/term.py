"""Plug a distillation loss into :func:`regfree.training.fit` as a loss term."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch import nn

from regfree.pctraining.cache import OldLogitCache
from regfree.pctraining.losses import DistillationLoss
from regfree.training.steps import TrainStep, split_outputs


class DistillationTerm(nn.Module):
    """A :class:`~regfree.training.LossTerm`: ``loss(step.logits, old_logits, step.targets)``.

    The old logits come from an :class:`OldLogitCache` (looked up by ``step.indices``; v1 never
    runs during training) or from a live old model (or a sequence of models whose logits are
    averaged: an ensemble teacher) run under ``no_grad`` on ``step.inputs``. Live teachers are
    frozen (``requires_grad=False``) and stay in eval mode even when the trainer calls
    ``train()``; they move to the training device with the term.

    Args:
        loss: e.g. :class:`FocalDistillationLoss` or :class:`KnowledgeDistillationLoss`.
        teacher: an :class:`OldLogitCache`, an old model, or a sequence of old models.
        name: label in the training history (default: the loss's name).

    Example:
        >>> import numpy as np
        >>> from regfree.models import MLP
        >>> from regfree.pctraining import FocalDistillationLoss
        >>> from regfree.training import fit
        >>> x, y = np.random.default_rng(0).normal(size=(32, 4)).astype("float32"), np.arange(32) % 2
        >>> term = DistillationTerm(FocalDistillationLoss(), teacher=MLP(4, num_classes=2))
        >>> h = fit(MLP(4, num_classes=2), (x, y), loss_terms=[term], epochs=1,
        ...         optimizer=lambda p: torch.optim.Adam(p), progress=False)
        >>> h.term("fd_kl")[0] > 0
        True
    """

    def __init__(self, loss: DistillationLoss,
                 teacher: Union[OldLogitCache, nn.Module, Sequence[nn.Module]],
                 name: Optional[str] = None) -> None:
        super().__init__()
        if not callable(loss):
            raise ValueError(f"loss must be a distillation loss module, got {type(loss).__name__}")
        self.loss = loss
        self.name = name or getattr(loss, "name", "distill")
        self.cache: Optional[OldLogitCache] = None
        if isinstance(teacher, OldLogitCache):
            self.cache = teacher
            self.teachers = nn.ModuleList()
        else:
            models = list(teacher) if isinstance(teacher, Sequence) else [teacher]
            if not models or not all(isinstance(m, nn.Module) for m in models):
                raise ValueError("teacher must be an OldLogitCache, an nn.Module or a non-empty "
                                 "sequence of nn.Modules")
            self.teachers = nn.ModuleList(models)
            self.teachers.requires_grad_(False)
            self.teachers.eval()

    def train(self, mode: bool = True) -> DistillationTerm:
        super().train(mode)
        self.teachers.eval()  # the old model is frozen: no dropout, no batch-stat updates
        return self

    def old_logits(self, step: TrainStep) -> torch.Tensor:
        """The teacher's logits for this batch, on the batch's device, without gradient."""
        if self.cache is not None:
            return self.cache.lookup(step.indices).to(step.logits.device, non_blocking=True)
        with torch.no_grad():
            outputs = [split_outputs(m(step.inputs))[0].float() for m in self.teachers]
        return outputs[0] if len(outputs) == 1 else torch.stack(outputs).mean(dim=0)

    def forward(self, step: TrainStep) -> torch.Tensor:
        return self.loss(step.logits, self.old_logits(step), step.targets)
