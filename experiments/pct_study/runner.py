"""Training: v1 and its ensemble (the teachers), v2 runs in worker processes, the v2 ensemble."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from pct_study.models import cosine_model
from pct_study.recipes import (
    ENSEMBLE_CACHE,
    V1_CACHE,
    V1_WEIGHTS,
    V2_ENSEMBLE_CACHE,
    Run,
    TermContext,
)
from pct_study.settings import Data, Setup, load_data
from regfree.pctraining import OldLogitCache
from regfree.training import fit_adam_cosine, predict_logits


def train_v1(setup: Setup, data: Data, seed: int) -> torch.nn.Module:
    model = cosine_model(setup.v1_width, setup, seed, setup.v1_classes)
    subset = (data.x_train[data.v1_subset], data.y_train[data.v1_subset])
    fit_adam_cosine(model, subset, epochs=setup.v1_epochs, lr=setup.lr,
                    batch_size=setup.batch_size, seed=seed, progress=False)
    return model


def build_teachers(setup: Setup, data: Data, workdir: Path) -> dict:
    """Train v1 and the ensemble, cache their training-set logits, return their predictions."""
    models = [train_v1(setup, data, seed) for seed in range(setup.ensemble_size)]
    torch.save(models[0].state_dict(), workdir / V1_WEIGHTS)
    train = (data.x_train, data.y_train)
    OldLogitCache.build(models[0], train, workdir / V1_CACHE)
    OldLogitCache.build(models, train, workdir / ENSEMBLE_CACHE)
    out = {}
    for split, x in (("val", data.x_val), ("test", data.x_test)):
        logits = [predict_logits(m, x) for m in models]
        out[f"v1_{split}"] = logits[0].argmax(1)
        out[f"ensemble_{split}"] = np.mean(logits, axis=0).argmax(1)
    return out


def run_v2(job: tuple[Run, Setup, str]) -> dict:
    """Train one v2 and return its validation and test predictions and logits (in a worker)."""
    run, setup, workdir = job
    torch.set_num_threads(1)
    data = load_data(setup)
    began = time.perf_counter()
    model = cosine_model(setup.v2_width, setup, run.seed)
    fit_adam_cosine(model, (data.x_train, data.y_train),
                    loss_terms=run.build_terms(TermContext(setup, Path(workdir), data)),
                    epochs=setup.v2_epochs, lr=setup.lr, batch_size=setup.batch_size,
                    seed=run.seed, progress=False, **run.fit_options(v2_steps(setup, data)))
    if run.keep_weights:
        torch.save(model.state_dict(), member_path(Path(workdir), run.seed))
    seconds = time.perf_counter() - began
    logits = {split: predict_logits(model, x) for split, x in (("val", data.x_val),
                                                               ("test", data.x_test))}
    return {"run": run, "seconds": seconds, "val": logits["val"].argmax(1),
            "test": logits["test"].argmax(1), "val_logits": logits["val"],
            "test_logits": logits["test"]}


def v2_steps(setup: Setup, data: Data) -> int:
    """Optimizer steps of one v2 training."""
    return int(np.ceil(len(data.y_train) / setup.batch_size)) * setup.v2_epochs


def member_path(workdir: Path, seed: int) -> Path:
    return workdir / "v2_members" / f"seed{seed}.pt"


def build_v2_ensemble(setup: Setup, data: Data, workdir: Path, jobs: int, teachers: dict) -> None:
    """Train the plain v2s of ``setup.v2_ensemble_seeds`` and cache their mean training logits
    (the ens-KD teacher); adds the ensemble's test predictions to ``teachers``."""
    (workdir / "v2_members").mkdir(parents=True, exist_ok=True)
    members = [Run(s, keep_weights=True) for s in setup.v2_ensemble_seeds]
    results = run_all(members, setup, workdir, jobs, "v2 ensemble")
    models = []
    for run in members:
        model = cosine_model(setup.v2_width, setup, run.seed)
        model.load_state_dict(torch.load(member_path(workdir, run.seed)))
        models.append(model)
    OldLogitCache.build(models, (data.x_train, data.y_train), workdir / V2_ENSEMBLE_CACHE)
    teachers["v2_ensemble_test"] = np.mean([predict_logits(m, data.x_test) for m in models],
                                           axis=0).argmax(1)
    teachers["v2_ensemble_minutes"] = sum(r["seconds"] for r in results) / 60


def run_all(runs: list[Run], setup: Setup, workdir: Path, jobs: int, progress_label: str,
            on_result: Optional[Callable[[list[dict]], object]] = None) -> list[dict]:
    """Train every run (in order); ``on_result(results_so_far)`` after each one."""
    tasks = [(run, setup, str(workdir)) for run in runs]
    results: list[dict] = []
    began = time.perf_counter()

    def collect(result: dict) -> None:
        results.append(result)
        print(f"  {progress_label}: {len(results)}/{len(tasks)} runs, "
              f"{time.perf_counter() - began:.0f} s", flush=True)
        if on_result:
            on_result(results)

    if jobs > 1:
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            for result in pool.imap(run_v2, tasks):
                collect(result)
    else:
        for task in tasks:
            collect(run_v2(task))
    return results
