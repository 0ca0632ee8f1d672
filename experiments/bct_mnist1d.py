"""Backward-compatible training (BCT) on MNIST-1D: can v2 queries search v1's gallery?

Retrieval protocol: queries are the test split, the gallery is the training split (every
training sample, embedded by the gallery's model), similarity is cosine (L2-normalised inner
product), top-1 = the label of the nearest gallery item is the query's label, mAP averages the
precision at every same-label item over the full ranking of the gallery. "new/old" means v2
queries against the gallery v1 embedded.

Studies (each over several seeds; a seed retrains v1 as well):
  main     v1 = small ConvNet1D on part of the training set, v2 = wide ConvNet1D on all of it;
           rows: independent v2, L2 regression to v1's embeddings, BCT, BCT with a learned
           projection (v2's embedding larger than v1's).
  open-set v1 trained on classes 0-7 only; v2 on all ten, BCT through extend_head(...) or with
           the unseen classes left out of the influence loss; seen (0-7) and unseen (8-9)
           queries reported separately.
  chain    v1 -> v2 (BCT to v1) -> v3 (wider, BCT to v2 only): the full matrix and AC.
  edge     the large independent v2 embeds the gallery (cloud); a small model (edge) is
           trained compatible with it (BCT), or trained independently and its queries mapped
           into the cloud space by an adapter (regfree.compat.fit_adapter, default kind) fit
           on a paired sample of the gallery (both models embed ``adapter_pairs`` of its items).
Every model is trained by regfree.training.fit (Adam, cosine learning-rate decay); models are
shared between studies within a seed (e.g. the independent v2 is also the cloud model).

Run:  OMP_NUM_THREADS=1 .venv/bin/python experiments/bct_mnist1d.py          (full, minutes)
      OMP_NUM_THREADS=1 .venv/bin/python experiments/bct_mnist1d.py --quick  (smoke run)
      ... --studies edge --out experiments/results/bct_mnist1d_edge_adapter.md  (one study)
Writes experiments/results/bct_mnist1d.md (or the path given by --out) and a .json next to it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from common import command_line, mean_std
from regfree.compat import (
    BackwardCompatibleLoss,
    EmbeddingRegressionLoss,
    ProjectedModel,
    compatibility_report,
    embedder,
    extend_head,
    fit_adapter,
)
from regfree.data import load_mnist1d
from regfree.models import ConvNet1D, cosine_convnet1d
from regfree.reporting import write_text_atomic
from regfree.training import fit_adam_cosine


@dataclass(frozen=True)
class Config:
    num_samples: int = 12000
    data_seed: int = 42
    v1_train: int = 4000
    v1_width: int = 16
    v2_width: int = 64
    dim: int = 32
    projected_dim: int = 64
    v3_width: int = 96
    edge_width: int = 8
    adapter_pairs: float = 0.1  # share of the gallery both edge and cloud embed (edge study)
    head: str = "cosine"  # "cosine" or "linear" heads for every model
    cosine_scale: float = 16.0
    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 128
    bct_weight: float = 1.0
    l2_weight: float = 1.0
    seeds: tuple[int, ...] = (0, 1, 2)
    studies: tuple[str, ...] = ("main", "open-set", "chain", "edge")


QUICK = Config(num_samples=3000, v1_train=1000, epochs=3, seeds=(0, 1))


@dataclass
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# ---------------------------------------------------------------- models and training


def make_model(config: Config, width: int, dim: int, num_classes: int, seed: int) -> ConvNet1D:
    if config.head == "cosine":
        return cosine_convnet1d(width, dim, num_classes=num_classes, scale=config.cosine_scale,
                                seed=seed, return_embeddings=True)
    torch.manual_seed(seed)
    return ConvNet1D(num_classes=num_classes, width=width, embedding_dim=dim,
                     return_embeddings=True)


def train(config: Config, model: nn.Module, x: np.ndarray, y: np.ndarray, seed: int,
          terms=()) -> nn.Module:
    fit_adam_cosine(model, (x, y), loss_terms=list(terms), epochs=config.epochs, lr=config.lr,
                    batch_size=config.batch_size, seed=seed, progress=False)
    return model


def served(model: nn.Module, projection: Optional[nn.Module] = None) -> dict[str, Callable]:
    """How a new model embeds: its own gallery natively, the old gallery (projected)."""
    if projection is None:
        return {"own": embedder(model), "old": embedder(model)}
    wrapped = ProjectedModel(model, projection)
    return {"own": embedder(wrapped), "old": embedder(wrapped, space="compatible")}


def versus_old(data: Data, old: Callable, news: dict[str, dict[str, Callable]],
               queries: Optional[np.ndarray] = None) -> dict[str, dict[str, float]]:
    """old/old, new/old, new/new and update gain of every new model against one old model,
    from one compatibility report (each new model searches only its own and the old gallery)."""
    pick = slice(None) if queries is None else queries
    specs: dict = {"old": old}
    specs.update({name: {name: new["own"], "old": new["old"]} for name, new in news.items()})
    report = compatibility_report(data.x_test[pick], data.x_train, specs, data.y_test[pick],
                                  data.y_train)
    rows = {}
    for name in news:
        rows[name] = {}
        for metric in ("top1", "mAP"):
            rows[name][f"old/old {metric}"] = report.value("old", "old", metric)
            rows[name][f"new/old {metric}"] = report.value(name, "old", metric)
            rows[name][f"new/new {metric}"] = report.value(name, name, metric)
            rows[name][f"gain {metric}"] = report.update_gain(name, "old", metric)
    return rows


# ---------------------------------------------------------------- one seed, every study


def run_seed(config: Config, data: Data, seed: int) -> dict[str, object]:
    """Train every model of one seed once (models shared between studies) and score them."""
    fresh = {"v2": seed + 1000, "v3": seed + 2000, "edge": seed + 3000}
    part = np.random.default_rng(seed).permutation(len(data.y_train))[:config.v1_train]
    x, y = data.x_train, data.y_train
    v1 = train(config, make_model(config, config.v1_width, config.dim, 10, seed),
               x[part], y[part], seed)
    old = embedder(v1)

    def v2_with(terms: list, dim: int = config.dim) -> nn.Module:
        model = make_model(config, config.v2_width, dim, 10, fresh["v2"])
        return train(config, model, x, y, fresh["v2"], terms)

    independent = v2_with([])
    out: dict[str, object] = {}
    bct_v2 = None
    if "main" in config.studies or "chain" in config.studies:
        bct_v2 = v2_with([BackwardCompatibleLoss(v1.head, weight=config.bct_weight)])
    if "main" in config.studies:
        l2 = v2_with([EmbeddingRegressionLoss(old(x), weight=config.l2_weight)])
        projecting = BackwardCompatibleLoss(
            v1.head, weight=config.bct_weight,
            projection=nn.Linear(config.projected_dim, config.dim))
        projected = v2_with([projecting], dim=config.projected_dim)
        out["main"] = versus_old(data, old, {
            "independent": served(independent), "L2": served(l2), "BCT": served(bct_v2),
            f"BCT + projection ({config.projected_dim}->{config.dim})":
                served(projected, projecting.projection)})
    if "open-set" in config.studies:
        seen_part = part[y[part] < 8]
        v1_open = train(config, make_model(config, config.v1_width, config.dim, 8, seed),
                        x[seen_part], y[seen_part], seed)
        extended = extend_head(v1_open.head, embedder(v1_open)(x), y, num_classes=10)
        news = {
            "independent": served(independent),
            "BCT, extend_head": served(v2_with([
                BackwardCompatibleLoss(extended, weight=config.bct_weight)])),
            "BCT, unseen classes left out": served(v2_with([
                BackwardCompatibleLoss(v1_open.head, weight=config.bct_weight,
                                       unseen="ignore")])),
        }
        rows = {}
        for group, queries in (("seen 0-7", np.flatnonzero(data.y_test < 8)),
                               ("unseen 8-9", np.flatnonzero(data.y_test >= 8))):
            for name, numbers in versus_old(data, embedder(v1_open), news, queries).items():
                rows[f"{name} | {group}"] = numbers
        out["open-set"] = dict(sorted(rows.items(), key=lambda item: list(news).index(
            item[0].split(" | ")[0])))
    if "chain" in config.studies:
        v3 = train(config, make_model(config, config.v3_width, config.dim, 10, fresh["v3"]),
                   x, y, fresh["v3"], [BackwardCompatibleLoss(bct_v2.head,
                                                              weight=config.bct_weight)])
        report = compatibility_report(data.x_test, x, {"v1": old, "v2": embedder(bct_v2),
                                                       "v3": embedder(v3)}, data.y_test, y)
        out["chain"] = {"report": report.to_dict(), "markdown": report.to_markdown()}
    if "edge" in config.studies:
        def small_with(terms: list) -> nn.Module:
            model = make_model(config, config.edge_width, config.dim, 10, fresh["edge"])
            return train(config, model, x, y, fresh["edge"], terms)

        cloud, small = embedder(independent), small_with([])
        edge = embedder(small)
        paired = np.random.default_rng(seed).permutation(len(y))[
            :max(2, round(config.adapter_pairs * len(y)))]
        # query side: edge queries mapped into the cloud space; the cloud gallery stays as is
        adapter = fit_adapter(edge(x[paired]), cloud(x[paired]), seed=seed, progress=False)
        out["edge"] = versus_old(data, cloud, {
            "independent": served(small),
            "BCT": served(small_with([BackwardCompatibleLoss(independent.head,
                                                              weight=config.bct_weight)])),
            f"independent + adapter ({config.adapter_pairs:.0%} paired)": {
                "own": edge, "old": lambda inputs: adapter.transform(edge(inputs))}})
    return out


# ---------------------------------------------------------------- tables


def pair_table(per_seed: list[dict[str, dict[str, float]]], label: str) -> list[str]:
    rows = list(per_seed[0])
    header = [label, "old/old top-1", "new/old top-1", "new/new top-1", "gain top-1",
              "old/old mAP", "new/old mAP", "new/new mAP", "gain mAP", "new/old > old/old"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in rows:
        values = [seed_rows[row] for seed_rows in per_seed]

        def col(key: str, scale: float = 100.0, digits: int = 1, values=values) -> str:
            return mean_std([v[key] for v in values], scale, digits)

        met = sum(v["new/old top1"] > v["old/old top1"] for v in values)
        lines.append("| " + " | ".join([
            row, col("old/old top1"), col("new/old top1"), col("new/new top1"),
            col("gain top1", 1.0, 2), col("old/old mAP"), col("new/old mAP"), col("new/new mAP"),
            col("gain mAP", 1.0, 2), f"{met}/{len(values)} seeds"]) + " |")
    return lines


def bars(main: list[dict[str, dict[str, float]]]) -> list[str]:
    def mean(row: str, key: str) -> float:
        return 100 * float(np.mean([seed_rows[row][key] for seed_rows in main]))

    gain = mean("BCT", "new/old top1") - mean("BCT", "old/old top1")
    gap = mean("BCT", "new/new top1") - mean("independent", "new/new top1")
    indep = mean("independent", "new/old top1")
    diffs = [100 * (r["BCT"]["new/new top1"] - r["independent"]["new/new top1"]) for r in main]
    spread = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else float("nan")
    return [
        f"- BCT new/old − old/old = {gain:+.1f} points (bar: ≥ +3): "
        f"{'met' if gain >= 3 else 'NOT met'}.",
        f"- BCT new/new − independent new/new = {gap:+.1f} points, per-seed std {spread:.1f} "
        f"(bar: within 1 point): {'met' if abs(gap) <= 1 or gap > 0 else 'NOT met'}.",
        f"- Independent v2 against v1's gallery (new/old) = {indep:.1f}% top-1, chance = 10%: "
        f"{'near chance, i.e. incompatible without BCT' if indep < 25 else 'above chance'}.",
    ]


def render(config: Config, results: dict, train_size: int, command: str,
           seconds: float) -> str:
    lines = ["# Backward-compatible training on MNIST-1D", "",
             f"Command: `{command}` ({seconds / 60:.1f} min on this machine, OMP_NUM_THREADS=1).",
             "", "Retrieval protocol: queries = test split, gallery = training split (all of it, "
             "embedded by the gallery's model), cosine similarity, top-1 = the nearest gallery "
             "item has the query's label, mAP over the full gallery ranking. old/old = v1 "
             "queries on v1's gallery, new/old = v2 queries on v1's gallery (no backfill), "
             "new/new = v2 on a re-embedded gallery. Update gain = (new/old − old/old) / "
             "(new/new − old/old). Values in %, mean ± std over seeds "
             f"{list(config.seeds)}; chance top-1 ≈ 10%.", "",
             f"Config: `{json.dumps(asdict(config))}`", ""]
    if "main" in results:
        lines += [f"## Main: v1 = ConvNet1D width {config.v1_width} on {config.v1_train} "
                  f"samples, v2 = width {config.v2_width} on all "
                  f"{train_size} training samples", ""]
        lines += pair_table(results["main"], "v2 training") + [""]
        lines += ["Bars:", ""] + bars(results["main"]) + [""]
    if "open-set" in results:
        lines += ["## Open set: v1 saw classes 0-7 only (8-way head); v2 trained on all ten", "",
                  "extend_head adds rows for classes 8 and 9 from v1's class-mean embeddings; "
                  "'left out' skips the influence loss on those samples. Seen and unseen "
                  "queries are scored separately (the gallery is the whole training split).",
                  ""]
        lines += pair_table(results["open-set"], "v2 training | queries") + [""]
    if "chain" in results:
        chain = results["chain"]
        lines += ["## Chain v1 -> v2 -> v3 (each BCT-trained to its predecessor only)", "",
                  f"v1 and v2 are the main study's v1 and BCT v2; v3 = width {config.v3_width} "
                  "on all training samples, BCT to v2's head (it never sees v1). "
                  f"Seed {config.seeds[0]} in full:", "", chain[0]["markdown"]]
        acs = [c["report"]["AC"]["top1"] for c in chain]
        ams = [c["report"]["AM"]["top1"] for c in chain]
        matrices = np.array([c["report"]["matrices"]["top1"] for c in chain], dtype=float)
        lines += ["Over all seeds (top-1, %):", "",
                  "| query \\ gallery | v1 | v2 | v3 |", "|---|---|---|---|"]
        for i in range(3):
            cells = [mean_std(list(matrices[:, i, j]), digits=1) if j <= i else "" for j in range(3)]
            lines.append(f"| v{i + 1} | " + " | ".join(cells) + " |")
        lines += ["", f"AC(top-1) = {mean_std(acs, 1.0, 2)}, AM(top-1) = {mean_std(ams, digits=1)}%", ""]
    if "edge" in results:
        lines += [f"## Edge/cloud: a large v1 (width {config.v2_width}) embeds the gallery, a "
                  f"small v2 (width {config.edge_width}) queries it", "",
                  "Here 'old' is the large cloud model and 'new' the small edge model, so "
                  "new/old below old/old is expected; the question is how close small/large "
                  "gets to large/large, and whether it beats small/small. The adapter row "
                  "is the independent small model (no retraining) whose queries go through an "
                  f"adapter (fit_adapter, default kind) fit on {config.adapter_pairs:.0%} of the "
                  "gallery embedded by both models; its new/new is the independent model's.", ""]
        lines += pair_table(results["edge"], "small v2 training") + [""]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2)")
    parser.add_argument("--studies", nargs="+", choices=list(Config.studies), help="which studies")
    parser.add_argument("--head", choices=["cosine", "linear"])
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--bct-weight", type=float)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results"
                        / "bct_mnist1d.md")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    overrides = {"seeds": tuple(args.seeds) if args.seeds else None,
                 "studies": tuple(args.studies) if args.studies else None,
                 "head": args.head, "epochs": args.epochs, "bct_weight": args.bct_weight}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    torch.set_num_threads(1)

    split = load_mnist1d(num_samples=config.num_samples, seed=config.data_seed)
    data = Data(split.x_train, split.y_train, split.x_test, split.y_test)
    started = time.perf_counter()
    results: dict = {study: [] for study in config.studies}
    for seed in config.seeds:
        t0 = time.perf_counter()
        for study, value in run_seed(config, data, seed).items():
            results[study].append(value)
        print(f"seed {seed}: {time.perf_counter() - t0:.0f}s", flush=True)
    markdown = render(config, results, len(data.y_train), command_line("bct_mnist1d.py", argv),
                      time.perf_counter() - started)
    write_text_atomic(args.out, markdown)
    write_text_atomic(args.out.with_suffix(".json"),
                     json.dumps({"config": asdict(config), "results": results}, indent=1,
                                default=float))
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
