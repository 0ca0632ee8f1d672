"""Stream the inputs of ``regfree report`` batch by batch into the counters, at constant memory.

The inputs are read side by side (each through its own DuckDB cursor, or a memory-mapped
``.npy``) and cut into equal batches: in file order without ``--id``; with ``--id``, after a
check that every input holds the same ids (:mod:`regfree.reporting.joins`), each sorted by id
out of core, which lines the rows up like a join at the memory of an external sort (a hash join
of 100M rows needs more than 1 GB). Any id problem is diagnosed exactly, with counts and
examples.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from regfree.reporting.decode import ClassCoder, Decoder, MissingValues, kind_is_names, numpy_of
from regfree.reporting.inputs import InputError, one_line
from regfree.reporting.joins import check_ids, diagnose, id_type_of
from regfree.reporting.sources import SCORES, Source, open_source, quote, resolve_values

BATCH_ROWS = 1 << 20
MEMORY_LIMIT = "384MB"  # DuckDB spills sorts beyond this to a temporary folder


@dataclass
class Streamed:
    """What the counting loop needs to know about the inputs, after they were opened."""

    sources: dict[str, Source]
    coder: ClassCoder
    missing: MissingValues = field(default_factory=MissingValues)
    decoders: dict[str, Decoder] = field(default_factory=dict)
    groups: Optional[ClassCoder] = None


def connect() -> tuple[Any, str]:
    """An in-memory DuckDB connection that spills to a private temporary folder."""
    import duckdb

    spill = tempfile.mkdtemp(prefix="regfree-duckdb-")
    con = duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "temp_directory": spill})
    return con, spill


def close(con: Any, spill: str) -> None:
    con.close()
    shutil.rmtree(spill, ignore_errors=True)


@contextmanager
def reading_session() -> Iterator[Any]:
    """A DuckDB connection for one read of the inputs (see :func:`connect`), closed afterwards;
    DuckDB's own errors, and the OSError it raises when out of memory, become one-line
    InputErrors (any other error is a bug and passes through)."""
    con, spill = connect()
    try:
        yield con
    except InputError:
        raise
    except Exception as err:
        if "duckdb" not in type(err).__module__ and not isinstance(err, OSError):
            raise
        raise InputError(f"reading the inputs failed: {one_line(err)}") from None
    finally:
        close(con, spill)


def open_inputs(con: Any, specs: dict[str, str], *, id_column: Optional[str],
                class_names: Optional[Sequence[str]]) -> Streamed:
    """Open every input, resolve its value columns and set up the shared class mapping."""
    sources = {}
    for option, spec in specs.items():
        try:
            source = open_source(con, option, spec)
            if option != "--group":
                resolve_values(source, id_column=id_column, class_names=class_names,
                               labels=option == "--labels")
            else:
                resolve_group(source, id_column)
        except InputError as err:
            raise InputError(f"{option} {err}") from None
        sources[option] = source
    coder = ClassCoder(class_names)
    values = [s for o, s in sources.items() if o != "--group"]
    try:
        coder.by_name = kind_is_names(values)
    except InputError as err:
        raise InputError(str(err)) from None
    streamed = Streamed(sources, coder)
    width, origin = _known_classes(values, class_names)
    for option, source in sources.items():
        if option == "--group":
            streamed.groups = ClassCoder()
            continue
        try:
            streamed.decoders[option] = Decoder(source, coder, streamed.missing, width, origin)
        except InputError as err:
            raise InputError(str(err)) from None
    return streamed


def resolve_group(source: Source, id_column: Optional[str]) -> None:
    """The group input: one column (the slice), never ambiguous."""
    if source.array is not None:
        if source.array.ndim != 1:
            raise InputError(f"{source.path}: groups must be 1-D, got shape {source.array.shape}")
        return
    if id_column is not None and id_column not in source.schema:
        raise InputError(f"{source.path}: no --id column {id_column!r} "
                         f"(columns: {', '.join(source.schema)})")
    if not source.values:
        rest = [c for c in source.schema if c != id_column and c.lower() not in ("id", "index")]
        if len(rest) != 1:
            raise InputError(f"{source.path}: pass {source.path}:COLUMN with one of "
                             f"{', '.join(rest or source.schema)}")
        source.values = rest


def _known_classes(sources: Sequence[Source], class_names: Optional[Sequence[str]]
                   ) -> tuple[Optional[int], str]:
    if class_names is not None:
        return len(class_names), "--class-names"
    for source in sources:
        if source.kind == SCORES:
            if source.array is not None:
                return int(source.array.shape[1]), source.option
            if len(source.values) > 1:
                return len(source.values), source.option
    return None, ""


def _table_stream(con: Any, source: Source, id_expr: Optional[str], sort: bool
                  ) -> Iterator[list[Any]]:
    columns = [quote(c) for c in source.values] + ([f"{id_expr} AS __id"] if id_expr else [])
    query = f"SELECT {', '.join(columns)} FROM {source.table}"
    if sort:  # an external sort: DuckDB spills it to disk beyond its memory limit
        query += " ORDER BY __id"
    for batch in con.cursor().sql(query).to_arrow_reader(BATCH_ROWS):
        yield list(batch.columns)


def _npy_stream(source: Source) -> Iterator[list[Any]]:
    arr = source.array
    for start in range(0, len(arr), BATCH_ROWS):
        yield [np.asarray(arr[start:start + BATCH_ROWS])]


def positional_batches(con: Any, streamed: Streamed, options: Sequence[str],
                       id_column: Optional[str] = None) -> Iterator[dict[str, np.ndarray]]:
    """Equal batches of class ids (and group codes) read side by side.

    Without ``id_column`` the rows are read in file order; when several table inputs hold the
    same id column (``id``/``index``), their ids must agree row by row, so rows in another order
    exit with a hint to pass ``--id`` instead of giving a wrong NFR. With ``id_column`` (after
    :func:`~regfree.reporting.joins.check_ids` found the same ids in every input) each input is
    sorted by id, which lines the rows up: a join at the memory of a sort, with any repeated id
    caught as two equal neighbours.
    """
    sort = id_column is not None
    shared = id_column if sort else _shared_id_column(streamed, options)
    id_type = id_type_of(streamed.sources, id_column) if sort else None
    streams = {}
    for option in options:
        source = streamed.sources[option]
        if source.array is not None:
            raw = _npy_stream(source)
        else:
            id_expr = None
            if shared:
                id_expr = quote(shared) if id_type is None else \
                    f"CAST({quote(shared)} AS {id_type})"
            raw = _table_stream(con, source, id_expr, sort)
        streams[option] = _decoded(streamed, option, raw, bool(shared and source.table))
    wheres = {option: streamed.sources[option].where() for option in options}
    rows, last = 0, None
    for parts in _align(streams, wheres):
        ids = [(option, part[1]) for option, part in parts.items() if part[1] is not None]
        for option, other in ids[1:]:
            first, base = ids[0]
            if not np.array_equal(other, base):
                if sort:  # different ids although the hash sums matched
                    diagnose(con, streamed.sources, id_column)
                bad = int(np.argmax(other != base))
                raise InputError(
                    f"{option}: rows are in another order than {first} (data row "
                    f"{rows + bad + 1} has {shared} {other[bad]} in {option} but {base[bad]} "
                    f"in {first}); pass --id {shared} to join the inputs by it")
        if sort and ids:
            base = ids[0][1]
            if len(base) and ((last is not None and base[0] == last)
                              or np.any(base[1:] == base[:-1])):
                diagnose(con, streamed.sources, id_column)
            last = base[-1] if len(base) else last
        rows += len(next(iter(parts.values()))[0])
        yield {option: part[0] for option, part in parts.items()}
    if rows == 0:
        raise InputError(f"{wheres[options[0]]}: no data rows")


def _shared_id_column(streamed: Streamed, options: Sequence[str]) -> Optional[str]:
    tables = [streamed.sources[o] for o in options if streamed.sources[o].table]
    if len(tables) < 2:
        return None
    for name in ("id", "index"):
        if all(name in s.schema and name not in s.values for s in tables):
            return name
    return None


def _decoded(streamed: Streamed, option: str, raw: Iterator[list[Any]], with_ids: bool
             ) -> Iterator[tuple[np.ndarray, Optional[np.ndarray]]]:
    offset = 0
    for columns in raw:
        ids = None
        if with_ids:
            ids = numpy_of(columns[-1])
            columns = columns[:-1]
        codes = decode(streamed, option, columns, offset, ids)
        offset += len(codes)
        yield codes, ids


def decode(streamed: Streamed, option: str, columns: Sequence[Any], offset: int,
           ids: Optional[np.ndarray] = None) -> np.ndarray:
    """Class ids (or group codes for ``--group``) of one batch of one input."""
    if option == "--group":
        import pyarrow as pa

        values = columns[0]
        if isinstance(values, np.ndarray):
            values = pa.array(values)
        if hasattr(values, "combine_chunks"):
            values = values.combine_chunks()
        if values.null_count:
            streamed.missing.add(f"--group {streamed.sources[option].path}",
                                 numpy_of(values.is_null()), offset, ids)
        return streamed.groups.encode(values, f"--group {streamed.sources[option].path}")
    return streamed.decoders[option](columns, offset, ids)


def _align(streams: dict[str, Iterator[tuple[np.ndarray, Optional[np.ndarray]]]],
           wheres: dict[str, str]) -> Iterator[dict[str, tuple[np.ndarray, Optional[np.ndarray]]]]:
    buffers = {option: _Buffer(stream) for option, stream in streams.items()}
    while True:
        for buffer in buffers.values():
            buffer.fill(BATCH_ROWS)
        take = min(buffer.size for buffer in buffers.values())
        if take == 0:
            break
        yield {option: buffer.take(take) for option, buffer in buffers.items()}
    lengths = {option: buffer.drain() for option, buffer in buffers.items()}
    first, *rest = lengths
    for option in rest:
        if lengths[option] != lengths[first]:
            raise InputError(f"{wheres[option]}: has {lengths[option]:,} rows but "
                             f"{wheres[first]} has {lengths[first]:,}")


class _Buffer:
    """Arrays from one input, taken in runs of equal length across inputs."""

    def __init__(self, stream: Iterator[tuple[np.ndarray, Optional[np.ndarray]]]) -> None:
        self.stream = stream
        self.parts: list[tuple[np.ndarray, Optional[np.ndarray]]] = []
        self.size = 0
        self.taken = 0
        self.done = False

    def fill(self, rows: int) -> None:
        while self.size < rows and not self.done:
            part = next(self.stream, None)
            if part is None:
                self.done = True
            elif len(part[0]):
                self.parts.append(part)
                self.size += len(part[0])

    def take(self, rows: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        out, ids, need = [], [], rows
        while need:
            codes, part_ids = self.parts[0]
            if len(codes) <= need:
                self.parts.pop(0)
                out.append(codes)
                ids.append(part_ids)
                need -= len(codes)
            else:
                self.parts[0] = (codes[need:], None if part_ids is None else part_ids[need:])
                out.append(codes[:need])
                ids.append(None if part_ids is None else part_ids[:need])
                need = 0
        self.size -= rows
        self.taken += rows
        joined = out[0] if len(out) == 1 else np.concatenate(out)
        if ids[0] is None:
            return joined, None
        return joined, ids[0] if len(ids) == 1 else np.concatenate(ids)

    def drain(self) -> int:
        rows = self.taken + self.size
        for codes, _ in self.stream:
            rows += len(codes)
        return rows


def batches(con: Any, streamed: Streamed, *, id_column: Optional[str]
            ) -> Iterator[dict[str, np.ndarray]]:
    """Aligned batches ``{option: class ids or group codes}`` of every input."""
    options = list(streamed.sources)
    if id_column is not None:
        check_ids(con, streamed.sources, id_column)
    return positional_batches(con, streamed, options, id_column)


def read_whole(spec: str, *, id_column: Optional[str] = None) -> np.ndarray:
    """One input read whole (class ids, names, or scores); see ``inputs.read_array``."""
    con, spill = connect()
    try:
        source = open_source(con, "input", spec)
        resolve_values(source, id_column=id_column, class_names=None, labels=False)
        if source.array is not None:
            return np.asarray(source.array)
        table = con.sql(f"SELECT {source.column_expr()} FROM {source.table}").to_arrow_table()
        if table.num_rows == 0:
            raise InputError(f"{source.path}: no data rows")
        for name in table.column_names:
            if table.column(name).null_count:
                raise InputError(f"{source.path}: column {name!r} has "
                                 f"{table.column(name).null_count} missing values")
        columns = [table.column(i).to_numpy() for i in range(table.num_columns)]
        if source.kind == SCORES and len(columns) == 1 and columns[0].dtype == object:
            return np.stack(columns[0]).astype(np.float64)
        return columns[0] if len(columns) == 1 else np.column_stack(columns)
    finally:
        close(con, spill)
