"""Cost of post-hoc compatibility: fitting an adapter, mapping a stored gallery, adapting queries.

- fit: ``fit_adapter`` on 100k pairs (64-d -> 128-d) per kind, seconds (one run each; the mlp
  kind at its defaults).
- transform: vectors per second through ``EmbeddingAdapter.transform`` against re-embedding the
  same items with a model (a ConvNet1D forward pass on mnist1d-sized signals), the work a full
  backfill would redo.
- query side: a 1-query FAISS search (flat, 100k items, k = 10) with and without adapting the
  query first, median over rounds, interleaved so load on a shared machine hits both alike; the
  SLERP row also runs v1 (the ConvNet1D above) on the query, which its blend needs.

Run:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_adapters.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from regfree.compat import ADAPTER_KINDS, fit_adapter
from regfree.models import ConvNet1D
from regfree.retrieval import Gallery

SLERP_ROW = "slerp 0.5, v1 run on the query"


def timed(fn, repeats: int = 3) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    source = rng.normal(size=(args.pairs, 64)).astype(np.float32)
    target = np.tanh(source @ rng.normal(size=(64, 128))).astype(np.float32)
    print(f"fit_adapter on {args.pairs:,} pairs, 64-d -> 128-d:")
    adapters = {}
    for kind in ADAPTER_KINDS:
        start = time.perf_counter()
        adapters[kind] = fit_adapter(source, target, kind=kind, progress=False)
        print(f"  {kind:<10} {time.perf_counter() - start:8.2f} s")

    model = ConvNet1D(width=64, embedding_dim=64).eval()
    signals = torch.from_numpy(rng.normal(size=(args.pairs, 40)).astype(np.float32))
    with torch.no_grad():
        embed_s = timed(lambda: model.forward_features(signals), repeats=1)
    print(f"\nre-embedding {args.pairs:,} mnist1d signals (ConvNet1D width 64): "
          f"{args.pairs / embed_s:,.0f} vectors/s")
    for kind, adapter in adapters.items():
        seconds = timed(lambda adapter=adapter: adapter.transform(source))
        print(f"  transform ({kind:<10}): {args.pairs / seconds:12,.0f} vectors/s "
              f"({embed_s / seconds:,.0f}x re-embedding)")

    gallery = Gallery(64, device="cpu")
    gallery.add(source, np.arange(args.pairs), version="v1")
    queries = rng.normal(size=(args.rounds, 128)).astype(np.float32)
    to_v1 = {kind: fit_adapter(target[:5000], source[:5000], kind=kind, progress=False)
             for kind in ADAPTER_KINDS}
    # SLERP blends the mapped query with v1's own embedding of it: v1 runs on every query
    slerp = fit_adapter(target[:5000], source[:5000], kind="orthogonal", blend=0.5,
                        progress=False)
    query_signals = torch.from_numpy(rng.normal(size=(args.rounds, 40)).astype(np.float32))
    raw, adapted = [], {kind: [] for kind in [*ADAPTER_KINDS, SLERP_ROW]}
    plain_queries = queries[:, :64].copy()
    for i in range(args.rounds):
        start = time.perf_counter()
        gallery.search(plain_queries[i:i + 1], 10)
        raw.append(time.perf_counter() - start)
        for kind, adapter in to_v1.items():
            start = time.perf_counter()
            gallery.search(adapter.transform(queries[i:i + 1]), 10)
            adapted[kind].append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            anchor = model.forward_features(query_signals[i:i + 1]).numpy()
        gallery.search(slerp.transform(queries[i:i + 1], anchor=anchor), 10)
        adapted[SLERP_ROW].append(time.perf_counter() - start)
    base = np.median(raw)
    print(f"\n1-query search, flat gallery of {args.pairs:,}: raw {base * 1e6:.0f} us (median of "
          f"{args.rounds})")
    for kind, times in adapted.items():
        extra = np.median(times) - base
        print(f"  adapted query ({kind}): {np.median(times) * 1e6:.0f} us "
              f"(+{extra * 1e6:.0f} us, {np.median(times) / base:.2f}x)")


if __name__ == "__main__":
    main()
