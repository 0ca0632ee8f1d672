"""Time per training step: plain cross-entropy vs focal distillation with cached old logits vs
focal distillation running v1 live, and cached FD plus noisy FD (v1 live on a noisy copy of each
batch, the recipe's costliest term), through :func:`regfree.training.fit`.

Same v2 model, data, batch size and seed for all of them; the variants are interleaved over
several rounds so that load on a shared machine hits them alike. Printed: the median seconds
per step of each (and its spread over rounds), and the ratio to plain as the median of the
per-round ratios with their interquartile range: a step takes about 12 ms here, and pairing
each round's runs cancels the drift of a shared machine better than a ratio of medians.

Run:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_training.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from regfree.data import load_mnist1d
from regfree.models import ConvNet1D
from regfree.pctraining import (
    DistillationTerm,
    FocalDistillationLoss,
    NoisyDistillationTerm,
    OldLogitCache,
)
from regfree.training import fit


def seconds_per_step(model_seed: int, data, terms, epochs: int, batch_size: int) -> float:
    torch.manual_seed(model_seed)
    model = ConvNet1D(width=32, embedding_dim=64)
    steps = epochs * -(-len(data[1]) // batch_size)
    began = time.perf_counter()
    fit(model, data, loss_terms=terms, epochs=epochs, batch_size=batch_size, progress=False,
        optimizer=lambda p: torch.optim.AdamW(p, lr=5e-3, weight_decay=1e-4))
    return (time.perf_counter() - began) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    split = load_mnist1d(num_samples=12000, seed=42)
    data = (split.x_train, split.y_train)
    torch.manual_seed(123)
    v1 = ConvNet1D(width=16, embedding_dim=32)
    noise_std = 0.3 * torch.from_numpy(split.x_train.std(axis=0))
    with tempfile.TemporaryDirectory() as folder:
        cache = OldLogitCache.build(v1, data, Path(folder) / "v1")
        variants = {
            "plain CE": lambda: [],
            "FD, cached v1 logits": lambda: [DistillationTerm(FocalDistillationLoss(), cache)],
            "FD, v1 run live": lambda: [DistillationTerm(FocalDistillationLoss(), v1)],
            "FD cached + noisy FD (v1 live)": lambda: [
                DistillationTerm(FocalDistillationLoss(), cache),
                NoisyDistillationTerm(FocalDistillationLoss(weight=0.01), v1, noise_std)],
        }
        seconds_per_step(0, data, [], 1, args.batch_size)  # warm-up (lazy imports, allocator)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, terms in variants.items():
                times[name].append(seconds_per_step(0, data, terms(), args.epochs,
                                                    args.batch_size))
    print(f"ConvNet1D width 32, batch {args.batch_size}, {len(data[1])} mnist1d samples, "
          f"{args.epochs} epochs per measurement, {args.rounds} interleaved rounds, 1 thread")
    print("| variant | ms / step (median) | min-max over rounds | ratio to plain, per round: "
          "median [IQR] |")
    print("|---|---|---|---|")
    for name, values in times.items():
        ratios = np.asarray(values) / np.asarray(times["plain CE"])
        low, mid, high = np.percentile(ratios, [25, 50, 75])
        print(f"| {name} | {np.median(values) * 1e3:.2f} | {min(values) * 1e3:.2f}-"
              f"{max(values) * 1e3:.2f} | {mid:.3f}x [{low:.3f}, {high:.3f}] |")


if __name__ == "__main__":
    main()
