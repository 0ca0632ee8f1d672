"""Old-model logits computed once and kept on disk, looked up by training-set index."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from regfree.atomic import atomic_write
from regfree.training.batch_stream import BatchStream
from regfree.training.inference import Job, check_each_sample_once, run_pass, runs_on_cuda

_LOGITS = "logits.npy"
_META = "meta.json"
_FORMAT = 1


def labels_fingerprint(data: Any, *, label_key: Optional[str] = None) -> str:
    """SHA-1 of the int64 labels of ``data`` in dataset order: tells two datasets of one length
    apart. ``data`` takes the forms :meth:`OldLogitCache.build` takes."""
    return _sha1(_labels_in_order(data, label_key))


def _sha1(labels: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()


def _indexed_stream(data: Any, label_key: Optional[str], batch_size: int = 1024,
                    num_workers: int = 0, pin_memory: bool = False) -> BatchStream:
    stream = BatchStream(data, name="data", batch_size=batch_size, num_workers=num_workers,
                         pin_memory=pin_memory, label_key=label_key)
    if not stream.random_access:
        raise ValueError(
            "data: the old-logit cache is keyed by sample index and an IterableDataset has none "
            "(its samples can only be iterated, and fit looks cached logits up by index); pass "
            "a map-style Dataset, or a DataLoader over one, in the order the trainer indexes it")
    return stream


def _labels_in_order(data: Any, label_key: Optional[str]) -> np.ndarray:
    stream = _indexed_stream(data, label_key)
    result = run_pass([], stream, progress=False)
    check_each_sample_once(result, stream)
    return result.labels


class OldLogitCache:
    """v1's logits over a training set, stored as a memory-mapped ``.npy`` keyed by sample index.

    Build it once with :meth:`build` (runs the old model, or the mean logits of an ensemble, over
    the data and writes ``<directory>/logits.npy`` and ``meta.json`` atomically); later runs
    :meth:`open` it. A cache whose length, class count or labels differ from what the caller
    expects is refused with a ValueError.

    Example:
        >>> import tempfile
        >>> from regfree.models import MLP
        >>> x, y = np.zeros((6, 4), "float32"), np.arange(6) % 3
        >>> folder = tempfile.mkdtemp()
        >>> cache = OldLogitCache.build(MLP(4, num_classes=3), (x, y), folder)
        >>> cache.lookup(torch.tensor([5, 0])).shape
        torch.Size([2, 3])
        >>> len(OldLogitCache.open(folder, data=(x, y), num_classes=3))
        6
    """

    def __init__(self, directory: Union[str, os.PathLike], logits: np.ndarray,
                 meta: dict) -> None:
        self.directory = Path(directory)
        self.logits = logits
        self.meta = meta

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    @classmethod
    def build(cls, old_model: Union[nn.Module, Sequence[nn.Module]], data: Any,
              directory: Union[str, os.PathLike], *,
              device: Union[str, torch.device, None] = None, batch_size: int = 1024,
              label_key: Optional[str] = None, progress: bool = True,
              num_workers: int = 0) -> OldLogitCache:
        """Run the old model (or the mean logits of several, an ensemble teacher) over ``data``
        once and store the logits by sample index.

        Args:
            old_model: the frozen v1, or a sequence of models whose logits are averaged (all run
                on each batch as it is read: one pass over the data).
            data: the training data the trainer will index: an ``(inputs, labels)`` pair of
                arrays, a map-style Dataset, or a DataLoader over one (used as given; any
                shuffling is undone by sample index, but every sample must come exactly once: no
                ``drop_last``, no subset sampler). An IterableDataset is refused: it has no
                sample index to key the cache by.
            directory: folder for ``logits.npy`` and ``meta.json`` (created; replaced if present).
            device: where to run the model(s) (moved there for the call); default: where each is.
            batch_size: samples per forward pass (a DataLoader keeps its own).
            label_key: the key of the labels in mapping batches; default ``"label"`` or
                ``"labels"``.
            progress: show a tqdm bar over the batches.
            num_workers: worker processes reading a Dataset (a DataLoader keeps its own).

        Returns:
            The cache, memory-mapped read-only.
        """
        models = list(old_model) if isinstance(old_model, Sequence) else [old_model]
        if not models or not all(isinstance(m, nn.Module) for m in models):
            raise ValueError("old_model must be an nn.Module or a non-empty sequence of them")
        stream = _indexed_stream(data, label_key, batch_size, num_workers,
                                 runs_on_cuda(models, device))
        result = run_pass([Job(m) for m in models], stream, device=device, progress=progress,
                          desc="old-logit cache")
        check_each_sample_once(result, stream)
        logits = np.mean(result.logits, axis=0).astype(np.float32)
        meta = {"format": _FORMAT, "num_samples": int(logits.shape[0]),
                "num_classes": int(logits.shape[1]), "ensemble_size": len(models),
                "labels_sha1": _sha1(result.labels)}
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / _META).unlink(missing_ok=True)  # no stale meta beside new logits
        atomic_write(directory / _LOGITS, lambda handle: np.save(handle, logits))
        atomic_write(directory / _META, lambda handle: handle.write(json.dumps(meta).encode()))
        return cls.open(directory)

    @classmethod
    def open(cls, directory: Union[str, os.PathLike], *, data: Any = None,
             num_samples: Optional[int] = None, num_classes: Optional[int] = None,
             label_key: Optional[str] = None) -> OldLogitCache:
        """Memory-map a cache written by :meth:`build`, refusing one built for other data.

        Args:
            directory: the folder given to :meth:`build`.
            data: the training data about to be used (the forms :meth:`build` takes); its
                length and labels must match.
            num_samples: expected number of samples.
            num_classes: expected number of old classes.
            label_key: the key of the labels in mapping batches of ``data``.
        """
        directory = Path(directory)
        if not (directory / _META).is_file() or not (directory / _LOGITS).is_file():
            raise ValueError(f"directory {directory} holds no old-logit cache "
                             f"(expected {_LOGITS} and {_META})")
        meta = json.loads((directory / _META).read_text())
        logits = np.load(directory / _LOGITS, mmap_mode="r")
        if meta.get("format") != _FORMAT or logits.shape != (meta["num_samples"],
                                                             meta["num_classes"]):
            raise ValueError(f"old-logit cache in {directory} is damaged or of another format")
        cache = cls(directory, logits, meta)
        labels = _labels_in_order(data, label_key) if data is not None else None
        if labels is not None:
            expected = len(labels)
            if num_samples is not None and num_samples != expected:
                raise ValueError(f"num_samples={num_samples} but data has {expected} samples")
            num_samples = expected
        if num_samples is not None and num_samples != len(cache):
            raise ValueError(f"old-logit cache in {directory} was built for {len(cache)} samples, "
                             f"the data has {num_samples}; rebuild it")
        if num_classes is not None and num_classes != cache.num_classes:
            raise ValueError(f"old-logit cache in {directory} has {cache.num_classes} classes, "
                             f"expected num_classes={num_classes}; rebuild it")
        if labels is not None and _sha1(labels) != meta["labels_sha1"]:
            raise ValueError(f"old-logit cache in {directory} was built for other data (labels "
                             "differ in content or order); rebuild it")
        return cache

    def lookup(self, indices: Union[torch.Tensor, np.ndarray, Sequence[int]]) -> torch.Tensor:
        """Float32 logits ``(B, C_old)`` of the samples at ``indices`` (a CPU tensor)."""
        index = np.asarray(indices.cpu() if torch.is_tensor(indices) else indices, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise ValueError(f"indices must be in [0, {len(self)}), got range "
                             f"[{index.min()}, {index.max()}]")
        return torch.from_numpy(np.ascontiguousarray(self.logits[index]))

    def predictions(self) -> np.ndarray:
        """The old model's predicted class of every sample."""
        return np.asarray(self.logits).argmax(axis=1)

