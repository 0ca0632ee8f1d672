"""Validation predictions for :func:`regfree.training.fit`, lined up with v1's predictions.

``old_val_preds`` is in dataset order. Arrays and Datasets are evaluated in that order (each
process takes a contiguous block under ``torchrun``). A DataLoader may yield its samples in any
order (shuffled, or a DistributedSampler's share per process): the dataset position of each
sample, drawn from its own sampler, puts the predictions back in dataset order, so the numbers do
not depend on the loader's order. An IterableDataset has no positions: its samples are taken in
the order it yields them, and ``old_val_preds`` must follow that order.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from regfree.training.batches import call_model, model_dtype, split_batch, to_model
from regfree.training.data import BatchSource, index_blocks, shard_range
from regfree.training.distributed import ProcessContext
from regfree.training.feeds import class_ids
from regfree.training.loaders import indexed_batches
from regfree.training.steps import split_outputs


def autocast(device: torch.device, enabled: bool):
    """fit's ``amp``: float16 autocast on CUDA, bfloat16 on CPU; nothing when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class ValSet:
    """Validation data, its labels (read once, for arrays and Datasets) and v1's predictions."""

    data: Union[BatchSource, DataLoader]
    labels: Optional[np.ndarray]  # dataset order; None for a DataLoader (read on each pass)
    old_preds: Optional[np.ndarray]  # v1's classes, dataset order
    label_key: Optional[str] = None
    batch_size: int = 1024
    num_workers: int = 0

    @torch.no_grad()
    def outcomes(self, model: nn.Module, ctx: ProcessContext, amp: bool
                 ) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Labels, ``model``'s predicted classes and v1's predictions of the same samples
        (identical on every process)."""
        if isinstance(self.data, BatchSource):
            preds = _source_predictions(model, self.data, ctx, self.batch_size, amp,
                                        self.num_workers)
            return self.labels, preds, self.old_preds  # type: ignore[return-value]
        positions, labels, preds = _loader_predictions(model, self.data, ctx, amp,
                                                       self.label_key)
        if self.old_preds is None:
            return labels, preds, None
        if positions is None:
            if len(self.old_preds) != len(labels):
                raise ValueError(f"old_val_preds has {len(self.old_preds)} entries but val_data "
                                 f"(an IterableDataset) yielded {len(labels)} samples")
            return labels, preds, self.old_preds
        return labels, preds, self.old_preds[positions]


def _forward_argmax(model: nn.Module, inputs, ctx: ProcessContext, amp: bool) -> np.ndarray:
    with autocast(ctx.device, amp):
        raw = call_model(model, to_model(inputs, ctx.device, model_dtype(model)))
    return split_outputs(raw)[0].argmax(dim=1).cpu().numpy()


def _source_predictions(model: nn.Module, source: BatchSource, ctx: ProcessContext,
                        batch_size: int, amp: bool, num_workers: int) -> np.ndarray:
    """Argmax predictions on the whole of ``source``; each process computes its block."""
    shard = shard_range(len(source), ctx.rank, ctx.world_size)
    preds = [np.empty(0, dtype=np.int64)]
    for inputs, _ in source.batches(index_blocks(shard, batch_size), num_workers):
        preds.append(_forward_argmax(model, inputs, ctx, amp))
    return np.concatenate(ctx.gather(np.concatenate(preds)))


def _loader_predictions(model: nn.Module, loader: DataLoader, ctx: ProcessContext, amp: bool,
                        label_key: Optional[str]
                        ) -> tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
    """``(positions, labels, predictions)`` of one pass, sorted by dataset position (each
    position once) when the dataset has positions, else in the order the loader yields."""
    positions, labels, preds = [], [], []
    for pos, batch in indexed_batches(loader):
        inputs, y = split_batch(batch, label_key=label_key, name="val_data")
        preds.append(_forward_argmax(model, inputs, ctx, amp))
        labels.append(class_ids(y, "val_data").cpu().numpy())
        positions.append(pos)
    if not preds:
        raise ValueError("val_data yielded no samples")
    found = (np.concatenate(positions) if positions[0] is not None else None,
             np.concatenate(labels), np.concatenate(preds))
    if ctx.distributed and isinstance(loader.sampler, DistributedSampler):
        found = tuple(np.concatenate(parts) for parts in zip(*ctx.gather(found)))  # type: ignore
    if found[0] is None:
        return found
    # a DistributedSampler pads with repeats: each position counts once
    unique, first = np.unique(found[0], return_index=True)
    return unique, found[1][first], found[2][first]
