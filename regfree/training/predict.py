"""Batched inference (logits, and embeddings on request) over a user's data: arrays, Datasets,
DataLoaders used as given, IterableDatasets; rows come back in dataset order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from regfree.training.batch_stream import BatchStream
from regfree.training.embedders import AUTO, OUTPUTS, Embedder, EmbeddingReader
from regfree.training.inference import Job, run_pass, runs_on_cuda

__all__ = ["AUTO", "OUTPUTS", "Embedder", "ModelRun", "predict_logits", "run_model",
           "run_models"]

Device = Union[str, torch.device, None]


def predict_logits(model: nn.Module, data: Any, *, device: Device = None,
                   batch_size: int = 1024, label_key: Optional[str] = None,
                   progress: bool = False, num_workers: int = 0) -> np.ndarray:
    """The model's logits on every sample of ``data``, in dataset order, as a float32 array.

    Args:
        model: returns logits, ``(logits, embeddings)``, a mapping with ``"logits"`` or an
            object with ``.logits`` (HuggingFace); put in eval mode for the call and restored
            afterwards. Inputs are cast to its floating dtype (a bfloat16 model gets bfloat16).
        data: inputs alone (an array, a tensor or a mapping of them), an ``(inputs, labels)``
            pair, a map-style Dataset, an IterableDataset or a DataLoader (used as given; a
            shuffling one still gives dataset order). Labels, where present, are ignored.
        device: where to run the model (moved there for the call); default: where it is.
        batch_size: samples per forward pass (a DataLoader keeps its own).
        label_key: the key of the labels in mapping batches, dropped from the inputs; default
            ``"label"`` or ``"labels"``.
        progress: show a tqdm bar.
        num_workers: worker processes reading a Dataset (a DataLoader keeps its own).

    Returns:
        ``(N, C)`` float32 logits.

    Example:
        >>> from regfree.models import MLP
        >>> predict_logits(MLP(4, num_classes=3), np.zeros((5, 4), "float32")).shape
        (5, 3)
    """
    stream = BatchStream(data, name="data", batch_size=batch_size, num_workers=num_workers,
                         pin_memory=runs_on_cuda([model], device), label_key=label_key, labels=False)
    return run_pass([Job(model)], stream, device=device, progress=progress,
                    desc="logits").logits[0]


@dataclass
class ModelRun:
    """One model's outputs over a dataset, in dataset order (iteration order for an
    IterableDataset).

    Attributes:
        logits: float32 ``(N, C)``.
        embeddings: float32 ``(N, D)``, or ``None`` when none were asked for.
        labels: int64 ``(N,)``.
        positions: the dataset index of each row (``None`` for an IterableDataset); all of
            ``range(N)`` unless a loader's sampler skips or repeats samples.
    """

    logits: np.ndarray
    embeddings: Optional[np.ndarray]
    labels: np.ndarray
    positions: Optional[np.ndarray] = None


def run_model(model: nn.Module, data: Any, *, embedder: Optional[Embedder] = None,
              label_key: Optional[str] = None, device: Device = None, batch_size: int = 512,
              progress: bool = True, desc: str = "model", num_workers: int = 0) -> ModelRun:
    """Logits (and embeddings) of ``model`` on every sample of ``data``, in one pass.

    Args:
        model: returns logits, ``(logits, embeddings)``, a mapping with ``"logits"`` (and
            ``"embeddings"``) or an object with ``.logits`` (HuggingFace ``ModelOutput``).
            Mapping inputs are passed as keyword arguments.
        data: an ``(inputs, labels)`` pair of arrays, a map-style Dataset, an IterableDataset
            or a DataLoader (used as given), yielding ``(inputs, labels)`` pairs or mappings
            with the labels under ``label_key``.
        embedder: ``None`` (no embeddings), ``"auto"`` (from the forward's outputs when the
            model returns them, else its ``forward_features``: one backbone pass per batch
            either way for models that return them), ``"outputs"``, a method name or a callable
            on an input batch (an :data:`Embedder`; see :mod:`regfree.training.embedders`).
        label_key: the key of the labels in mapping batches; default ``"label"`` or
            ``"labels"``.
        device: where to run the model (moved there for the call); default: where it is.
        batch_size: samples per forward pass (a DataLoader keeps its own).
        progress: show a tqdm bar.
        desc: the bar's label.
        num_workers: worker processes reading a Dataset's items ahead of the model (0: in this
            process; a DataLoader keeps its own; arrays are always sliced in process).

    Returns:
        A :class:`ModelRun`, rows in dataset order.

    Example:
        >>> from regfree.models import MLP
        >>> x, y = np.zeros((5, 4), "float32"), np.zeros(5, "int64")
        >>> run = run_model(MLP(4, 3, embedding_dim=8), (x, y), embedder="forward_features",
        ...                 progress=False)
        >>> run.logits.shape, run.embeddings.shape
        ((5, 3), (5, 8))
    """
    embedders = [("embedder", embedder)] if embedder is not None else []
    return run_models([(model, embedders)], data, label_key=label_key, device=device,
                      batch_size=batch_size, progress=progress, desc=desc,
                      num_workers=num_workers)[0][0]


def run_models(models: Sequence[tuple[nn.Module, Sequence[tuple[str, Embedder]]]], data: Any, *,
               name: str = "data", label_key: Optional[str] = None, device: Device = None,
               batch_size: int = 512, progress: bool = True, desc: str = "models",
               num_workers: int = 0) -> list[list[ModelRun]]:
    """Several models over ``data`` in one pass: each batch is read once and every model runs
    on it, so they see the same samples even from a shuffling loader or an IterableDataset.

    Args:
        models: per model, ``(model, [(argument, embedder), ...])``: the embedders to read
            (each named by the caller's argument in errors); an empty list for logits only.
        data: the forms :func:`run_model` takes.
        name: the caller's argument for ``data``, named in errors.
        label_key, device, batch_size, progress, desc, num_workers: as in :func:`run_model`.

    Returns:
        Per model, one :class:`ModelRun` per embedder (sharing logits and labels), or one
        without embeddings when it has none.

    Example:
        >>> from regfree.models import MLP
        >>> x, y = np.zeros((5, 4), "float32"), np.zeros(5, "int64")
        >>> v1, v2 = MLP(4, 3, embedding_dim=8), MLP(4, 3, embedding_dim=6)
        >>> (old,), (new,) = run_models([(v1, []), (v2, [("embedder", "auto")])], (x, y),
        ...                             progress=False)
        >>> old.embeddings is None, new.embeddings.shape
        (True, (5, 6))
    """
    jobs = [Job(model, readers=[EmbeddingReader(model, embedder, argument)
                                for argument, embedder in embedders])
            for model, embedders in models]
    stream = BatchStream(data, name=name, batch_size=batch_size, num_workers=num_workers,
                         pin_memory=runs_on_cuda([model for model, _ in models], device),
                         label_key=label_key)
    result = run_pass(jobs, stream, device=device, progress=progress, desc=desc)
    return [[ModelRun(logits, embeddings, result.labels, result.positions)
             for embeddings in (per_job or [None])]
            for logits, per_job in zip(result.logits, result.embeddings)]
