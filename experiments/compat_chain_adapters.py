"""The compat_chain study with post-hoc query adapters instead of compatible training.

Same chain, data, models and retrieval protocol as experiments/compat_chain.py. Every version is
trained alone (the independent family); v_k's queries search v_j's gallery (j < k) through
``fit_adapter(kind="mlp")`` fitted on v_k's training data embedded by both versions, and search
its own gallery natively (no new/new cost by construction). Families:
  independent + mlp adapters                       the adapters copy v_j's embeddings;
  independent + mlp adapters with labels (neighbours)  the adapters are trained, given the labels,
                                                   for same-class neighbours among v_j's embeddings.
Library defaults, nothing chosen on validation (added after the NCA new-class runs, where the
labelled adapter came out ahead; not tried on the chain before this run).
--nca-weight W: the versions are trained as the nca chain of compat_chain_contrastive.py (v_k
with CrossModelNCALoss onto every earlier version, weight W as that dataset's validation chose),
and labelled adapters map their queries into every earlier space on top (family
"nca + mlp adapters with labels", beside "nca" itself from the same models); files
compat_chain_<dataset>_adapters_nw<W>.*. Added after both alone missed AC = 1 on digits; the
adapters have no setting, so nothing new is chosen.
--adapter-temperature T: the labelled adapters at temperature T (files end in _t<T>; only the
labelled family runs): added after compat_new_class_adapter.py's validation chose the new-class
adapter's temperature, which the earlier runs (library default 0.1 then) did not set.
--adapter-anchor A (with --adapter-temperature): their anchor weight (default 0, no pull; files
end in _t<T>_a<A>): added after the same study chose an anchor weight of 1. A per-dataset
choice of both for the chain, on validation data: compat_chain_adapter_val.py.

One seed per process, then the table (compat_chain_<dataset>_adapters.md):
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain_adapters.py --dataset digits --seeds 0
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain_adapters.py --dataset digits --combine
  OMP_NUM_THREADS=1 .venv/bin/python experiments/compat_chain_adapters.py --dataset digits --nca-weight 2 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from typing import Optional

import torch
from compat_chain_setup import MAP_K, SETTINGS, Seed, load, seed_path
from torch import nn

from common import command_line, cpu_name
from regfree.compat import CompatibilityReport, embedder, fit_adapter
from regfree.reporting import write_text_atomic
from regfree.retrieval import retrieval_matrix

FAMILIES = {"independent + mlp adapters": False,
            "independent + mlp adapters with labels (neighbours)": True}


def adapted_report(run: Seed, models: list[nn.Module], with_labels: bool,
                   options: Optional[dict] = None) -> dict:
    """The chain's report with v_k's queries mapped into every earlier version's space
    (``options``: the labelled adapters' temperature and anchor_weight, None for the library
    defaults)."""
    d = run.data
    queries, galleries = {}, {}
    for k, model in enumerate(models):
        own = embedder(model)
        x, y = d.x_train[run.parts[k]], d.y_train[run.parts[k]]
        native, source = own(d.x_test), own(x)
        per_gallery = {f"v{k + 1}": native}
        for j, earlier in enumerate(models[:k]):
            adapter = fit_adapter(source, embedder(earlier)(x), kind="mlp",
                                  labels=y if with_labels else None, seed=run.seed,
                                  progress=False, **(options or {} if with_labels else {}))
            per_gallery[f"v{j + 1}"] = adapter.transform(native)
        queries[f"v{k + 1}"] = per_gallery
        galleries[f"v{k + 1}"] = own(d.x_train)
    matrix = retrieval_matrix(queries, d.y_test, galleries, d.y_train, ks=(1,), map_k=MAP_K)
    return CompatibilityReport(matrix).to_dict()


def run_seed(dataset: str, seed: int, argv: list[str], nca_weight: Optional[float] = None,
             temperature: Optional[float] = None, anchor: float = 0.0) -> dict:
    started = time.perf_counter()
    setting = SETTINGS[dataset]
    run = Seed(setting, load(setting), seed)
    models = [run.train(k) for k in range(4)]
    recorded = setting if nca_weight is None else replace(setting, contrastive_weight=nca_weight)
    result = {"dataset": dataset, "seed": seed, "setting": asdict(recorded), "split": "test",
              "command": command_line("compat_chain_adapters.py", argv), "cpu": cpu_name(),
              "head_weights": "equal", "chain": {"independent": run.report(models)},
              "new classes": {}, **({} if nca_weight is None else {"loss": "nca"}),
              "adapter temperature": temperature,
              **({} if temperature is None else {"adapter anchor weight": anchor})}
    options = None if temperature is None else {"temperature": temperature,
                                                "anchor_weight": anchor}
    tag = "" if temperature is None else f", T={temperature:g}" + (f" anchor={anchor:g}"
                                                                   if anchor else "")
    if nca_weight is None:
        families = {family.replace("(neighbours)", f"(neighbours{tag})"): (models, with_labels)
                    for family, with_labels in FAMILIES.items()
                    if with_labels or temperature is None}
    else:
        chain = [models[0]]
        for k in (1, 2, 3):
            chain.append(run.train(k, [run.nca(chain, k, nca_weight)]))
        result["chain"]["nca"] = run.report(chain)
        families = {f"nca + mlp adapters with labels (neighbours{tag})": (chain, True)}
    for family, (versions, with_labels) in families.items():
        result["chain"][family] = adapted_report(run, versions, with_labels, options)
        print(f"{dataset} seed {seed}: {family} at {time.perf_counter() - started:.0f}s",
              flush=True)
    result["seconds"] = time.perf_counter() - started
    write_text_atomic(seed_path(file_name(dataset, nca_weight, temperature, anchor), seed),
                      json.dumps(result, indent=1))
    return result


def file_name(dataset: str, nca_weight: Optional[float], temperature: Optional[float] = None,
              anchor: float = 0.0) -> str:
    return (f"{dataset}_adapters" + ("" if nca_weight is None else f"_nw{nca_weight:g}")
            + ("" if temperature is None else f"_t{temperature:g}")
            + (f"_a{anchor:g}" if anchor else ""))


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(SETTINGS), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--combine", action="store_true",
                        help="write the table from every seed file")
    parser.add_argument("--nca-weight", type=float, metavar="W",
                        help="train the versions as the nca chain at weight W, adapters on top")
    parser.add_argument("--adapter-temperature", type=float, metavar="T",
                        help="the labelled adapters' temperature (default: the library's); "
                             "only the labelled family runs, files end in _t<T>")
    parser.add_argument("--adapter-anchor", type=float, default=0.0, metavar="A",
                        help="with --adapter-temperature: the labelled adapters' anchor "
                             "weight (default 0); files end in _t<T>_a<A>")
    args = parser.parse_args(argv)
    if args.adapter_anchor and args.adapter_temperature is None:
        parser.error("--adapter-anchor needs --adapter-temperature")
    names = (args.dataset, args.nca_weight, args.adapter_temperature, args.adapter_anchor)
    if args.combine:
        from compat_chain_report import combine

        print(combine(file_name(*names),
                      command_line("compat_chain_adapters.py", argv)))
        return 0
    torch.set_num_threads(1)
    for seed in args.seeds:
        run_seed(args.dataset, seed, argv, args.nca_weight, args.adapter_temperature,
                 args.adapter_anchor)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
