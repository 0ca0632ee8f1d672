"""Turn one batch of an input's values (Arrow or numpy) into class ids, checking as it goes.

Class names share one :class:`ClassCoder` across the inputs: the ``--class-names`` order when
given, else the order names are first seen, sorted once at the end (:meth:`ClassCoder.order`),
so no extra pass over the data is needed to learn the names.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from regfree.reporting.inputs import InputError
from regfree.reporting.sources import IDS, NAMES, SCORES, Source

_NUMPY_TYPES = {pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32,
                pa.int64(): np.int64, pa.uint8(): np.uint8, pa.uint16(): np.uint16,
                pa.uint32(): np.uint32, pa.uint64(): np.uint64, pa.float16(): np.float16,
                pa.float32(): np.float32, pa.float64(): np.float64}


def numpy_of(values: Any) -> np.ndarray:
    """An Arrow array as numpy without going through pandas (pyarrow's ``to_numpy`` imports
    pandas, half a second of start-up): a buffer view for numbers, a dictionary for text.

    Example:
        >>> numpy_of(pa.array(["b", "a", "b"])).tolist(), numpy_of(pa.array([True])).tolist()
        (['b', 'a', 'b'], [True])
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    kind = values.type
    if pa.types.is_dictionary(kind):
        return numpy_of(values.dictionary)[numpy_of(values.indices)]
    if values.null_count:
        values = values.fill_null(False if pa.types.is_boolean(kind) else
                                  "" if pa.types.is_string(kind) or pa.types.is_large_string(kind)
                                  else 0)
    if pa.types.is_boolean(kind):
        return numpy_of(values.cast(pa.uint8())).astype(bool)
    if kind in _NUMPY_TYPES:  # a view of the Arrow buffer (even zero-copy to_numpy imports pandas)
        dtype = np.dtype(_NUMPY_TYPES[kind])
        return np.frombuffer(values.buffers()[1], dtype=dtype, count=len(values),
                             offset=values.offset * dtype.itemsize)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        encoded = pc.dictionary_encode(values)
        return np.array(encoded.dictionary.to_pylist(), dtype=object)[numpy_of(encoded.indices)]
    return values.to_numpy(zero_copy_only=False)


class ClassCoder:
    """Class name -> class id, shared by all inputs; fixed when built from ``--class-names``."""

    def __init__(self, fixed: Optional[Sequence[str]] = None) -> None:
        self.fixed = fixed is not None
        self.by_name = False  # set when the inputs give classes by name
        self.names: list[str] = [str(n) for n in fixed or []]
        self._index = {name: i for i, name in enumerate(self.names)}

    def code(self, name: Any, where: str) -> int:
        """The id of ``name``, adding it unless the names are fixed."""
        key = str(name)
        found = self._index.get(key)
        if found is not None:
            return found
        if self.fixed:
            raise InputError(f"{where}: {key!r} is not one of the --class-names "
                             f"({', '.join(self.names[:8])}{', ...' if len(self.names) > 8 else ''})")
        self._index[key] = len(self.names)
        self.names.append(key)
        return self._index[key]

    def encode(self, values: pa.Array, where: str) -> np.ndarray:
        """Ids of a batch of names (nulls become 0; the caller has counted them)."""
        if not pa.types.is_dictionary(values.type):
            values = pc.dictionary_encode(values)
        lookup = np.array([self.code(v, where) for v in values.dictionary.to_pylist()] or [0],
                          dtype=np.int64)
        indices = numpy_of(values.indices)
        return lookup[indices]

    def order(self) -> np.ndarray:
        """Old id of each class in the final order (sorted names unless fixed)."""
        if self.fixed:
            return np.arange(len(self.names))
        return np.array(sorted(range(len(self.names)), key=lambda i: self.names[i]), dtype=np.intp)


class MissingValues:
    """Counts missing values per input and keeps the first few positions (1-based rows or ids)."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.first: dict[str, list[str]] = {}

    def add(self, where: str, mask: np.ndarray, offset: int,
            ids: Optional[np.ndarray] = None) -> None:
        hits = np.flatnonzero(mask)
        self.count[where] = self.count.get(where, 0) + len(hits)
        kept = self.first.setdefault(where, [])
        for i in hits[:max(0, 5 - len(kept))]:
            kept.append(f"id {ids[i]}" if ids is not None else str(offset + int(i) + 1))

    def check(self) -> None:
        """Raise on the first input with missing values."""
        for where, count in self.count.items():
            if count:
                places = ", ".join(self.first[where])
                label = "at" if places.startswith("id") else "in data rows (1-based)"
                raise InputError(f"{where}: {count:,} missing values ({label} {places}"
                                 f"{', ...' if count > len(self.first[where]) else ''}); "
                                 "fill or drop them before comparing")


class Decoder:
    """Class ids of one input's batches (ids, names or scores), with the checks of each kind."""

    def __init__(self, source: Source, coder: ClassCoder, missing: MissingValues,
                 num_classes: Optional[int], origin: str = "") -> None:
        self.source = source
        self.where = source.where()
        self.coder = coder
        self.missing = missing
        self.num_classes = num_classes
        self.origin = origin
        self.low: Optional[int] = None
        self.high: Optional[int] = None
        self.header_codes: Optional[np.ndarray] = None
        if source.kind == SCORES and coder.by_name:
            if source.array is not None:
                if not coder.fixed:
                    raise InputError(f"{self.where}: scores in .npy next to class names need "
                                     "--class-names (column j is class j)")
            else:
                self.header_codes = np.array([coder.code(c, self.where) for c in source.values])

    def __call__(self, columns: Sequence[Any], offset: int,
                 ids: Optional[np.ndarray] = None) -> np.ndarray:
        kind = self.source.kind
        if kind == SCORES:
            return self._scores(columns, offset, ids)
        values = columns[0]
        if isinstance(values, np.ndarray):
            if values.dtype.kind in "US":
                values = pa.array(values)
            else:
                return self._ids(values, offset)
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if values.null_count:
            self.missing.add(self.where, numpy_of(values.is_null()),
                             offset, ids)
        if kind == NAMES:
            return self.coder.encode(values, self.where)
        if values.null_count:
            values = values.fill_null(0)
        return self._ids(numpy_of(values), offset)

    def _ids(self, arr: np.ndarray, offset: int) -> np.ndarray:
        if arr.dtype.kind == "b":
            arr = arr.astype(np.int64)
        if arr.dtype.kind == "f":
            bad = ~np.isfinite(arr) | (arr != np.floor(arr))
            if bad.any():
                i = int(np.argmax(bad))
                raise InputError(f"{self.where}: class ids must be whole numbers, found "
                                 f"{arr[i]:g} in data row {offset + i + 1}")
            arr = arr.astype(np.int64)
        if arr.size:
            low, high = int(arr.min()), int(arr.max())
            if low < 0:
                raise InputError(f"{self.where}: class ids must be >= 0, found {low}")
            if self.num_classes is not None and high >= self.num_classes:
                hint = ""
                if self.source.option == "--labels" and low >= 1 and high == self.num_classes:
                    hint = f"; the labels look 1-based (1..{high}): subtract 1"
                raise InputError(f"{self.where}: class id {high} is out of range for "
                                 f"{self.num_classes} classes (from {self.origin}){hint}")
            self.low = low if self.low is None else min(self.low, low)
            self.high = high if self.high is None else max(self.high, high)
        return arr

    def _scores(self, columns: Sequence[Any], offset: int,
                ids: Optional[np.ndarray]) -> np.ndarray:
        matrix = self._matrix(columns, offset, ids)
        if matrix.dtype.kind == "f" and not np.isfinite(matrix).all():
            row = int(np.argmax(~np.isfinite(matrix).all(axis=1)))
            raise InputError(f"{self.where}: scores contain NaN or inf (data row "
                             f"{offset + row + 1})")
        best = matrix.argmax(axis=1)
        return best if self.header_codes is None else self.header_codes[best]

    def _matrix(self, columns: Sequence[Any], offset: int,
                ids: Optional[np.ndarray]) -> np.ndarray:
        if len(columns) == 1 and isinstance(columns[0], np.ndarray):
            return np.asarray(columns[0])
        arrays = []
        for col in columns:
            if isinstance(col, pa.ChunkedArray):
                col = col.combine_chunks()
            if col.null_count:
                self.missing.add(self.where, numpy_of(col.is_null()),
                                 offset, ids)
                col = col.fill_null(0)
            arrays.append(col)
        if len(arrays) == 1 and (pa.types.is_list(arrays[0].type)
                                 or pa.types.is_large_list(arrays[0].type)
                                 or pa.types.is_fixed_size_list(arrays[0].type)):
            rows = arrays[0]
            lengths = numpy_of(pc.list_value_length(rows))
            if len(rows) and (lengths.min() != lengths.max() or lengths.min() == 0):
                raise InputError(f"{self.where}: column {self.source.values[0]!r} holds lists "
                                 "of different lengths")
            width = int(lengths[0]) if len(rows) else 0
            return numpy_of(rows.flatten()).reshape(len(rows), width)
        return np.column_stack([numpy_of(a) for a in arrays])


def kind_is_names(sources: Sequence[Source]) -> bool:
    """Whether the classes are given by name; raises when ids and names are mixed."""
    named = [s for s in sources if s.kind == NAMES]
    numbered = [s for s in sources if s.kind == IDS]
    if named and numbered:
        raise InputError(f"{numbered[0].where()}: holds class ids but {named[0].option} holds "
                         "class names; export both the same way")
    return bool(named)
