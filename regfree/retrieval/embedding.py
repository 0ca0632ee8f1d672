"""Embedding a gallery (or a query set) in batches, with a progress bar.

torch is imported only when the model is a module or the inputs are a Dataset or DataLoader
(this room must stay importable without it).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Union

import numpy as np

from regfree.progress import progress_bar
from regfree.retrieval._checks import as_numpy, check_positive_int


def embed(model: Union[Callable[..., Any], Any], inputs: Any, *, batch_size: int = 512,
          method: Optional[Union[str, Callable[..., Any]]] = "forward_features",
          progress: bool = True, device: Optional[str] = None, desc: str = "embedding",
          label_key: Optional[str] = None, num_workers: int = 0) -> np.ndarray:
    """Embed ``inputs`` batch by batch and return one float32 ``(n, dim)`` array.

    For a ``torch.nn.Module`` the batches become tensors on the model's device (or ``device``;
    floating inputs in the model's dtype, mappings of tensors passed as keyword arguments), the
    call runs under ``torch.no_grad()`` in eval mode (the module's training flag is restored
    afterwards) and ``method`` gives the embeddings. Any other callable gets batches of
    ``inputs`` as given (slices of an array, collated batches of a Dataset) and may return
    numpy arrays or tensors.

    Args:
        model: an ``nn.Module`` or a callable mapping a batch to ``(batch, dim)`` embeddings.
        inputs: an ``(n, ...)`` array or tensor (``n >= 1``), or, read batch by batch, a
            map-style Dataset, an IterableDataset or a DataLoader (used as given; rows come back
            in dataset order, labels in the batches are dropped).
        batch_size: rows per call (a DataLoader keeps its own).
        method: for a module, its embedding method's name (default ``"forward_features"``),
            ``"outputs"`` (the embeddings its forward returns beside the logits), a callable on
            a batch, or ``None`` (the module's output itself, a tensor, is the embedding).
            Ignored for plain callables.
        progress: show a tqdm bar.
        device: torch device for a module's batches (default: where its parameters are; a
            module elsewhere is moved there for the call).
        desc: the progress bar's label.
        label_key: the key of the labels in mapping batches; default ``"label"``/``"labels"``.
        num_workers: worker processes reading a Dataset (a DataLoader keeps its own).

    Returns:
        float32 embeddings, row ``i`` for sample ``i``.

    Example:
        >>> import numpy as np
        >>> embed(lambda batch: batch * 2, np.ones((5, 3)), batch_size=2, progress=False).shape
        (5, 3)
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    torch = sys.modules.get("torch")  # a module or a loader can only exist once torch was imported
    is_module = torch is not None and isinstance(model, torch.nn.Module)
    is_array = isinstance(inputs, np.ndarray) or (torch is not None and
                                                  isinstance(inputs, torch.Tensor))
    if is_array and len(inputs) == 0:
        raise ValueError("inputs is empty: expected at least one row")
    if is_module or not is_array:
        return _embed_with_torch(model, inputs, batch_size, method, is_module, progress, device,
                                 desc, label_key, num_workers)
    starts = range(0, len(inputs), batch_size)
    bar = progress_bar(starts, desc=desc, unit="batch", enabled=progress, leave=False)
    parts = [_as_rows(model(inputs[start:start + batch_size]), "model output") for start in bar]
    return _stack(parts, len(inputs))


def _embed_with_torch(model: Any, inputs: Any, batch_size: int, method: Any, is_module: bool,
                      progress: bool, device: Optional[str], desc: str,
                      label_key: Optional[str], num_workers: int) -> np.ndarray:
    from regfree.training.batch_stream import BatchStream
    from regfree.training.embedders import EmbeddingReader
    from regfree.training.inference import Job, run_pass

    if is_module and method is not None:
        job = Job(model, logits=False, readers=[EmbeddingReader(model, method, "method")])
    else:
        job = Job(model, logits=False, readers=(), whole_output=True)
    stream = BatchStream(inputs, name="inputs", batch_size=batch_size, num_workers=num_workers,
                         label_key=label_key, labels=False)
    out = run_pass([job], stream, device=device if is_module else None, progress=progress,
                   desc=desc).embeddings[0]
    return out[0]


def _as_rows(output: Any, name: str) -> np.ndarray:
    array = as_numpy(output)
    if array.ndim != 2:
        raise ValueError(f"{name} must be (batch, dim) embeddings, got shape {array.shape}")
    return array.astype(np.float32, copy=False)


def _stack(parts: list[np.ndarray], n_rows: int) -> np.ndarray:
    out = np.concatenate(parts)
    if out.shape[0] != n_rows:
        raise ValueError(f"model returned {out.shape[0]} embeddings for {n_rows} inputs")
    return out
