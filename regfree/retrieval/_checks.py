"""Input validation at the retrieval boundary: every problem is a ValueError naming the argument."""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from regfree.metrics.inputs import as_numpy

__all__ = ["Version", "adapted", "as_ids", "as_matrix", "as_numpy", "check_adapter",
           "check_embeddings_then_ids", "check_positive_int", "check_version"]

Version = Union[str, int]


def as_matrix(values: Any, name: str, dim: Optional[int] = None) -> np.ndarray:
    """A finite, C-contiguous float32 ``(n, dim)`` matrix with ``n >= 1``."""
    array = as_numpy(values)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{name} must be a numeric array, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty: expected at least one row")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{name} has dimension {array.shape[1]}, the gallery expects {dim}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array).all(axis=1)).sum())
        raise ValueError(f"{name} contains NaN or inf in {bad} row(s)")
    return array


def as_ids(values: Any, name: str = "ids", expected: Optional[int] = None) -> np.ndarray:
    """A 1-D int64 array of unique non-negative ids (``-1`` is FAISS's 'no result')."""
    array = as_numpy(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: expected at least one id")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {array.dtype}")
    if expected is not None and array.size != expected:
        raise ValueError(f"{name} has {array.size} entries but there are {expected} embeddings")
    if array.dtype == np.uint64 and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64")
    array = array.astype(np.int64)
    if array.min() < 0:
        raise ValueError(f"{name} must be non-negative, got {int(array.min())}")
    unique, counts = np.unique(array, return_counts=True)
    if unique.size != array.size:
        raise ValueError(f"{name} contains duplicates: {preview(unique[counts > 1])}")
    return array


def check_embeddings_then_ids(embeddings: Any, ids: Any, method: str) -> None:
    """Refuse ``(ids, embeddings)`` passed where ``(embeddings, ids)`` is expected.

    ``Gallery.replace`` took ``(ids, embeddings)`` before it took the order of ``add``; a 1-D
    first argument with a 2-D second one is that old order, so say so instead of a shape error.
    """
    if np.ndim(embeddings) == 1 and np.ndim(ids) == 2:
        raise TypeError(f"{method} takes (embeddings, ids, *, version=...) but got a 1-D "
                        "embeddings and a 2-D ids: pass the embeddings first, as for add "
                        "(the order (ids, embeddings) is no longer accepted)")


def check_version(version: Any) -> Version:
    if isinstance(version, bool) or not isinstance(version, (str, int, np.integer)):
        raise ValueError(f"version must be a str or int, got {type(version).__name__}")
    if isinstance(version, str) and not version:
        raise ValueError("version must not be an empty string")
    return int(version) if isinstance(version, np.integer) else version


def preview(values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    more = f" ... ({values.size} in all)" if values.size > limit else ""
    return f"[{shown}{more}]"


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_adapter(adapter: Any, name: str = "adapter", *, source_dim: Optional[int] = None,
                  target_dim: Optional[int] = None, require_dims: bool = False,
                  context: str = "") -> tuple[Optional[int], Optional[int]]:
    """The one check of a duck-typed embedding adapter (any object with ``transform(x)``, such
    as ``regfree.compat.EmbeddingAdapter``: duck typing keeps ``regfree.retrieval`` free of
    ``regfree.compat``, which imports it).

    Its ``source_dim``/``target_dim`` attributes, when present (or ``require_dims``), must be
    positive ints and match ``source_dim``/``target_dim`` where those are given.

    Returns:
        ``(source_dim, target_dim)`` of the adapter, ``None`` for an attribute it lacks.
    """
    if not callable(getattr(adapter, "transform", None)):
        raise TypeError(f"{name} must have a transform(x) method (e.g. an EmbeddingAdapter "
                        f"from regfree.compat.fit_adapter), got {type(adapter).__name__}")
    dims: list[Optional[int]] = []
    for attribute in ("source_dim", "target_dim"):
        value = getattr(adapter, attribute, None)
        if value is None and not require_dims:
            dims.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise TypeError(f"{name}.{attribute} must be a positive int, got {value!r}")
        dims.append(int(value))
    if (source_dim is not None and dims[0] is not None and dims[0] != source_dim) or \
            (target_dim is not None and dims[1] is not None and dims[1] != target_dim):
        raise ValueError(_direction_message(name, source_dim, target_dim, dims[0], dims[1],
                                            context))
    return dims[0], dims[1]


def adapted(adapter: Any, x: np.ndarray, name: str = "adapter", *, what: str = "x",
            target_dim: Optional[int] = None, context: str = "") -> np.ndarray:
    """``adapter.transform(x)`` (``adapter`` already passed :func:`check_adapter`) as a finite
    float32 matrix with one row per row of ``x`` and, when given, ``target_dim`` columns."""
    moved = as_matrix(adapter.transform(x), f"{name}.transform({what})")
    if moved.shape[0] != x.shape[0]:
        raise ValueError(f"{name}.transform({what}) gave {moved.shape[0]} rows for "
                         f"{x.shape[0]} items")
    if target_dim is not None and moved.shape[1] != target_dim:
        raise ValueError(_direction_message(name, x.shape[1], target_dim, x.shape[1],
                                            moved.shape[1], context))
    return moved


def _direction_message(name: str, source_dim: Optional[int], target_dim: Optional[int],
                       got_source: Optional[int], got_target: Optional[int],
                       context: str) -> str:
    into = f" to {target_dim}-d ones" if target_dim is not None else ""
    source = "?" if source_dim is None else source_dim
    where = f" ({context})" if context else ""
    return (f"{name} must map {source}-d embeddings{into} here, got an adapter for "
            f"{'?' if got_source is None else got_source}-d -> "
            f"{'?' if got_target is None else got_target}-d{where}; fit it with "
            "fit_adapter(source, target) in this direction")
