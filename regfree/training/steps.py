"""What a loss term sees of one training step, how model outputs are read, and the one adapter
that turns a tensor loss into a loss term.

A model trained by :func:`regfree.training.fit` returns either a logits tensor, a tuple
``(logits, embeddings)``, a mapping with ``"logits"`` (and optionally ``"embeddings"``), or an
object with a ``.logits`` tensor (HuggingFace's ``ModelOutput``; ``.embeddings`` optional).

Every regfree loss is called on tensors, like a torch loss, in torch's ``(input, target)``
order: what the new model produced first, then what it is compared with (e.g.
``bct(new_embeddings, targets)``, ``fd(new_logits, old_logits, targets)``). It also says, in
``step_arguments(step)``, which tensors of a training step it takes; :class:`StepTerm` reads
them and calls the loss, which is how :func:`~regfree.training.fit` uses it. Any other
callable ``step -> scalar tensor`` (a :class:`LossTerm`) is used by ``fit`` as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Union, runtime_checkable

import torch
from torch import nn


@dataclass
class TrainStep:
    """One batch as a loss term sees it.

    Attributes:
        inputs: the batch inputs (a tensor, or a mapping of tensors passed to the model as
            keyword arguments), already on the training device.
        targets: int64 class ids, shape ``(B,)``.
        indices: int64 positions of the samples in the training dataset, shape ``(B,)``,
            on CPU (they index host-side caches of old-model outputs); None when the training
            data is an IterableDataset, whose samples have no position.
        logits: the new model's logits, shape ``(B, C)``.
        embeddings: the new model's embeddings ``(B, D)`` when the model returns them.
        epoch: 0-based index of the current epoch (for schedules inside a loss term).
        model: the model being trained (the bare module, also under DistributedDataParallel),
            for terms that need its outputs on other inputs, such as perturbed copies of the
            batch; calling it inside a term adds to the same backward pass.
    """

    inputs: Any
    targets: torch.Tensor
    indices: Optional[torch.Tensor]
    logits: torch.Tensor
    embeddings: Optional[torch.Tensor] = None
    epoch: int = 0
    model: Optional[nn.Module] = None


@runtime_checkable
class LossTerm(Protocol):
    """A term added to the cross-entropy. Usually an ``nn.Module`` (the trainer moves it to the
    training device); ``name`` labels it in the training history."""

    name: str

    def __call__(self, step: TrainStep) -> torch.Tensor: ...


@runtime_checkable
class TensorLoss(Protocol):
    """A loss called on tensors that also says which tensors of a :class:`TrainStep` it takes
    (what :class:`StepTerm` needs to use it as a loss term)."""

    name: str

    def __call__(self, *tensors: Any) -> torch.Tensor: ...

    def step_arguments(self, step: TrainStep) -> tuple[Any, ...]: ...


class StepTerm(nn.Module):
    """A tensor loss as a :class:`LossTerm`: ``loss(*loss.step_arguments(step))``.

    :func:`~regfree.training.fit` wraps every loss that has ``step_arguments`` in one (pass the
    loss itself in ``loss_terms``). The loss is its submodule ``loss``: its trainable
    parameters (e.g. a projection) are optimised with the model and saved in checkpoints (under
    ``loss.``). ``name`` is the loss's.

    Args:
        loss: a module or callable with ``step_arguments(step) -> tuple`` (every regfree loss).

    Returns:
        A module whose forward takes a :class:`TrainStep` and returns the loss's scalar tensor.

    Example:
        >>> from regfree.compat import BackwardCompatibleLoss
        >>> bct = BackwardCompatibleLoss(nn.Linear(4, 3))
        >>> emb, y = torch.zeros(2, 4), torch.tensor([0, 1])
        >>> step = TrainStep(torch.zeros(2, 1), y, torch.arange(2), torch.zeros(2, 3), emb)
        >>> bool(StepTerm(bct)(step) == bct(emb, y)), StepTerm(bct).name
        (True, 'bct')
    """

    def __init__(self, loss: TensorLoss) -> None:
        super().__init__()
        if not callable(getattr(loss, "step_arguments", None)):
            raise TypeError(f"loss must have a step_arguments(step) method saying which tensors "
                            f"of a training step it takes, got {type(loss).__name__}")
        self.loss = loss

    @property
    def name(self) -> str:
        return str(getattr(self.loss, "name", None) or type(self.loss).__name__)

    def forward(self, step: TrainStep) -> torch.Tensor:
        return self.loss(*self.loss.step_arguments(step))


def as_loss_term(term: Union[TensorLoss, LossTerm]) -> LossTerm:
    """``StepTerm(term)`` for a tensor loss (one with ``step_arguments``), else ``term`` as is.

    Example:
        >>> from regfree.pctraining import KnowledgeDistillationLoss
        >>> type(as_loss_term(KnowledgeDistillationLoss())).__name__
        'StepTerm'
    """
    if isinstance(term, StepTerm) or not callable(getattr(term, "step_arguments", None)):
        return term
    return StepTerm(term)


def step_embeddings(step: TrainStep, who: str) -> torch.Tensor:
    """``step.embeddings``, or a ValueError telling ``who``'s user how to get them."""
    if step.embeddings is None:
        raise ValueError(
            f"{who} needs the model's embeddings, but the model returned logits only: build it "
            "to return (logits, embeddings), a mapping with 'embeddings' or an output with "
            ".embeddings (regfree.models: return_embeddings=True)")
    return step.embeddings


def step_indices(step: TrainStep, who: str) -> torch.Tensor:
    """``step.indices``, or a ValueError saying that ``who`` needs sample positions."""
    if step.indices is None:
        raise ValueError(
            f"{who} looks up a cache keyed by sample index, but this training data gives no "
            "sample positions (an IterableDataset, or a DataLoader over one): train on arrays, "
            "a map-style Dataset or a DataLoader over one")
    return step.indices


def step_model(step: TrainStep, who: str) -> nn.Module:
    """``step.model``, or a ValueError saying that ``who`` needs it."""
    if step.model is None:
        raise ValueError(f"{who} needs step.model (the model being trained); "
                         "regfree.training.fit provides it")
    return step.model


def split_outputs(raw: Any) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Read ``(logits, embeddings)`` from whatever a model returned.

    Example:
        >>> logits, emb = split_outputs(torch.zeros(2, 3))
        >>> emb is None
        True
    """
    if isinstance(raw, torch.Tensor):
        return raw, None
    if isinstance(raw, Mapping):
        if "logits" not in raw:
            raise ValueError("model output mapping must have a 'logits' entry")
        return raw["logits"], raw.get("embeddings")
    if isinstance(raw, (tuple, list)) and len(raw) == 2:
        return raw[0], raw[1]
    logits = getattr(raw, "logits", None)  # HuggingFace-style ModelOutput objects
    if isinstance(logits, torch.Tensor):
        return logits, getattr(raw, "embeddings", None)
    raise ValueError(
        "model output must be a logits tensor, a (logits, embeddings) tuple, a mapping "
        f"with 'logits' or an object with a .logits tensor; got {type(raw).__name__}"
    )
