"""Turn user input (lists, numpy arrays, torch tensors) into validated class-id arrays.

Validation lives here, apart from the counting, so that ``validate=False`` skips all of it
(torchmetrics does the same). torch is never imported: tensors are recognised by duck typing.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

NAMES = ("y_true", "old_pred", "new_pred")


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


def _check_ids(ids: np.ndarray, name: str) -> np.ndarray:
    kind = ids.dtype.kind
    if kind == "b":
        return ids.astype(np.intp)
    if kind in "iu":
        if kind == "i" and ids.min() < 0:
            raise ValueError(f"{name}: class ids must be >= 0, found {int(ids.min())}")
        return ids
    if kind == "f":
        if not np.isfinite(ids).all():
            raise ValueError(f"{name}: contains NaN or inf")
        if (ids < 0).any():
            raise ValueError(f"{name}: class ids must be >= 0, found {ids.min():g}")
        if (ids != np.floor(ids)).any():
            raise ValueError(f"{name}: class ids must be integers, found non-integer values")
        return ids.astype(np.intp)
    raise ValueError(f"{name}: expected integer class ids or numeric scores, got dtype {ids.dtype}")


def _check_scores(scores: np.ndarray, name: str) -> None:
    if scores.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numeric scores, got dtype {scores.dtype}")
    if scores.shape[1] == 0:
        raise ValueError(f"{name}: scores have no columns")
    if scores.dtype.kind == "f" and not np.isfinite(scores).all():
        raise ValueError(f"{name}: scores contain NaN or inf")


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
    arr = as_numpy(x)
    if arr.ndim == 2 and allow_scores:
        if validate:
            _check_scores(arr, name)
        return arr.argmax(axis=1), arr.shape[1]
    if arr.ndim != 1:
        expected = "1-D class ids or 2-D scores" if allow_scores else "1-D class ids"
        raise ValueError(f"{name}: expected {expected}, got shape {arr.shape}")
    if validate:
        return _check_ids(arr, name), None
    return (arr if arr.dtype.kind in "iu" else arr.astype(np.intp)), None


def prepare_flip_inputs(
    y_true: Any,
    old_pred: Any,
    new_pred: Any,
    *,
    num_classes: Optional[int] = None,
    validate: bool = True,
    need_num_classes: bool = False,
) -> FlipInputs:
    """Validate and convert the three inputs every flip metric takes.

    Args:
        y_true: 1-D true class ids.
        old_pred: old model's class ids (1-D) or scores (2-D).
        new_pred: new model's class ids (1-D) or scores (2-D).
        num_classes: the class count if known; ids must lie below it.
        validate: run the checks (lengths, dtypes, NaN/inf, ranges); off skips them for speed.
        need_num_classes: find the class count from the data when nothing gives it.

    Returns:
        :class:`FlipInputs` with 1-D integer arrays and the class count (or ``None``).

    Raises:
        ValueError: naming the argument, for empty input, length mismatch, NaN/inf scores,
            negative or non-integer ids, different score widths, or ids out of range.

    Example:
        >>> prepare_flip_inputs([0, 1], [0, 0], [[0.2, 0.8], [0.9, 0.1]]).num_classes
        2
    """
    y, _ = as_class_ids(y_true, NAMES[0], allow_scores=False, validate=validate)
    old, old_width = as_class_ids(old_pred, NAMES[1], validate=validate)
    new, new_width = as_class_ids(new_pred, NAMES[2], validate=validate)
    widths = {NAMES[1]: old_width, NAMES[2]: new_width}
    if validate:
        if num_classes is not None and (not isinstance(num_classes, (int, np.integer))
                                        or num_classes < 1):
            raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
        if len(y) == 0:
            raise ValueError(f"{NAMES[0]}: is empty")
        for name, arr in ((NAMES[1], old), (NAMES[2], new)):
            if len(arr) != len(y):
                raise ValueError(f"{name}: has {len(arr)} rows but {NAMES[0]} has {len(y)}")
        known = {name: w for name, w in widths.items() if w is not None}
        if num_classes is not None:
            known = {"num_classes": int(num_classes), **known}
        if len(set(known.values())) > 1:
            (first, k1), *rest = known.items()
            second, k2 = next((n, k) for n, k in rest if k != k1)
            raise ValueError(f"{second}: has {k2} classes but {first} has {k1}")
        if known:
            source, count = next(iter(known.items()))
            for name, arr in zip(NAMES, (y, old, new)):
                if widths.get(name) is None and arr.max() >= count:
                    raise ValueError(f"{name}: class id {int(arr.max())} is out of range for "
                                     f"{count} classes (from {source})")
            num_classes = count
    elif num_classes is None:
        num_classes = old_width or new_width
    if num_classes is None and need_num_classes:
        num_classes = int(max(y.max(), old.max(), new.max())) + 1
    return FlipInputs(y, old, new, None if num_classes is None else int(num_classes))
