"""Batched inference over the same data forms the trainer accepts."""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
from torch import nn

from regfree.training.data import BatchSource, TrainData
from regfree.training.steps import split_outputs


@torch.no_grad()
def predict_logits(model: nn.Module, data: Union[TrainData, np.ndarray, torch.Tensor], *,
                   device: Union[str, torch.device] = "cpu",
                   batch_size: int = 1024) -> np.ndarray:
    """The model's logits on every sample of ``data``, in order, as a float32 array.

    Args:
        model: returns logits, ``(logits, embeddings)`` or ``{"logits": ...}``; put in eval
            mode for the call and restored afterwards.
        data: inputs ``x`` alone, an ``(x, y)`` pair, or a map-style Dataset yielding ``(x, y)``.
        device: where to run the model.
        batch_size: samples per forward pass.

    Returns:
        ``(N, C)`` float32 logits.

    Example:
        >>> from regfree.models import MLP
        >>> predict_logits(MLP(4, num_classes=3), np.zeros((5, 4), "float32")).shape
        (5, 3)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    if isinstance(data, (np.ndarray, torch.Tensor)):
        data = (data, np.zeros(len(data), dtype=np.int64))
    source = BatchSource(data, "data")
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for start in range(0, len(source), batch_size):
            inputs, _ = source.fetch(np.arange(start, min(start + batch_size, len(source))))
            logits, _ = split_outputs(model(inputs.to(device)))
            chunks.append(logits.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(chunks).astype(np.float32, copy=False)
