"""Training data as the trainer sees it: indexed samples and deterministic global batches.

Every batch the trainer forms carries the dataset positions of its samples, so loss terms can
look up cached old-model outputs by index. Batches are cut from one global permutation per epoch
(seeded by ``(seed, epoch)``) and each process takes a contiguous slice of every global batch:
one process and several processes see the same global batches in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

from regfree.training.batches import split_batch

ArrayPair = tuple[Any, Any]
# What fit takes: ``(x, y)`` arrays, a map-style Dataset, an IterableDataset or a DataLoader
# (BatchSource itself reads the first two; regfree.training.feeds handles the others).
TrainData = Union[ArrayPair, Dataset, DataLoader]


class IndexedDataset(Dataset):
    """Wrap a dataset yielding ``(x, y)`` so that it yields ``(x, y, index)``.

    Args:
        dataset: a map-style dataset whose items are ``(x, y)`` (extra items are dropped).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> ds = IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 2])))
        >>> x, y, i = ds[2]
        >>> int(y), i
        (2, 2)
    """

    def __init__(self, dataset: Dataset) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ValueError("dataset must be a map-style dataset with __getitem__ and __len__")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        item = self.dataset[index]
        return item[0], item[1], int(index)


class BatchSource:
    """Fetches batches by dataset index from ``(x, y)`` arrays or a map-style dataset.

    Arrays are converted to tensors once and sliced per batch (no per-sample collation);
    datasets are read item by item, each item split into inputs and label by
    :func:`~regfree.training.batches.split_batch` (pairs, or mappings with a label entry), and
    the inputs (tensors or mappings of tensors) collated with ``default_collate``.

    Args:
        data: ``(x, y)`` numpy arrays / tensors, or a map-style dataset yielding ``(x, y)``
            (or ``(x, y, index)``) or mappings holding a label.
        name: argument name used in error messages.
        label_key: the mapping key of a sample's label (default ``"label"`` or ``"labels"``).
    """

    def __init__(self, data: TrainData, name: str = "train_data", *,
                 label_key: Optional[str] = None) -> None:
        self.name = name
        self.label_key = label_key
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._dataset: Dataset | None = None
        if isinstance(data, (tuple, list)):
            if len(data) != 2:
                raise ValueError(f"{name} must be an (x, y) pair or a Dataset; got {len(data)} items")
            x = torch.as_tensor(np.asarray(data[0]) if not torch.is_tensor(data[0]) else data[0])
            y = torch.as_tensor(np.asarray(data[1]) if not torch.is_tensor(data[1]) else data[1])
            if y.dim() != 1:
                raise ValueError(f"{name}: y must be 1-D class ids, got shape {tuple(y.shape)}")
            if len(x) != len(y):
                raise ValueError(f"{name}: x has {len(x)} samples but y has {len(y)}")
            if y.dtype.is_floating_point:
                raise ValueError(f"{name}: y must hold integer class ids, got {y.dtype}")
            if x.dtype == torch.float64:
                x = x.float()
            self._x, self._y = x, y.long()
        elif isinstance(data, (DataLoader, IterableDataset)):
            raise ValueError(f"{name}: a {type(data).__name__} cannot be read by sample index "
                             "here; pass (x, y) arrays or a map-style Dataset")
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            self._dataset = data
        else:
            raise ValueError(f"{name} must be an (x, y) pair of arrays or a map-style Dataset, "
                             f"got {type(data).__name__}")
        if len(self) == 0:
            raise ValueError(f"{name} is empty")

    def __len__(self) -> int:
        if self._y is not None:
            return len(self._y)
        return len(self._dataset)  # type: ignore[arg-type]

    def fetch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and int64 targets of the samples at ``indices`` (on CPU)."""
        if self._x is not None:
            index = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64))
            return self._x[index], self._y[index]  # type: ignore[index]
        return self._collate([self._dataset[int(i)] for i in indices])  # type: ignore[index]

    def batches(self, index_batches: Iterable[np.ndarray], num_workers: int = 0,
                pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``fetch`` of each index batch, in order. A dataset with ``num_workers > 0`` is read
        by that many DataLoader worker processes (items are loaded ahead of the training step);
        arrays are always sliced in this process."""
        if self._dataset is None or num_workers == 0:
            for indices in index_batches:
                yield self.fetch(indices)
            return
        sampler = [np.asarray(b, dtype=np.int64).tolist() for b in index_batches]
        yield from DataLoader(self._dataset, batch_sampler=sampler, num_workers=num_workers,
                              collate_fn=self._collate, pin_memory=pin_memory)

    def _collate(self, items: list) -> tuple[Any, torch.Tensor]:
        pairs = [split_batch(item, label_key=self.label_key, name=self.name) for item in items]
        inputs = default_collate([inputs for inputs, _ in pairs])
        targets = torch.as_tensor(default_collate([label for _, label in pairs])).long()
        return inputs, targets


def check_num_workers(num_workers: Any) -> int:
    """``num_workers`` as an int, or a ValueError naming it (DataLoader worker processes)."""
    if int(num_workers) != num_workers or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    return int(num_workers)


def index_blocks(positions: np.ndarray, size: int) -> list[np.ndarray]:
    """``positions`` cut into consecutive blocks of ``size`` (the last may be shorter).

    Example:
        >>> [b.tolist() for b in index_blocks(np.arange(5), 2)]
        [[0, 1], [2, 3], [4]]
    """
    return [positions[start:start + size] for start in range(0, len(positions), size)]


def epoch_permutation(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The global sample order of one epoch; a pure function of ``(seed, epoch)``.

    Example:
        >>> bool((epoch_permutation(5, 0, 1) == epoch_permutation(5, 0, 1)).all())
        True
    """
    if not shuffle:
        return np.arange(num_samples)
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(num_samples)


def local_batches(order: np.ndarray, batch_size: int, rank: int = 0,
                  world_size: int = 1) -> Iterator[tuple[np.ndarray, float]]:
    """Cut ``order`` into global batches and yield this process's contiguous slice of each.

    Yields ``(local_indices, share)`` with ``share = len(local) / len(global)``. A process that
    gets no samples of a short last batch receives the batch's first sample with share 0 (its
    loss is multiplied by 0, so it contributes no gradient but still joins the collective
    gradient reduction).

    Example:
        >>> [(b.tolist(), s) for b, s in local_batches(np.arange(5), 4, rank=1, world_size=2)]
        [([2, 3], 0.5), ([4], 0.0)]
    """
    for start in range(0, len(order), batch_size):
        global_batch = order[start:start + batch_size]
        local: Sequence[int] = np.array_split(global_batch, world_size)[rank]
        if len(local) == 0:
            yield global_batch[:1], 0.0
        else:
            yield np.asarray(local), len(local) / len(global_batch)


def shard_range(num_samples: int, rank: int, world_size: int) -> np.ndarray:
    """The contiguous block of ``range(num_samples)`` that process ``rank`` evaluates."""
    return np.array_split(np.arange(num_samples), world_size)[rank]
