"""Class names as labels and predictions: one mapping from names to class ids for all inputs.

The mapping is the ``class_names`` order when given, else the sorted names seen in any input; a
name that only a prediction uses is a class the labels never show (it gets an id, no error).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from regfree.metrics.inputs import as_numpy


def is_names(arr: np.ndarray) -> bool:
    """Whether ``arr`` holds class names (strings) rather than numbers."""
    return arr.dtype.kind in "USO"


def check_class_names(class_names: Sequence[Any]) -> tuple[str, ...]:
    """``class_names`` as a tuple of strings; raises ValueError on an empty or repeated list.

    Example:
        >>> check_class_names(["cat", "dog"])
        ('cat', 'dog')
    """
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names: expected a sequence of names, got {type(class_names).__name__}")
    names = tuple(str(name) for name in class_names)
    if not names:
        raise ValueError("class_names: is empty")
    if len(set(names)) != len(names):
        seen: set[str] = set()
        twice = next(n for n in names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
        raise ValueError(f"class_names: {twice!r} appears more than once")
    return names


def encode_names(values: np.ndarray, names: Sequence[str], name: str) -> np.ndarray:
    """Class ids of the names in ``values`` under the mapping ``names`` (index = id).

    Raises:
        ValueError: naming the argument, for a value that is not in ``names``.

    Example:
        >>> encode_names(np.array(["dog", "cat"]), ["cat", "dog"], "y_true").tolist()
        [1, 0]
    """
    text = values.astype(str)
    order = np.argsort(np.asarray(names, dtype=str))
    sorted_names = np.asarray(names, dtype=str)[order]
    pos = np.searchsorted(sorted_names, text)
    pos = np.minimum(pos, len(sorted_names) - 1)
    unknown = sorted_names[pos] != text
    if unknown.any():
        first = str(text[np.argmax(unknown)])
        raise ValueError(f"{name}: {int(unknown.sum())} values are not class names "
                         f"(first: {first!r}); the classes are {', '.join(names[:10])}"
                         f"{', ...' if len(names) > 10 else ''}")
    return order[pos]


def encode_flip_inputs(
    y_true: Any, old_pred: Any, new_pred: Any, class_names: Optional[Sequence[str]] = None
) -> tuple[Any, Any, Any, Optional[tuple[str, ...]]]:
    """Turn class-name inputs into class ids with one shared mapping.

    Numeric inputs pass through unchanged. When any 1-D input holds names, every 1-D input must;
    scores (2-D) are then read with column ``j`` as class ``names[j]``, so they need
    ``class_names``.

    Returns:
        ``(y_true, old_pred, new_pred, names)``; ``names`` is None when nothing names the classes.

    Example:
        >>> y, old, new, names = encode_flip_inputs(["cat", "dog"], ["dog", "dog"], ["cat", "eel"])
        >>> y.tolist(), old.tolist(), new.tolist(), names
        ([0, 1], [1, 1], [0, 2], ('cat', 'dog', 'eel'))
    """
    names = None if class_names is None else check_class_names(class_names)
    arrays = [as_numpy(x) for x in (y_true, old_pred, new_pred)]
    labelled = [(arg, arr) for arg, arr in zip(("y_true", "old_pred", "new_pred"), arrays)
                if arr.ndim == 1]
    named = [arg for arg, arr in labelled if is_names(arr)]
    if not named:
        return (*arrays, names)
    numeric = [arg for arg, arr in labelled if not is_names(arr) and arr.size]
    if numeric:
        raise ValueError(f"{numeric[0]}: holds class ids but {named[0]} holds class names; "
                         "give both as names or both as ids")
    if names is None:
        if any(arr.ndim == 2 for arr in arrays):
            raise ValueError("class_names: needed to read scores next to class-name labels "
                             "(column j is class_names[j])")
        seen = np.unique(np.concatenate([arr.astype(str) for _, arr in labelled]))
        names = tuple(str(n) for n in seen)
    out = [encode_names(arr, names, arg) if arr.ndim == 1 else arr
           for arg, arr in zip(("y_true", "old_pred", "new_pred"), arrays)]
    return (*out, names)
