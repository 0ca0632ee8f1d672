"""Backbone passes of ``evaluate_upgrade`` with a gallery: one per batch vs two.

v1 and v2 are ConvNet1D models whose ``forward`` returns ``(logits, embeddings)``. With the
default ``old_embedder="auto"`` / ``new_embedder="auto"`` the embeddings come from the forward
that computes the logits (one backbone pass per batch); naming the method
(``"forward_features"``) runs the backbone a second time for them, which is what
``evaluate_upgrade`` always did before. The script counts backbone calls (a forward hook on each
model's ``features``), checks that both settings give the same report, then times both,
interleaved, several repeats each (the retrieval matrix is included, the backfill curve left
out: it does not depend on the setting).

Run:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_upgrade_passes.py
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from regfree.models import ConvNet1D
from regfree.upgrade import evaluate_upgrade

SETTINGS = {"one pass (embedder='auto')": "auto",
            "two passes (embedder='forward_features')": "forward_features"}


def models(width: int, dim: int) -> tuple[ConvNet1D, ConvNet1D]:
    torch.manual_seed(0)
    old = ConvNet1D(width=width, embedding_dim=dim, return_embeddings=True)
    new = ConvNet1D(width=2 * width, embedding_dim=dim, return_embeddings=True)
    return old, new


def run(embedder: str, data, gallery, width: int, dim: int, batch_size: int):
    old, new = models(width, dim)
    calls = {"v1": 0, "v2": 0}
    for name, model in (("v1", old), ("v2", new)):
        model.features.register_forward_hook(
            lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    start = time.perf_counter()
    report = evaluate_upgrade(old, new, data, gallery=gallery, old_embedder=embedder,
                              new_embedder=embedder, batch_size=batch_size,
                              backfill_orders=(), progress=False)
    return time.perf_counter() - start, calls, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--gallery", type=int, default=10000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(args.queries, 40)).astype(np.float32),
            rng.integers(0, 10, args.queries))
    gallery = (rng.normal(size=(args.gallery, 40)).astype(np.float32),
               rng.integers(0, 10, args.gallery))
    batches = -(-args.queries // args.batch_size) + -(-args.gallery // args.batch_size)

    first = {}
    for label, embedder in SETTINGS.items():
        _, calls, report = run(embedder, data, gallery, args.width, args.dim, args.batch_size)
        first[label] = (calls, report)
    reports = [report for _, report in first.values()]
    np.testing.assert_allclose(reports[0].retrieval.matrix("mAP"),
                               reports[1].retrieval.matrix("mAP"), rtol=1e-5)
    assert reports[0].flips.to_dict() == reports[1].flips.to_dict()

    seconds: dict[str, list[float]] = {label: [] for label in SETTINGS}
    for _ in range(args.repeats):  # interleaved: load on a shared machine hits both alike
        for label, embedder in SETTINGS.items():
            seconds[label].append(run(embedder, data, gallery, args.width, args.dim,
                                      args.batch_size)[0])

    print(f"evaluate_upgrade, {args.queries} queries + {args.gallery} gallery items "
          f"({batches} batches of {args.batch_size}), ConvNet1D width {args.width}/"
          f"{2 * args.width}, {args.dim}-d, 1 torch thread, {platform.processor() or 'cpu'}; "
          f"{args.repeats} repeats, interleaved")
    print("| setting | backbone calls v1 | backbone calls v2 | median s | min s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label in SETTINGS:
        calls = first[label][0]
        median, best = float(np.median(seconds[label])), min(seconds[label])
        print(f"| {label} | {calls['v1']} | {calls['v2']} | {median:.2f} | {best:.2f} |")
    medians = [float(np.median(seconds[label])) for label in SETTINGS]
    print(f"two passes / one pass (medians): {medians[1] / medians[0]:.2f}x")


if __name__ == "__main__":
    main()
