"""Checks for joining the inputs by an id column (``--id``), fast on good data, exact on bad.

Each input is scanned once for its row count, its rows without an id and an order-free sum of
id hashes: equal counts and equal sums mean the same multiset of ids (repeated ids are then
caught while the sorted inputs are read). Any problem is diagnosed exactly (counts and a few
example ids per input) by one aggregation that runs only on the error path.
"""

from __future__ import annotations

from typing import Any

from regfree.reporting.inputs import InputError
from regfree.reporting.sources import Source, quote

_INTEGER = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER",
            "UBIGINT", "HUGEINT")


def id_type_of(sources: dict[str, Source], id_column: str) -> str:
    """The SQL type ids are compared as: BIGINT when every id column holds integers."""
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
    id_type = id_type_of(sources, id_column)
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
    id_type = id_type_of(sources, id_column)
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
