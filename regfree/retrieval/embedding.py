"""Embedding a gallery (or a query set) in batches, with a progress bar."""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Union

import numpy as np

from regfree.progress import progress_bar
from regfree.retrieval._checks import as_numpy, check_positive_int


def embed(model: Union[Callable[[Any], Any], Any], inputs: Any, batch_size: int = 512,
          method: Optional[str] = "forward_features", progress: bool = True,
          device: Optional[str] = None, desc: str = "embedding") -> np.ndarray:
    """Embed ``inputs`` batch by batch and return one float32 ``(n, dim)`` array.

    For a ``torch.nn.Module`` the batches become tensors on the model's device (or ``device``),
    the call runs under ``torch.no_grad()`` in eval mode (the module's training flag is restored
    afterwards), and ``getattr(model, method)`` is called (``method=None`` calls the module itself,
    whose output must then be a tensor). Any other callable gets slices of ``inputs`` as given
    and may return numpy arrays or tensors.

    Args:
        model: an ``nn.Module`` or a callable mapping a batch to ``(batch, dim)`` embeddings.
        inputs: ``(n, ...)`` numpy array or tensor, ``n >= 1``.
        batch_size: rows per call.
        method: the module's embedding method (default ``"forward_features"``); ignored for
            plain callables.
        progress: show a tqdm bar.
        device: torch device for a module's batches (default: where its parameters are).
        desc: the progress bar's label.

    Returns:
        float32 embeddings, row ``i`` for ``inputs[i]``.

    Example:
        >>> import numpy as np
        >>> embed(lambda batch: batch * 2, np.ones((5, 3)), batch_size=2, progress=False).shape
        (5, 3)
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    n_rows = len(inputs)
    if n_rows == 0:
        raise ValueError("inputs is empty: expected at least one row")
    starts = range(0, n_rows, batch_size)
    bar = progress_bar(starts, desc=desc, unit="batch", enabled=progress, leave=False)
    torch = sys.modules.get("torch")  # a module can only exist once torch was imported
    if torch is not None and isinstance(model, torch.nn.Module):
        return _embed_module(model, inputs, batch_size, method, device, bar, torch)
    parts = [_as_rows(model(inputs[start:start + batch_size]), "model output") for start in bar]
    return _stack(parts, n_rows)


def _embed_module(model: Any, inputs: Any, batch_size: int, method: Optional[str],
                  device: Optional[str], bar: Any, torch: Any) -> np.ndarray:
    if method is not None and not callable(getattr(model, method, None)):
        raise ValueError(f"model has no method {method!r}; pass method=None to call the module")
    call = getattr(model, method) if method is not None else model
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else "cpu"
    tensor = inputs if isinstance(inputs, torch.Tensor) else torch.from_numpy(
        np.ascontiguousarray(inputs, dtype=np.float32))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            parts = [_as_rows(call(tensor[start:start + batch_size].to(device)), "model output")
                     for start in bar]
    finally:
        model.train(was_training)
    return _stack(parts, len(tensor))


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
