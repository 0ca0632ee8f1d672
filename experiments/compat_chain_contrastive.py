"""The compat_chain study with a cross-model contrastive loss (CrossModelContrastiveLoss).

Same chain, data, models and retrieval protocol as experiments/compat_chain.py. Families:
  contrastive              v_k trained with CrossModelContrastiveLoss onto the embeddings that
                           every earlier version (v1 .. v_(k-1), equal version weights) gives
                           v_k's training data, temperature 0.1, no influence loss;
  all heads + contrastive  the same plus one BackwardCompatibleLoss over every earlier head
                           (equal head weights, weight 1: the all heads family's term).
New classes (v1 on classes 0-4, v2 on all ten): "contrastive onto v1" and "BCT, class-mean rows
+ contrastive onto v1" (extend_head's class-mean rows), beside the independent v2.

Choosing the weight (--split val, seeds 10 and 11): the validation carve of compat_chain.py
(queries = a stratified 20% of the training split), both families at weights 0.5, 1, 2, 4,
8 (4 and 8 added when digits' first sweep picked 2, the grid's edge); the
seed file is rewritten after every candidate. --combine --split val picks one candidate by
compat_chain_report.pick (rule written before the sweep ran). Test (--split test --weight W):
the independent reference, both families at weight W and the two new-class options; the
table also shows the families and new-class options already in compat_chain_<dataset>.seed*.json
(same seeds, same v1), which are not rerun.
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain_contrastive.py --dataset digits --split val --seeds 10
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain_contrastive.py --dataset digits --split val --combine
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain_contrastive.py --dataset digits --weight 1 --seeds 0
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain_contrastive.py --dataset digits --weight 1 --combine
Temperature: 0.1 first (weights 0.5 .. 8); --temperature 0.05 and 0.2 (weights 1, 2, 4) were
added after those picks missed AC = 1; --combine --split val (at 0.1) picks over every
temperature's file. Files: compat_chain_<dataset>_val_contrastive[_t<T>].* and
compat_chain_<dataset>_cw<W>[_t<T>].*.

--loss nca: the same families and options with CrossModelNCALoss (each query's neighbours among
every earlier version's embeddings of v_k's whole training data, itself left out, should share
its class), weights 1, 2, 4, 8 at temperature 0.1 (fixed before its sweeps ran), plus a third
new-class option: v2 as a ProjectedModel whose linear projection is trained by the term and
queries v1's gallery. The new-class options get their own weight: --split val --new-classes
sweeps it (rule in compat_chain_new_classes.py), --new-classes --weight W tests it; an NCA test
without --new-classes runs the chain alone. Files compat_chain_<dataset>_val_nca[_new].* and
compat_chain_<dataset>_nw<W>[_new].*.
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain_contrastive.py --dataset mnist1d --loss nca --split val --seeds 10
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain_contrastive.py --dataset mnist1d --loss nca --split val --new-classes --seeds 10
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain_contrastive.py --dataset mnist1d --loss nca --weight 4 --seeds 0
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain_contrastive.py --dataset mnist1d --loss nca --new-classes --weight 8 --seeds 0
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
    SETTINGS,
    Seed,
    Setting,
    group_scores,
    load,
    seed_path,
    validation_split,
)
from torch import nn

from common import command_line, cpu_name
from regfree.compat import embedder, extend_head, fit_adapter
from regfree.reporting import write_text_atomic

# 0.5, 1, 2 first; digits' first sweep picked the edge (2), so 4 and 8 were added, same rule
SWEEP_WEIGHTS = (0.5, 1.0, 2.0, 4.0, 8.0)
# added after the T = 0.1 sweeps, whose picks all missed AC = 1 by a point or two: the two
# neighbouring temperatures at the middle weights; the pick runs over every temperature's file
SWEEP_TEMPERATURES = {0.1: SWEEP_WEIGHTS, 0.05: (1.0, 2.0, 4.0), 0.2: (1.0, 2.0, 4.0)}
FAMILIES = ("contrastive", "all heads + contrastive")
# --loss nca (CrossModelNCALoss, added after every contrastive pick missed): one temperature,
# the grid fixed before its sweep ran
NCA_WEIGHTS = (1.0, 2.0, 4.0, 8.0)


def families(loss: str) -> tuple[str, str]:
    return (loss, f"all heads + {loss}")


def temperature_tag(temperature: float, prefix: str) -> str:
    """The suffix that names a run at a temperature other than the first sweep's 0.1."""
    return "" if temperature == 0.1 else f"{prefix}{temperature:g}"


def contrastive_chain(run: Seed, v1: nn.Module, weight: float, with_heads: bool,
                      loss: str = "contrastive") -> list[nn.Module]:
    """v1 then v2 .. v4, each trained with the contrastive (or NCA) term onto every earlier
    version (``with_heads``: plus BCT through every earlier head)."""
    chain = [v1]
    term = run.nca if loss == "nca" else run.contrastive
    for k in (1, 2, 3):
        terms = [term(chain, k, weight)]
        if with_heads:
            terms.append(run.bct([m.head for m in chain]))
        chain.append(run.train(k, terms))
    return chain


def new_class_v1(run: Seed) -> nn.Module:
    """v1 of the new-class setting: the chain's v1 size and data part, seen classes only."""
    s, y = run.setting, run.data.y_train
    part = run.parts[0][y[run.parts[0]] < s.seen_classes]
    return run.train(0, classes=s.seen_classes, part=part)


def new_class_options(run: Seed, weight: float, loss: str = "contrastive",
                      v1: Optional[nn.Module] = None, suffix: str = "") -> dict:
    """Seen/unseen scores of the two contrastive (or NCA) options onto the new-class ``v1``
    (trained here when None), their names ending in ``suffix``."""
    s, x, y = run.setting, run.data.x_train, run.data.y_train
    v1 = new_class_v1(run) if v1 is None else v1
    mean_rows = extend_head(v1.head, embedder(v1)(x[run.parts[1]]), y[run.parts[1]], 10)
    term = run.nca if loss == "nca" else run.contrastive
    options = {
        f"{loss} onto v1{suffix}": run.train(1, [term([v1], 1, weight)]),
        f"BCT, class-mean rows + {loss} onto v1{suffix}":
            run.train(1, [run.bct(mean_rows), term([v1], 1, weight)]),
    }
    if loss == "nca":  # added after a digits validation try (seed 10) of the NCA options
        options[f"nca onto v1 through a projection{suffix}"] = run.train(
            1, [term([v1], 1, weight)], projected=True)
    return {name: group_scores(run, embedder(v1), embedder(model), s.seen_classes,
                               embedder(model, space="compatible"))
            for name, model in options.items()}


def adapter_options(run: Seed, v1: nn.Module, v2: nn.Module) -> dict:
    """Seen/unseen scores of ``v2`` (trained alone) querying ``v1``'s gallery through a post-hoc
    ``fit_adapter(kind="mlp")`` fitted on v2's training data embedded by both models: trained to
    copy v1's embeddings, or (given the labels) for same-class neighbours among them."""
    x, y = run.data.x_train[run.parts[1]], run.data.y_train[run.parts[1]]
    old, new = embedder(v1), embedder(v2)
    options = {}
    for name, labels in (("independent v2 + mlp adapter", None),
                         ("independent v2 + mlp adapter with labels (neighbours)", y)):
        adapter = fit_adapter(new(x), old(x), kind="mlp", labels=labels, seed=run.seed,
                              progress=False)
        options[name] = group_scores(run, old, new, run.setting.seen_classes,
                                     lambda queries, a=adapter: a.transform(new(queries)))
    return options


def run_new_class_validation_seed(setting: Setting, seed: int, argv: list[str], name: str,
                                  loss: str) -> dict:
    """The new-class options at every sweep weight on the validation carve (their own weight,
    picked by compat_chain_new_classes.pick); rewritten after every weight."""
    started = time.perf_counter()
    run = Seed(setting, validation_split(load(setting), seed), seed)
    result = header(setting, seed, "val", argv) | {"loss": loss, "candidates": {}}
    v1 = new_class_v1(run)
    result["new classes"] = {"independent": group_scores(run, embedder(v1),
                                                         embedder(run.train(1)),
                                                         setting.seen_classes)}
    for weight in NCA_WEIGHTS if loss == "nca" else SWEEP_WEIGHTS:
        options = new_class_options(run, weight, loss, v1, f" w{weight:g}")
        result["new classes"].update(options)
        result["candidates"].update({option: {"weight": weight, "rank": rank}
                                     for rank, option in enumerate(options)})
        result["seconds"] = time.perf_counter() - started
        write_text_atomic(seed_path(name, seed), json.dumps(result, indent=1))
        print(f"{setting.dataset} new classes val seed {seed}: w{weight:g} at "
              f"{result['seconds']:.0f}s", flush=True)
    return result


def header(setting: Setting, seed: int, split: str, argv: list[str]) -> dict:
    return {"dataset": setting.dataset, "seed": seed, "setting": asdict(setting), "split": split,
            "command": command_line("compat_chain_contrastive.py", argv), "cpu": cpu_name(),
            "head_weights": "equal", "chain": {}}


def run_validation_seed(setting: Setting, seed: int, argv: list[str], name: str,
                        loss: str = "contrastive") -> dict:
    """Both families at every sweep weight on the validation carve; the seed file is rewritten
    after every candidate, so a stopped run leaves what it finished."""
    started = time.perf_counter()
    run = Seed(setting, validation_split(load(setting), seed), seed)
    result = header(setting, seed, "val", argv) | {"candidates": {}}
    v1 = run.train(0)
    result["chain"]["independent"] = run.report([v1] + [run.train(k) for k in (1, 2, 3)])
    weights = NCA_WEIGHTS if loss == "nca" else SWEEP_TEMPERATURES[setting.temperature]
    for weight in weights:
        for rank, family in enumerate(families(loss)):
            candidate = f"{family} w{weight:g}" + temperature_tag(setting.temperature, " T")
            result["chain"][candidate] = run.report(
                contrastive_chain(run, v1, weight, rank == 1, loss))
            result["candidates"][candidate] = {"weight": weight, "rank": rank, "family": family,
                                               "temperature": setting.temperature}
            result["seconds so far"] = time.perf_counter() - started
            write_text_atomic(seed_path(name, seed), json.dumps(result, indent=1))
            print(f"{setting.dataset} val seed {seed}: {candidate} at "
                  f"{result['seconds so far']:.0f}s", flush=True)
    result["new classes"] = {}
    result["seconds"] = time.perf_counter() - started
    write_text_atomic(seed_path(name, seed), json.dumps(result, indent=1))
    return result


def run_test_seed(setting: Setting, seed: int, argv: list[str], name: str,
                  loss: str = "contrastive", part: str = "both") -> dict:
    """The test split as queries: the chain families and the new-class options at the
    setting's weight (``part`` "both"), or only the chain or only the new classes (the NCA
    runs, where each has its own validated weight)."""
    started = time.perf_counter()
    run = Seed(setting, load(setting), seed)
    weight = setting.contrastive_weight
    result = header(setting, seed, "test", argv) | {"loss": loss}
    if part != "new classes":
        v1 = run.train(0)
        independent = [v1] + [run.train(k) for k in (1, 2, 3)]
        result["chain"]["independent"] = run.report(independent)
        for rank, family in enumerate(families(loss)):
            result["chain"][family] = run.report(
                contrastive_chain(run, v1, weight, rank == 1, loss))
            write_text_atomic(seed_path(name, seed), json.dumps(result, indent=1))
            print(f"{setting.dataset} seed {seed}: {family} at "
                  f"{time.perf_counter() - started:.0f}s", flush=True)
    result["new classes"] = {}
    if part != "chain":
        v1_seen = new_class_v1(run)
        independent_v2 = independent[1] if part == "both" else run.train(1)
        result["new classes"] = {"independent": group_scores(
            run, embedder(v1_seen), embedder(independent_v2), setting.seen_classes)}
        result["new classes"].update(new_class_options(run, weight, loss, v1_seen))
        if loss == "nca":  # added after the NCA sweeps: no weight to choose, library defaults
            result["new classes"].update(adapter_options(run, v1_seen, independent_v2))
    result["seconds"] = time.perf_counter() - started
    write_text_atomic(seed_path(name, seed), json.dumps(result, indent=1))
    print(f"{setting.dataset} seed {seed}: {result['seconds']:.0f}s", flush=True)
    return result


def combine_new_classes(name: str, combine_command: str) -> str:
    """The new-class table of ``name``'s seed files: the validation sweep with its pick, or
    the test run of the picked weight."""
    from compat_chain_new_classes import markdown
    from compat_chain_report import RESULTS, load_seeds

    seeds = load_seeds(name)
    text = markdown(seeds, sorted({s["command"] for s in seeds}) + [combine_command])
    write_text_atomic(RESULTS / f"compat_chain_{name}.md", text)
    return text


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(SETTINGS), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--split", choices=("val", "test"), default="test",
                        help="val: sweep the weight on a validation carve of the training split "
                             "(compat_chain_<dataset>_val_contrastive); test: the test split as "
                             "queries, with --weight")
    parser.add_argument("--weight", type=float,
                        help="with --split test: the contrastive weight (the validation pick); "
                             "results named compat_chain_<dataset>_cw<weight>")
    parser.add_argument("--temperature", type=float, default=0.1,
                        choices=sorted(SWEEP_TEMPERATURES),
                        help="CrossModelContrastiveLoss' temperature (files get _t<T> unless 0.1)")
    parser.add_argument("--loss", choices=("contrastive", "nca"), default="contrastive",
                        help="nca: CrossModelNCALoss in place of the contrastive term (weights "
                             f"{NCA_WEIGHTS} at temperature 0.1; files _val_nca, _nw<W>)")
    parser.add_argument("--new-classes", action="store_true",
                        help="the new-class options alone: with --split val, sweep their "
                             "weight (files compat_chain_<dataset>_val_<loss>_new); with "
                             "--weight W, test them at W (..._<cw|nw><W>_new)")
    parser.add_argument("--combine", action="store_true",
                        help="write the table from every seed file")
    args = parser.parse_args(argv)
    if (args.split == "val") == (args.weight is not None):
        parser.error("--split val sweeps the weights itself (leave out --weight); "
                     "--split test needs --weight W (the validation pick)")
    setting = replace(SETTINGS[args.dataset], temperature=args.temperature)
    if args.loss == "nca" and args.temperature != 0.1:
        parser.error("--loss nca runs at temperature 0.1 only")
    if args.split == "val":
        name = f"{args.dataset}_val_{args.loss}"
    else:
        setting = replace(setting, contrastive_weight=args.weight)
        name = f"{args.dataset}_{'nw' if args.loss == 'nca' else 'cw'}{args.weight:g}"
    name += "_new" if args.new_classes else ""
    name += temperature_tag(args.temperature, "_t")
    if args.combine and args.new_classes:
        print(combine_new_classes(name, command_line("compat_chain_contrastive.py", argv)))
        return 0
    if args.combine:
        from compat_chain_report import combine

        print(combine(name, command_line("compat_chain_contrastive.py", argv)))
        return 0
    torch.set_num_threads(1)
    for seed in args.seeds:
        if args.split == "val" and args.new_classes:
            run_new_class_validation_seed(setting, seed, argv, name, args.loss)
        elif args.split == "val":
            run_validation_seed(setting, seed, argv, name, args.loss)
        else:
            part = ("new classes" if args.new_classes else
                    "chain" if args.loss == "nca" else "both")
            run_test_seed(setting, seed, argv, name, args.loss, part)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
