"""The batches of a user's data for an inference pass, each with the dataset positions of its rows.

Accepted data: an array or tensor of inputs (or a mapping of them, HuggingFace-style columns),
an ``(inputs, labels)`` pair of those, a map-style ``Dataset``, an ``IterableDataset``, or a
``DataLoader`` used as given (its batch size, sampler, collate function and workers). Positions
let a pass put its rows back in dataset order whatever order a loader yields them in; an
``IterableDataset`` has none (its rows stay in iteration order).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from regfree.training.batches import LABEL_KEYS, batch_length, split_batch
from regfree.training.loaders import indexed_batches, is_iterable_loader

_FORMS = ("an array of inputs, an (inputs, labels) pair of arrays, a map-style Dataset, an "
          "IterableDataset or a DataLoader")


@dataclass
class Batch:
    """One batch: dataset positions (``None`` without random access), inputs, labels (int64
    numpy, or ``None`` when the pass does not read them)."""

    positions: Optional[np.ndarray]
    inputs: Any
    labels: Optional[np.ndarray]


class BatchStream:
    """Iterates the batches of ``data`` (one pass per iteration).

    Args:
        data: one of the accepted forms (see the module docstring).
        name: the caller's argument, named in errors.
        batch_size: rows per batch for arrays and datasets (a DataLoader keeps its own).
        num_workers: worker processes reading a Dataset (a DataLoader keeps its own).
        pin_memory: pin the batches of a Dataset read here (for a CUDA model).
        label_key: the mapping key of the labels; default ``"label"`` or ``"labels"``.
        labels: read and check the labels (else they are dropped where present).

    Example:
        >>> x, y = np.zeros((5, 2), "float32"), np.arange(5)
        >>> [(b.positions.tolist(), b.labels.tolist()) for b in BatchStream((x, y), batch_size=3)]
        [([0, 1, 2], [0, 1, 2]), ([3, 4], [3, 4])]
    """

    def __init__(self, data: Any, *, name: str = "data", batch_size: int = 512,
                 num_workers: int = 0, pin_memory: bool = False,
                 label_key: Optional[str] = None, labels: bool = True) -> None:
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if int(num_workers) != num_workers or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        self.name, self.label_key, self.read_labels = name, label_key, labels
        self._arrays: Optional[tuple[Any, Optional[torch.Tensor]]] = None
        self.loader: Optional[DataLoader] = None
        if isinstance(data, DataLoader):
            self.loader = data
        elif isinstance(data, IterableDataset):
            self.loader = DataLoader(data, batch_size=int(batch_size),
                                     num_workers=int(num_workers), pin_memory=pin_memory)
        elif isinstance(data, Dataset) or (
                hasattr(data, "__getitem__") and hasattr(data, "__len__")
                and not isinstance(data, (tuple, list, Mapping, str)) and not _is_array(data)):
            self.loader = DataLoader(data, batch_size=int(batch_size), shuffle=False,
                                     num_workers=int(num_workers), pin_memory=pin_memory)
        else:
            self._arrays = self._read_arrays(data)
        self.batch_size = int(batch_size)

    @property
    def random_access(self) -> bool:
        """Whether batches carry dataset positions (not an IterableDataset)."""
        return self.loader is None or not is_iterable_loader(self.loader)

    def dataset_length(self) -> Optional[int]:
        """Samples in the underlying data (``None`` for an IterableDataset without a length)."""
        if self._arrays is not None:
            return batch_length(self._arrays[0])
        try:
            return len(self.loader.dataset)  # type: ignore[union-attr, arg-type]
        except TypeError:
            return None

    def num_batches(self) -> Optional[int]:
        """Batches in one pass, when known (for progress bars)."""
        if self._arrays is not None:
            return -(-batch_length(self._arrays[0]) // self.batch_size)
        try:
            return len(self.loader)  # type: ignore[arg-type]
        except TypeError:
            return None

    def __iter__(self) -> Iterator[Batch]:
        if self._arrays is not None:
            inputs, labels = self._arrays
            total = batch_length(inputs)
            for start in range(0, total, self.batch_size):
                rows = slice(start, start + self.batch_size)
                yield Batch(np.arange(start, min(start + self.batch_size, total)),
                            _take(inputs, rows), None if labels is None else
                            labels[rows].cpu().numpy())
            return
        for positions, raw in indexed_batches(self.loader):  # type: ignore[arg-type]
            inputs, labels = self._split(raw)
            size = batch_length(inputs)
            if positions is not None and len(positions) != size:
                raise ValueError(f"{self.name}: a batch of {size} rows came from {len(positions)} "
                                 "sampled indices; a collate function must keep one row per "
                                 "sample")
            yield Batch(positions, inputs, None if labels is None else
                        self._labels(labels, size))

    def _split(self, batch: Any) -> tuple[Any, Any]:
        if self.read_labels:
            return split_batch(batch, label_key=self.label_key, name=self.name)
        if isinstance(batch, Mapping):
            keys = [self.label_key] if self.label_key is not None else LABEL_KEYS
            inputs = {k: v for k, v in batch.items() if k not in keys}
            return inputs, None
        if isinstance(batch, (tuple, list)) and batch:
            return batch[0], None
        return batch, None

    def _labels(self, labels: Any, size: int) -> np.ndarray:
        array = (labels.cpu().numpy() if isinstance(labels, torch.Tensor)
                 else np.asarray(labels))
        if array.shape != (size,):
            raise ValueError(f"{self.name}: labels must be 1-D, one per row; a batch of {size} "
                             f"rows has labels of shape {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{self.name}: labels must be integer class ids, got {array.dtype}")
        return array.astype(np.int64, copy=False)

    def _read_arrays(self, data: Any) -> tuple[Any, Optional[torch.Tensor]]:
        if isinstance(data, Mapping):  # columns; the labels' column, if any, by its key
            keys = [self.label_key] if self.label_key is not None else LABEL_KEYS
            found = [key for key in keys if key in data]
            if len(found) == 1:
                data = ({k: v for k, v in data.items() if k != found[0]}, data[found[0]])
        if isinstance(data, (tuple, list)):
            if len(data) != 2:
                raise ValueError(f"{self.name} must be {_FORMS}; got a sequence of {len(data)} "
                                 "items")
            inputs, labels = _as_inputs(data[0], self.name), data[1]
            label_tensor = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels)
                                           else labels)
            if label_tensor.dim() != 1:
                raise ValueError(f"{self.name}: labels must be 1-D class ids, got shape "
                                 f"{tuple(label_tensor.shape)}")
            if label_tensor.dtype.is_floating_point or label_tensor.dtype == torch.bool:
                raise ValueError(f"{self.name}: labels must be integer class ids, got "
                                 f"{str(label_tensor.dtype).removeprefix('torch.')}")
            if batch_length(inputs) != len(label_tensor):
                raise ValueError(f"{self.name}: the inputs have {batch_length(inputs)} rows but "
                                 f"the labels {len(label_tensor)}")
            result = inputs, label_tensor.long()
        elif self.read_labels:
            raise ValueError(f"{self.name} needs labels: pass an (inputs, labels) pair, a Dataset "
                             f"or a DataLoader yielding them, not {type(data).__name__} alone")
        else:
            result = _as_inputs(data, self.name), None
        if batch_length(result[0]) == 0:
            raise ValueError(f"{self.name} is empty")
        return result


def _is_array(data: Any) -> bool:
    return isinstance(data, (np.ndarray, torch.Tensor))


def _as_inputs(data: Any, name: str) -> Any:
    """Arrays as tensors (float64 as float32, as a model's default dtype expects)."""
    if isinstance(data, Mapping):
        columns = {key: _as_inputs(value, name) for key, value in data.items()}
        if not columns or len({len(v) for v in columns.values()}) != 1:
            raise ValueError(f"{name}: a mapping of inputs needs columns of one length, got "
                             f"{ {key: len(v) for key, v in columns.items()} }")
        return columns
    try:
        tensor = data if torch.is_tensor(data) else torch.as_tensor(np.asarray(data))
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name} must be {_FORMS}, got {type(data).__name__}") from error
    if tensor.dim() == 0:
        raise ValueError(f"{name} must hold rows, got a scalar")
    return tensor.float() if tensor.dtype == torch.float64 else tensor


def _take(inputs: Any, rows: slice) -> Any:
    if isinstance(inputs, Mapping):
        return {key: value[rows] for key, value in inputs.items()}
    return inputs[rows]
