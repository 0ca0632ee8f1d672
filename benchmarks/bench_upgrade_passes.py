"""Backbone passes of ``evaluate_upgrade`` with a gallery: one per batch vs two.

v1 and v2 are small image CNNs (ConvNet2D on 28 x 28 inputs, v2 twice as wide) whose
``forward`` returns ``(logits, embeddings)``. With the
default ``old_embedder="auto"`` / ``new_embedder="auto"`` the embeddings come from the forward
that computes the logits (one backbone pass per batch); naming the method
(``"forward_features"``) runs the backbone a second time for them, which is what
``evaluate_upgrade`` always did before. The script counts backbone calls (a forward hook on each
model's ``features``), checks that both settings give the same report, then times both,
interleaved, several repeats each: the whole call, and the part spent running the models (the
rest is the FAISS retrieval matrix, the same work in both settings; the backfill curve is left
out for the same reason).

Run:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_upgrade_passes.py
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

import regfree.upgrade
from regfree.models import ConvNet2D
from regfree.upgrade import evaluate_upgrade

SETTINGS = {"one pass (embedder='auto')": "auto",
            "two passes (embedder='forward_features')": "forward_features"}


def models(width: int, dim: int) -> tuple[ConvNet2D, ConvNet2D]:
    torch.manual_seed(0)
    old = ConvNet2D(width=width, embedding_dim=dim, return_embeddings=True)
    new = ConvNet2D(width=2 * width, embedding_dim=dim, return_embeddings=True)
    return old, new


class PassClock:
    """Wraps ``regfree.upgrade.run_models`` to add up the seconds spent running the models."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.inner = regfree.upgrade.run_models

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def run(embedder: str, data, gallery, width: int, dim: int, batch_size: int):
    old, new = models(width, dim)
    calls = {"v1": 0, "v2": 0}
    for name, model in (("v1", old), ("v2", new)):
        model.features.register_forward_hook(
            lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    clock = PassClock()
    regfree.upgrade.run_models = clock
    try:
        start = time.perf_counter()
        report = evaluate_upgrade(old, new, data, gallery=gallery, old_embedder=embedder,
                                  new_embedder=embedder, batch_size=batch_size,
                                  backfill_orders=(), progress=False)
        total = time.perf_counter() - start
    finally:
        regfree.upgrade.run_models = clock.inner
    return (total, clock.seconds), calls, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--gallery", type=int, default=5000)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(args.queries, 1, 28, 28)).astype(np.float32),
            rng.integers(0, 10, args.queries))
    gallery = (rng.normal(size=(args.gallery, 1, 28, 28)).astype(np.float32),
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

    seconds: dict[str, list[tuple[float, float]]] = {label: [] for label in SETTINGS}
    for _ in range(args.repeats):  # interleaved: load on a shared machine hits both alike
        for label, embedder in SETTINGS.items():
            seconds[label].append(run(embedder, data, gallery, args.width, args.dim,
                                      args.batch_size)[0])

    print(f"evaluate_upgrade, {args.queries} queries + {args.gallery} gallery items "
          f"({batches} batches of {args.batch_size}), ConvNet2D width {args.width}/"
          f"{2 * args.width}, {args.dim}-d, 1 torch thread, {platform.processor() or 'cpu'}; "
          f"{args.repeats} repeats, interleaved")
    print("| setting | backbone calls v1 | backbone calls v2 | call, median s | call, min s "
          "| model passes, median s | model passes, min s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    medians = {}
    for label in SETTINGS:
        calls = first[label][0]
        total, passes = np.array(seconds[label]).T
        medians[label] = np.median(total), np.median(passes)
        print(f"| {label} | {calls['v1']} | {calls['v2']} | {np.median(total):.2f} | "
              f"{total.min():.2f} | {np.median(passes):.2f} | {passes.min():.2f} |")
    one, two = medians.values()
    print(f"two passes / one pass (medians): whole call {two[0] / one[0]:.2f}x, "
          f"model passes {two[1] / one[1]:.2f}x")


if __name__ == "__main__":
    main()
