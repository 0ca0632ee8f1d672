"""Turn user input (lists, numpy arrays, torch tensors) into validated class-id arrays.

Validation lives here, apart from the counting, so that ``validate=False`` skips all of it
(torchmetrics does the same). torch is never imported: tensors are recognised by duck typing.

Checks come in two kinds: shape checks on the whole arrays (cheap), and value checks (sign,
integrality, NaN/inf, range) that :func:`iter_flip_inputs` runs slice by slice, right before
the slice is counted, while it is still in the CPU cache. That keeps validation nearly free
on millions of predictions.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple, Optional

import numpy as np

NAMES = ("y_true", "old_pred", "new_pred")
CHUNK_SIZE = 1 << 17  # rows per slice: big enough to amortise Python overhead, small for cache


class FlipInputs(NamedTuple):
    """Three 1-D integer arrays of equal length and the number of classes they span."""

    y_true: np.ndarray
    old_pred: np.ndarray
    new_pred: np.ndarray
    num_classes: Optional[int]


def as_numpy(x: Any) -> np.ndarray:
    """Return ``x`` as a numpy array; torch tensors are detached and moved to the CPU.

    Example:
        >>> as_numpy([1, 2]).tolist()
        [1, 2]
    """
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _as_array(x: Any, name: str, allow_scores: bool, validate: bool) -> np.ndarray:
    arr = as_numpy(x)
    if arr.ndim == 1 or (arr.ndim == 2 and allow_scores):
        if validate and arr.dtype.kind not in "biuf":
            expected = "numeric scores" if arr.ndim == 2 else "integer class ids or numeric scores"
            raise ValueError(f"{name}: expected {expected}, got dtype {arr.dtype}")
        if validate and arr.ndim == 2 and arr.shape[1] == 0:
            raise ValueError(f"{name}: scores have no columns")
        return arr
    expected = "1-D class ids or 2-D scores" if allow_scores else "1-D class ids"
    raise ValueError(f"{name}: expected {expected}, got shape {arr.shape}")


def _width(arr: np.ndarray) -> Optional[int]:
    return arr.shape[1] if arr.ndim == 2 else None


def _check_shapes(arrays: tuple[np.ndarray, ...], num_classes: Optional[int]
                  ) -> tuple[Optional[int], str]:
    """Lengths, emptiness and class counts; returns the known class count and where it is from."""
    if num_classes is not None and (not isinstance(num_classes, (int, np.integer))
                                    or isinstance(num_classes, bool) or num_classes < 1):
        raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
    y = arrays[0]
    if len(y) == 0:
        raise ValueError(f"{NAMES[0]}: is empty")
    for name, arr in zip(NAMES[1:], arrays[1:]):
        if len(arr) != len(y):
            raise ValueError(f"{name}: has {len(arr)} rows but {NAMES[0]} has {len(y)}")
    known = {name: _width(arr) for name, arr in zip(NAMES, arrays) if arr.ndim == 2}
    if num_classes is not None:
        known = {"num_classes": int(num_classes), **known}
    if not known:
        return None, ""
    (source, count), *rest = known.items()
    for name, other in rest:
        if other != count:
            raise ValueError(f"{name}: has {other} classes but {source} has {count}")
    return count, source


def _check_id_values(ids: np.ndarray, name: str, num_classes: Optional[int], source: str
                     ) -> np.ndarray:
    kind = ids.dtype.kind
    if kind == "f":
        if not np.isfinite(ids).all():
            raise ValueError(f"{name}: contains NaN or inf")
        if (ids != np.floor(ids)).any():
            raise ValueError(f"{name}: class ids must be integers, found non-integer values")
    if kind in "if":
        low = ids.min()
        if low < 0:
            raise ValueError(f"{name}: class ids must be >= 0, found {low:g}")
    if num_classes is not None:
        high = ids.max()
        if high >= num_classes:
            raise ValueError(f"{name}: class id {high:g} is out of range for {num_classes} "
                             f"classes (from {source})")
    return ids if kind in "iu" else ids.astype(np.intp)


def _ids(arr: np.ndarray, name: str, validate: bool, num_classes: Optional[int], source: str
         ) -> np.ndarray:
    if arr.ndim == 2:
        if validate and arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"{name}: scores contain NaN or inf")
        return arr.argmax(axis=1)
    if validate:
        return _check_id_values(arr, name, num_classes, source)
    return arr if arr.dtype.kind in "iu" else arr.astype(np.intp)


def as_class_ids(
    x: Any, name: str = "pred", *, allow_scores: bool = True, validate: bool = True
) -> tuple[np.ndarray, Optional[int]]:
    """Class ids of ``x`` (1-D ids, or 2-D scores reduced by argmax) and the score width.

    Args:
        x: 1-D class ids or 2-D ``(n, num_classes)`` scores/logits.
        name: argument name used in error messages.
        allow_scores: whether 2-D input is accepted (labels must be 1-D).
        validate: check dtype, finiteness and sign; off means trust the caller.

    Returns:
        ``(ids, width)``: 1-D integer ids and the number of score columns (``None`` for 1-D input).

    Example:
        >>> ids, width = as_class_ids([[0.1, 0.9], [0.8, 0.2]])
        >>> ids.tolist(), width
        ([1, 0], 2)
    """
    arr = _as_array(x, name, allow_scores, validate)
    return _ids(arr, name, validate, None, ""), _width(arr)


def iter_flip_inputs(
    y_true: Any,
    old_pred: Any,
    new_pred: Any,
    *,
    num_classes: Optional[int] = None,
    validate: bool = True,
    need_num_classes: bool = False,
    chunk_size: Optional[int] = None,
) -> Iterator[FlipInputs]:
    """Validate and convert the three inputs every flip metric takes, slice by slice.

    Shapes are checked on the whole input before the first slice; values (sign, integrality,
    NaN/inf, range) on each slice as it is produced.

    Args:
        y_true: 1-D true class ids.
        old_pred: old model's class ids (1-D) or scores (2-D).
        new_pred: new model's class ids (1-D) or scores (2-D).
        num_classes: the class count if known; ids must lie below it.
        validate: run the checks; ``False`` skips them for speed.
        need_num_classes: when nothing gives the class count, set each slice's to its largest
            id + 1 (consumers keep the running maximum).
        chunk_size: rows per slice (default ``CHUNK_SIZE``); 0 gives one slice.

    Yields:
        :class:`FlipInputs` with 1-D integer arrays.

    Raises:
        ValueError: naming the argument, for empty input, length mismatch, NaN/inf scores,
            negative or non-integer ids, different score widths, or ids out of range.

    Example:
        >>> [len(part.y_true) for part in iter_flip_inputs([0, 1, 1], [0, 1, 0], [1, 1, 1],
        ...                                                 chunk_size=2)]
        [2, 1]
    """
    arrays = (_as_array(y_true, NAMES[0], False, validate),
              _as_array(old_pred, NAMES[1], True, validate),
              _as_array(new_pred, NAMES[2], True, validate))
    if validate:
        known, source = _check_shapes(arrays, num_classes)
    else:
        known = num_classes or next((_width(a) for a in arrays if a.ndim == 2), None)
        source = ""
    n = len(arrays[0])
    step = CHUNK_SIZE if chunk_size is None else (chunk_size or n)
    for start in range(0, n, max(step, 1)):
        y, old, new = (_ids(arr[start:start + step], name, validate, known, source)
                       for name, arr in zip(NAMES, arrays))
        k = known
        if k is None and need_num_classes:
            k = int(max(y.max(), old.max(), new.max())) + 1
        yield FlipInputs(y, old, new, k)


def prepare_flip_inputs(
    y_true: Any,
    old_pred: Any,
    new_pred: Any,
    *,
    num_classes: Optional[int] = None,
    validate: bool = True,
    need_num_classes: bool = False,
) -> FlipInputs:
    """Validate and convert the three inputs in one piece (see :func:`iter_flip_inputs`).

    Example:
        >>> prepare_flip_inputs([0, 1], [0, 0], [[0.2, 0.8], [0.9, 0.1]]).num_classes
        2
    """
    parts = list(iter_flip_inputs(y_true, old_pred, new_pred, num_classes=num_classes,
                                  validate=validate, need_num_classes=need_num_classes,
                                  chunk_size=0))
    if not parts:  # only without validation: empty input
        empty = np.zeros(0, dtype=np.intp)
        return FlipInputs(empty, empty, empty, num_classes)
    return parts[0]
