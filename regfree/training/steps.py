"""What a loss term sees of one training step, and how model outputs are read.

A model trained by :func:`regfree.training.fit` returns either a logits tensor, a tuple
``(logits, embeddings)``, a mapping with ``"logits"`` (and optionally ``"embeddings"``), or an
object with a ``.logits`` tensor (HuggingFace's ``ModelOutput``; ``.embeddings`` optional).
Loss terms receive a :class:`TrainStep` and return a scalar tensor that the trainer adds to the
model's own cross-entropy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, Protocol, runtime_checkable

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
