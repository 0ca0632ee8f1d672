"""Positive-congruent training when v2 adds classes (issue 15, MPT's setting): v1 learns classes
0-4 only (a 5-output head), v2 all ten; flips are counted on the classes v1 knows.

Setup: the cheap recipe's test setup (``pct_cheap.py``: mnist1d, v1 width 16 on a third of the
training split, here only its samples of classes 0-4; v2 width 128 on all of it) and its rows:
plain v2, FD-KL defaults, the cheap recipe's first pick (``PREVIOUS_PICK``) and the
training-free blends.
Focal distillation compares v2's logits of v1's five classes with v1's (the library's default
rule for an old head with fewer classes, and MPT's: ``outputs[:, :C_old]``); two more rows run
FD defaults and the pick with ``new_classes="zero"`` (v1 gives the classes it never saw
probability zero, so v2 pays for moving a seen-class sample's probability to a new class).
Samples of classes v1 never saw are not distilled. The blends combine v1's five-class scores
with v2's ten (``fit_blend``: probability 0 on the classes v1 never saw). Tables and statistics:
``pct_study/new_classes.py``.

Run (from the repository root; one process per seed, each rewrites the report from every run
saved so far, so a cut-short study leaves its partial table):
    OMP_NUM_THREADS=1 nohup .venv/bin/python experiments/pct_new_classes.py --seeds 0 &
    OMP_NUM_THREADS=1 nohup .venv/bin/python experiments/pct_new_classes.py --seeds 1 &
    ... (seeds 2, 3, 4); ``--report`` rewrites the table from the saved runs; a run claimed by
a process that died is taken over by the next one. ``--dataset mnist5k`` for the real digits;
``--quick`` for a smoke run.
Writes ``experiments/results/pct_new_classes_<dataset>.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import torch
from pct_cheap import QUICK_SETUPS, SETUPS, claim, load_results, run_path, teachers_for

from common import command_line
from pct_study.cheap import table_runs
from pct_study.new_classes import RECIPES, V1_CLASSES, new_class_markdown, new_class_rows
from pct_study.runner import run_all
from pct_study.settings import load_data
from regfree.atomic import atomic_write
from regfree.reporting import write_text_atomic

ROOT = Path(__file__).resolve().parent


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(SETUPS), default="mnist1d")
    parser.add_argument("--seeds", type=int, nargs="+", default=[],
                        help="seeds to train (runs already saved are skipped)")
    parser.add_argument("--report", action="store_true",
                        help="only rewrite the report from the saved runs")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args(argv)
    if not (args.seeds or args.report):
        print("give --seeds to train or --report to rewrite the report", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    setup = replace((QUICK_SETUPS if args.quick else SETUPS)[args.dataset],
                    v1_classes=V1_CLASSES)
    stem = f"pct_new_classes_{args.dataset}" + ("_quick" if args.quick else "")
    workdir = ROOT / "output" / stem
    folder = workdir / "test"
    folder.mkdir(parents=True, exist_ok=True)
    out = ROOT / "results"
    data = load_data(setup)
    teachers = teachers_for(setup, workdir)

    def report(_: object = None) -> None:
        results = load_results(folder)
        rows = new_class_rows(results, data, teachers)
        if not rows:
            return
        seeds = sorted({r["run"].seed for r in results})
        command = command_line("pct_new_classes.py", ["--dataset", args.dataset]
                               + (["--quick"] if args.quick else [])
                               + ["--seeds", *map(str, seeds)])
        write_text_atomic(out / f"{stem}.md",
                          new_class_markdown(setup, data, teachers, rows, command))
        write_text_atomic(out / f"{stem}.json", json.dumps(
            {"command": command, "setup": asdict(setup), "rows": rows}, indent=1,
            default=float))

    def save(results: list[dict]) -> None:
        result = results[-1]
        atomic_write(run_path(folder, result["run"]), lambda h: pickle.dump(result, h))
        report()

    began = time.perf_counter()
    for run in table_runs(args.seeds, RECIPES):
        if claim(folder, run):
            run_all([run], setup, workdir, 1, run.label(), on_result=save)
    report()
    print(f"done in {(time.perf_counter() - began) / 60:.1f} min; report in {out}/{stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
