"""Speed of regfree.metrics and `regfree report` on 10M predictions (a measurement, not a test).

Compares, in one run and on the same arrays:
- ``negative_flip_rate`` with a bare numpy expression and with a scikit-learn confusion matrix;
- ``flip_report`` (all metrics, per-class flips, negative-flip confusion) with the same numbers
  computed by hand-written numpy and by scikit-learn confusion matrices;
- ``regfree report`` end to end (a fresh process) on a 10M-row parquet file.

Each timing is the median of ``--repeats`` runs. Run with OMP_NUM_THREADS=1:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_metrics.py
``--mcnemar`` times only ``mcnemar_exact_p`` (2e8 to 1e10 pairs) against scipy's binomtest.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

import numpy as np
from sklearn.metrics import confusion_matrix

from regfree.metrics import flip_report, negative_flip_rate


def median_seconds(fn: Callable[[], object], repeats: int, warm_up: bool = True) -> float:
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_predictions(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    old = np.where(rng.random(n) < 0.90, y, rng.integers(0, k, n))
    new = np.where(rng.random(n) < 0.92, y, rng.integers(0, k, n))
    return y, old, new


def numpy_nfr(y, old, new) -> float:
    return np.count_nonzero((old == y) & (new != y)) / len(y)


def sklearn_nfr(y, old, new) -> float:
    both = confusion_matrix(old == y, new == y, labels=[True, False])
    return both[0, 1] / len(y)


def numpy_report(y, old, new, k):
    """The report's counts by straightforward numpy (boolean masks and bincounts)."""
    old_ok, new_ok = old == y, new == y
    negative, positive = old_ok & ~new_ok, ~old_ok & new_ok
    per_count = np.bincount(y, minlength=k)
    per_negative = np.bincount(y[negative], minlength=k)
    per_positive = np.bincount(y[positive], minlength=k)
    confusion = np.bincount(y[negative] * k + new[negative], minlength=k * k).reshape(k, k)
    totals = (np.count_nonzero(old_ok), np.count_nonzero(new_ok),
              np.count_nonzero(old_ok & new_ok))
    return per_count, per_negative, per_positive, confusion, totals


def sklearn_report(y, old, new, k):
    """The same counts from two scikit-learn confusion matrices."""
    labels = np.arange(k)
    old_ok = old == y
    everything = confusion_matrix(y, new, labels=labels)
    where_old_right = confusion_matrix(y[old_ok], new[old_ok], labels=labels)
    both_right = np.diag(where_old_right)
    per_negative = where_old_right.sum(axis=1) - both_right
    per_positive = np.diag(everything) - both_right
    confusion = where_old_right - np.diag(both_right)
    return everything.sum(axis=1), per_negative, per_positive, confusion


def time_cli(path: str, repeats: int, extra: list[str]) -> tuple[float, float]:
    """Median wall time and median CPU time (user + sys) of one `regfree report` process."""
    cmd = [sys.executable, "-m", "regfree.cli", "report", "--labels", f"{path}:y",
           "--old", f"{path}:old", "--new", f"{path}:new", *extra]
    return time_process(cmd, repeats)


def time_process(cmd: list[str], repeats: int) -> tuple[float, float]:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)  # warm the file cache
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--cli-only", action="store_true", help="only time `regfree report`")
    parser.add_argument("--mcnemar", action="store_true",
                        help="only time mcnemar_exact_p against scipy's binomtest")
    args = parser.parse_args()
    if args.mcnemar:
        time_mcnemar()
        return

    y, old, new = make_predictions(args.n, args.classes, args.seed)
    if not args.cli_only:
        time_python_api(y, old, new, args.classes, args.repeats)
    if not args.skip_cli:
        time_command(y, old, new, args.repeats)


def time_mcnemar() -> None:
    """mcnemar_exact_p at 2e8 to 1e10 discordant pairs: time, peak allocation, scipy's value."""
    import tracemalloc

    from scipy.stats import binomtest

    from regfree.metrics import mcnemar_exact_p

    mcnemar_exact_p(1, 2)  # imports scipy.special
    print("| discordant pairs | p | time (min of 20) | peak allocation | binomtest |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for b, c in [(10**8 - 10**4, 10**8 + 10**4), (5 * 10**8 - 3 * 10**4, 5 * 10**8 + 3 * 10**4),
                 (5 * 10**9 - 10**5, 5 * 10**9 + 10**5), (5 * 10**9 - 1, 5 * 10**9 + 1)]:
        seconds = []
        for _ in range(20):
            start = time.perf_counter()
            p = mcnemar_exact_p(b, c)
            seconds.append(time.perf_counter() - start)
        tracemalloc.start()
        mcnemar_exact_p(b, c)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        reference = "not run"
        if b + c <= 10**9:
            start = time.perf_counter()
            value = binomtest(b, b + c).pvalue
            reference = f"{value:.12g}, {(time.perf_counter() - start) * 1e3:.1f} ms"
        print(f"| {b + c:.0e} | {p:.12g} | {min(seconds) * 1e3:.3f} ms | {peak} B | {reference} |")


def time_python_api(y: np.ndarray, old: np.ndarray, new: np.ndarray, k: int,
                    r: int) -> None:
    report = flip_report(y, old, new)
    assert negative_flip_rate(y, old, new) == numpy_nfr(y, old, new) == sklearn_nfr(y, old, new)
    counts, neg, pos, confusion, _ = numpy_report(y, old, new, k)
    assert np.array_equal(confusion, report.negative_flip_confusion)
    assert [c.negative_flips for c in report.per_class] == neg.tolist()
    assert np.array_equal(sklearn_report(y, old, new, k)[3], confusion)

    slow_r = min(r, 3)  # scikit-learn takes seconds per call
    print(f"n={len(y):,} classes={k} repeats={r} (median) "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} numpy {np.__version__}")
    base = median_seconds(lambda: numpy_nfr(y, old, new), r)
    rows = [
        ("NFR  bare numpy expression", base, base),
        ("NFR  sklearn confusion_matrix", median_seconds(
            lambda: sklearn_nfr(y, old, new), slow_r, warm_up=False), base),
        ("NFR  regfree negative_flip_rate", median_seconds(
            lambda: negative_flip_rate(y, old, new), r), base),
        ("NFR  regfree negative_flip_rate(validate=False)", median_seconds(
            lambda: negative_flip_rate(y, old, new, validate=False), r), base),
    ]
    report_base = median_seconds(lambda: numpy_report(y, old, new, k), r)
    rows += [
        ("report  hand-written numpy (masks + bincounts)", report_base, report_base),
        ("report  sklearn (2 confusion matrices)", median_seconds(
            lambda: sklearn_report(y, old, new, k), slow_r, warm_up=False), report_base),
        ("report  regfree flip_report", median_seconds(lambda: flip_report(y, old, new), r),
         report_base),
        ("report  regfree flip_report(validate=False)", median_seconds(
            lambda: flip_report(y, old, new, validate=False), r), report_base),
    ]
    for name, seconds, ref in rows:
        print(f"{name:<50} {seconds * 1000:9.1f} ms  {seconds / ref:6.2f}x")


def time_command(y: np.ndarray, old: np.ndarray, new: np.ndarray, r: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "preds.parquet")
        pq.write_table(pa.table({"y": y, "old": old, "new": new}), path)
        size_mb = os.path.getsize(path) / 1e6
        startup = time_process([sys.executable, "-c", "import numpy"], r)
        plain = time_cli(path, r, [])
        with_json = time_cli(path, r, ["--json", os.path.join(tmp, "r.json"), "--max-nfr", "1"])
        print(f"regfree report, {len(y):,}-row parquet ({size_mb:.0f} MB), per process "
              "(median wall / median CPU user+sys):")
        for name, (wall, cpu) in [("`python -c 'import numpy'` (startup floor)", startup),
                                  ("regfree report", plain),
                                  ("regfree report --json --max-nfr", with_json)]:
            print(f"  {name:<45} {wall:6.3f} s wall  {cpu:6.3f} s CPU")
        print(f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
