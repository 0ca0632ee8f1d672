"""What :func:`regfree.training.fit` iterates each epoch, whatever form the data came in.

Two feeds hand the epoch loop the same :class:`LocalBatch` per step:

- :class:`SourceFeed` reads ``(x, y)`` arrays or a map-style Dataset in regfree's own order: one
  permutation per epoch, a function of ``(seed, epoch)``, cut into global batches of
  ``batch_size`` of which each process takes a contiguous slice. This is what makes a resumed run
  and a ``torchrun`` run equal a plain one.
- :class:`LoaderFeed` reads a user's ``DataLoader`` as given (its batch size, sampler, collate
  function, workers), with the dataset position of every sample drawn from the loader's own batch
  sampler (:func:`~regfree.training.loaders.indexed_batches`); an ``IterableDataset`` has none.

:func:`open_data` turns the caller's argument into a :class:`BatchSource` or a ``DataLoader`` and
refuses an explicit ``batch_size`` / ``shuffle`` / ``num_workers`` that a given loader contradicts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

from regfree.training.batches import split_batch
from regfree.training.data import BatchSource, epoch_permutation, local_batches
from regfree.training.distributed import ProcessContext
from regfree.training.loaders import indexed_batches, is_iterable_loader, loader_length

DEFAULT_BATCH_SIZE = 128
DEFAULT_EVAL_BATCH_SIZE = 1024


@dataclass
class LocalBatch:
    """One training step's batch on this process (tensors still on CPU)."""

    inputs: Any
    targets: torch.Tensor  # int64 class ids
    indices: Optional[torch.Tensor]  # int64 dataset positions; None for an IterableDataset
    share: float  # this process's share of the global batch: its loss weight under DDP
    count: int  # samples that count towards the epoch means (0 for a placeholder)


class SourceFeed:
    """Arrays or a map-style Dataset, batched by fit (see the module docstring)."""

    def __init__(self, source: BatchSource, *, batch_size: int, shuffle: bool, num_workers: int,
                 seed: int) -> None:
        self.source, self.batch_size, self.shuffle = source, batch_size, shuffle
        self.num_workers, self.seed = num_workers, seed

    @property
    def num_samples(self) -> int:
        return len(self.source)

    def num_batches(self) -> int:
        return -(-len(self.source) // self.batch_size)

    def generators(self) -> list[torch.Generator]:
        return []  # the order is a pure function of (seed, epoch)

    def epoch(self, epoch: int, ctx: ProcessContext) -> Iterator[LocalBatch]:
        order = epoch_permutation(len(self.source), self.seed, epoch, self.shuffle)
        plan = list(local_batches(order, self.batch_size, ctx.rank, ctx.world_size))
        pin = ctx.device.type == "cuda"  # page-locked batches copy to the GPU asynchronously
        fetched = self.source.batches([local for local, _ in plan], self.num_workers, pin)
        for (local, share), (inputs, targets) in zip(plan, fetched):
            indices = torch.from_numpy(np.ascontiguousarray(local, dtype=np.int64))
            yield LocalBatch(inputs, targets, indices, share, len(local) if share > 0 else 0)


class LoaderFeed:
    """A user's DataLoader, used as given (see the module docstring)."""

    def __init__(self, loader: DataLoader, *, label_key: Optional[str], name: str) -> None:
        self.loader, self.label_key, self.name = loader, label_key, name

    @property
    def num_samples(self) -> Optional[int]:
        return loader_length(self.loader)

    @property
    def batch_size(self) -> int:
        return int(self.loader.batch_size or 1)

    def num_batches(self) -> Optional[int]:
        try:
            return len(self.loader)
        except TypeError:  # an IterableDataset without __len__
            return None

    def generators(self) -> list[torch.Generator]:
        """The loader's own random generators (its shuffling, its workers' seeds): their states
        go into checkpoints, so a resumed run continues with the same sample order."""
        loader = self.loader
        found = [loader.generator, getattr(loader.sampler, "generator", None),
                 getattr(getattr(loader.batch_sampler, "sampler", None), "generator", None)]
        unique: list[torch.Generator] = []
        for gen in found:
            if isinstance(gen, torch.Generator) and all(gen is not g for g in unique):
                unique.append(gen)
        return unique

    def epoch(self, epoch: int, ctx: ProcessContext) -> Iterator[LocalBatch]:
        for sampler in (self.loader.sampler, self.loader.batch_sampler,
                        getattr(self.loader.batch_sampler, "sampler", None)):
            if hasattr(sampler, "set_epoch"):  # DistributedSampler: a new order each epoch
                sampler.set_epoch(epoch)
        for positions, batch in indexed_batches(self.loader):
            inputs, labels = split_batch(batch, label_key=self.label_key, name=self.name)
            targets = class_ids(labels, self.name)
            indices = None if positions is None else torch.from_numpy(positions)
            # under torchrun every process holds an equal-sized batch (DistributedSampler)
            yield LocalBatch(inputs, targets, indices, 1.0 / ctx.world_size, len(targets))


Feed = Union[SourceFeed, LoaderFeed]


def class_ids(labels: Any, name: str) -> torch.Tensor:
    """A batch's labels as int64 class ids ``(B,)``, or a ValueError naming ``name``."""
    targets = torch.as_tensor(labels)
    if targets.dim() != 1 or targets.is_floating_point() or targets.is_complex():
        raise ValueError(f"{name}: labels must be 1-D integer class ids, got a {targets.dtype} "
                         f"batch of shape {tuple(targets.shape)} (one-hot or soft labels: "
                         "pass their argmax)")
    return targets.long()


def loader_setting(loader: DataLoader, option: str) -> Any:
    """What ``loader`` was built with for one of fit's options (None where it cannot tell)."""
    if option in ("batch_size", "eval_batch_size"):
        return loader.batch_size
    if option == "num_workers":
        return loader.num_workers
    sampler = loader.sampler
    if is_iterable_loader(loader) or isinstance(sampler, SequentialSampler):
        return False
    if isinstance(sampler, RandomSampler):
        return True
    if isinstance(sampler, DistributedSampler):
        return bool(sampler.shuffle)
    return None


def _refuse_conflicts(loader: DataLoader, name: str, options: dict[str, Any]) -> None:
    for option, value in options.items():
        if value is None:
            continue
        given = loader_setting(loader, option)
        if given is None or given != value:
            shown = "unknown (a custom sampler)" if given is None else repr(given)
            raise ValueError(
                f"{option}={value!r} conflicts with {name}, a DataLoader whose {option} is "
                f"{shown}: fit uses a DataLoader as given (its batch size, sampler, workers and "
                f"collate function); leave {option} unset or build the loader with it")


def open_data(data: Any, name: str, *, batch_size: Optional[int], shuffle: Optional[bool],
              num_workers: Optional[int], label_key: Optional[str],
              batch_option: str = "batch_size") -> Union[BatchSource, DataLoader]:
    """``data`` as fit reads it: a :class:`BatchSource` for arrays and map-style Datasets, a
    DataLoader for DataLoaders (checked against the explicit options) and IterableDatasets
    (wrapped in one with ``batch_size`` and ``num_workers``).

    Args:
        data: the caller's ``train_data`` or ``val_data``.
        name: that argument's name, for errors.
        batch_size: the explicit batch size for ``data`` (None: unset).
        shuffle: the explicit ``shuffle`` (None: unset, or not applicable).
        num_workers: the explicit ``num_workers`` (None: unset).
        label_key: the mapping key of the labels in dict batches.
        batch_option: the name of ``batch_size`` in fit (``eval_batch_size`` for validation).

    Returns:
        A :class:`BatchSource` or a ``DataLoader``.
    """
    if isinstance(data, DataLoader):
        if data.batch_sampler is None:
            raise ValueError(f"{name}: a DataLoader built with batch_size=None yields single "
                             "samples; build it with a batch_size")
        _refuse_conflicts(data, name, {batch_option: batch_size, "shuffle": shuffle,
                                       "num_workers": num_workers})
        return data
    if isinstance(data, IterableDataset):
        if shuffle:
            raise ValueError(f"shuffle=True: {name} is an IterableDataset, which yields its "
                             "samples in its own order; shuffle inside the dataset, or pass a "
                             "map-style Dataset")
        default = DEFAULT_BATCH_SIZE if batch_option == "batch_size" else DEFAULT_EVAL_BATCH_SIZE
        return DataLoader(data, batch_size=batch_size or default, num_workers=num_workers or 0)
    if isinstance(data, (str, bytes, dict)) or not isinstance(data, (tuple, list)) and not (
            hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise ValueError(f"{name} must be (x, y) arrays, a map-style Dataset, an "
                         f"IterableDataset or a DataLoader; got {type(data).__name__}")
    return BatchSource(data, name, label_key=label_key)


def check_distributed(loader: DataLoader, name: str, world_size: int) -> None:
    """Refuse a training loader that would not split the data across ``torchrun`` processes."""
    if world_size == 1:
        return
    if is_iterable_loader(loader):
        raise ValueError(f"{name}: under torchrun ({world_size} processes) fit cannot split an "
                         "IterableDataset evenly across processes; pass a map-style Dataset "
                         "(fit shards it) or a DataLoader with a DistributedSampler")
    samplers = [loader.sampler, getattr(loader.batch_sampler, "sampler", None)]
    found = [s for s in samplers if isinstance(s, DistributedSampler)]
    if not found:
        raise ValueError(f"{name}: under torchrun ({world_size} processes) a DataLoader must "
                         "split its samples with a torch.utils.data.DistributedSampler (else "
                         "every process trains on every sample); build it with "
                         "sampler=DistributedSampler(dataset), or pass the Dataset itself and "
                         "fit shards it")
    if found[0].num_replicas != world_size:
        raise ValueError(f"{name}: its DistributedSampler has num_replicas="
                         f"{found[0].num_replicas} but torchrun started {world_size} processes")
