"""Gallery benchmark: wrapper overhead, flat vs HNSW vs IVF, numpy brute force, backfill cost.

Everything is measured in one run, single-threaded (FAISS, torch and BLAS pinned to one thread)
so the numbers are comparable on a shared machine:

1. ``Gallery.search`` vs raw ``gallery.index.search`` on the same FAISS index (the wrapper adds
   input checks, normalisation and missing-result masking; goal: within 1.2x).
2. flat vs HNSW vs IVF at each size: build time, recall@10 against flat, queries per second,
   memory (the serialised index size), for two search-effort settings each.
3. numpy brute force (normalised matrix product + argpartition) for scale.
4. ``Gallery.replace`` of 1% of the items per call, per index type, over successive backfill
   steps. HNSW marks replaced nodes stale and inserts the new vectors; the previous behaviour,
   a graph rebuild per call, is measured in the same run as ``replace`` + ``compact()``. Then
   HNSW search speed and recall with the stale nodes left by those steps vs after ``compact()``.
5. Backfill cost: embedding the gallery with a v2 model (ConvNet1D on 40-long signals) and
   re-indexing it, vs zero for a backward-compatible v2 that searches the old gallery.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gallery.py`` (add ``--sizes 100000``
for a quick run). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from regfree.models import ConvNet1D  # noqa: E402
from regfree.retrieval import Gallery, embed  # noqa: E402


def timed(call, repeats):
    """Median CPU time of ``repeats`` calls and the last result. Single-threaded, CPU time is
    what the work costs; wall time also counts waiting for other jobs on a shared machine."""
    times, result = [], None
    for _ in range(repeats):
        start = time.process_time()
        result = call()
        times.append(time.process_time() - start)
    return statistics.median(times), result


def timed_pair(first, second, repeats):
    """Median CPU times of two calls timed alternately (so drifting load hits both alike)."""
    times = ([], [])
    results = [None, None]
    for _ in range(repeats):
        for slot, call in enumerate((first, second)):
            start = time.process_time()
            results[slot] = call()
            times[slot].append(time.process_time() - start)
    return statistics.median(times[0]), statistics.median(times[1]), results


def recall_at(found, exact, k=10):
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, exact)]))


def index_bytes(index):
    return int(faiss.serialize_index(index).size)


def numpy_knn(base, queries, k, chunk=50):
    """Exact cosine top-k with numpy (base is already L2-normalised)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    out = []
    for start in range(0, len(q), chunk):
        scores = q[start:start + chunk] @ base.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(out)


class SizeBench:
    """All measurements at one gallery size; each index is built, measured and dropped in turn."""

    def __init__(self, n, args, rng):
        self.n, self.args, self.rng, self.k = n, args, rng, 10
        self.data = rng.random((n, args.dim), dtype=np.float32)
        self.queries = rng.random((args.queries, args.dim), dtype=np.float32)
        self.raw_queries = self.queries.copy()
        faiss.normalize_L2(self.raw_queries)  # what Gallery.search does for cosine
        self.ids = np.arange(n, dtype=np.int64)
        self.nlist = args.nlist or (256 if n <= 200_000 else 1024)
        self.rows, self.overhead, self.replace_rows, self.stale_rows = [], [], [], []
        self.exact = None

    def measure(self, name, gallery, build_s, setting):
        args, k = self.args, self.k
        wrapped_s, raw_s, ((_, found), (_, raw)) = timed_pair(
            lambda: gallery.search(self.queries, k),
            lambda: gallery.index.search(self.raw_queries, k), args.repeats)
        assert np.array_equal(found, raw), "Gallery.search and raw FAISS disagree"
        if self.exact is None:
            self.exact = found
        self.rows.append({"index": name, "setting": setting, "build_s": build_s,
                          "recall": recall_at(found, self.exact), "qps": args.queries / wrapped_s,
                          "mb": index_bytes(gallery.index) / 2**20})
        self.overhead.append({"index": name, "setting": setting, "gallery_ms": 1e3 * wrapped_s,
                              "raw_ms": 1e3 * raw_s, "ratio": wrapped_s / raw_s})

    def maybe_replace(self, name, gallery):
        if self.n <= self.args.replace_max:
            steps = self.args.replace_steps
            seconds = replace_steps(gallery, self.data.copy(), self.rng, steps)
            self.replace_rows.append((name, steps, seconds))

    def hnsw_updates(self, gallery):
        """Backfill steps with stale nodes, search with them, compact, then rebuild per call."""
        if self.n > self.args.replace_max:
            return
        args, content = self.args, self.data.copy()
        faiss.downcast_index(gallery.index.index).hnsw.efSearch = args.ef_search
        steps = args.replace_steps
        seconds = replace_steps(gallery, content, self.rng, steps)
        self.replace_rows.append(("hnsw (stale nodes + insert)", steps, seconds))
        self.stale_rows.append(self.search_quality(gallery, content, "after the replace steps"))
        compact_s, _ = timed(gallery.compact, 1)
        self.stale_rows.append({**self.search_quality(gallery, content, "after compact()"),
                                "compact_s": compact_s})
        seconds = replace_steps(gallery, content, self.rng, args.rebuild_steps, gallery.compact)
        self.replace_rows.append(("hnsw rebuilt per call (before: replace + compact)",
                                  args.rebuild_steps, seconds))

    def search_quality(self, gallery, content, state):
        stale = gallery.stale_count
        seconds, (_, found) = timed(lambda: gallery.search(self.queries, self.k),
                                    self.args.repeats)
        base = content / np.linalg.norm(content, axis=1, keepdims=True)
        exact = numpy_knn(base, self.queries, self.k)  # ids are row numbers here
        return {"state": state, "stale": stale, "qps": self.args.queries / seconds,
                "recall": recall_at(found, exact)}

    def flat(self):
        gallery = Gallery(self.args.dim, similarity="cosine", index_type="flat", device="cpu")
        build_s, _ = timed(lambda: gallery.add(self.data, self.ids, version="v1"), 1)
        self.measure("flat", gallery, build_s, "exact")  # also the ground truth for recall
        self.maybe_replace("flat", gallery)

    def numpy(self):
        base = self.data / np.linalg.norm(self.data, axis=1, keepdims=True)
        seconds, found = timed(lambda: numpy_knn(base, self.queries, self.k), self.args.repeats)
        self.rows.append({"index": "numpy brute force", "setting": "exact", "build_s": 0.0,
                          "recall": recall_at(found, self.exact),
                          "qps": self.args.queries / seconds, "mb": base.nbytes / 2**20})

    def hnsw(self):
        m = self.args.hnsw_m
        gallery = Gallery(self.args.dim, similarity="cosine", index_type="hnsw", device="cpu",
                          hnsw_m=m, ef_construction=40, ef_search=self.args.ef_search)
        build_s, _ = timed(lambda: gallery.add(self.data, self.ids, version="v1"), 1)
        graph = faiss.downcast_index(gallery.index.index)
        for ef in (64, 256):
            graph.hnsw.efSearch = ef
            self.measure("hnsw", gallery, build_s, f"M={m}, efSearch={ef}")
        self.hnsw_updates(gallery)

    def ivf(self):
        gallery = Gallery(self.args.dim, similarity="cosine", index_type="ivf", device="cpu",
                          nlist=self.nlist)
        sample = self.data[self.rng.choice(self.n, size=min(self.n, 40 * self.nlist),
                                           replace=False)]
        train_s, _ = timed(lambda: gallery.train(sample), 1)
        add_s, _ = timed(lambda: gallery.add(self.data, self.ids, version="v1"), 1)
        for nprobe in (16, 64):
            gallery.index.nprobe = nprobe
            self.measure("ivf", gallery, train_s + add_s, f"nlist={self.nlist}, nprobe={nprobe}")
        self.maybe_replace("ivf", gallery)

    def run(self):
        for step in (self.flat, self.numpy, self.hnsw, self.ivf):
            step()
        return self.rows, self.overhead, self.replace_rows, self.stale_rows


def replace_steps(gallery, content, rng, steps, after=None):
    """Median CPU seconds of ``steps`` successive ``replace`` calls, each re-embedding a new 1%
    of the items (ids are row numbers); ``after`` (timed too) runs after each call. ``content``
    is updated to what the gallery holds."""
    size = max(1, len(gallery) // 100)
    order = rng.permutation(len(gallery))
    times = []
    for step in range(steps):
        chosen = np.sort(order[step * size:(step + 1) * size])
        new = content[chosen][:, ::-1].copy()
        content[chosen] = new
        start = time.process_time()
        gallery.replace(new, chosen, version="v2")
        if after is not None:
            after()
        times.append(time.process_time() - start)
    return statistics.median(times)


def backfill_cost(args, sizes, rng):
    """Embedding with a v2 ConvNet1D and re-indexing, per item; extrapolated to each size."""
    torch.manual_seed(0)
    model = ConvNet1D(width=64, embedding_dim=args.dim)
    signals = rng.normal(size=(args.backfill_items, 40)).astype(np.float32)
    embed_s, vectors = timed(lambda: embed(model, signals, batch_size=1024, progress=False), 1)
    gallery = Gallery(args.dim, similarity="cosine", index_type="flat", device="cpu")
    gallery.add(vectors, np.arange(len(vectors)), version="v1")
    reindex_s, _ = timed(lambda: gallery.replace(vectors, np.arange(len(vectors)), version="v2"),
                         1)
    per_item = (embed_s + reindex_s) / args.backfill_items
    return [{"items": size, "embed_s": embed_s / args.backfill_items * size,
             "reindex_s": reindex_s / args.backfill_items * size, "total_s": per_item * size,
             "measured": size == args.backfill_items} for size in sizes]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="gallery sizes, comma-separated")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median)")
    parser.add_argument("--nlist", type=int, default=0, help="IVF lists (0: 256 / 1024 by size)")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--replace-max", type=int, default=100_000,
                        help="measure replace cost only up to this size")
    parser.add_argument("--replace-steps", type=int, default=40,
                        help="successive 1%% replace calls per index (hnsw: 40 leaves 40%% stale)")
    parser.add_argument("--rebuild-steps", type=int, default=2,
                        help="replace calls with a rebuild each (the previous hnsw behaviour)")
    parser.add_argument("--ef-search", type=int, default=64,
                        help="hnsw efSearch for the replace and stale-node measurements")
    parser.add_argument("--backfill-items", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"faiss {faiss.__version__}, numpy {np.__version__}, torch {torch.__version__}, "
          f"python {sys.version.split()[0]}, 1 thread, CPU seconds, {args.queries} queries, "
          f"dim {args.dim}, k=10, cosine, random uniform vectors, seed {args.seed}\n")
    all_replace, all_stale = [], []
    for n in sizes:
        start = time.perf_counter()
        rows, overhead, replace_rows, stale_rows = SizeBench(n, args, rng).run()
        all_replace += [(n, *row) for row in replace_rows]
        all_stale += [(n, row) for row in stale_rows]
        print(f"### {n:,} vectors ({time.perf_counter() - start:.0f} s wall for this size)\n")
        print("| index | setting | build s | recall@10 vs flat | QPS | memory MB |")
        print("|---|---|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['index']} | {r['setting']} | {r['build_s']:.1f} | {r['recall']:.3f} "
                  f"| {r['qps']:,.0f} | {r['mb']:,.0f} |")
        print("\n| index | setting | Gallery.search ms | raw FAISS ms | ratio |")
        print("|---|---|---:|---:|---:|")
        for r in overhead:
            print(f"| {r['index']} | {r['setting']} | {r['gallery_ms']:.2f} | {r['raw_ms']:.2f} "
                  f"| {r['ratio']:.3f} |")
        print()
    if all_replace:
        print("### Gallery.replace of 1% of the items per call (successive backfill steps)\n")
        print("| size | index | calls | s per call (median) | ratio to hnsw stale + insert |")
        print("|---:|---|---:|---:|---:|")
        hnsw_s = {n: s for n, name, _, s in all_replace if name.startswith("hnsw (stale")}
        for n, name, calls, seconds in all_replace:
            print(f"| {n:,} | {name} | {calls} | {seconds:.3f} | {seconds / hnsw_s[n]:.2f}x |")
        print(f"\n### hnsw search (efSearch={args.ef_search}) with stale nodes vs compacted\n")
        print("| size | state | stale nodes | QPS | recall@10 vs exact | compact() s |")
        print("|---:|---|---:|---:|---:|---:|")
        for n, r in all_stale:
            compact = f"{r['compact_s']:.1f}" if "compact_s" in r else ""
            print(f"| {n:,} | {r['state']} | {r['stale']:,} | {r['qps']:,.0f} | "
                  f"{r['recall']:.3f} | {compact} |")
        print()
    print(f"### Full backfill with a v2 model (ConvNet1D width 64, {args.dim}-d) vs none\n")
    print("| gallery items | embed s | re-index s | total s | BCT (no backfill) s |")
    print("|---:|---:|---:|---:|---:|")
    for r in backfill_cost(args, sizes, rng):
        note = "" if r["measured"] else " (extrapolated)"
        print(f"| {r['items']:,}{note} | {r['embed_s']:.1f} | {r['reindex_s']:.1f} "
              f"| {r['total_s']:.1f} | 0 |")


if __name__ == "__main__":
    main()
