"""One pass over a user's data running one or several models on every batch, rows put back in
dataset order.

Several models share a pass (v1 and v2 in :func:`regfree.evaluate_upgrade`, the members of an
ensemble teacher), so they see the same batches even from a shuffling loader or an
``IterableDataset``, and the data is read once. Each model runs in eval mode without gradients,
on its own device (or ``device``) with inputs cast to its floating dtype; its training flag and
device are restored afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from regfree.progress import progress_bar
from regfree.training.batch_stream import BatchStream
from regfree.training.batches import batch_length, call_model, model_device, model_dtype, to_model
from regfree.training.embedders import EmbeddingReader, as_rows
from regfree.training.steps import split_outputs


@dataclass
class Job:
    """What one model contributes to a pass: its logits (when ``logits``) and the embeddings of
    each reader. ``model`` may be a plain callable (no device, no eval mode); ``whole_output``
    reads its output itself as embeddings."""

    model: Any
    logits: bool = True
    readers: Sequence[EmbeddingReader] = ()
    whole_output: bool = False


@dataclass
class PassResult:
    """Per job: logits (or ``None``) and one embedding array per reader; the labels (or ``None``)
    and dataset positions (``None`` without random access) of the rows, sorted by position."""

    logits: list[Optional[np.ndarray]]
    embeddings: list[list[np.ndarray]]
    labels: Optional[np.ndarray]
    positions: Optional[np.ndarray]


@torch.no_grad()
def run_pass(jobs: Sequence[Job], stream: BatchStream, *,
             device: Union[str, torch.device, None] = None, progress: bool = True,
             desc: str = "model") -> PassResult:
    """Run every job on every batch of ``stream``; results in dataset order.

    Example:
        >>> from regfree.models import MLP
        >>> stream = BatchStream((np.zeros((5, 4), "float32"), np.zeros(5, "int64")), batch_size=2)
        >>> result = run_pass([Job(MLP(4, 3))], stream, progress=False)
        >>> result.logits[0].shape, result.positions.tolist()
        ((5, 3), [0, 1, 2, 3, 4])
    """
    logits: list[list[np.ndarray]] = [[] for _ in jobs]
    embeddings: list[list[list[np.ndarray]]] = [
        [[] for _ in range(len(job.readers) + int(job.whole_output))] for job in jobs]
    labels, positions = [], []
    with _prepared([job.model for job in jobs], device) as places:
        bar = progress_bar(stream, total=stream.num_batches(), desc=desc, unit="batch",
                           enabled=progress, leave=False)
        for batch in bar:
            moved: dict[Any, Any] = {}
            for j, job in enumerate(jobs):
                place = places[j]
                if place not in moved:
                    # asynchronous only towards a GPU: a copy into host memory must be done
                    # before the model reads it
                    moved[place] = batch.inputs if place is None else to_model(
                        batch.inputs, place[0], place[1], non_blocking=place[0].type == "cuda")
                _run_job(job, moved[place], logits[j], embeddings[j], batch_length(batch.inputs))
            positions.append(batch.positions)
            if batch.labels is not None:
                labels.append(batch.labels)
    if not positions:
        raise ValueError(f"{stream.name} yielded no batches: it is empty")
    order, sorted_positions = _dataset_order(positions)
    return PassResult(
        logits=[_ordered(parts, order) if job.logits else None for job, parts in zip(jobs, logits)],
        embeddings=[[_ordered(parts, order) for parts in per_job] for per_job in embeddings],
        labels=_ordered(labels, order) if labels else None, positions=sorted_positions)


def runs_on_cuda(models: Sequence[Any], device: Union[str, torch.device, None]) -> bool:
    """Whether a pass of ``models`` (run on ``device`` when given, else where each is) computes
    on a GPU: the batches read for it are then worth pinning."""
    if device is not None:
        return torch.device(device).type == "cuda"
    return any(p.is_cuda for model in models if isinstance(model, nn.Module)
               for p in model.parameters())


def _run_job(job: Job, inputs: Any, logits: list, embeddings: list, size: int) -> None:
    needs_forward = job.logits or job.whole_output or any(r.needs_forward for r in job.readers)
    raw = call_model(job.model, inputs) if needs_forward else None
    if job.whole_output:
        embeddings[0].append(_rows(as_rows(raw, "model output"), size, "model output"))
        return
    if job.logits:
        logits.append(_rows(split_outputs(raw)[0].detach().float().cpu().numpy(), size,
                            "the model's logits"))
    for reader, parts in zip(job.readers, embeddings):
        parts.append(_rows(as_rows(reader(inputs, raw), reader.argument), size, reader.argument))


def _rows(array: np.ndarray, size: int, what: str) -> np.ndarray:
    if len(array) != size:
        raise ValueError(f"{what}: {len(array)} rows for a batch of {size} samples")
    return array


@contextlib.contextmanager
def _prepared(models: Sequence[Any], device: Union[str, torch.device, None]
              ) -> Iterator[list[Optional[tuple[torch.device, Optional[torch.dtype]]]]]:
    """Modules in eval mode (on ``device`` when given) for the pass; yields where each one's
    inputs go (``None`` for plain callables, which get the batch as read)."""
    restore: list[tuple[nn.Module, bool, torch.device]] = []
    places = []
    try:
        for model in models:
            if not isinstance(model, nn.Module):
                places.append(None)
                continue
            restore.append((model, model.training, model_device(model)))
            if device is not None and model_device(model) != torch.device(device):
                model.to(device)
            model.eval()
            places.append((model_device(model), model_dtype(model)))
        yield places
    finally:
        for model, training, home in reversed(restore):
            model.train(training)
            if device is not None and model_device(model) != home:
                model.to(home)


def _dataset_order(positions: list[Optional[np.ndarray]]
                   ) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """The permutation putting rows in dataset order, and the sorted positions."""
    if any(p is None for p in positions):
        return None, None
    flat = np.concatenate(positions)
    order = np.argsort(flat, kind="stable")
    return order, flat[order]


def _ordered(parts: list[np.ndarray], order: Optional[np.ndarray]) -> np.ndarray:
    rows = np.concatenate(parts)
    return rows if order is None else rows[order]


def check_each_sample_once(result: PassResult, stream: BatchStream) -> None:
    """Refuse a pass that did not visit every sample of the dataset exactly once (a loader with
    ``drop_last``, a subset sampler or sampling with replacement): a result keyed by sample
    index needs them all."""
    total = stream.dataset_length()
    if result.positions is None or total is None:
        return
    if len(result.positions) != total or not np.array_equal(result.positions, np.arange(total)):
        visited = len(np.unique(result.positions))
        raise ValueError(
            f"{stream.name}: its sampler yielded {len(result.positions)} rows covering {visited} "
            f"of the {total} samples of its dataset; results keyed by sample index need each "
            "sample exactly once: use a loader without drop_last over the whole dataset (any "
            "shuffling is fine), or pass the dataset itself")
