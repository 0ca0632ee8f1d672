"""Compatibility that lasts: a v1 -> v2 -> v3 -> v4 chain, and classes v1 never saw.

Chain: each version is wider and trained on more of the training split (25, 50, 75, 100%).
Families, each scored by its full T x T retrieval matrix (CoReS' AC and AM):
  independent  every version trained alone (the new/new reference: the cost of a family is its
               C[k][k] minus the independent version's);
  last head    v_k trained with BCT through v_(k-1)'s head only;
  all heads    v_k trained with BCT through the heads of every earlier version (one
               BackwardCompatibleLoss over [v1.head, ..., v_(k-1).head], equal head_weights);
  all heads + L2  as all heads, plus an L2 pull of v_k's normalised embeddings onto
               v_(k-1)'s (EmbeddingRegressionLoss(normalize=True)) on v_k's training data;
  simplex      every version, v1 included, trained alone with the same fixed d-simplex head
               (regfree.compat.simplex_head; CoReS), no influence loss.
New classes (MPT's setting): v1 trained on the first half of the classes (v1's data part), v2
(the chain's v2 size and data) on all of them; options for v2: independent, BCT through
extend_head with class-mean rows, with fitted rows (rows="fit"), with MPT's margin on the new
classes' logits (NewClassMargin, +margin and -margin), new-class samples left out of the influence
loss (unseen="ignore"), class-mean rows plus the L2 pull onto v1's normalised embeddings, and
the simplex head (v1 trained with it on half the classes). Seen and
unseen queries are scored separately.

The cross-model contrastive families (CrossModelContrastiveLoss) and their new-class options
live in experiments/compat_chain_contrastive.py; the shared setting and models in
experiments/compat_chain_setup.py.

Retrieval protocol: queries = test split, gallery = the whole training split embedded by the
gallery's model, cosine similarity, top-1 and mAP (regfree.compat.compatibility_report).

Choosing the L2 weight (--split val): a stratified 20% of the training split (drawn with the
seed) becomes the queries, the rest is what every version trains on (its 25/50/75/100% parts)
and what each gallery indexes; the test split is not read. One process per seed sweeps the
L2 weights 1, 2, 4, 8 with equal head weights and with head weights favouring the oldest head
(v_k's heads v1 .. v_(k-1) weighted k-1, ..., 1), writing its seed file after every candidate.
--combine --split val picks one candidate per dataset by the rule in compat_chain_report.pick
(fixed before the sweep ran); its test numbers come from --split test with --l2-weight W
(and --head-weights oldest when the pick favours the oldest head).

One seed per process (it writes experiments/results/compat_chain_<dataset>.seed<k>.json), then
--combine writes experiments/results/compat_chain_<dataset>.md (and .json) from every seed file:
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain.py --dataset mnist1d --seeds 0
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain.py --dataset mnist1d --combine
--l2-weight W runs only the independent and all heads + L2 families with that L2 weight
(files compat_chain_<dataset>_l2w<W>.*; with --head-weights oldest, ..._l2w<W>_oldest.*).
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain.py --dataset mnist1d --split val --seeds 10
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain.py --dataset mnist1d --split val --combine
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from typing import Optional

import torch
from compat_chain_setup import (
    HEAD_WEIGHTINGS,
    SETTINGS,
    Seed,
    Setting,
    embedder,
    group_scores,
    load,
    seed_path,
    validation_split,
)

from common import command_line, cpu_name
from regfree.compat import NewClassMargin, extend_head
from regfree.reporting import write_text_atomic

SWEEP_L2_WEIGHTS = (1.0, 2.0, 4.0, 8.0)


def run_chain(run: Seed, pulled_only: bool = False, weighting: str = "equal"
              ) -> tuple[dict, dict]:
    """Every family's report, and the models the new-class study reuses (``pulled_only``: the
    independent reference and the all heads + L2 family alone, its heads weighted by
    ``weighting``)."""
    v1 = run.train(0)
    independent = [v1] + [run.train(k) for k in (1, 2, 3)]
    pulled = run.pulled(v1, run.setting.l2_weight, weighting)
    if pulled_only:
        families = {"independent": independent, "all heads + L2": pulled}
        return {name: run.report(models) for name, models in families.items()}, {}
    v2 = run.train(1, [run.bct(v1.head)])
    last, every = [v1, v2], [v1, v2]
    for k in (2, 3):
        last.append(run.train(k, [run.bct(last[-1].head)]))
        every.append(run.train(k, [run.bct([m.head for m in every])]))
    simplex = [run.train(k, head="simplex") for k in range(4)]
    families = {"independent": independent, "last head": last, "all heads": every,
                "all heads + L2": pulled, "simplex": simplex}
    return ({name: run.report(models) for name, models in families.items()},
            {"independent v2": independent[1], "simplex v2": simplex[1]})


def run_new_classes(run: Seed, reuse: dict) -> dict:
    s, x, y = run.setting, run.data.x_train, run.data.y_train
    seen = s.seen_classes
    v1_part = run.parts[0][y[run.parts[0]] < seen]
    v1 = run.train(0, classes=seen, part=v1_part)
    old_in_v2_data = embedder(v1)(x[run.parts[1]])
    labels = y[run.parts[1]]
    mean_rows = extend_head(v1.head, old_in_v2_data, labels, 10)
    fitted_rows = extend_head(v1.head, old_in_v2_data, labels, 10, rows="fit")
    options = {
        "independent": reuse["independent v2"],
        "BCT, class-mean rows": run.train(1, [run.bct(mean_rows)]),
        "BCT, fitted rows": run.train(1, [run.bct(fitted_rows)]),
        f"BCT, class-mean rows, margin +{s.margin:g}":
            run.train(1, [run.bct(NewClassMargin(mean_rows, seen, s.margin))]),
        f"BCT, class-mean rows, margin -{s.margin:g}":
            run.train(1, [run.bct(NewClassMargin(mean_rows, seen, -s.margin))]),
        "BCT, unseen left out": run.train(1, [run.bct(v1.head, unseen="ignore")]),
        "BCT, class-mean rows + L2": run.train(1, [run.bct(mean_rows), run.l2(v1, 1)]),
    }
    old = embedder(v1)
    rows = {name: group_scores(run, old, embedder(model), seen) for name, model in options.items()}
    v1_simplex = run.train(0, head="simplex", part=v1_part)
    rows["simplex (v1 and v2)"] = group_scores(run, embedder(v1_simplex),
                                               embedder(reuse["simplex v2"]), seen)
    return rows


def candidate_name(weight: float, weighting: str) -> str:
    heads = "all heads" if weighting == "equal" else "all heads, oldest weighted"
    return f"{heads} + L2 w{weight:g}"


def run_validation_seed(setting: Setting, seed: int, argv: list[str], name: str) -> dict:
    """The L2 weight sweep on a validation carve of the training split; the seed file is
    rewritten after every candidate, so a stopped run leaves what it finished."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    run = Seed(setting, validation_split(load(setting), seed), seed)
    result = {"dataset": setting.dataset, "seed": seed, "setting": asdict(setting),
              "split": "val", "command": command_line("compat_chain.py", argv),
              "cpu": cpu_name(), "chain": {}, "candidates": {}}
    v1 = run.train(0)
    independent = [v1] + [run.train(k) for k in (1, 2, 3)]
    result["chain"]["independent"] = run.report(independent)
    for weight in SWEEP_L2_WEIGHTS:
        v2 = None
        for weighting in HEAD_WEIGHTINGS:
            chain = run.pulled(v1, weight, weighting, v2)
            v2 = chain[1]
            family = candidate_name(weight, weighting)
            result["chain"][family] = run.report(chain)
            result["candidates"][family] = {"l2_weight": weight, "head_weights": weighting}
            result["seconds so far"] = time.perf_counter() - started
            write_text_atomic(seed_path(name, seed), json.dumps(result, indent=1))
            print(f"{setting.dataset} val seed {seed}: {family} done at "
                  f"{result['seconds so far']:.0f}s", flush=True)
    result["new classes"] = {}
    result["seconds"] = time.perf_counter() - started
    write_text_atomic(seed_path(name, seed), json.dumps(result, indent=1))
    return result


def run_seed(setting: Setting, seed: int, argv: list[str], name: str,
             pulled_only: bool = False, weighting: str = "equal") -> dict:
    torch.set_num_threads(1)
    started = time.perf_counter()
    run = Seed(setting, load(setting), seed)
    chain, reuse = run_chain(run, pulled_only, weighting)
    print(f"{setting.dataset} seed {seed}: chain done in {time.perf_counter() - started:.0f}s",
          flush=True)
    result = {"dataset": setting.dataset, "seed": seed, "setting": asdict(setting),
              "command": command_line("compat_chain.py", argv), "cpu": cpu_name(),
              "head_weights": weighting, "chain": chain}
    write_text_atomic(seed_path(name, seed), json.dumps(result, indent=1))
    result["new classes"] = {} if pulled_only else run_new_classes(run, reuse)
    result["seconds"] = time.perf_counter() - started
    write_text_atomic(seed_path(name, seed), json.dumps(result, indent=1))
    print(f"{setting.dataset} seed {seed}: {result['seconds']:.0f}s", flush=True)
    return result


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(SETTINGS), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, help="override the dataset's epochs")
    parser.add_argument("--l2-weight", type=float,
                        help="only the independent and all heads + L2 families, with this L2 "
                             "weight (results named compat_chain_<dataset>_l2w<weight>)")
    parser.add_argument("--head-weights", choices=HEAD_WEIGHTINGS, default="equal",
                        help="with --l2-weight: the earlier heads weighted equally, or k-1, ..., 1 "
                             "from the oldest (results named ..._l2w<weight>_oldest)")
    parser.add_argument("--split", choices=("val", "test"), default="test",
                        help="val: sweep the L2 weight with a validation carve of the training "
                             "split as queries (results named compat_chain_<dataset>_val); "
                             "test: the test split as queries")
    parser.add_argument("--combine", action="store_true",
                        help="write the dataset's table from every seed file")
    args = parser.parse_args(argv)
    if args.split == "val" and args.l2_weight is not None:
        parser.error("--split val sweeps every L2 weight itself; leave out --l2-weight")
    if args.head_weights != "equal" and args.l2_weight is None:
        parser.error("--head-weights oldest needs --l2-weight (it applies to the L2 family)")
    setting = SETTINGS[args.dataset]
    if args.epochs:
        setting = replace(setting, epochs=args.epochs)
    name = args.dataset
    if args.l2_weight is not None:
        setting = replace(setting, l2_weight=args.l2_weight)
        name = f"{args.dataset}_l2w{args.l2_weight:g}"
        name += "_oldest" if args.head_weights == "oldest" else ""
    if args.split == "val":
        name = f"{args.dataset}_val"
    if args.combine:
        from compat_chain_report import combine

        markdown = combine(name, command_line("compat_chain.py", argv))
        print(markdown)
        return 0
    for seed in args.seeds:
        if args.split == "val":
            run_validation_seed(setting, seed, argv, name)
        else:
            run_seed(setting, seed, argv, name, pulled_only=args.l2_weight is not None,
                     weighting=args.head_weights)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
