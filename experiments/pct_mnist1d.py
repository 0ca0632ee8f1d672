"""Positive-congruent training on MNIST-1D: does focal distillation cut v2's negative flips?

v1 = a small ConvNet1D trained on a third of the training split; v2 = a wider ConvNet1D trained
on all of it, with: no distillation (plain), knowledge distillation (KD), focal distillation with
KL (FD-KL) and logit-matching (FD-LM) distances, and an ELODI-style ensemble teacher (mean logits
of several v1-architecture models, logit-difference distance, every sample weighted 1). The table
adds KD toward an ensemble of v2-architecture models (ELODI's paper distils such a homogeneous
ensemble of new models), alone and on top of FD-KL, and FD on noisy copies of the inputs
(:class:`regfree.pctraining.NoisyDistillationTerm`) on top of both. The setup
is the demo's (regfree/demo): cosine heads everywhere, Adam lr 3e-3 with cosine decay, batch 128.

1. Sweep (scored on the validation split, mean over the sweep seeds): a small grid of FD-KL
   and FD-LM (alpha, beta, temperature, weight), ELODI weights and a KD setting. Each
   family's pick: lowest validation NFR among configurations whose validation error is at most
   ``plain + 0.5`` points. Plot of error vs NFR with the Pareto front.
2. Table (several seeds, scored on the test split): the FD rows use the library defaults of
   :class:`regfree.pctraining.FocalDistillationLoss` (``DEFAULTS``, set from the sweep's picks;
   the output says whether they still agree); KD and ELODI use the sweep's picks, ens-KD
   ``Setup.v2_ensemble_kd`` (its teacher: plain v2s of other seeds). NFR interval: Wilson
   95% on the negative flips pooled over seeds. McNemar p vs plain: exact test on the pooled
   discordant pairs (samples where exactly one of the two models flips, for NFR; where exactly
   one is wrong, for error).

Run (from the repository root, 2 free cores): sweep, then set the defaults in
regfree/pctraining/losses.py (DEFAULTS) to its FD picks, then the table (which reuses the saved sweep):
    OMP_NUM_THREADS=1 .venv/bin/python experiments/pct_mnist1d.py --jobs 2 --sweep-only
    OMP_NUM_THREADS=1 .venv/bin/python experiments/pct_mnist1d.py --jobs 2 --skip-sweep
(both steps in one go: drop the two flags.) Plain vs one explicit FD-KL setting only, e.g.
the demo's earlier alpha 0, beta 1, T 1, weight 0.3 (writes pct_mnist1d_fdkl_0_1_1_0.3.*):
    OMP_NUM_THREADS=1 .venv/bin/python experiments/pct_mnist1d.py --jobs 2 --fd-kl 0,1,1,0.3
The validation check that chose the noisy FD rows' setting (Setup.noisy_fd; about 30 min,
writes pct_mnist1d_noisy_check.md):
    OMP_NUM_THREADS=1 .venv/bin/python experiments/pct_mnist1d.py --jobs 2 --noisy-check
Smoke run (a minute or two):
    OMP_NUM_THREADS=1 .venv/bin/python experiments/pct_mnist1d.py --quick
Writes ``experiments/results/pct_mnist1d.{md,json}`` and ``pct_mnist1d_sweep.png`` (``--quick``
writes ``pct_mnist1d_quick.*`` instead). This file is the command line; the study itself is in
``experiments/pct_study/`` (setup and data, term specs, training runs, statistics, report).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from common import command_line, cpu_name
from pct_study.analysis import (
    averaged,
    load_sweep,
    noisy_check_runs,
    save_sweep,
    summarise,
    sweep_records,
    sweep_runs,
    table_runs,
    with_picks,
)
from pct_study.recipes import FocalDistillation, Run
from pct_study.report import markdown, noisy_check_markdown, plot_sweep
from pct_study.runner import build_teachers, build_v2_ensemble, run_all
from pct_study.settings import QUICK, Data, Setup, load_data
from regfree.reporting import write_text_atomic

ROOT = Path(__file__).resolve().parent


def run_sweep(setup: Setup, data: Data, teachers: dict, workdir: Path, jobs: int) -> dict:
    """Every grid point on every sweep seed; validation scores averaged over the seeds."""
    results = run_all(sweep_runs(setup), setup, workdir, jobs, "sweep")
    return with_picks(averaged(results, data, teachers, ("val",)))


def run_noisy_check(setup: Setup, data: Data, teachers: dict, workdir: Path, jobs: int,
                    out: Path, stem: str, command: str, began: float) -> None:
    results = run_all(noisy_check_runs(setup), setup, workdir, jobs, "noisy FD check")
    text = noisy_check_markdown(setup, results, data, teachers, command,
                                (time.perf_counter() - began) / 60)
    write_text_atomic(out / f"{stem}_noisy_check.md", text)
    print(text)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--jobs", type=int, default=1, help="parallel training processes")
    parser.add_argument("--skip-sweep", action="store_true",
                        help="table only (reuses a saved sweep for the report when there is one)")
    parser.add_argument("--sweep-only", action="store_true",
                        help="sweep only: save it, then set the library defaults and rerun "
                             "with --skip-sweep")
    parser.add_argument("--noisy-check", action="store_true",
                        help="only the validation check that chooses Setup.noisy_fd; writes "
                             "pct_mnist1d_noisy_check.md")
    parser.add_argument("--fd-kl", metavar="A,B,T,W",
                        help="compare plain with one explicit FD-KL setting only (no sweep); "
                             "writes pct_mnist1d_fdkl_A_B_T_W.*")
    parser.add_argument("--v2-width", type=int, metavar="N",
                        help=f"v2's ConvNet1D width (default {Setup.v2_width}); another "
                             "width writes pct_mnist1d_widthN.*")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        print("--jobs must be >= 1", file=sys.stderr)
        return 2
    if args.noisy_check and (args.sweep_only or args.skip_sweep or args.fd_kl):
        print("--noisy-check runs alone: drop --sweep-only, --skip-sweep and --fd-kl",
              file=sys.stderr)
        return 2
    if args.v2_width is not None and args.v2_width < 1:
        print("--v2-width must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    setup = QUICK if args.quick else Setup()
    stem = "pct_mnist1d_quick" if args.quick else "pct_mnist1d"
    if args.v2_width is not None and args.v2_width != setup.v2_width:
        setup = replace(setup, v2_width=args.v2_width)
        stem += f"_width{args.v2_width}"
    fd_kl = None
    if args.fd_kl:
        try:
            alpha, beta, temperature, weight = (float(v) for v in args.fd_kl.split(","))
        except ValueError:
            print("--fd-kl must be four numbers A,B,T,W", file=sys.stderr)
            return 2
        fd_kl = (alpha, beta, temperature, weight)
        stem += "_fdkl_" + "_".join(f"{v:g}" for v in fd_kl)
        args.skip_sweep = True
    workdir = ROOT / "output" / stem
    workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()

    command = f"`{command_line('pct_mnist1d.py', argv)}`"
    sweep_path = workdir / "sweep.json"
    data = load_data(setup)
    print(f"training v1 and a {setup.ensemble_size}-model ensemble ...", flush=True)
    teachers = build_teachers(setup, data, workdir)
    if args.noisy_check:
        print(f"training the {len(setup.v2_ensemble_seeds)}-model v2 ensemble ...", flush=True)
        build_v2_ensemble(setup, data, workdir, args.jobs, teachers)
        run_noisy_check(setup, data, teachers, workdir, args.jobs, args.out, stem, command, began)
        return 0
    sweep = None
    if not args.skip_sweep:
        sweep = run_sweep(setup, data, teachers, workdir, args.jobs)
        plot_sweep(sweep, args.out / f"{stem}_sweep.png")
        sweep.update(command=command, minutes=(time.perf_counter() - began) / 60)
        save_sweep(sweep, sweep_path, command, sweep["minutes"])
        if args.sweep_only:
            for family, best in sweep["picks"].items():
                print(f"pick {family}: {best['run'].label()}  val error {best['val'].error:.2%}"
                      f" NFR {best['val'].nfr:.2%}")
            print(f"plain val error {sweep['plain_error']:.2%}; saved {sweep_path}")
            return 0
    elif fd_kl is None:
        sweep = load_sweep(sweep_path, args.out / f"{stem}.json")
    if fd_kl is None:
        print(f"training the {len(setup.v2_ensemble_seeds)}-model v2 ensemble ...", flush=True)
        build_v2_ensemble(setup, data, workdir, args.jobs, teachers)
        runs = table_runs(setup, sweep)
    else:
        a, b, temp, w = fd_kl
        explicit = FocalDistillation("kl", alpha=a, beta=b, temperature=temp, weight=w)
        runs = [run for s in setup.seeds for run in (Run(s), Run(s, (explicit,)))]
    per_seed = len(runs) // len(setup.seeds)

    def report(results: list[dict]) -> Optional[str]:
        """Write the outputs over the seeds finished so far (a cut-short run leaves a table)."""
        if len(results) % per_seed:
            return None
        rows = summarise(results, data, teachers)
        np.savez_compressed(workdir / "test_predictions.npz", **{
            f"{r['run'].label()} | seed {r['run'].seed}": r["test"] for r in results},
            v1=teachers["v1_test"], y=data.y_test)
        minutes = (time.perf_counter() - began) / 60
        text = markdown(setup, rows, sweep, teachers, data, command, minutes,
                        f"{stem}_sweep.png")
        write_text_atomic(args.out / f"{stem}.md", text)
        raw = {"setup": asdict(setup), "command": command, "minutes": minutes,
               "cpu": cpu_name(), "rows": rows,
               "sweep": None if sweep is None else sweep_records(sweep),
               "sweep_command": None if sweep is None else sweep["command"],
               "sweep_minutes": None if sweep is None else sweep["minutes"]}
        write_text_atomic(args.out / f"{stem}.json", json.dumps(raw, indent=1, default=float))
        return text

    results = run_all(runs, setup, workdir, args.jobs, "table", on_result=report)
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
