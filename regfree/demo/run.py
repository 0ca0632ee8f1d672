"""The whole story on embedded data (mnist1d, generated offline): what ``make demo`` runs.

v1 is a small 1-D CNN trained on a third of the data; v2 is a wider CNN trained on all of it in
three ways: plain, positive-congruent (focal distillation from v1), and backward-compatible plus
positive-congruent (influence loss through v1's frozen head as well). Each v2 is checked with
:func:`regfree.evaluate_upgrade` against v1: negative flips on the test split, and retrieval of
test queries against a FAISS gallery of the training split embedded by v1 (no backfill).
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from regfree.atomic import atomic_write
from regfree.compat import BackwardCompatibleLoss, CosineClassifier
from regfree.data import DataSplit, load_mnist1d
from regfree.demo.config import DemoConfig
from regfree.metrics import discordant_pairs, mcnemar_exact_p
from regfree.models import ConvNet1D
from regfree.pctraining import DistillationTerm, FocalDistillationLoss, OldLogitCache
from regfree.reporting import write_text_atomic
from regfree.training import fit
from regfree.upgrade import UpgradeReport, evaluate_upgrade

VARIANTS = ("plain", "pc", "bct+pc")
VARIANT_TITLES = {"plain": "plain", "pc": "PC (FD-KL)", "bct+pc": "BCT + PC"}


@dataclass
class DemoRow:
    """One v2 variant's line of the demo table."""

    variant: str
    error: float
    nfr: float
    nfr_ci: tuple[float, float]
    mcnemar_p: float
    nfr_vs_plain_p: Optional[float]
    top1_new_old: float
    top1_new_new: float
    top1_old_old: float


def _train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, config: DemoConfig, epochs: int,
           terms=(), val: Optional[tuple] = None, old_val_preds=None) -> torch.nn.Module:
    fit(model, (x, y), loss_terms=list(terms), epochs=epochs, batch_size=config.batch_size,
        optimizer=lambda params: torch.optim.Adam(params, lr=config.lr),
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs),
        val_data=val, old_val_preds=old_val_preds, seed=config.seed, progress=config.progress)
    return model


def _model(config: DemoConfig, width: int, seed: int, return_embeddings: bool) -> ConvNet1D:
    # Cosine heads: the gallery searches by cosine similarity, so both models learn embeddings
    # whose directions carry the class (experiments/bct_mnist1d.py chose them over linear heads).
    torch.manual_seed(seed)
    model = ConvNet1D(width=width, embedding_dim=config.embedding_dim,
                      return_embeddings=return_embeddings)
    model.head = CosineClassifier(config.embedding_dim, 10)
    return model


def train_models(config: DemoConfig, data: DataSplit, cache_dir: str
                 ) -> tuple[torch.nn.Module, dict[str, torch.nn.Module]]:
    """Train v1 and the three v2 variants; returns ``(v1, {variant: v2})``."""
    subset = data.subset_train(int(len(data.y_train) * config.old_fraction), seed=config.seed)
    old = _model(config, config.old_width, config.seed * 1000, return_embeddings=False)
    _train(old, subset.x_train, subset.y_train, config, config.old_epochs)

    train = (data.x_train, data.y_train)
    cache = OldLogitCache.build(old, train, cache_dir)
    old_val_preds = old(torch.as_tensor(data.x_test)).argmax(1).numpy()
    val = (data.x_test, data.y_test)
    # FD-KL with the library defaults, which experiments/pct_mnist1d.py chose: over 10 runs they
    # cut NFR to 0.57x plain's at +0.41 points of error (experiments/results/pct_mnist1d.md)
    fd_term = DistillationTerm(FocalDistillationLoss(), teacher=cache)
    bct_term = BackwardCompatibleLoss(copy.deepcopy(old.head), weight=config.bct_weight)
    recipes = {"plain": [], "pc": [fd_term], "bct+pc": [copy.deepcopy(fd_term), bct_term]}
    new_models = {}
    for variant, terms in recipes.items():
        # every variant starts from the same initial weights, so differences come from the loss
        model = _model(config, config.new_width, config.seed * 1000 + 1, return_embeddings=True)
        new_models[variant] = _train(model, *train, config, config.new_epochs, terms, val,
                                     old_val_preds)
    return old, new_models


def run_demo(config: DemoConfig) -> tuple[list[DemoRow], dict[str, UpgradeReport]]:
    """Train everything, evaluate each v2 against v1, write ``config.output``; return the rows.

    Example:
        >>> rows, reports = run_demo(DemoConfig(samples=600, old_epochs=1, new_epochs=1,
        ...                                     progress=False))  # doctest: +SKIP
    """
    data = load_mnist1d(num_samples=config.samples, seed=42)
    with tempfile.TemporaryDirectory() as cache_dir:
        old, new_models = train_models(config, data, cache_dir)
    x_test, y_test = data.x_test, data.y_test
    gallery = (data.x_train, data.y_train)
    reports = {variant: evaluate_upgrade(old, model, (x_test, y_test), gallery=gallery,
                                         max_nfr=config.max_nfr, seed=config.seed,
                                         progress=config.progress)
               for variant, model in new_models.items()}
    flips = {variant: report.negative_flip_mask for variant, report in reports.items()}
    rows = []
    for variant, report in reports.items():
        compat = report.retrieval
        vs_plain = None
        if variant != "plain":
            vs_plain = mcnemar_exact_p(*discordant_pairs(flips["plain"], flips[variant]))
        rows.append(DemoRow(variant, report.flips.error_rate_new, report.flips.nfr,
                            tuple(report.flips.nfr_ci), report.flips.mcnemar_p, vs_plain,
                            compat.value("v2", "v1"), compat.value("v2", "v2"),
                            compat.value("v1", "v1")))
    write_outputs(config, rows, reports)
    return rows, reports


def write_outputs(config: DemoConfig, rows: list[DemoRow], reports: dict[str, UpgradeReport]
                  ) -> None:
    """``report_<variant>.html`` per v2, ``summary.json`` and ``demo.png`` under the output."""
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    for variant, report in reports.items():
        report.to_html(str(out / f"report_{variant.replace('+', '_')}.html"),
                       title=f"v1 -> v2 {VARIANT_TITLES[variant]}")
    summary = {"config": asdict(config), "rows": [asdict(r) for r in rows]}
    write_text_atomic(str(out / "summary.json"), json.dumps(summary, indent=2))
    _plot(rows, out / "demo.png")


def _plot(rows: list[DemoRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.variant for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4))
    nfr = [100 * r.nfr for r in rows]
    err = [[100 * (r.nfr - r.nfr_ci[0]) for r in rows], [100 * (r.nfr_ci[1] - r.nfr) for r in rows]]
    left.bar(names, nfr, yerr=err, capsize=4, color="#c44e52")
    left.set_ylabel("negative flip rate vs v1 (%)")
    left.set_title("Regressions (95% Wilson interval)")
    width = 0.38
    pos = np.arange(len(rows))
    right.bar(pos - width / 2, [100 * r.top1_new_old for r in rows], width,
              label="v2 query, v1 gallery (no backfill)")
    right.bar(pos + width / 2, [100 * r.top1_new_new for r in rows], width,
              label="v2 query, v2 gallery")
    right.axhline(100 * rows[0].top1_old_old, color="k", ls="--", lw=1, label="v1/v1 today")
    right.set_xticks(pos, names)
    right.set_ylabel("retrieval top-1 (%)")
    right.set_title("Search without backfilling")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    try:
        atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    finally:
        plt.close(fig)


def conclusion(rows: list[DemoRow]) -> str:
    """Two sentences on what the numbers mean."""
    by = {r.variant: r for r in rows}
    plain, pc, both = by["plain"], by["pc"], by["bct+pc"]

    def significance(p: Optional[float]) -> str:
        return "significant" if p is not None and p < 0.05 else "not significant"

    first = (f"Plain v2 cuts the error to {plain.error:.1%} yet breaks {plain.nfr:.1%} of the "
             f"samples v1 got right; positive-congruent training brings that to {pc.nfr:.1%} "
             f"(McNemar p = {pc.nfr_vs_plain_p:.2g} against plain, "
             f"{significance(pc.nfr_vs_plain_p)}) at {pc.error:.1%} error.")
    second = (f"Plain v2 cannot search v1's gallery (top-1 {plain.top1_new_old:.1%} vs "
              f"{plain.top1_old_old:.1%} for v1 itself), while backward-compatible v2 searches "
              f"it with no backfill at {both.top1_new_old:.1%} top-1 and keeps the flips at "
              f"{both.nfr:.1%}.")
    return first + " " + second


def print_rows(rows: list[DemoRow], seconds: float) -> None:
    """The demo table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="v1 -> v2 on mnist1d (test split; gallery = training split embedded by v1)")
    for header in ("v2", "error", "NFR [95% CI]", "McNemar p v1", "NFR p plain",
                   "top-1 v2/v1", "top-1 v2/v2"):
        table.add_column(header, justify="right" if header != "v2" else "left")
    for r in rows:
        table.add_row(VARIANT_TITLES[r.variant], f"{r.error:.2%}",
                      f"{r.nfr:.2%} [{r.nfr_ci[0]:.2%}, {r.nfr_ci[1]:.2%}]",
                      f"{r.mcnemar_p:.2g}",
                      "-" if r.nfr_vs_plain_p is None else f"{r.nfr_vs_plain_p:.2g}",
                      f"{r.top1_new_old:.2%}", f"{r.top1_new_new:.2%}")
    console = Console()
    console.print(table)
    console.print(f"v2/v1: v2 queries on v1's gallery, no backfill; v1/v1 today: "
                  f"{rows[0].top1_old_old:.2%}. 'McNemar p v1': v2 differs from v1; 'NFR p "
                  f"plain': its negative flips differ from plain v2's. Took {seconds:.0f} s.")
    console.print(conclusion(rows))


def main(config: DemoConfig) -> int:
    """Run the demo and print it; returns the exit code (1 when a v2 fails ``max_nfr``)."""
    began = time.perf_counter()
    rows, reports = run_demo(config)
    print_rows(rows, time.perf_counter() - began)
    print(f"Reports and plots written to {config.output}/")
    return 0 if all(r.passed for r in reports.values()) else 1
