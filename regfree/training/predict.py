"""Batched inference (logits, and embeddings on request) over the data forms the trainer
accepts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from regfree.progress import progress_bar
from regfree.training.data import BatchSource, TrainData, check_num_workers, index_blocks
from regfree.training.steps import split_outputs

# How embeddings are read from a model, here and in regfree.compat / regfree.upgrade: the name
# of one of its methods ("forward_features"), or a callable mapping a batch of inputs to
# (batch, dim) embeddings, as a tensor or an array (regfree.compat.embedder makes such callables).
Embedder = Union[str, Callable[[Any], Any]]


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
    return run_model(model, data, device=device, batch_size=batch_size, progress=False).logits


@dataclass
class ModelRun:
    """One model's outputs over a dataset, in dataset order."""

    logits: np.ndarray
    embeddings: Optional[np.ndarray]
    labels: np.ndarray


def _resolve_embedder(model: nn.Module, embedder: Optional[Embedder], argument: str
                      ) -> Optional[Callable[[Any], Any]]:
    if embedder is None:
        return None
    if isinstance(embedder, str):
        method = getattr(model, embedder, None)
        if not callable(method):
            raise ValueError(f"{argument}: the model has no method {embedder!r}")
        return method
    if callable(embedder):
        return embedder
    raise ValueError(f"{argument} must be a method name or a callable, got "
                     f"{type(embedder).__name__}")


def _as_float32(output: Any) -> np.ndarray:
    if isinstance(output, torch.Tensor):
        return output.detach().float().cpu().numpy()
    return np.asarray(output, dtype=np.float32)


@torch.no_grad()
def run_model(model: nn.Module, data: TrainData, *, embedder: Optional[Embedder] = None,
              device: Union[str, torch.device] = "cpu", batch_size: int = 512,
              progress: bool = True, desc: str = "model", num_workers: int = 0) -> ModelRun:
    """Logits (and embeddings) of ``model`` on every sample of ``data``, in one pass.

    Args:
        model: returns logits, ``(logits, embeddings)`` or ``{"logits": ...}``.
        data: ``(x, y)`` arrays or a map-style Dataset of ``(x, y)``.
        embedder: a method name of ``model`` or a callable on an input batch returning a tensor
            or an array (an :data:`Embedder`); ``None``: no embeddings.
        device: where to run the model.
        batch_size: samples per forward pass.
        progress: show a tqdm bar.
        desc: the bar's label.
        num_workers: DataLoader worker processes reading a Dataset's items ahead of the model
            (0: read in this process; arrays are always sliced in process).

    Returns:
        A :class:`ModelRun` with float32 ``logits`` ``(N, C)``, ``embeddings`` ``(N, D)`` or
        ``None``, and int64 ``labels``.

    Example:
        >>> from regfree.models import MLP
        >>> x, y = np.zeros((5, 4), "float32"), np.zeros(5, "int64")
        >>> run = run_model(MLP(4, 3, embedding_dim=8), (x, y), embedder="forward_features",
        ...                 progress=False)
        >>> run.logits.shape, run.embeddings.shape
        ((5, 3), (5, 8))
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    num_workers = check_num_workers(num_workers)
    embed_fn = _resolve_embedder(model, embedder, "embedder")
    source = BatchSource(data, "data")
    was_training = model.training
    model.eval()
    logits, embeddings, labels = [], [], []
    try:
        blocks = index_blocks(np.arange(len(source)), batch_size)
        batches = source.batches(blocks, num_workers, torch.device(device).type == "cuda")
        for inputs, targets in progress_bar(batches, total=len(blocks), desc=desc, unit="batch",
                                            enabled=progress, leave=False):
            inputs = inputs.to(device)
            logits.append(split_outputs(model(inputs))[0].float().cpu().numpy())
            if embed_fn is not None:
                embeddings.append(_as_float32(embed_fn(inputs)))
            labels.append(targets.numpy())
    finally:
        model.train(was_training)
    return ModelRun(np.concatenate(logits), np.concatenate(embeddings) if embed_fn else None,
                    np.concatenate(labels).astype(np.int64))
