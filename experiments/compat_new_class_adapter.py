"""New classes through a labelled query adapter: its temperature and anchor, chosen on validation.

Setting of the compat_chain new-class study (experiments/compat_chain_contrastive.py): v1 on
classes 0-4 (the chain's v1 size and data part), v2 trained alone on all ten (the chain's v2
size and data part); v2's queries search v1's gallery (the whole training split embedded by v1)
through ``fit_adapter(kind="mlp", labels=y, temperature=T, anchor_weight=A)`` fitted on v2's
training data embedded by both models; its own gallery natively (no new/new cost by
construction). Rows: v2's queries unmapped, the copy adapter (no labels), the labelled adapter
at each (T, A) tried.

Why: at the earlier default (T 0.1) the labelled adapter met the goal (unseen new/old >= v1's
own) on digits and MNIST-5k and collapsed on one mnist1d seed (test seed 2: 23.9 vs v1's 56.8).
A scratch probe of that seed showed the temperature decides it (0.02: about 92); the
temperature is therefore chosen here on validation data, across the three datasets at once, so
that the library has one default.

Rule (written before the validation runs): over the temperatures in TEMPERATURES, the pick has
the highest worst unseen-class new/old - old/old top-1 over every (dataset, validation seed);
ties within 0.5 points go to the higher mean seen-class gap, then to the larger temperature.

Second sweep (--sweep anchor): at the picked temperature (0.02) test seed 0 of MNIST-5k lost one
unseen class (its queries landed among another class's gallery items although the paired items
themselves were searched well: the map leans on a few gallery rows that the whole gallery
crowds out); a scratch probe of that seed with a cosine pull onto v1's row of the same item
(anchor_weight 2) kept the class. Rule (written before its runs): the anchor weights in
ANCHOR_WEIGHTS at the picked temperature, on validation seeds 10-13, chosen as above (ties:
higher mean seen gap, then the larger weight).

One seed per process, then the table:
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_new_class_adapter.py --dataset digits --split val --seeds 10
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_new_class_adapter.py --split val --combine
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_new_class_adapter.py --dataset digits --seeds 0
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_new_class_adapter.py --combine
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Optional

import numpy as np
import torch
from compat_chain_contrastive import new_class_v1
from compat_chain_setup import RESULTS, SETTINGS, Seed, group_scores, load, validation_split

from common import command_line, cpu_name, mean_std
from regfree.compat import embedder, fit_adapter
from regfree.reporting import write_text_atomic

TEMPERATURES = (0.01, 0.02, 0.05, 0.1)
ANCHOR_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
GROUPS = ("seen", "unseen")


Option = tuple[float, float]  # the labelled adapter's temperature and anchor weight


def seed_file(dataset: str, split: str, seed: int):
    return RESULTS / f"compat_new_class_adapter_{dataset}_{split}.seed{seed}.json"


def row_name(option: Optional[Option]) -> str:
    if option is None:
        return "copy adapter"
    temperature, anchor = option
    return f"labelled adapter T={temperature:g}" + (f" anchor={anchor:g}" if anchor else "")


def run_seed(dataset: str, split: str, seed: int, options: tuple[Option, ...],
             argv: list[str]) -> dict:
    """Every row of one seed; the file is rewritten after each row (a stopped run keeps them)."""
    started = time.perf_counter()
    setting = SETTINGS[dataset]
    data = load(setting)
    run = Seed(setting, validation_split(data, seed) if split.startswith("val") else data, seed)
    v1, v2 = new_class_v1(run), run.train(1)
    old, new = embedder(v1), embedder(v2)
    x, y = run.data.x_train[run.parts[1]], run.data.y_train[run.parts[1]]
    source, target = new(x), old(x)
    result = {"dataset": dataset, "seed": seed, "split": split, "setting": asdict(setting),
              "command": command_line("compat_new_class_adapter.py", argv), "cpu": cpu_name(),
              "rows": {"v2 unmapped": group_scores(run, old, new, setting.seen_classes)}}
    for option in (None, *options):
        labelled = {} if option is None else {"labels": y, "temperature": option[0],
                                              "anchor_weight": option[1]}
        adapter = fit_adapter(source, target, kind="mlp", seed=seed, progress=False, **labelled)
        result["rows"][row_name(option)] = group_scores(
            run, old, new, setting.seen_classes,
            lambda queries, a=adapter: a.transform(new(queries)))
        result["seconds"] = time.perf_counter() - started
        write_text_atomic(seed_file(dataset, split, seed), json.dumps(result, indent=1))
        print(f"{dataset} {split} seed {seed}: {row_name(option)} at "
              f"{result['seconds']:.0f}s", flush=True)
    return result


def load_split(split: str) -> dict[str, list[dict]]:
    """Seed files per dataset (in SETTINGS order) for one split."""
    out = {}
    for dataset in SETTINGS:
        files = sorted(RESULTS.glob(f"compat_new_class_adapter_{dataset}_{split}.seed*.json"))
        if files:
            out[dataset] = sorted((json.loads(f.read_text()) for f in files),
                                  key=lambda r: r["seed"])
    if not out:
        raise SystemExit(f"no compat_new_class_adapter_*_{split}.seed*.json; run the seeds first")
    return out


def gaps(seeds: list[dict], row: str, group: str) -> list[float]:
    """new/old − old/old top-1 (points) of ``row`` per seed."""
    return [100 * (s["rows"][row][group]["new/old top1"] - s["rows"][row][group]["old/old top1"])
            for s in seeds]


def pick(per_dataset: dict[str, list[dict]], options: Optional[list[Option]] = None
         ) -> Option:
    """The option the module's rules choose from validation seed files: among ``options``
    (default: every temperature without an anchor), the highest worst unseen gap; ties within
    0.5 points: the higher mean seen gap, then the larger temperature and anchor weight."""
    options = [(t, 0.0) for t in TEMPERATURES] if options is None else options

    def worst(option: Option) -> float:
        return min(min(gaps(seeds, row_name(option), "unseen"))
                   for seeds in per_dataset.values())

    def seen(option: Option) -> float:
        return float(np.mean([np.mean(gaps(seeds, row_name(option), "seen"))
                              for seeds in per_dataset.values()]))

    best = max(worst(o) for o in options)
    tied = [o for o in options if worst(o) >= best - 0.5]
    return max(tied, key=lambda o: (seen(o), o))


def anchor_options() -> list[Option]:
    temperature, _ = pick(load_split("val"))
    return [(temperature, a) for a in ANCHOR_WEIGHTS]


def chosen() -> Option:
    """The validated option: the anchor sweep's pick (the temperature sweep's without it)."""
    try:
        return pick(load_split("val_anchor"), anchor_options())
    except SystemExit:
        return pick(load_split("val"))


def table(dataset: str, seeds: list[dict]) -> list[str]:
    lines = [f"### {dataset} (seeds {[s['seed'] for s in seeds]})", "",
             "| v2's queries on v1's gallery | group | old/old top-1 | new/old top-1 "
             "| new/old − old/old | seeds new/old ≥ old/old | new/old mAP@100 |",
             "|---|---|---|---|---|---|---|"]
    for row in seeds[0]["rows"]:
        for group in GROUPS:
            cells = [s["rows"][row][group] for s in seeds]
            gap = gaps(seeds, row, group)
            lines.append(
                f"| {row} | {group} | {mean_std([c['old/old top1'] for c in cells], digits=1)} "
                f"| {mean_std([c['new/old top1'] for c in cells], digits=1)} "
                f"| {mean_std(gap, 1.0, 1)} | {sum(g >= 0 for g in gap)}/{len(gap)} "
                f"| {mean_std([c['new/old mAP'] for c in cells], digits=1)} |")
    return lines + [""]


def markdown(split: str, per_dataset: dict[str, list[dict]], argv: list[str]) -> str:
    any_seed = next(iter(per_dataset.values()))[0]
    lines = [f"# New classes through a labelled query adapter ({split} split)", "",
             "Commands (one process per seed, then this table):", ""]
    lines += [f"    {s['command']}" for seeds in per_dataset.values() for s in seeds]
    lines += [f"    {command_line('compat_new_class_adapter.py', argv)}", "",
              f"CPU: {any_seed['cpu']}. " + __doc__.split("\n\n")[1].replace("\n", " "), "",
              "Values: top-1 and mAP@100 in %, mean ± std over seeds; gaps in points. "
              "new/new is v2's own search (no adapter), the same for every row.", ""]
    if split == "val":
        lines += ["Rule: " + __doc__.split("Rule (written before the validation runs): ")[1]
                  .split("\n\n")[0].replace("\n", " "),
                  "", f"Pick: **T = {pick(per_dataset)[0]:g}**.", ""]
    if split == "val_anchor":
        lines += [__doc__.split("Second sweep (--sweep anchor): ")[1].split("\n\n")[0]
                  .replace("\n", " "), "",
                  f"Pick: **anchor_weight = {pick(per_dataset, anchor_options())[1]:g}**.", ""]
    for dataset, seeds in per_dataset.items():
        lines += table(dataset, seeds)
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(SETTINGS))
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--sweep", choices=("temperature", "anchor"), default="temperature",
                        help="with --split val: which sweep (the anchor sweep's files end in "
                             "_val_anchor)")
    parser.add_argument("--combine", action="store_true",
                        help="write the split's table from every seed file")
    args = parser.parse_args(argv)
    split = "val_anchor" if args.split == "val" and args.sweep == "anchor" else args.split
    if args.combine:
        text = markdown(split, load_split(split), argv)
        write_text_atomic(RESULTS / f"compat_new_class_adapter_{split}.md", text + "\n")
        print(text)
        return 0
    if args.dataset is None:
        parser.error("--dataset is required unless --combine")
    if split == "val":
        options = [(t, 0.0) for t in TEMPERATURES]
    elif split == "val_anchor":
        options = anchor_options()
    else:  # the earlier default, the temperature pick alone, and the validated option
        options = list(dict.fromkeys([(0.1, 0.0), pick(load_split("val")), chosen()]))
    torch.set_num_threads(1)
    for seed in args.seeds:
        run_seed(args.dataset, split, seed, tuple(options), argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
