"""A cheap positive-congruent recipe (issue 15): sweep candidates on validation, then the chosen
recipe against plain, FD defaults, the three-term recipe and the training-free blend on test.

The setup is the positive-congruent study's (experiments/pct_study: mnist1d, v1 width 16 on a
third of the training split, v2 width 128, cosine heads, Adam with cosine decay), or on
``--dataset mnist5k`` the 5,000 real MNIST digits with ConvNet2D (``pct_study.settings.MNIST5K``).
Candidates, the pick rule and the table are in ``pct_study/cheap.py``.

Run (from the repository root; each process trains the runs of its seeds one after another and
rewrites the report from every run saved so far, so several processes, one per seed, can share
the work and a cut-short run leaves its partial table):
    OMP_NUM_THREADS=1 nohup .venv/bin/python experiments/pct_cheap.py --split val --seeds 100 101
    OMP_NUM_THREADS=1 nohup .venv/bin/python experiments/pct_cheap.py --split test --seeds 0 1 2 3 4
    OMP_NUM_THREADS=1 nohup .venv/bin/python experiments/pct_cheap.py --step-cost
and, where two seeds of the sweep decide little (MNIST-5k), further validation stages on more
seeds, whose picks the test table adds as rows:
    ... pct_cheap.py --dataset mnist5k --split val --stage confirm --seeds 100 101 ... 109
    ... pct_cheap.py --dataset mnist5k --split val --stage heldout --seeds 110 111 ... 119
    ... pct_cheap.py --dataset mnist5k --split test --own-pick sweep confirm heldout --three-term \
        --seeds 0 1 ... 19
(or one process per seed: ``--seeds 0``, ``--seeds 1``, ...; processes claim each run before
training it, so overlapping seed lists share the work; ``--report`` rewrites the table from what
is saved; a claim left by a process that died is taken over; ``--reuse-saved`` with ``--split val``
trains plain and only the candidates missing from the saved sweep JSON, taking the other rows
from it, for when its runs were not kept; ``--three-term`` with ``--split test`` trains the
three-term recipe as a row, after the 4 plain v2s its ens-KD learns from). ``--dataset mnist5k``
for the real digits (``--dataset digits``: scikit-learn's 8x8 digits, an
MLP); ``--quick`` for a smoke run.
Writes ``experiments/results/pct_cheap_<dataset>_{sweep,test}.{md,json}``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pickle
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from common import command_line
from pct_study.cheap import (
    CHOSEN,
    STAGES,
    TABLE_RECIPES,
    THREE_TERM,
    complete,
    ema_note,
    measure_step_cost,
    own_pick,
    sweep_markdown,
    sweep_pick,
    sweep_runs,
    table_markdown,
    table_recipes,
    table_rows,
    table_runs,
)
from pct_study.models import cosine_model
from pct_study.recipes import V2_ENSEMBLE_CACHE, Run
from pct_study.runner import build_teachers, build_v2_ensemble, run_all, v2_steps
from pct_study.settings import DIGITS, MNIST5K, QUICK, Data, Setup, load_data
from regfree.atomic import atomic_write
from regfree.reporting import write_text_atomic
from regfree.training import predict_logits

ROOT = Path(__file__).resolve().parent
SETUPS = {"mnist1d": Setup(), "mnist5k": MNIST5K, "digits": DIGITS}
QUICK_SETUPS = {"mnist1d": QUICK, "mnist5k": replace(MNIST5K, v1_epochs=2, v2_epochs=2),
                "digits": replace(DIGITS, v1_epochs=2, v2_epochs=2)}


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s exclusive lock (its ``.lock`` file) for the ``with`` block: processes
    sharing the folder wait for each other there."""
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def teachers_for(setup: Setup, workdir: Path) -> dict:
    """v1 (trained once per work folder, under a lock so that parallel processes share it):
    its training-logit cache, its validation and test predictions and logits."""
    workdir.mkdir(parents=True, exist_ok=True)
    saved = workdir / "v1_logits.npz"
    with folder_lock(workdir):
        if not saved.exists():
            data = load_data(setup)
            build_teachers(replace(setup, ensemble_size=1), data, workdir)
            v1 = cosine_model(setup.v1_width, setup, 0, setup.v1_classes)
            v1.load_state_dict(torch.load(workdir / "v1.pt"))
            logits = {f"v1_{s}_logits": predict_logits(v1, x)
                      for s, x in (("val", data.x_val), ("test", data.x_test))}
            atomic_write(saved, lambda handle: np.savez(handle, **logits))
    with np.load(saved) as arrays:
        teachers = {k: arrays[k] for k in arrays.files}
    for split in ("val", "test"):
        teachers[f"v1_{split}"] = teachers[f"v1_{split}_logits"].argmax(1)
    return teachers


def v2_ensemble_for(setup: Setup, data: Data, workdir: Path, teachers: dict) -> None:
    """The three-term recipe's ens-KD teacher: the plain v2s of ``setup.v2_ensemble_seeds``
    and their mean training logits, trained once per work folder under its lock."""
    cache = workdir / V2_ENSEMBLE_CACHE
    with folder_lock(workdir):
        if cache.is_symlink():  # left by the step-cost timing of earlier versions: v1's cache
            cache.unlink()
        if not cache.exists():
            build_v2_ensemble(setup, data, workdir, 1, teachers)


def run_path(folder: Path, run: Run) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in run.label())
    return folder / f"{slug}__seed{run.seed}.pkl"


def trained_by(argv: list[str], results: list[dict]) -> str:
    """The one command that trains every saved run (whichever processes trained them)."""
    kept, in_seeds = [], False
    for arg in argv:
        if arg == "--seeds":
            in_seeds = True
            continue
        if in_seeds and arg.lstrip("-").isdigit():
            continue
        in_seeds = False
        if arg not in ("--report", "--baselines-only", "--step-cost"):
            kept.append(arg)
    seeds = sorted({r["run"].seed for r in results})
    return command_line("pct_cheap.py", kept + ["--seeds", *map(str, seeds)])


def claim(folder: Path, run: Run) -> bool:
    """Whether this process takes ``run``: not saved yet and not claimed by a live process.

    A claim file names its process (host and pid); one whose process has died on this host is
    taken over, so a crashed or killed run needs no clean-up before the command is run again.
    Claims are checked and written under one lock per folder, so two processes never both
    take a run."""
    saved = run_path(folder, run)
    mark = saved.with_suffix(".claim")
    with folder_lock(folder):
        if saved.exists() or (mark.exists() and claim_is_live(mark)):
            return False
        mark.write_text(f"{socket.gethostname()} {os.getpid()}")
    return True


def claim_is_live(mark: Path) -> bool:
    """Whether the process a claim names may still run: another host's, or one alive here (a
    claim without a process, as earlier versions wrote them, counts as live)."""
    try:
        host, pid = mark.read_text().split()
        pid_number = int(pid)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid_number, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def load_results(folder: Path) -> list[dict]:
    return [pickle.loads(p.read_bytes()) for p in sorted(folder.glob("*.pkl"))]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(SETUPS), default="mnist1d")
    parser.add_argument("--split", choices=("val", "test"), default="val",
                        help="val: the candidates' sweep; test: the table")
    parser.add_argument("--seeds", type=int, nargs="+", default=[],
                        help="seeds to train (runs already saved are skipped)")
    parser.add_argument("--report", action="store_true",
                        help="only rewrite the report from the saved runs")
    parser.add_argument("--stage", choices=sorted(STAGES), default="sweep",
                        help="val split: the first sweep's candidates or a later stage's "
                             "(CONFIRM_ / HELDOUT_CANDIDATES, run on more seeds); writes "
                             "pct_cheap_<dataset>_<stage>.{md,json}")
    parser.add_argument("--own-pick", nargs="*", choices=sorted(STAGES), metavar="STAGE",
                        help="test split: add this dataset's own pick of each STAGE (sweep, "
                             "confirm, heldout; none named: sweep) from its pct_cheap_<dataset>_<stage>"
                             ".json as a row")
    parser.add_argument("--pick-from", choices=sorted(SETUPS), metavar="DATASET",
                        help="with --own-pick: read the picks of DATASET's stages instead of "
                             "this dataset's (does one dataset's pick carry to another?)")
    parser.add_argument("--step-cost", action="store_true",
                        help="time every candidate's training step against plain's, side by "
                             "side in this process (the reports' step-cost column)")
    parser.add_argument("--baselines-only", action="store_true",
                        help="test split: train plain and FD defaults only (not the chosen "
                             "recipe; no step-cost timing), e.g. while the sweep still runs")
    parser.add_argument("--reuse-saved", action="store_true",
                        help="val split: train plain and only the candidates missing from the "
                             "saved pct_cheap_<dataset>_sweep.json; the others' rows come from "
                             "it (for when the earlier runs were not kept)")
    parser.add_argument("--three-term", action="store_true",
                        help="test split: add the three-term recipe as a row, trained here (it "
                             "first trains the 4 plain v2s its ens-KD learns from, once per "
                             "work folder); without it mnist1d copies the row from "
                             "pct_mnist1d.json and the other datasets have none")
    parser.add_argument("--jobs", type=int, default=1, help="parallel training processes")
    parser.add_argument("--epochs", type=int, metavar="N",
                        help="v2's epochs (default: the setup's); another number saves its runs "
                             "apart and the report says so")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        print("--jobs must be >= 1", file=sys.stderr)
        return 2
    if not (args.seeds or args.report or args.step_cost):
        print("give --seeds to train, --step-cost to time the steps, or --report to rewrite "
              "the report", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    if args.epochs is not None and args.epochs < 1:
        print("--epochs must be >= 1", file=sys.stderr)
        return 2
    setup = (QUICK_SETUPS if args.quick else SETUPS)[args.dataset]
    stem = f"pct_cheap_{args.dataset}" + ("_quick" if args.quick else "")
    workdir = ROOT / "output" / stem
    folder = workdir / (args.split if args.stage == "sweep" else f"{args.split}_{args.stage}")
    if args.stage != "sweep" and (args.split != "val" or args.reuse_saved):
        print(f"--stage {args.stage} needs --split val (and no --reuse-saved)", file=sys.stderr)
        return 2
    if args.three_term and args.split != "test":
        print("--three-term needs --split test", file=sys.stderr)
        return 2
    if args.epochs is not None and args.epochs != setup.v2_epochs:
        setup = replace(setup, v2_epochs=args.epochs)
        folder = workdir / f"{args.split}_epochs{args.epochs}"
    out = ROOT / "results"
    argv = sys.argv[1:] if argv is None else list(argv)
    recipes = table_recipes()
    picks: dict[str, tuple] = {}  # stage -> its pick (this dataset's or --pick-from's)
    if args.own_pick is not None:
        for stage in args.own_pick or ["sweep"]:
            stage_json = out / f"pct_cheap_{args.pick_from or args.dataset}_{stage}.json"
            if not stage_json.exists():
                print(f"--own-pick needs {stage_json}: run that stage first", file=sys.stderr)
                return 2
            picks[stage] = own_pick(json.loads(stage_json.read_text())["pick"])
        recipes = table_recipes(*picks.values())
    if args.three_term:
        recipes = tuple(dict.fromkeys(recipes + (THREE_TERM,)))
    saved = None
    if args.reuse_saved:
        sweep_json = out / f"{stem}_sweep.json"
        if args.split != "val" or not sweep_json.exists():
            print(f"--reuse-saved needs --split val and {sweep_json}", file=sys.stderr)
            return 2
        saved = json.loads(sweep_json.read_text())
        saved.setdefault("reused_from", saved["command"])
        # a sweep rewritten by --reuse-saved marks which of its rows were reused
        saved["runs"] = [r for r in saved["runs"] if r.get("saved", True)]
    folder.mkdir(parents=True, exist_ok=True)
    data = load_data(setup)
    teachers = teachers_for(setup, workdir)
    if args.three_term and args.seeds and not args.report:
        v2_ensemble_for(setup, data, workdir, teachers)
    cost_path = workdir / "step_cost.json"
    if args.step_cost:
        print("timing the recipes' training steps side by side ...", flush=True)
        cost = measure_step_cost(setup, data, workdir, repeats=1 if args.quick else 3)
        write_text_atomic(cost_path, json.dumps(cost, indent=1))

    def report(_: object = None) -> None:
        results = load_results(folder)
        command = trained_by(argv, results)
        cost = json.loads(cost_path.read_text()) if cost_path.exists() else None
        if args.split == "val":
            sweep = sweep_pick(results, data, teachers, saved and saved["runs"],
                               candidates=STAGES[args.stage])
            if sweep is None:
                return
            write_text_atomic(out / f"{stem}_{args.stage}.md", sweep_markdown(
                sweep, setup, command, cost, v2_steps(setup, data),
                saved_from=saved and saved["reused_from"], stage=args.stage))
            raw = {"command": command, "seeds": sweep["seeds"], "pick": sweep["pick"]["run"].label(),
                   "runs": [{"run": r["run"].label(), "val": asdict(r["val"]),
                             "seconds": r["seconds"], "saved": bool(r.get("saved"))}
                            for r in sweep["runs"]]}
            if saved:
                raw["reused_from"] = saved["reused_from"]
            write_text_atomic(out / f"{stem}_{args.stage}.json", json.dumps(raw, indent=1))
            return
        if not any(r["run"].terms == () for r in results):
            return
        rows = table_rows(results, data, teachers, recipes)
        if not rows:
            return
        extra, notes = (([], [three_term_note(setup)]) if THREE_TERM in recipes
                        else three_term_rows(args.dataset, args.quick))
        done = complete([r for r in results if r["run"].terms in recipes], len(recipes))
        plain_flips = sum(int(np.sum((teachers["v1_test"] == data.y_test)
                                     & (r["test"] != data.y_test)))
                          for r in done if r["run"].terms == ())
        notes.append(f"Plain v2's negative flips, pooled over its {rows[0]['seeds']} seeds: "
                     f"{plain_flips} (the resolution of every NFR / plain below).")
        source = args.pick_from or args.dataset
        notes += [f"Row {Run(0, terms).label()}: {source}'s pick of the {stage} stage "
                  f"(`pct_cheap_{source}_{stage}.md`, --own-pick {stage})."
                  for stage, terms in picks.items()]
        notes = setup_notes(setup, data, teachers) + notes + [
            "Step costs: `" + command_line("pct_cheap.py", ["--dataset", args.dataset,
                                                            "--step-cost"]) + "`."]
        write_text_atomic(out / f"{stem}_test.md",
                          table_markdown(setup, rows, cost, extra, command, notes))
        write_text_atomic(out / f"{stem}_test.json", json.dumps(
            {"command": command, "setup": asdict(setup), "rows": rows, "step_cost": cost,
             "chosen": Run(0, CHOSEN).label()}, indent=1, default=float))

    todo = [r for r in (sweep_runs(args.seeds, STAGES[args.stage]) if args.split == "val"
                        else table_runs(args.seeds, recipes))
            if not run_path(folder, r).exists()
            and not (args.baselines_only and r.terms not in TABLE_RECIPES[:2])]
    if saved:  # the missing candidates first, then plain (the reference the pick rule needs)
        reused = {r["run"] for r in saved["runs"]} - {"plain"}
        todo = sorted((r for r in todo if r.label() not in reused), key=lambda r: r.terms == ())

    def save(results: list[dict]) -> None:
        result = results[-1]
        atomic_write(run_path(folder, result["run"]), lambda h: pickle.dump(result, h))
        report()

    began = time.perf_counter()
    if args.jobs > 1:
        run_all(todo, setup, workdir, args.jobs, f"{args.split} ({args.dataset})", on_result=save)
    else:  # one run at a time, each claimed first: processes given the same seeds share them
        for run in todo:
            if claim(folder, run):
                run_all([run], setup, workdir, 1, run.label(), on_result=save)
    report()
    print(f"done in {(time.perf_counter() - began) / 60:.1f} min; reports in {out}/{stem}_*")
    return 0


def setup_notes(setup: Setup, data: Data, teachers: dict) -> list[str]:
    v1_error = float(np.mean(teachers["v1_test"] != data.y_test))
    model = {"mnist1d": "ConvNet1D", "mnist5k": "ConvNet2D", "digits": "MLP"}[setup.dataset]
    return [f"Setup: {model} with a cosine head; v1 width {setup.v1_width}, {setup.v1_epochs} "
            f"epochs on {len(data.v1_subset)} training samples (test error {v1_error:.2%}); v2 "
            f"width {setup.v2_width}, {setup.v2_epochs} epochs on {len(data.y_train)}; "
            f"validation {len(data.y_val)}, test {len(data.y_test)} samples. Chosen recipe "
            f"(`CHOSEN`): {Run(0, CHOSEN).label()}, the mnist1d sweep's pick "
            "(`pct_cheap_mnist1d_sweep.md`). The blend rows combine v1's and v2's logits with "
            "regfree.pctraining.fit_blend, chosen per seed on validation within the error budget "
            "the row names; they train nothing but serve v1 beside v2 (v1 is a fraction of v2's "
            "size).", ema_note(v2_steps(setup, data))]


def three_term_note(setup: Setup) -> str:
    return (f"Three-term row ({Run(0, THREE_TERM).label()}): trained here with mnist1d's "
            "settings, not tuned on this dataset; its ens-KD teacher is the mean of plain v2s "
            f"of seeds {', '.join(map(str, setup.v2_ensemble_seeds))} (the 4 extra trainings, "
            "shared by every seed's run); noisy FD runs v1 live on noisy copies of each batch.")


def three_term_rows(dataset: str, quick: bool) -> tuple[list[dict], list[str]]:
    """The three-term recipe's row from results/pct_mnist1d.json (mnist1d only; its own plain)."""
    path = ROOT / "results" / "pct_mnist1d.json"
    if dataset != "mnist1d" or quick or not path.exists():
        return [], ["No three-term row: it needs 4 extra v2 trainings and a live v1 (noisy FD); "
                    "not run here."]
    raw = json.loads(path.read_text())
    rows = {r["row"]: r for r in raw["rows"]}
    three = next(r for label, r in rows.items() if "ens-KD" in label and "noisy" in label)
    three = {**three, "plain_error": float(np.mean(rows["plain"]["error"])),
             "mcnemar_p_nfr": three["mcnemar_p_nfr"]}
    note = (f"Three-term row: copied from results/pct_mnist1d.md ({raw['cpu']}, not this "
            "CPU: a rerun on another CPU moves each row like a new seed), where the same setup "
            "and seeds gave plain " + f"{np.mean(rows['plain']['error']):.2%} error, "
            f"{np.mean(rows['plain']['nfr']):.2%} NFR; its Δ error and ratio are against that "
            "plain. Its step cost is timed here (ens-KD reading v1's cache in place of the "
            "ensemble's: the same lookup).")
    return [three], [note]


if __name__ == "__main__":
    sys.exit(main())
