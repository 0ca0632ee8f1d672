"""Post-hoc compatibility: how much of a full backfill does a learned adapter recover?

v1 and v2 are trained independently (different widths and embedding sizes), as a team that
upgrades to a v2 it did not train with regfree would have them. The gallery is the training
split, queries the test split, similarity cosine; top-1 and mAP over the full ranking.

A paired sample (a share of the gallery's items, the ones re-embedded first) gives:
  transformed  v1 -> v2 adapter: the paired items stored as v2 embeds them, every other item's
               stored v1 embedding mapped into v2's space; v2 queries search it natively.
  adapted q    v2 -> v1 adapter: v2 queries mapped into v1's space search v1's gallery as is.
               Kind "slerp t=..": the orthogonal map with a SLERP blend toward v1's own
               embedding of the query (v1 runs on every query); query side only.
  backfill     no adapter: v2 queries search only the paired (re-embedded) items: the partial
               backfill of as many items (v1's other items are 32-d, v2's 64-d: a gallery
               cannot mix them without an adapter).
Anchor that needs retraining: BCT, a v2 of the same architecture and seed trained through v1's
frozen head with a learned 64 -> 32 projection (regfree.compat.BackwardCompatibleLoss); its
projected queries search v1's gallery (gain share against the independent v2's new/new).
Share of the full-backfill gain = (M - old/old) / (new/new - old/old); the compatibility
criterion asks M(adapted, old) > M(old, old).

Run:  OMP_NUM_THREADS=1 .venv/bin/python experiments/posthoc_adapters.py          (full)
      OMP_NUM_THREADS=1 .venv/bin/python experiments/posthoc_adapters.py --quick  (smoke run)
Writes experiments/results/posthoc_adapters.md (or --out) and a .json next to it, after every
seed, so a stopped run keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from posthoc_tables import anchor_tables, choice_table, criterion_totals, raw_line, table

from regfree.compat import ADAPTER_KINDS, BackwardCompatibleLoss, fit_adapter
from regfree.data import DataSplit, load_digits_split, load_mnist1d, load_mnist5k
from regfree.metrics import retrieval_scores
from regfree.models import MLP, ConvNet1D, ConvNet2D
from regfree.reporting import write_text_atomic
from regfree.training import fit_adam_cosine


@dataclass(frozen=True)
class Config:
    datasets: tuple[str, ...] = ("mnist1d", "digits", "mnist5k")
    mnist1d_samples: int = 12000
    v1_train_share: float = 0.33  # v1 sees a third of the training split
    v1_width: int = 16
    v1_dim: int = 32
    v2_width: int = 64
    v2_dim: int = 64
    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 128
    pair_shares: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
    kinds: tuple[str, ...] = ADAPTER_KINDS
    slerp_blends: tuple[float, ...] = (0.25, 0.5, 0.75)  # query side: orthogonal + SLERP
    bct_weight: float = 1.0  # BCT anchor: the influence loss's weight (as bct_mnist1d)
    mlp_epochs: int = 200  # fit_adapter's default for every paired sample measured here
    seeds: tuple[int, ...] = (0, 1, 2)


QUICK = Config(mnist1d_samples=3000, epochs=3, mlp_epochs=20, seeds=(0,),
               pair_shares=(0.1,))


def load(name: str, config: Config) -> DataSplit:
    if name == "mnist1d":
        return load_mnist1d(num_samples=config.mnist1d_samples)
    if name == "digits":
        return load_digits_split(seed=0)
    if name == "mnist5k":
        return load_mnist5k(seed=0)
    raise ValueError(f"unknown dataset {name!r}")


def make_model(name: str, width: int, dim: int, seed: int,
               return_embeddings: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)
    if name == "mnist1d":
        return ConvNet1D(num_classes=10, width=width, embedding_dim=dim,
                         return_embeddings=return_embeddings)
    if name == "mnist5k":
        return ConvNet2D(num_classes=10, width=width // 2, embedding_dim=dim,
                         return_embeddings=return_embeddings)
    return MLP(64, num_classes=10, hidden=4 * width, embedding_dim=dim,
               return_embeddings=return_embeddings)


def train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, config: Config,
          seed: int, terms: tuple = ()) -> torch.nn.Module:
    fit_adam_cosine(model, (x, y), loss_terms=list(terms), epochs=config.epochs, lr=config.lr,
                    batch_size=config.batch_size, seed=seed, progress=False)
    return model.eval()


def train_bct(name: str, v1: torch.nn.Module, data: DataSplit, config: Config,
              seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """v2 as the independent one (same architecture, seed and data) plus BCT through v1's
    frozen head and a learned projection into v1's space: (v2, projection)."""
    torch.manual_seed(seed)
    projection = torch.nn.Linear(config.v2_dim, config.v1_dim)
    term = BackwardCompatibleLoss(v1.head, weight=config.bct_weight, projection=projection)
    model = make_model(name, config.v2_width, config.v2_dim, seed, return_embeddings=True)
    train(model, data.x_train, data.y_train, config, seed, (term,))
    return model, term.projection.eval()


@torch.no_grad()
def embed_all(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    out = model.forward_features(torch.from_numpy(x)).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def search(queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray,
           gallery_labels: np.ndarray) -> dict[str, float]:
    """Top-1 and mAP of cosine search over the whole gallery, in query blocks."""
    hits, ap, block = 0.0, 0.0, 512
    for start in range(0, len(queries), block):
        sims = queries[start:start + block] @ gallery.T
        ranked = gallery_labels[np.argsort(-sims, axis=1, kind="stable")]
        labels = query_labels[start:start + block]
        scores = retrieval_scores(labels, ranked, ks=(1,),
                                  num_relevant=(gallery_labels == labels[:, None]).sum(1))
        hits += scores["top1"] * len(labels)
        ap += scores["mAP"] * len(labels)
    return {"top1": hits / len(queries), "mAP": ap / len(queries)}


def run_seed(name: str, data: DataSplit, config: Config, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    n = len(data.y_train)
    v1_items = rng.permutation(n)[:int(config.v1_train_share * n)]
    v1 = train(make_model(name, config.v1_width, config.v1_dim, seed),
               data.x_train[v1_items], data.y_train[v1_items], config, seed)
    v2 = train(make_model(name, config.v2_width, config.v2_dim, seed + 1000),
               data.x_train, data.y_train, config, seed + 1000)
    old_g, new_g = embed_all(v1, data.x_train), embed_all(v2, data.x_train)
    old_q, new_q = embed_all(v1, data.x_test), embed_all(v2, data.x_test)
    y_g, y_q = data.y_train, data.y_test
    base = {"dataset": name, "seed": seed, "old/old": search(old_q, y_q, old_g, y_g),
            "new/new": search(new_q, y_q, new_g, y_g), "new/old raw": None}
    if old_g.shape[1] == new_g.shape[1]:
        base["new/old raw"] = search(new_q, y_q, old_g, y_g)
    if config.bct_weight > 0:
        bct, projection = train_bct(name, v1, data, config, seed + 1000)
        with torch.no_grad():
            native = bct.forward_features(torch.from_numpy(data.x_test))
            projected = projection(native).numpy()
        bct_g = embed_all(bct, data.x_train)
        base["bct new/old"] = search(projected / np.linalg.norm(projected, axis=1,
                                                                keepdims=True), y_q, old_g, y_g)
        base["bct new/new"] = search(embed_all(bct, data.x_test), y_q, bct_g, y_g)
    rows = []
    for share in config.pair_shares:
        paired = rng.permutation(n)[:max(2, int(round(share * n)))]
        backfill = search(new_q, y_q, new_g[paired], y_g[paired])
        for kind in config.kinds:
            options = {"kind": kind, "epochs": config.mlp_epochs, "seed": seed,
                       "progress": False}
            start = time.perf_counter()
            forward = fit_adapter(old_g[paired], new_g[paired], **options)
            backward = fit_adapter(new_g[paired], old_g[paired], **options)
            seconds = time.perf_counter() - start
            transformed = forward.transform(old_g)
            transformed[paired] = new_g[paired]
            rows.append({**base, "pair_share": share, "pairs": len(paired), "kind": kind,
                         "fit_seconds": seconds, "backfill only": backfill,
                         "transformed": search(new_q, y_q, transformed, y_g),
                         "adapted q": search(backward.transform(new_q), y_q, old_g, y_g)})
        for blend in config.slerp_blends:  # query side only: v1 embeds each query too
            start = time.perf_counter()
            slerp = fit_adapter(new_g[paired], old_g[paired], kind="orthogonal", blend=blend)
            seconds = time.perf_counter() - start
            rows.append({**base, "pair_share": share, "pairs": len(paired),
                         "kind": f"slerp t={blend:g}", "fit_seconds": seconds,
                         "backfill only": backfill, "transformed": None,
                         "adapted q": search(slerp.transform(new_q, anchor=old_q), y_q, old_g,
                                             y_g)})
    return rows


def write(rows: list[dict], config: Config, out: Path, command: str, seconds: float) -> None:
    text = ["# Post-hoc adapters: v2 trained independently of v1\n",
            f"Command: `{command}`" + ("" if np.isnan(seconds) else
                                       f" ({seconds / 60:.1f} min so far)") +
            f"; seeds done: {sorted({r['seed'] for r in rows})}.\n",
            "Mean ± std over seeds, in percent. `transformed`: v2 queries on v1's gallery mapped "
            "into v2's space (paired items re-embedded); `adapted q`: v2 queries mapped into v1's "
            "space on v1's gallery; `slerp t=..`: the orthogonal map blended on the sphere with "
            "v1's own embedding of the query (v1 runs on every query; query side only); "
            "`backfill only`: v2 queries on the re-embedded items alone, the partial backfill of "
            "as many items (its mAP ranks a gallery of those items only, so it is not comparable "
            "with the full-gallery mAP of the other columns). `BCT new/old`: v2 retrained through "
            "v1's frozen head with a 64 -> 32 projection, its projected queries on v1's gallery "
            "(no pairs needed, but retraining). Gain share = (M - old/old) / (new/new - old/old), "
            "new/new of the independent v2. Criterion: adapted q beats old/old "
            "(seeds meeting it / seeds).\n", raw_line(rows) + "\n"]
    text += ["## Choosing the default kind\n", choice_table(rows) + "\n"]
    text += ["## The compatibility criterion over every run (all datasets, seeds, paired "
             "shares)\n", criterion_totals(rows) + "\n"]
    text += ["## Against the anchors and the goal\n", anchor_tables(rows) + "\n"]
    for metric in ("top1", "mAP"):
        text += [f"## {metric}\n", table(rows, metric) + "\n"]
    text.append(f"Config: `{json.dumps(asdict(config))}`\n")
    write_text_atomic(out, "\n".join(text))
    write_text_atomic(out.with_suffix(".json"), json.dumps(rows, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run in seconds")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    parser.add_argument("--datasets", nargs="+", choices=Config.datasets,
                        help="override the datasets")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--combine", type=Path, nargs="+", metavar="JSON",
                        help="write one table from the .json files of runs split by seed")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    if args.seeds:
        config = replace(config, seeds=tuple(args.seeds))
    if args.datasets:
        config = replace(config, datasets=tuple(args.datasets))
    default = "posthoc_adapters_quick.md" if args.quick else "posthoc_adapters.md"
    out = args.out or Path(__file__).parent / "results" / default
    command = "OMP_NUM_THREADS=1 .venv/bin/python experiments/posthoc_adapters.py" + \
        (" --quick" if args.quick else "") + \
        (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds else "") + \
        (f" --datasets {' '.join(args.datasets)}" if args.datasets else "")
    if args.combine:
        rows = [row for path in args.combine for row in json.loads(path.read_text())]
        seeds = " ".join(str(s) for s in sorted({r["seed"] for r in rows}))
        command = f"{command} --seeds S (S in {seeds}, one process each), then --combine"
        write(rows, replace(config, seeds=tuple(sorted({r["seed"] for r in rows}))), out,
              command, float("nan"))
        print(out.read_text())
        return
    start, rows = time.perf_counter(), []
    for name in config.datasets:  # each dataset's seed rows are written as they finish
        data = load(name, config)
        for seed in config.seeds:
            rows += run_seed(name, data, config, seed)
            write(rows, config, out, command, time.perf_counter() - start)
            print(f"{name} seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)
    print(out.read_text())


if __name__ == "__main__":
    main()
