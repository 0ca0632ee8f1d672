"""A user's ``DataLoader``, used as given, with the dataset position of every sample it yields.

regfree needs those positions for two things: caches of old-model outputs are keyed by them
(:class:`~regfree.pctraining.OldLogitCache`), and outputs computed through a shuffling loader are
put back in dataset order, so v1's and v2's predictions of the same sample meet however the loader
orders them. For a map-style dataset the positions come from the loader's own batch sampler: it is
drawn once per pass (its shuffling, its ``drop_last``) and the same dataset is then read through an
equivalent loader (same collate function, workers, pinning, worker seeding) fed exactly those index
batches. An ``IterableDataset`` has no positions: its batches come with ``None``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

import numpy as np
from torch.utils.data import DataLoader, IterableDataset


def is_iterable_loader(loader: DataLoader) -> bool:
    """Whether ``loader`` reads an ``IterableDataset`` (no sample positions, no random access)."""
    return isinstance(loader.dataset, IterableDataset)


def indexed_batches(loader: DataLoader) -> Iterator[tuple[Optional[np.ndarray], Any]]:
    """One pass over ``loader``: ``(positions, batch)`` per batch, in the loader's order.

    ``positions`` is the int64 array of the batch's dataset indices, or ``None`` when the loader
    reads an ``IterableDataset`` (or was built with ``batch_size=None``, yielding single samples).

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.arange(5.0), torch.arange(5))
        >>> loader = DataLoader(data, batch_size=2, shuffle=True,
        ...                     generator=torch.Generator().manual_seed(0))
        >>> pairs = [(pos.tolist(), batch[1].tolist()) for pos, batch in indexed_batches(loader)]
        >>> all(pos == labels for pos, labels in pairs), sorted(sum((p for p, _ in pairs), []))
        (True, [0, 1, 2, 3, 4])
    """
    if is_iterable_loader(loader) or loader.batch_sampler is None:
        for batch in loader:
            yield None, batch
        return
    plan = [np.asarray(list(indices), dtype=np.int64) for indices in loader.batch_sampler]
    replay = DataLoader(
        loader.dataset, batch_sampler=[p.tolist() for p in plan],
        num_workers=loader.num_workers, collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory, timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
        persistent_workers=False, pin_memory_device=loader.pin_memory_device)
    yield from zip(plan, replay)


def loader_length(loader: DataLoader) -> Optional[int]:
    """Samples one pass yields, or ``None`` when the loader cannot tell (iterable datasets
    without ``__len__``)."""
    if loader.batch_sampler is not None and not is_iterable_loader(loader):
        if loader.drop_last:
            return len(loader) * int(loader.batch_size or 1)
        return len(loader.sampler)  # type: ignore[arg-type]
    try:
        return len(loader.dataset)  # type: ignore[arg-type]
    except TypeError:
        return None
