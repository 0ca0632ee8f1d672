"""Join the inputs by an id column (``--id``) through DuckDB, out of core, with exact id checks.

Before the join each input is scanned once for its row count, its rows without an id and an
order-free sum of id hashes: equal counts and equal sums mean the same multiset of ids. The join
then stops as soon as it yields more rows than an input has (which only repeated ids cause), so
a bad id column never runs a huge join. Any problem is diagnosed exactly (counts and a few
example ids per input) by one aggregation that runs only on the error path.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from regfree.reporting.decode import numpy_of
from regfree.reporting.inputs import InputError
from regfree.reporting.sources import Source, quote

_INTEGER = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER",
            "UBIGINT", "HUGEINT")


def _id_type(sources: dict[str, Source], id_column: str) -> str:
    for option, source in sources.items():
        if source.table is None:
            raise InputError(f"{option} {source.path}: --id needs a table file with an "
                             f"{id_column!r} column (.csv, .tsv, .jsonl, .parquet), not .npy")
    types = {source.schema[id_column] for source in sources.values()}
    return "BIGINT" if types <= set(_INTEGER) else "VARCHAR"


def _ids_of(source: Source, id_column: str, id_type: str) -> str:
    return f"(SELECT CAST({quote(id_column)} AS {id_type}) AS __id FROM {source.table})"


def check_ids(con: Any, sources: dict[str, Source], id_column: str) -> int:
    """Rows per input; raises :class:`InputError` unless the inputs hold the same ids."""
    id_type = _id_type(sources, id_column)
    stats = {}
    for option, source in sources.items():
        rows, with_id, hashed = con.execute(
            f"SELECT count(*), count(__id), sum(hash(__id)) FROM "
            f"{_ids_of(source, id_column, id_type)}").fetchone()
        if rows != with_id:
            raise InputError(f"{option} {source.path}: {rows - with_id:,} rows have no "
                             f"{id_column!r} (--id)")
        if rows == 0:
            raise InputError(f"{option} {source.path}: no data rows")
        stats[option] = (rows, int(hashed))
    if len(set(stats.values())) > 1:
        diagnose(con, sources, id_column)
    return next(iter(stats.values()))[0]


def diagnose(con: Any, sources: dict[str, Source], id_column: str) -> None:
    """Count missing and repeated ids per input and raise one line with examples."""
    id_type = _id_type(sources, id_column)
    options = list(sources)
    union = " UNION ALL ".join(
        f"SELECT __id, {i} AS s FROM {_ids_of(sources[o], id_column, id_type)}"
        for i, o in enumerate(options))
    tallies = ", ".join(f"count(*) FILTER (WHERE s = {i}) AS c{i}" for i in range(len(options)))
    con.execute(f"CREATE OR REPLACE TEMP TABLE __id_problems AS SELECT * FROM "
                f"(SELECT __id, {tallies} FROM ({union}) GROUP BY __id) WHERE NOT ("
                + " AND ".join(f"c{i} = 1" for i in range(len(options))) + ")")
    problems = []
    for i, option in enumerate(options):
        for condition, what in ((f"c{i} = 0", "missing from"), (f"c{i} > 1", "repeated in")):
            count = con.execute(f"SELECT count(*) FROM __id_problems WHERE {condition}"
                                ).fetchone()[0]
            if count:
                examples = [str(r[0]) for r in con.execute(
                    f"SELECT __id FROM __id_problems WHERE {condition} ORDER BY __id LIMIT 3"
                ).fetchall()]
                problems.append(f"{count:,} ids {what} {option} {sources[option].path} "
                                f"(e.g. {', '.join(examples)})")
    con.execute("DROP TABLE IF EXISTS __id_problems")
    if not problems:  # only a hash collision gets here: the checks were not exact
        problems.append("the inputs hold different ids")
    raise InputError(f"--id {id_column}: " + "; ".join(problems))


def joined_batches(con: Any, streamed: Any, id_column: str, expected: int,
                   decode: Callable[..., np.ndarray], batch_rows: int
                   ) -> Iterator[dict[str, np.ndarray]]:
    """Batches ``{option: class ids or group codes}`` of the inputs joined by ``id_column``."""
    sources: dict[str, Source] = streamed.sources
    id_type = _id_type(sources, id_column)
    subqueries, outputs = [], {}
    for i, (option, source) in enumerate(sources.items()):
        names = [f"c{i}_{j}" for j in range(len(source.values))]
        columns = ", ".join(f"{quote(c)} AS {n}" for c, n in zip(source.values, names))
        subqueries.append(f"(SELECT CAST({quote(id_column)} AS {id_type}) AS __id, {columns} "
                          f"FROM {source.table}) t{i}")
        outputs[option] = names
    query = (f"SELECT __id, {', '.join(n for names in outputs.values() for n in names)} FROM "
             + " JOIN ".join(subqueries[:1] + [f"{s} USING (__id)" for s in subqueries[1:]]))
    rows = 0
    for batch in con.cursor().sql(query).to_arrow_reader(batch_rows):
        rows += batch.num_rows
        if rows > expected:  # only repeated ids make the join longer than an input
            diagnose(con, sources, id_column)
        ids = numpy_of(batch.column("__id"))
        yield {option: decode(streamed, option, [batch.column(n) for n in names],
                              rows - batch.num_rows, ids)
               for option, names in outputs.items()}
    if rows != expected:
        diagnose(con, sources, id_column)
