"""Bind a distillation loss to its teacher, so that :func:`regfree.training.fit` can feed it.

Both classes are called on tensors like the losses they wrap and say in ``step_arguments`` what
``fit`` passes them; the teacher supplies the old logits inside ``fit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch import nn

from regfree.pctraining.cache import OldLogitCache
from regfree.pctraining.losses import DistillationLoss
from regfree.pctraining.temporal import TemporalEnsemble
from regfree.training.batches import call_model
from regfree.training.steps import TrainStep, split_outputs, step_indices, step_model


class DistillationTerm(nn.Module):
    """A distillation loss with its teacher: in :func:`~regfree.training.fit`,
    ``loss(step.logits, old_logits, step.targets)``.

    The old logits come from an :class:`OldLogitCache` (looked up by ``step.indices``; v1 never
    runs during training, and the training data must be map-style: arrays, a Dataset or a
    DataLoader over one, not an IterableDataset) or from a live old model (or a sequence of
    models whose logits are averaged: an ensemble teacher) run under ``no_grad`` on
    ``step.inputs``. Live teachers are frozen (``requires_grad=False``) and stay in eval mode
    even when the trainer calls ``train()``; they move to the training device with the term.
    A :class:`TemporalEnsemble` teacher is the new model's own past logits for each sample
    (looked up and updated by ``step.indices``): a teacher that needs no training.
    Called on tensors, ``term(new_logits, old_logits, targets)`` is ``loss(...)``.

    Args:
        loss: e.g. :class:`FocalDistillationLoss` or :class:`KnowledgeDistillationLoss`.
        teacher: an :class:`OldLogitCache`, an old model, a sequence of old models, or a
            :class:`TemporalEnsemble` (the new model's own past logits per sample, read and
            updated each step by ``step.indices``).
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
        self.temporal: Optional[TemporalEnsemble] = None
        if isinstance(teacher, OldLogitCache):
            self.cache = teacher
            self.teachers = nn.ModuleList()
        elif isinstance(teacher, TemporalEnsemble):
            self.temporal = teacher
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
            indices = step_indices(step, f"loss term {self.name!r} (its OldLogitCache)")
            return self.cache.lookup(indices).to(step.logits.device, non_blocking=True)
        if self.temporal is not None:
            indices = step_indices(step, f"loss term {self.name!r} (its TemporalEnsemble)")
            return self.temporal.exchange(indices, step.logits)
        return self.live_teacher_logits(step.inputs)

    def live_teacher_logits(self, inputs) -> torch.Tensor:
        """The live teacher's logits (the mean over an ensemble) on ``inputs``, without gradient."""
        with torch.no_grad():
            outputs = [split_outputs(call_model(m, inputs))[0].float() for m in self.teachers]
        return outputs[0] if len(outputs) == 1 else torch.stack(outputs).mean(dim=0)

    def forward(self, new_logits: torch.Tensor, old_logits: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
        """``loss(new_logits, old_logits, targets)``."""
        return self.loss(new_logits, old_logits, targets)

    def step_arguments(self, step: TrainStep) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What :func:`regfree.training.fit` passes: the step's logits, the teacher's logits
        for the batch and the targets."""
        return step.logits, self.old_logits(step), step.targets


class NoisyDistillationTerm(DistillationTerm):
    """Distillation on a Gaussian-perturbed copy of each batch that teacher and student both see.

    Called as ``noisy(model, inputs, targets)`` (the model being trained, a clean batch and its
    class ids; :func:`regfree.training.fit` passes ``step.model``, ``step.inputs`` and
    ``step.targets``), it draws ``noisy = inputs + noise_std * N(0, 1)``, runs the live old
    model(s) and ``model`` on it, and returns ``loss(new, old, targets)``; with a
    :class:`FocalDistillationLoss` the focal weights follow the old model's correctness on the
    perturbed input. Matching the old model around each training sample, not only on it, takes
    negative flips below the floor that distillation on the clean training set reaches (the
    comparison is in ``experiments/results/pct_mnist1d.md``); it pays off beside KD from an
    ensemble of plain new models, which wins back the error the noise costs. Teaching on views
    that teacher and student share is the "consistent teaching" of Beyer et al., "Knowledge
    distillation: a good teacher is patient and consistent" (CVPR 2022).

    It costs a second forward and backward pass of the new model and a forward pass of the old
    one per step. The noise comes from torch's global generator, which :func:`fit` reseeds every
    epoch, so runs repeat and resume exactly (each process draws its own noise under torchrun).
    Models with batch statistics (BatchNorm) also update them on the noisy batch.

    Args:
        loss: e.g. ``FocalDistillationLoss(weight=0.02)``.
        teacher: the old model or a sequence of old models (logits averaged). A cache cannot
            serve here: it only holds logits of the clean training samples.
        noise_std: the noise's standard deviation: a float, or a tensor that broadcasts against
            a batch of inputs, such as ``0.3 * x_train.std(axis=0)`` (the setting
            ``experiments/pct_mnist1d.py`` uses).
        name: label in the training history (default: the loss's name + ``"_noisy"``).

    Example (in training, pass it to :func:`fit` beside the clean-input term:
    ``loss_terms=[fd, noisy]``; here one step of your own loop):
        >>> from regfree.models import MLP
        >>> from regfree.pctraining import FocalDistillationLoss
        >>> x, y = torch.randn(8, 4), torch.arange(8) % 2
        >>> v1, v2 = MLP(4, num_classes=2), MLP(4, num_classes=2)
        >>> noisy = NoisyDistillationTerm(FocalDistillationLoss(weight=0.02), teacher=v1,
        ...                               noise_std=0.3 * x.std(dim=0))
        >>> value = noisy(v2, x, y)
        >>> value.dim(), value.requires_grad, noisy.name
        (0, True, 'fd_kl_noisy')
    """

    def __init__(self, loss: DistillationLoss, teacher: Union[nn.Module, Sequence[nn.Module]],
                 noise_std: Union[float, torch.Tensor], name: Optional[str] = None) -> None:
        if isinstance(teacher, (OldLogitCache, TemporalEnsemble)):
            raise ValueError(f"teacher must be a live old model (or a sequence of them): "
                             f"an {type(teacher).__name__} has no logits for perturbed inputs")
        super().__init__(loss, teacher, name=name or f"{getattr(loss, 'name', 'distill')}_noisy")
        std = torch.as_tensor(noise_std, dtype=torch.float32)
        if not bool(torch.isfinite(std).all()) or bool((std < 0).any()):
            raise ValueError(f"noise_std must be finite and >= 0, got {noise_std!r}")
        self.register_buffer("noise_std", std)

    def forward(self, model: nn.Module, inputs: torch.Tensor,  # type: ignore[override]
                targets: torch.Tensor) -> torch.Tensor:
        """``loss(model(noisy), teacher(noisy), targets)`` on ``noisy = inputs + noise``.

        Args:
            model: the model being trained (its output on the noisy batch gets the gradient).
            inputs: a clean floating-point batch, on the model's device.
            targets: ``(B,)`` int64 class ids.

        Returns:
            The wrapped loss's scalar tensor.
        """
        if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
            kind = inputs.dtype if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(f"loss term {self.name!r} adds noise to the inputs, which must be "
                             f"a floating-point tensor; got {kind}")
        noisy = inputs + self.noise_std.to(inputs.device, inputs.dtype) * torch.randn_like(inputs)
        new_logits, _ = split_outputs(model(noisy))
        return self.loss(new_logits, self.live_teacher_logits(noisy), targets)

    def step_arguments(self, step: TrainStep) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        """What :func:`regfree.training.fit` passes: the model, the clean inputs, the targets."""
        return step_model(step, f"loss term {self.name!r}"), step.inputs, step.targets
