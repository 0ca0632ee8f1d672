"""Scores and statistics: flips against v1, the sweep's picks, the table's rows and intervals."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pct_study.recipes import (
    Elodi,
    FocalDistillation,
    KnowledgeDistillation,
    NoisyFocalDistillation,
    Run,
    run_from_record,
)
from pct_study.settings import Data, Setup
from regfree.metrics import discordant_pairs, flip_totals, mcnemar_exact_p, wilson_interval
from regfree.pctraining import FocalDistillationLoss
from regfree.reporting import write_text_atomic

ERROR_SLACK = 0.005  # sweep picks may cost at most 0.5 points of validation error
PICKED_FAMILIES = ("KD", "FD-KL", "FD-LM", "ELODI")


@dataclass
class Scores:
    error: float
    nfr: float
    pfr: float
    relative_nfr: float
    negative_flips: int
    n: int


def score(y: np.ndarray, old: np.ndarray, new: np.ndarray) -> Scores:
    t = flip_totals(y, old, new)
    return Scores(t.error_rate_new, t.nfr, t.pfr, t.relative_nfr, t.negative_flips, t.n)


def mean_scores(scores: list[Scores]) -> Scores:
    """Scores averaged over seeds (flip and sample counts summed)."""
    return Scores(*(float(np.mean([getattr(s, f) for s in scores]))
                    for f in ("error", "nfr", "pfr", "relative_nfr")),
                  sum(s.negative_flips for s in scores), sum(s.n for s in scores))


def group_by_label(results: list[dict]) -> dict[str, list[dict]]:
    """Runs of the same configuration (all its seeds) under the configuration's label."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["run"].label(), []).append(r)
    return groups


def pick(results: list[dict], plain_error: float, key: str = "val",
         slack: float = ERROR_SLACK) -> dict:
    """Lowest NFR among runs within ``slack`` of plain's error (else the lowest error)."""
    eligible = [r for r in results if r[key].error <= plain_error + slack + 1e-12]
    if eligible:
        return min(eligible, key=lambda r: (r[key].nfr, r[key].error))
    return min(results, key=lambda r: r[key].error)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (error, NFR), sorted by error."""
    front = [i for i, (e, n) in enumerate(points)
             if not any((e2 <= e and n2 <= n) and (e2 < e or n2 < n) for e2, n2 in points)]
    return sorted(front, key=lambda i: points[i])


def averaged(results: list[dict], data: Data, teachers: dict, splits: tuple[str, ...]
             ) -> list[dict]:
    """One entry per configuration: its run and its scores on ``splits`` averaged over seeds."""
    labels = {"val": data.y_val, "test": data.y_test}
    return [{"run": group[0]["run"],
             **{split: mean_scores([score(labels[split], teachers[f"v1_{split}"], r[split])
                                    for r in group]) for split in splits},
             "seconds": float(np.mean([r["seconds"] for r in group]))}
            for group in group_by_label(results).values()]


# ---------------------------------------------------------------- sweep


def sweep_runs(setup: Setup) -> list[Run]:
    """The whole grid on every sweep seed: plain, KD, FD-KL, FD-LM, ELODI."""
    runs = []
    for seed in setup.sweep_seeds:
        runs.append(Run(seed))
        runs += [Run(seed, (KnowledgeDistillation(t, w),)) for t, w in setup.kd_settings]
        runs += [Run(seed, (FocalDistillation("kl", a, b, t, w),)) for a, b, t, w in setup.kl_grid]
        runs += [Run(seed, (FocalDistillation("logit", a, b, weight=w),))
                 for a, b, w in setup.lm_grid]
        runs += [Run(seed, (Elodi(w),)) for w in setup.elodi_weights]
    return runs


def with_picks(runs: list[dict]) -> dict:
    """The sweep: its runs (validation scores averaged over seeds), plain's validation error
    and each family's pick."""
    plain_error = next(r for r in runs if r["run"].family == "plain")["val"].error
    picks = {family: pick([r for r in runs if r["run"].family == family], plain_error)
             for family in PICKED_FAMILIES}
    return {"runs": runs, "plain_error": plain_error, "picks": picks}


def sweep_records(sweep: dict) -> list[dict[str, Any]]:
    return [{"config": r["run"].record(), "val": asdict(r["val"]), "seconds": r["seconds"]}
            for r in sweep["runs"]]


def save_sweep(sweep: dict, path: Path, command: str, minutes: float) -> None:
    raw = {"command": command, "minutes": minutes, "runs": sweep_records(sweep)}
    write_text_atomic(path, json.dumps(raw, indent=1))


def load_sweep(sweep_path: Path, results_path: Path) -> Optional[dict]:
    """The saved sweep: the work folder's, else the one recorded in the results JSON (a fresh
    clone has only that), else None."""
    if sweep_path.exists():
        raw = json.loads(sweep_path.read_text())
        runs, command, minutes = raw["runs"], raw["command"], raw["minutes"]
    else:
        results = json.loads(results_path.read_text()) if results_path.exists() else {}
        if not results.get("sweep_command"):
            return None
        runs, command = results["sweep"], results["sweep_command"]
        minutes = results["sweep_minutes"]
    runs = [{"run": run_from_record(r["config"]), "val": Scores(**r["val"]),
             "seconds": r.get("seconds", 0.0)} for r in runs]
    return {**with_picks(runs), "command": command, "minutes": minutes}


# ---------------------------------------------------------------- table


def table_runs(setup: Setup, sweep: Optional[dict]) -> list[Run]:
    """Plain, KD, FD-KL, FD-LM, ELODI, ens-KD, FD-KL + ens-KD, and FD-KL with noisy FD without
    and with ens-KD, per seed. FD terms use the library defaults, noisy FD ``Setup.noisy_fd``;
    KD and ELODI take the sweep's picks (without a sweep: KD at FD-KL's default temperature and
    weight, ELODI at the grid's first weight)."""
    if sweep:
        kd = sweep["picks"]["KD"]["run"].spec(KnowledgeDistillation)
        elodi = sweep["picks"]["ELODI"]["run"].spec(Elodi)
    else:
        fd_default = FocalDistillationLoss()
        kd = KnowledgeDistillation(fd_default.temperature, fd_default.weight)
        elodi = Elodi(setup.elodi_weights[0])
    fd_kl, fd_lm = FocalDistillation("kl"), FocalDistillation("logit")
    ens_kd = KnowledgeDistillation(*setup.v2_ensemble_kd, teacher="v2 ensemble")
    noisy = NoisyFocalDistillation(*setup.noisy_fd)
    recipes = [(), (kd,), (fd_kl,), (fd_lm,), (elodi,), (ens_kd,), (fd_kl, ens_kd),
               (fd_kl, noisy), (fd_kl, ens_kd, noisy)]
    return [Run(seed, terms) for seed in setup.seeds for terms in recipes]


def noisy_check_runs(setup: Setup) -> list[Run]:
    """Per check seed: plain, FD-KL + ens-KD + noisy FD at every ``noisy_grid`` point, and
    FD-KL + noisy FD without ens-KD at the grid's first point."""
    fd_kl = FocalDistillation("kl")
    ens_kd = KnowledgeDistillation(*setup.v2_ensemble_kd, teacher="v2 ensemble")
    runs = []
    for seed in setup.check_seeds:
        runs.append(Run(seed))
        runs += [Run(seed, (fd_kl, ens_kd, NoisyFocalDistillation(noise, w)))
                 for noise, w in setup.noisy_grid]
        runs.append(Run(seed, (fd_kl, NoisyFocalDistillation(*setup.noisy_grid[0]))))
    return runs


def summarise(results: list[dict], data: Data, teachers: dict) -> list[dict]:
    """The table's rows: per configuration, test scores over seeds, intervals and McNemar p."""
    by_label = group_by_label(results)
    plain = {r["run"].seed: r["test"] for r in by_label["plain"]}
    y, old = data.y_test, teachers["v1_test"]
    old_ok = old == y
    systematic = systematic_flips(y, old, list(plain.values()))
    plain_nfr = np.mean([score(y, old, p).nfr for p in plain.values()])
    rows = []
    for label, runs in by_label.items():
        scores = [score(y, old, r["test"]) for r in runs]
        flips = sum(s.negative_flips for s in scores)
        total = sum(s.n for s in scores)
        b_nfr = c_nfr = b_err = c_err = 0
        # per test sample: negative flips summed over the seeds, for the ratio's bootstrap
        row_flips = np.zeros(len(y), dtype=np.int64)
        plain_flips = np.zeros(len(y), dtype=np.int64)
        for r in runs:
            base = plain[r["run"].seed]
            flip_row = old_ok & (r["test"] != y)
            flip_plain = old_ok & (base != y)
            row_flips += flip_row
            plain_flips += flip_plain
            only_plain, only_row = discordant_pairs(flip_plain, flip_row)
            b_nfr, c_nfr = b_nfr + only_plain, c_nfr + only_row
            only_plain, only_row = discordant_pairs(base != y, r["test"] != y)
            b_err, c_err = b_err + only_plain, c_err + only_row
        rows.append({
            "row": label, "seeds": len(runs),
            "error": [s.error for s in scores], "nfr": [s.nfr for s in scores],
            "pfr": [s.pfr for s in scores], "relative_nfr": [s.relative_nfr for s in scores],
            "nfr_ci_pooled": wilson_interval(flips, total),
            "nfr_systematic": [float(np.mean(systematic & (r["test"] != y))) for r in runs],
            "nfr_vs_plain": float(np.mean([s.nfr for s in scores]) / plain_nfr),
            "nfr_vs_plain_ci": ratio_interval(row_flips, plain_flips),
            "mcnemar_p_nfr": mcnemar_exact_p(b_nfr, c_nfr) if label != "plain" else None,
            "mcnemar_p_error": mcnemar_exact_p(b_err, c_err) if label != "plain" else None,
            "seconds_per_run": float(np.mean([r["seconds"] for r in runs])),
        })
    return rows


def ratio_interval(row_flips: np.ndarray, plain_flips: np.ndarray, draws: int = 2000,
                   seed: int = 0) -> tuple[float, float]:
    """95% paired bootstrap interval (over test samples) of sum(row flips) / sum(plain flips);
    the arrays count each sample's negative flips over the seeds."""
    rng = np.random.default_rng(seed)
    n = len(row_flips)
    ratios = []
    for chunk in np.array_split(np.arange(draws), max(1, draws // 200)):
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=len(chunk))
        ratios.append((weights @ row_flips) / np.maximum(weights @ plain_flips, 1))
    low, high = np.percentile(np.concatenate(ratios), [2.5, 97.5])
    return float(low), float(high)


def systematic_flips(y: np.ndarray, old: np.ndarray, plain_preds: list[np.ndarray]) -> np.ndarray:
    """Test samples v1 gets right and every plain v2 seed gets wrong: flips that come from what
    v2 learns from the data, not from the luck of one training run."""
    return (old == y) & np.all([p != y for p in plain_preds], axis=0)
