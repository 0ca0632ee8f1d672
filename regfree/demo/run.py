"""The whole story on embedded data (mnist1d, generated offline): what ``make demo`` runs.

v1 is a small 1-D CNN trained on a third of the data; v2 is a wider CNN trained on all of it in
three ways: plain, positive-congruent (focal distillation from v1), and backward-compatible plus
positive-congruent (influence loss through v1's frozen head as well). Each v2 is checked with
:func:`regfree.evaluate_upgrade` against v1: negative flips on the test split, and retrieval of
test queries against a FAISS gallery of the training split embedded by v1 (no backfill). Then
the post-hoc rows (:mod:`regfree.demo.posthoc`): plain v2 with no retraining, through an
embedding adapter and through a blend of v1's and v2's scores.
"""

from __future__ import annotations

import copy
import tempfile
import time

import numpy as np
import torch

from regfree.compat import BackwardCompatibleLoss
from regfree.data import DataSplit, load_mnist1d
from regfree.demo.config import DemoConfig
from regfree.demo.posthoc import adapter_top1, blend_numbers
from regfree.demo.report import (
    ADAPTER_GALLERY,
    ADAPTER_QUERY,
    BLEND,
    DemoRow,
    print_rows,
    write_outputs,
)
from regfree.metrics import discordant_pairs, mcnemar_exact_p
from regfree.models import cosine_convnet1d
from regfree.pctraining import DistillationTerm, FocalDistillationLoss, OldLogitCache
from regfree.training import fit_adam_cosine
from regfree.training.predict import run_models
from regfree.upgrade import UpgradeReport, evaluate_upgrade


def _train(model: torch.nn.Module, train: tuple, config: DemoConfig, epochs: int, **options
           ) -> torch.nn.Module:
    fit_adam_cosine(model, train, epochs=epochs, lr=config.lr, batch_size=config.batch_size,
                    seed=config.seed, progress=config.progress, **options)
    return model


def train_models(config: DemoConfig, data: DataSplit, cache_dir: str
                 ) -> tuple[torch.nn.Module, dict[str, torch.nn.Module]]:
    """Train v1 and the three v2 variants; returns ``(v1, {variant: v2})``."""
    subset = data.subset_train(int(len(data.y_train) * config.old_fraction), seed=config.seed)
    # cosine heads: the gallery searches by cosine similarity (bct_mnist1d chose them)
    old = cosine_convnet1d(config.old_width, config.embedding_dim, seed=config.seed * 1000)
    _train(old, (subset.x_train, subset.y_train), config, config.old_epochs)

    train = (data.x_train, data.y_train)
    cache = OldLogitCache.build(old, train, cache_dir)
    old_val_preds = old(torch.as_tensor(data.x_test)).argmax(1).numpy()
    val = (data.x_test, data.y_test)
    # FD-KL with the library defaults, which experiments/pct_mnist1d.py chose
    fd_term = DistillationTerm(FocalDistillationLoss(), teacher=cache)
    bct_term = BackwardCompatibleLoss(copy.deepcopy(old.head), weight=config.bct_weight)
    recipes = {"plain": [], "pc": [fd_term], "bct+pc": [copy.deepcopy(fd_term), bct_term]}
    new_models = {}
    for variant, terms in recipes.items():
        # every variant starts from the same initial weights, so differences come from the loss
        model = cosine_convnet1d(config.new_width, config.embedding_dim,
                                 seed=config.seed * 1000 + 1, return_embeddings=True)
        new_models[variant] = _train(model, train, config, config.new_epochs,
                                     loss_terms=terms, val_data=val, old_val_preds=old_val_preds)
    return old, new_models


def posthoc_rows(config: DemoConfig, old: torch.nn.Module, plain: torch.nn.Module,
                 data: DataSplit, plain_row: DemoRow, plain_flips: np.ndarray
                 ) -> tuple[list[DemoRow], dict]:
    """The rows of plain v2 with an adapter (gallery side, query side) and with a blend, from
    v1 and plain v2 as trained (no training here); returns ``(rows, what they were fit with)``."""
    pair = [(old, [("old_embedder", "auto")]), (plain, [("new_embedder", "auto")])]
    (old_q,), (new_q,) = run_models(pair, (data.x_test, data.y_test), progress=config.progress,
                                    desc="v1 and v2 on data")
    (old_g,), (new_g,) = run_models(pair, (data.x_train, data.y_train), name="gallery",
                                    progress=config.progress, desc="v1 and v2 on gallery")
    top1 = adapter_top1(old_q.embeddings, new_q.embeddings, data.y_test, old_g.embeddings,
                        new_g.embeddings, data.y_train, share=config.adapter_pairs,
                        seed=config.seed)
    blend = blend_numbers(data.y_test, old_q.logits, new_q.logits, plain_flips,
                          max_error_increase=config.blend_max_error_increase, seed=config.seed)
    shared = {"top1_old_old": plain_row.top1_old_old, "old_error": plain_row.old_error}
    retrieval_only = {"error": None, "nfr": None, "nfr_ci": None, "mcnemar_p": None,
                      "nfr_vs_plain_p": None, "top1_new_new": None, **shared}
    rows = [DemoRow(ADAPTER_GALLERY, top1_new_old=top1.gallery, **retrieval_only),
            DemoRow(ADAPTER_QUERY, top1_new_old=top1.query, **retrieval_only),
            DemoRow(BLEND, error=blend["error"], nfr=blend["nfr"], nfr_ci=blend["nfr_ci"],
                    mcnemar_p=blend["mcnemar_p"], nfr_vs_plain_p=blend["nfr_vs_plain_p"],
                    top1_new_old=None, top1_new_new=None, **shared)]
    details = {"adapter_pairs": top1.pairs, "adapters": top1.adapters,
               "blend_validation": "2-fold cross-fitting on the test split",
               "blends": blend["blends"]}
    return rows, details


def run_demo(config: DemoConfig) -> tuple[list[DemoRow], dict[str, UpgradeReport], dict]:
    """Train everything, evaluate each v2 against v1, add the post-hoc rows, write
    ``config.output``; return the rows, the reports and what the post-hoc rows were fit with.

    Example:
        >>> rows, reports, posthoc = run_demo(DemoConfig(samples=600, old_epochs=1, new_epochs=1,
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
                            compat.value("v1", "v1"),
                            old_error=report.flips.error_rate_old))
    posthoc, details = posthoc_rows(config, old, new_models["plain"], data, rows[0],
                                    flips["plain"])
    rows += posthoc
    write_outputs(config, rows, reports, details)
    return rows, reports, details


def main(config: DemoConfig) -> int:
    """Run the demo and print it; returns the exit code (1 when a v2 fails ``max_nfr``)."""
    began = time.perf_counter()
    rows, reports, details = run_demo(config)
    print_rows(rows, time.perf_counter() - began, config, details["adapter_pairs"])
    print(f"Reports and plots written to {config.output}/")
    return 0 if all(r.passed for r in reports.values()) else 1
