"""`regfree report` at 10M and 100M rows: wall time, CPU time and peak memory per process.

For each size it writes, in a scratch folder, three exports of the same predictions (10 classes,
old model 90% / new 92% right):
- ``aligned``: one parquet file with int64 columns ``y, old, new`` (rows side by side);
- ``joined``: three parquet files ``(id, label)``, ``(id, pred)``, ``(id, pred)`` whose rows are in
  three different orders, compared with ``--id id``;
- ``names``: one parquet file whose three columns hold class names (``"class-3"``).
and times, each in a fresh process (``/usr/bin/time``), `regfree report` on each, a bare
pyarrow + numpy streaming pass over the aligned file (the floor for reading and counting) and a
DuckDB SQL count of the negative flips. All routes must agree on the number of negative flips.

    .venv/bin/python benchmarks/bench_report.py --rows 10000000 100000000
    .venv/bin/python benchmarks/bench_report.py --rows 1000000000 --skip-id
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CHUNK = 1 << 22
CLASSES = 10

BARE_PASS = """
import sys, numpy as np, pyarrow.parquet as pq
nf = 0
for batch in pq.ParquetFile(sys.argv[1]).iter_batches(1 << 20, columns=["y", "old", "new"]):
    y, old, new = (batch.column(i).to_numpy() for i in range(3))
    nf += int(np.count_nonzero((old == y) & (new != y)))
print(nf)
"""

DUCKDB_COUNT = """
import sys, duckdb
print(duckdb.execute(f"SELECT count(*) FILTER (WHERE old = y AND new <> y) "
                     f"FROM read_parquet('{sys.argv[1]}')").fetchall()[0][0])
"""


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64: a stateless pseudo-random uint64 per input (wrapping arithmetic)."""
    x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def predictions(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label, old and new prediction of each id: a function of the id alone, so any file order
    can be written chunk by chunk."""
    ids = ids.astype(np.uint64)
    h = [_mix(ids * np.uint64(3) + np.uint64(i)) for i in range(3)]
    k = np.uint64(CLASSES)
    y = (h[0] % k).astype(np.int64)
    old = np.where(h[1] % np.uint64(1000) < 900, y, ((h[1] >> np.uint64(40)) % k).astype(np.int64))
    new = np.where(h[2] % np.uint64(1000) < 920, y, ((h[2] >> np.uint64(40)) % k).astype(np.int64))
    return y, old, new


def shuffled(n: int, start: int, stop: int, salt: int) -> np.ndarray:
    """Rows ``start..stop`` of a fixed permutation of ``range(n)`` (no n-sized array held)."""
    step = 2_654_435_761 % n
    while math.gcd(step, n) != 1:
        step += 1
    return (np.arange(start, stop, dtype=np.int64) * step + salt) % n


def write_exports(folder: str, n: int, with_ids: bool = True) -> None:
    names = pa.array([f"class-{c}" for c in range(CLASSES)])
    writers = {}

    def put(name: str, table: pa.Table) -> None:
        if name not in writers:
            writers[name] = pq.ParquetWriter(os.path.join(folder, name), table.schema)
        writers[name].write_table(table, row_group_size=1 << 20)

    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        y, old, new = predictions(np.arange(start, stop))
        put("aligned.parquet", pa.table({"y": y, "old": old, "new": new}))
        put("names.parquet", pa.table({c: pa.DictionaryArray.from_arrays(pa.array(v), names)
                                       for c, v in (("y", y), ("old", old), ("new", new))}))
        if not with_ids:
            continue
        put("labels.parquet", pa.table({"id": np.arange(start, stop), "label": y}))
        for name, salt in (("old.parquet", 1), ("new.parquet", 2)):
            ids = shuffled(n, start, stop, salt)  # row r of this file holds id ids[r]
            _, old_i, new_i = predictions(ids)
            put(name, pa.table({"id": ids, "pred": old_i if name == "old.parquet" else new_i}))
    for writer in writers.values():
        writer.close()


def timed(args: list[str]) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds (user + sys), peak RSS in MB and stdout of one process."""
    with tempfile.NamedTemporaryFile("r") as stats:
        result = subprocess.run(["/usr/bin/time", "-o", stats.name, "-f", "%e %U %S %M", *args],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{args[:4]} failed: {result.stderr[-500:]}")
        wall, user, system, peak_kb = stats.read().split()[-4:]
    return float(wall), float(user) + float(system), float(peak_kb) / 1024, result.stdout


def report_flips(json_path: str) -> int:
    with open(json_path) as handle:
        record = json.load(handle)
    return sum(c["negative_flips"] for c in record["per_class"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000_000, 100_000_000])
    parser.add_argument("--folder", help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--skip-id", action="store_true",
                        help="leave out the shuffled export joined by --id (disk and time)")
    args = parser.parse_args()
    root = args.folder or tempfile.mkdtemp(prefix="bench-report-")
    py = sys.executable
    print(f"load average before: {os.getloadavg()[0]:.2f}; cores: {os.cpu_count()}")
    print("| rows | route | wall | CPU | peak RSS | wall / bare pass |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    try:
        for n in args.rows:
            folder = os.path.join(root, str(n))
            os.makedirs(folder, exist_ok=True)
            write_exports(folder, n, with_ids=not args.skip_id)
            aligned = os.path.join(folder, "aligned.parquet")
            out = os.path.join(folder, "r.json")
            report = [py, "-m", "regfree.cli", "report", "--json", out]
            routes = [
                ("bare pyarrow + numpy pass", [py, "-c", BARE_PASS, aligned], None),
                ("DuckDB SQL count", [py, "-c", DUCKDB_COUNT, aligned], None),
                ("regfree report, aligned", report + [
                    "--labels", f"{aligned}:y", "--old", f"{aligned}:old",
                    "--new", f"{aligned}:new"], out),
                ("regfree report, class names", report + [
                    "--labels", f"{folder}/names.parquet:y", "--old",
                    f"{folder}/names.parquet:old", "--new", f"{folder}/names.parquet:new"], out),
                ("regfree report, shuffled rows --id", report + [
                    "--labels", f"{folder}/labels.parquet", "--old", f"{folder}/old.parquet",
                    "--new", f"{folder}/new.parquet", "--id", "id"], out),
            ]
            if args.skip_id:
                routes = routes[:-1]
            flips, base = None, None
            for name, cmd, json_path in routes:
                wall, cpu, peak, stdout = timed(cmd)
                found = report_flips(json_path) if json_path else int(stdout.split()[-1])
                if flips is not None and found != flips:
                    raise AssertionError(f"{name}: {found} negative flips, expected {flips}")
                flips = found
                base = base or wall
                print(f"| {n:,} | {name} | {wall:.2f} s | {cpu:.2f} s | {peak:,.0f} MB | "
                      f"{wall / base:.2f}x |", flush=True)
            shutil.rmtree(folder)
    finally:
        if not args.folder:
            shutil.rmtree(root, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
