"""The study's outputs: the markdown report of the table and sweep, the noisy-check report and
the sweep's plot."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from common import cpu_name, mean_std
from pct_study.analysis import ERROR_SLACK, averaged, pareto_front, pick, score
from pct_study.recipes import FocalDistillation, NoisyFocalDistillation
from pct_study.settings import Data, Setup
from regfree.atomic import atomic_write
from regfree.pctraining.losses import DEFAULTS


def fmt_p(p: Optional[float]) -> str:
    if p is None:
        return "—"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"



def markdown(setup: Setup, rows: list[dict], sweep: Optional[dict], teachers: dict,
             data: Data, command: str, minutes: float,
             plot_name: str = "pct_mnist1d_sweep.png") -> str:
    v1 = score(data.y_test, teachers["v1_test"], teachers["v1_test"])
    ens_error = float(np.mean(teachers["ensemble_test"] != data.y_test))
    lines = [
        "# Positive-congruent training on MNIST-1D",
        "",
        f"Command: {command} ({minutes:.1f} min on this machine, 2 cores; CPU: {cpu_name()}).",
        "",
        "Why this setup: it is the demo's (`regfree demo`: cosine heads on v1, v2 and the "
        "ELODI members, Adam lr 3e-3 with cosine decay, batch 128, v1 20 epochs on a third of "
        "the training split) with a wider v2 (width 128), which leaves distillation a little "
        "more room: at the demo's width 64, FD-KL cut NFR to 0.55x plain's at +0.34 points of "
        "error (`pct_mnist1d_width64.md`, `--v2-width 64`). Validation and "
        "test come from an independent generator "
        "draw of 10,000 samples each, so an NFR of 0.5% is about 50 flips per model; the "
        "earlier runs (1,200 validation and 2,400 test samples: `pct_mnist1d_fdkl_*`, "
        "`_linear_heads`, `_weak_v1`) counted a "
        "handful of flips per model and their one-seed sweeps picked by noise.",
        "",
        f"Data: mnist1d generator. Training: the {len(data.y_train)}-sample train split of a "
        f"{setup.num_samples}-sample draw (seed 42). Validation (sweep only) and test: "
        f"{len(data.y_val)} and {len(data.y_test)} samples of a {setup.eval_samples}-sample "
        f"draw (seed {setup.eval_seed}). All models: ConvNet1D (embedding {setup.embedding_dim}) "
        f"with a CosineClassifier head (scale 16), Adam lr {setup.lr:g} with cosine decay, batch "
        f"{setup.batch_size}. v1: width {setup.v1_width}, {setup.v1_epochs} epochs on "
        f"{len(data.v1_subset)} training samples (test error "
        f"{v1.error:.2%}); ELODI teacher: mean logits of {setup.ensemble_size} such models "
        f"(v1 and {setup.ensemble_size - 1} more seeds; test error {ens_error:.2%}). "
        f"v2: width {setup.v2_width}, {setup.v2_epochs} epochs on all training samples. "
        "Old logits come from "
        "OldLogitCache (v1 never runs during v2 training)." + v2_ensemble_note(setup, teachers, data)
        + noisy_fd_note(setup),
        "",
        f"## Test results ({rows[0]['seeds']} seeds of v2; NFR, PFR against v1)"
        + ("" if rows[0]["seeds"] == len(setup.seeds) else
           f" — partial: {rows[0]['seeds']} of the planned {len(setup.seeds)} seeds finished"),
        "",
        "mean ± std over seeds, in %. NFR CI: Wilson 95% on negative flips pooled over seeds. "
        "McNemar p (exact, discordant pairs pooled over seeds) against plain v2 with the same "
        "seed: *NFR* counts samples that exactly one of the two models flips, *error* samples "
        "that exactly one gets wrong. Relative NFR = NFR / ((1 - ER_v1) * ER_v2). NFR / plain: "
        "pooled negative flips over plain's, with a 95% paired bootstrap interval over test "
        "samples.",
        "",
        "| row | error | NFR | NFR 95% CI | NFR / plain [95% CI] | NFR on systematic | "
        "relative NFR | PFR | McNemar p (NFR) | McNemar p (error) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r["nfr_ci_pooled"]
        lines.append(
            f"| {r['row']} | {mean_std(r['error'])} | {mean_std(r['nfr'])} | [{low:.2%}, {high:.2%}] | "
            f"{r['nfr_vs_plain']:.2f} [{r['nfr_vs_plain_ci'][0]:.2f}, "
            f"{r['nfr_vs_plain_ci'][1]:.2f}] | {mean_std(r['nfr_systematic'])} | "
            f"{mean_std(r['relative_nfr'], 1.0, 3)} | {mean_std(r['pfr'])} | "
            f"{fmt_p(r['mcnemar_p_nfr'])} | {fmt_p(r['mcnemar_p_error'])} |")
    plain = next(r for r in rows if r["row"] == "plain")
    floor = np.mean(plain["nfr_systematic"])
    lines += [
        "",
        f"*NFR on systematic*: flips on the {floor:.2%} of test samples that v1 gets right and "
        f"all {plain['seeds']} plain seeds get wrong ({floor / np.mean(plain['nfr']):.0%} of "
        "plain's NFR): the flips that come from what v2 learns from the data. The rest depend "
        "on the training run (its seed), the variance that distillation toward v1 and "
        "ensembles can remove.",
        "",
    ]
    for fd in (r for r in rows if r["row"].startswith("FD-")):
        d_err = (np.mean(fd["error"]) - np.mean(plain["error"])) * 100
        ok = fd["nfr_vs_plain"] <= 0.5 and d_err <= 0.5
        significant = fd["mcnemar_p_nfr"] is not None and fd["mcnemar_p_nfr"] < 0.05
        lines.append(
            f"- Bar ({fd['row']}): NFR {np.mean(fd['nfr']):.2%} vs plain "
            f"{np.mean(plain['nfr']):.2%} (ratio {fd['nfr_vs_plain']:.2f}, bar <= 0.50), error "
            f"{d_err:+.2f} points (bar <= +0.50): **{'met' if ok else 'NOT met'}**; the NFR "
            f"difference from plain is {'significant' if significant else '**not significant**'}"
            f" (McNemar p {fmt_p(fd['mcnemar_p_nfr'])}).")
    kl, lm = DEFAULTS["kl"], DEFAULTS["logit"]
    lines += [
        "",
        "Reference: untuned FD-KL gave ratio 0.48 at +0.8 points (12k samples, 3 seeds); Yan et "
        "al. report about -60% NFR on ImageNet.",
        "",
        f"Library defaults when this ran: FocalDistillationLoss kind='kl': alpha {kl['alpha']:g},"
        f" beta {kl['beta']:g}, T {kl['temperature']:g}, weight {kl['weight']:g}; kind='logit':"
        f" alpha {lm['alpha']:g}, beta {lm['beta']:g}, weight {lm['weight']:g}. "
        + ("The FD rows use these defaults; KD and ELODI rows take the sweep's picks."
           if any("defaults" in r["row"] for r in rows) else
           "The FD-KL row is an explicit setting (--fd-kl).")
        + " ELODI row: uniform "
        f"weights x margin_logit_distance(margin={setup.elodi_margin:g}, power=2).",
    ]
    if sweep:
        n_seeds = len(setup.sweep_seeds)
        lines += ["", f"## Sweep ({n_seeds} seed{'s' if n_seeds > 1 else ''}, validation split)",
                  "",
                  f"Command: {sweep.get('command', command)} "
                  f"({sweep.get('minutes', 0.0):.1f} min). "
                  f"Selection: lowest validation NFR (mean over sweep seeds) among runs with "
                  f"validation error <= plain ({sweep['plain_error']:.2%}) + 0.5 points. "
                  f"{n_seeds} seed(s) on {len(data.y_val):,} samples each; the seed-to-seed "
                  "spread of plain training is the scale of noise. Plot: "
                  f"`{plot_name}` (error vs NFR, dashed Pareto front).",
                  "",
                  "| run | val error | val NFR | Pareto | picked |", "|---|---|---|---|---|"]
        runs = sweep["runs"]
        front = set(pareto_front([(r["val"].error, r["val"].nfr) for r in runs]))
        picked = {id(p["run"]) for p in sweep["picks"].values()}
        for i, r in sorted(enumerate(runs), key=lambda ir: (ir[1]["val"].error, ir[1]["val"].nfr)):
            lines.append(f"| {r['run'].label()} | {r['val'].error:.2%} | {r['val'].nfr:.2%} | "
                         f"{'yes' if i in front else ''} | "
                         f"{'yes' if id(r['run']) in picked else ''} |")
        kl, lm = sweep["picks"]["FD-KL"]["run"], sweep["picks"]["FD-LM"]["run"]
        same = all(run.spec(FocalDistillation).matches_library_defaults() for run in (kl, lm))
        lines += ["", f"Sweep picks: {kl.label()}; {lm.label()}; "
                      f"{sweep['picks']['KD']['run'].label()}; "
                      f"{sweep['picks']['ELODI']['run'].label()}. "
                      + ("These are the library defaults." if same else
                         "**These differ from the library defaults at run time.**")]
    return "\n".join(lines) + "\n"


def v2_ensemble_note(setup: Setup, teachers: dict, data: Data) -> str:
    if "v2_ensemble_test" not in teachers:
        return ""
    ens = score(data.y_test, teachers["v1_test"], teachers["v2_ensemble_test"])
    t, w = setup.v2_ensemble_kd
    return (f" ens-KD teacher: mean logits of {len(setup.v2_ensemble_seeds)} plain v2s (seeds "
            f"{', '.join(map(str, setup.v2_ensemble_seeds))}; as a model: test error "
            f"{ens.error:.2%}, NFR {ens.nfr:.2%}), distilled with KD (T {t:g}, weight {w:g}) on "
            f"every sample; it costs {len(setup.v2_ensemble_seeds)} extra v2 trainings "
            f"({teachers['v2_ensemble_minutes']:.1f} CPU-min).")


def noisy_fd_note(setup: Setup) -> str:
    noise, weight = setup.noisy_fd
    return (f" Noisy FD rows add a NoisyDistillationTerm: each step, v1 (run live) and v2 both see "
            f"the batch plus Gaussian noise of {noise:g} x each input feature's training std, and "
            f"FocalDistillationLoss(weight={weight:g}, other arguments at the kl defaults) pulls v2 "
            "toward v1 there; one more forward and backward pass of v2 per step.")


# ---------------------------------------------------------------- noisy FD check

def noisy_check_markdown(setup: Setup, results: list[dict], data: Data, teachers: dict,
                         command: str, minutes: float) -> str:
    """Validation (for the pick) and test scores of the check, averaged over its seeds."""
    runs = averaged(results, data, teachers, ("val", "test"))
    plain = next(r for r in runs if r["run"].family == "plain")
    picked = pick([r for r in runs if r["run"].family == "FD-KL+ens-KD+noisy"],
                  plain["val"].error)["run"].spec(NoisyFocalDistillation)
    lines = [
        "# Noisy focal distillation: choosing its setting (validation check)",
        "",
        f"Command: {command} ({minutes:.1f} min on this machine, 2 cores; CPU: {cpu_name()}).",
        "",
        f"Setup as in `pct_mnist1d.md`; seeds {', '.join(map(str, setup.check_seeds))} (not the "
        "table's). Noise: each input feature's training std times the given factor. Selection "
        "(the sweep's rule): lowest validation NFR among FD-KL defaults + ens-KD + noisy FD "
        "settings within +0.5 points of plain's validation error. Test columns for reference "
        "only. Mean over seeds, in %.",
        "",
        "| run | val error | val NFR | test error | test NFR | test NFR / plain |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(f"| {r['run'].label()} | {r['val'].error:.2%} | {r['val'].nfr:.3%} | "
                     f"{r['test'].error:.2%} | {r['test'].nfr:.3%} | "
                     f"{r['test'].nfr / plain['test'].nfr:.2f} |")
    chosen = (picked.noise, picked.weight)
    lines += ["", f"Pick: noise {chosen[0]:g}, weight {chosen[1]:g}. "
              + ("This is `Setup.noisy_fd`, which the table uses."
                 if chosen == setup.noisy_fd else
                 f"**`Setup.noisy_fd` is {setup.noisy_fd}: it differs from the pick.**")]
    return "\n".join(lines) + "\n"


def plot_sweep(sweep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sweep["runs"]
    points = [(r["val"].error * 100, r["val"].nfr * 100) for r in runs]
    fig, ax = plt.subplots(figsize=(7, 5))
    colours = {"plain": "black", "KD": "tab:purple", "FD-KL": "tab:blue", "FD-LM": "tab:orange", "ELODI": "tab:green"}
    for family, colour in colours.items():
        xs = [p for p, r in zip(points, runs) if r["run"].family == family]
        if xs:
            ax.scatter(*zip(*xs), c=colour, label=family, s=40 if family != "plain" else 90,
                       marker="*" if family == "plain" else "o", zorder=3)
    front = pareto_front(points)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", c="grey",
            label="Pareto front", zorder=2)
    for i in front:
        ax.annotate(runs[i]["run"].label(), points[i], fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    ax.axvline((sweep["plain_error"] + ERROR_SLACK) * 100, c="red", lw=0.8, ls=":",
               label="plain + 0.5 pts (selection limit)")
    ax.set_xlabel("validation error (%)")
    ax.set_ylabel("validation NFR vs v1 (%)")
    ax.set_title("MNIST-1D sweep: validation error vs negative flip rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120))
    plt.close(fig)


# ---------------------------------------------------------------- table
