"""One input of ``regfree report`` (``FILE[:column]``): which columns it holds and what they mean.

Tables (CSV/TSV/TXT, JSON lines, parquet) are read through DuckDB, which infers the types,
reads strings and dictionary (categorical) columns and streams Arrow batches; ``.npy`` files are
memory-mapped. Which column holds the values is decided from the schema before any row is
read, and never guessed: an ``id``/``index`` column (or the ``--id`` column) is never a value,
several columns are per-class scores only when that reading is unambiguous, and anything else
raises an :class:`~regfree.reporting.inputs.InputError` that says which ``FILE:column`` to pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from regfree.reporting.inputs import (
    JSON_SUFFIXES,
    InputError,
    check_file,
    one_line,
    split_spec,
    sql_string,
)

ID_COLUMNS = ("id", "index")
IDS, NAMES, SCORES = "ids", "names", "scores"


@dataclass
class Source:
    """One input file and how its values are read.

    Attributes:
        option: the command-line option it came from (``--labels``, ...), for messages.
        spec: the ``FILE[:column]`` as given.
        path: the file.
        table: a DuckDB table expression (``read_csv(...)``); None for ``.npy``.
        schema: ``{column: DuckDB type}`` in file order (empty for ``.npy``).
        kind: ``ids`` (class ids), ``names`` (class names) or ``scores`` (per-class scores).
        values: the value columns (one, or the score columns in class order).
        array: the memory-mapped ``.npy`` array.
    """

    option: str
    spec: str
    path: str
    table: Optional[str] = None
    schema: dict[str, str] = field(default_factory=dict)
    kind: str = IDS
    values: list[str] = field(default_factory=list)
    array: Optional[np.ndarray] = None

    def where(self) -> str:
        """``--old FILE`` for messages."""
        return f"{self.option} {self.path}"

    def column_expr(self) -> str:
        """The SQL select list of the value columns."""
        return ", ".join(quote(c) for c in self.values)


def quote(name: str) -> str:
    """A SQL identifier in double quotes."""
    return '"' + name.replace('"', '""') + '"'


def _table_expr(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return f"read_parquet({sql_string(path)})"
    if suffix in JSON_SUFFIXES:
        return f"read_json({sql_string(path)}, format='newline_delimited')"
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = handle.readline().strip()
    delimiter = {".csv": ",", ".tsv": "\t"}.get(suffix)
    if suffix == ".txt" and "," not in first and "\t" not in first and " " in first:
        delimiter = " "
    options = "" if delimiter is None else f", delim={sql_string(delimiter)}"
    fields = first.split(delimiter) if delimiter and delimiter != " " else first.split()
    if fields and all(_is_number(f.strip().strip('"')) for f in fields):
        options += ", header=false"  # a first row of numbers is data, never a header
    return f"read_csv({sql_string(path)}{options})"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _kind_of_type(duck_type: str) -> str:
    t = duck_type.upper()
    if t in ("VARCHAR", "TEXT") or t.startswith("ENUM") or t.startswith("VARCHAR"):
        return NAMES
    if t.endswith("[]") or t.startswith("LIST") or t.endswith("]"):
        return SCORES
    if t in ("FLOAT", "DOUBLE", "REAL") or t.startswith("DECIMAL"):
        return "float"
    if "INT" in t or t == "BOOLEAN":
        return IDS
    return "other"


def open_source(con: Any, option: str, spec: str) -> Source:
    """Check the file and read its schema (no rows are read).

    Args:
        con: a DuckDB connection.
        option: the command-line option, for messages.
        spec: ``FILE`` or ``FILE:column``.

    Returns:
        A :class:`Source` whose ``values`` are not resolved yet (see :func:`resolve_values`).
    """
    path, column = split_spec(spec)
    check_file(path)
    source = Source(option, spec, path)
    if Path(path).suffix.lower() == ".npy":
        if column is not None:
            raise InputError(f"{path}: column selection needs a table file "
                             "(.csv, .tsv, .txt, .jsonl, .parquet)")
        source.array = _open_npy(path)
        return source
    source.table = _table_expr(path)
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {source.table}").fetchall()
    except Exception as err:  # duckdb raises several types for unreadable files
        raise InputError(f"{path}: cannot read {Path(path).suffix.lstrip('.')} "
                         f"({one_line(err)})") from None
    source.schema = {row[0]: str(row[1]) for row in rows}
    if not source.schema:
        raise InputError(f"{path}: has no columns")
    if column is not None:
        source.values = [_pick_column(source, column)]
    return source


def _open_npy(path: str) -> np.ndarray:
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:  # bad header, pickled objects, truncated data
        raise InputError(f"{path}: cannot read .npy ({one_line(err)})") from None
    if not isinstance(data, np.ndarray):
        raise InputError(f"{path}: expected one array in .npy format")
    if data.dtype.kind not in "biufUS":
        raise InputError(f"{path}: non-numeric content (dtype {data.dtype})")
    if data.ndim not in (1, 2):
        raise InputError(f"{path}: expected 1-D class ids or 2-D scores, got shape {data.shape}")
    if data.size == 0:
        raise InputError(f"{path}: array is empty")
    return data


def _pick_column(source: Source, column: str) -> str:
    names = list(source.schema)
    if column in source.schema:
        return column
    if column.isdigit() and int(column) < len(names):
        return names[int(column)]
    raise InputError(f"{source.path}: no column {column!r} (columns: {', '.join(names)})")


def _is_id(name: str, id_column: Optional[str]) -> bool:
    return name == id_column or name.lower() in ID_COLUMNS


def resolve_values(source: Source, *, id_column: Optional[str],
                   class_names: Optional[Sequence[str]], labels: bool) -> None:
    """Decide which columns hold the values and what they are; raise when it is ambiguous.

    Args:
        source: an opened source.
        id_column: the ``--id`` column (never a value), or None.
        class_names: the ``--class-names`` list, which score headers may name.
        labels: whether this is the labels input (labels are never scores).
    """
    if source.array is not None:
        arr = source.array
        source.kind = SCORES if arr.ndim == 2 else (NAMES if arr.dtype.kind in "US" else IDS)
        if labels and source.kind == SCORES:
            raise InputError(f"{source.path}: labels must be 1-D class ids, got shape {arr.shape}")
        return
    if id_column is not None and id_column not in source.schema:
        raise InputError(f"{source.path}: no --id column {id_column!r} "
                         f"(columns: {', '.join(source.schema)})")
    if source.values:
        name = source.values[0]
        if _is_id(name, id_column) and id_column is not None and name == id_column:
            raise InputError(f"{source.path}: column {name!r} is the --id column, not values")
        kind = _kind_of_type(source.schema[name])
        _set_single(source, name, kind, labels)
        return
    candidates = [c for c in source.schema if not _is_id(c, id_column)]
    if not candidates:
        raise InputError(f"{source.path}: has only id columns ({', '.join(source.schema)})")
    if len(candidates) == 1:
        _set_single(source, candidates[0], _kind_of_type(source.schema[candidates[0]]), labels)
        return
    kinds = {_kind_of_type(source.schema[c]) for c in candidates}
    listed = ", ".join(candidates)
    pick = f"pass {source.path}:COLUMN with one of {listed}"
    if labels:
        raise InputError(f"{source.path}: several columns could hold the labels ({listed}); "
                         f"{pick}")
    if kinds != {"float"}:
        raise InputError(f"{source.path}: several columns could hold the predictions "
                         f"({listed}); {pick} (several columns are read as scores only when "
                         "all are floating-point)")
    if class_names is not None:
        if set(candidates) == set(class_names):
            candidates = [c for c in class_names]
        elif len(candidates) != len(class_names):
            raise InputError(f"{source.path}: {len(candidates)} score columns ({listed}) but "
                             f"--class-names has {len(class_names)} classes; {pick}")
        elif set(candidates) & set(class_names):
            raise InputError(f"{source.path}: score columns ({listed}) name some classes of "
                             f"--class-names but not all; {pick}")
    source.kind, source.values = SCORES, candidates


def _set_single(source: Source, name: str, kind: str, labels: bool) -> None:
    if kind == "other":
        raise InputError(f"{source.path}: column {name!r} has type {source.schema[name]}, "
                         "expected class ids, class names or scores")
    if kind == SCORES and labels:
        raise InputError(f"{source.path}: column {name!r} holds lists; labels must be 1-D")
    source.kind = IDS if kind == "float" else kind
    source.values = [name]
