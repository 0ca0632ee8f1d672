"""Read label, prediction and class-name files for ``regfree report``.

Supported: ``.npy``; ``.csv``/``.txt`` (one column with or without a header, several numeric
columns as scores, ``FILE.csv:column`` by header name or 0-based index); ``.parquet`` (numeric
columns, list columns as scores, ``FILE.parquet:column``). Every problem raises
:class:`InputError` (a ValueError) whose one-line message starts with the file name.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

TEXT_SUFFIXES = (".csv", ".txt")
SUFFIXES = (".npy", ".parquet", *TEXT_SUFFIXES)


class InputError(ValueError):
    """A file that cannot be used as input; the message names the file and the problem."""


def split_spec(spec: str) -> tuple[str, Optional[str]]:
    """Split ``FILE[:column]`` into the path and the column (None when not given).

    Example:
        >>> split_spec("preds.csv:new")
        ('preds.csv', 'new')
        >>> split_spec("labels.npy")
        ('labels.npy', None)
    """
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, column = spec.rsplit(":", 1)
    if Path(path).suffix.lower() in SUFFIXES and column:
        return path, column
    return spec, None


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: cannot read file (permission denied)")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: file is empty")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] or type(err).__name__


def _first_line(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                return line
    return ""


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _read_text(path: str, column: Optional[str]) -> np.ndarray:
    first = _first_line(path)
    if not first:
        raise InputError(f"{path}: file is empty")
    delimiter = "," if "," in first else None
    fields = [f.strip().strip('"').strip("'") for f in first.split(delimiter)]
    has_header = not all(_is_number(f) for f in fields)
    usecols = None
    if column is not None:
        if has_header and column in fields:
            usecols = fields.index(column)
        elif column.isdigit() and int(column) < len(fields):
            usecols = int(column)
        else:
            known = ", ".join(fields) if has_header else f"0..{len(fields) - 1}"
            raise InputError(f"{path}: no column {column!r} (columns: {known})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns on files without data rows
            data = np.loadtxt(path, delimiter=delimiter, skiprows=int(has_header),
                              usecols=usecols, ndmin=2, dtype=np.float64, comments=None)
    except ValueError as err:
        raise InputError(f"{path}: non-numeric content ({_one_line(err)})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None
    if data.size == 0:
        raise InputError(f"{path}: no data rows")
    return data[:, 0] if data.shape[1] == 1 else data


def _parquet_column_to_numpy(path: str, name: str, col) -> np.ndarray:  # noqa: ANN001
    import pyarrow as pa

    if col.null_count:
        raise InputError(f"{path}: column {name!r} has {col.null_count} missing values")
    kind = col.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return col.to_numpy()
    if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind):
        value_type = kind.value_type
        if not (pa.types.is_integer(value_type) or pa.types.is_floating(value_type)):
            raise InputError(f"{path}: column {name!r} holds lists of {value_type}, "
                             "expected numbers")
        rows = col.combine_chunks()
        lengths = set(rows.value_lengths().unique().to_pylist()) if len(rows) else {0}
        if len(lengths) != 1 or None in lengths:
            raise InputError(f"{path}: column {name!r} holds lists of different lengths")
        width = lengths.pop()
        return rows.flatten().to_numpy().reshape(len(rows), width)
    raise InputError(f"{path}: column {name!r} is non-numeric ({kind})")


def _read_parquet(path: str, column: Optional[str]) -> np.ndarray:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        if column is not None and column not in names:
            raise InputError(f"{path}: no column {column!r} (columns: {', '.join(names)})")
        # One thread: on a busy machine the thread pool costs more than it saves.
        table = parquet.read(columns=None if column is None else [column], use_threads=False)
    except InputError:
        raise
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise InputError(f"{path}: cannot read parquet ({_one_line(err)})") from None
    if table.num_columns == 0:
        raise InputError(f"{path}: has no columns")
    if table.num_rows == 0:
        raise InputError(f"{path}: no data rows")
    arrays = [_parquet_column_to_numpy(path, name, table.column(name))
              for name in table.column_names]
    if len(arrays) == 1:
        return arrays[0]
    if any(a.ndim != 1 for a in arrays):
        raise InputError(f"{path}: mixes list columns with other columns; pick one with :column")
    return np.column_stack(arrays)


def _read_npy(path: str) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:  # bad header, pickled objects, truncated data
        raise InputError(f"{path}: cannot read .npy ({_one_line(err)})") from None
    if not isinstance(data, np.ndarray):
        raise InputError(f"{path}: expected one array in .npy format")
    if data.dtype.kind not in "biuf":
        raise InputError(f"{path}: non-numeric content (dtype {data.dtype})")
    if data.size == 0:
        raise InputError(f"{path}: array is empty")
    return data


def read_array(spec: str) -> np.ndarray:
    """Read one input array from ``FILE`` or ``FILE:column``.

    Args:
        spec: path to a .npy, .csv, .txt or .parquet file, optionally ``:column``.

    Returns:
        A 1-D array (class ids) or a 2-D array (scores).

    Raises:
        InputError: one line naming the file: missing, unreadable, empty, non-numeric, ...

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "labels.csv")
        >>> _ = open(path, "w").write("label\\n0\\n2\\n1\\n")
        >>> read_array(path).tolist()
        [0.0, 2.0, 1.0]
    """
    path, column = split_spec(spec)
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: unsupported file type {suffix or '(none)'!r} "
                         f"(expected {', '.join(SUFFIXES)})")
    _check_file(path)
    try:
        if suffix == ".npy":
            if column is not None:
                raise InputError(f"{path}: column selection needs .csv, .txt or .parquet")
            return _read_npy(path)
        if suffix == ".parquet":
            return _read_parquet(path, column)
        return _read_text(path, column)
    except OSError as err:
        raise InputError(f"{path}: cannot read file ({_one_line(err)})") from None


def read_class_names(path: str) -> list[str]:
    """Class names from a text file (one per line) or a .json list; line ``i`` names class ``i``.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "names.txt")
        >>> _ = open(path, "w").write("cat\\ndog\\n")
        >>> read_class_names(path)
        ['cat', 'dog']
    """
    _check_file(path)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read file ({_one_line(err)})") from None
    if path.lower().endswith(".json"):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: invalid JSON ({_one_line(err)})") from None
        if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
            raise InputError(f"{path}: expected a JSON list of class names")
        names = [str(n) for n in names]
    else:
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
    if not names:
        raise InputError(f"{path}: no class names")
    return names
