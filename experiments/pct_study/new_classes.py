"""Seen and unseen classes (issue 15, MPT's setting): v1 knows classes 0..V1_CLASSES-1, v2 all
ten. The table's rows are the cheap study's shared rows (plain, FD defaults, the first sweep's
pick ``PREVIOUS_PICK``, the blends), the zero-rule rows and the cheap recipe ``CHOSEN``, scored
on the classes v1 knows (error, NFR with its intervals, PFR) and on the ones it never saw."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from common import cpu_name, mean_std
from pct_study.analysis import group_by_label, summarise
from pct_study.cheap import CHOSEN, PREVIOUS_PICK, TABLE_RECIPES, blend_results, complete
from pct_study.recipes import FocalDistillation, Run
from pct_study.report import fmt_p
from pct_study.settings import Data, Setup

V1_CLASSES = 5  # v1 learns classes 0-4 (MPT: the old model on the first half of the classes)
NUM_CLASSES = 10
# the cheap study's rows, then FD defaults and the first cheap pick with v1 giving the classes
# it never saw probability zero (FocalDistillationLoss(new_classes="zero")): they also charge v2
# for moving a seen-class sample's probability to a new class; last, the cheap recipe's pick
# (its own-average teacher covers all ten classes, its FD term v1's five)
RECIPES = TABLE_RECIPES + tuple((replace(fd, new_classes="zero"),)
                                for fd in (FocalDistillation("kl"), PREVIOUS_PICK[0])) + (CHOSEN,)


def new_class_rows(results: list[dict], data: Data, teachers: dict) -> list[dict]:
    """Per row (seeds whose every run finished, plus the blends): ``summarise``'s statistics on
    the test samples of classes v1 knows, and the error on the classes it never saw."""
    done = complete([r for r in results if r["run"].terms in RECIPES], len(RECIPES))
    if not done:
        return []
    runs = done + blend_results(done, data, teachers, recipe=PREVIOUS_PICK)
    y = data.y_test
    seen = y < V1_CLASSES
    on_seen = [{**r, "test": r["test"][seen]} for r in runs]
    rows = summarise(on_seen, replace(data, y_test=y[seen]), {"v1_test": teachers["v1_test"][seen]})
    groups = group_by_label(runs)
    v1_ok = teachers["v1_test"] == y
    for row in rows:
        preds = [r["test"] for r in groups[row["row"]]]
        flips = [v1_ok & seen & (p != y) for p in preds]
        row["error_unseen"] = [float(np.mean(p[~seen] != y[~seen])) for p in preds]
        row["error_all"] = [float(np.mean(p != y)) for p in preds]
        # the margin problem MPT names: a seen-class sample lost to one of the new classes
        to_new = sum(int(np.sum(f & (p >= V1_CLASSES))) for f, p in zip(flips, preds))
        row["flips_to_new_classes"] = to_new / max(1, sum(int(f.sum()) for f in flips))
    order = [Run(0, terms).label() for terms in RECIPES]
    return sorted(rows, key=lambda r: (order.index(r["row"]) if r["row"] in order else 9,
                                       r["row"]))


def new_class_markdown(setup: Setup, data: Data, teachers: dict, rows: list[dict],
                       command: str) -> str:
    """The report: setup, definitions and the seen/unseen table."""
    y = data.y_test
    seen = y < V1_CLASSES
    v1_error = float(np.mean(teachers["v1_test"][seen] != y[seen]))
    plain = next(r for r in rows if r["row"] == "plain")
    plain_seen = np.mean(plain["error"])
    model = {"mnist1d": "ConvNet1D", "mnist5k": "ConvNet2D", "digits": "MLP"}[setup.dataset]
    lines = [
        f"# Positive-congruent training with new classes: seen / unseen ({setup.dataset})", "",
        f"Command: `{command}` (CPU: {cpu_name()}).", "",
        f"MPT's setting (Ricci et al., AAAI 2026): v1 learns classes 0-{V1_CLASSES - 1} only "
        f"(a {V1_CLASSES}-output head), v2 all {NUM_CLASSES}. {model} with a cosine head; v1 "
        f"width {setup.v1_width}, {setup.v1_epochs} epochs on the {len(data.v1_subset)} samples "
        f"of classes 0-{V1_CLASSES - 1} in a {setup.v1_fraction:.2g} draw of the training split "
        f"(test error on those classes {v1_error:.2%}); v2 width {setup.v2_width}, "
        f"{setup.v2_epochs} epochs on all {len(data.y_train)} training samples; test "
        f"{int(seen.sum())} samples of seen classes, {int((~seen).sum())} of unseen ones "
        "(the cheap study's test setup, `pct_cheap_<dataset>_test.md`).", "",
        f"Distillation (FD rows) compares v2's logits of classes 0-{V1_CLASSES - 1} with v1's "
        "(regfree.pctraining's default rule for an old head with fewer classes, "
        "`new_classes=\"ignore\"`, the same slice as MPT's code); rows marked *new classes: "
        "zero* (`FocalDistillationLoss(new_classes=\"zero\")`) give the classes v1 never saw "
        "probability zero in v1's softmax and compare all ten, so v2 also pays for the "
        "probability it moves from a seen-class sample to a new class. Samples of classes "
        f"{V1_CLASSES}-{NUM_CLASSES - 1} get no distillation term in either. The zero rule "
        "asks v2 for zero probability at the term's temperature: at T = 100 that needs logit "
        "gaps of thousands, which a cosine head (logits within ±16) cannot give, so the term "
        "stays large and outweighs the cross-entropy. "
        "Blends: v1's five-class logits combined with v2's by regfree.pctraining.fit_blend (v1 "
        "gives the classes it never saw probability 0), chosen per seed on "
        "validation (all classes) within the error budget the row names; v1 keeps running "
        "beside v2.", "",
        f"Test split, {plain['seeds']} seeds; mean ± std over seeds, in %. *Seen*: the classes "
        "v1 knows; NFR, its Wilson 95% CI (flips pooled over seeds), NFR / plain (pooled flips "
        "over plain's, 95% paired bootstrap interval), McNemar p (exact, negative flips against "
        "plain of the same seed) and PFR are all over seen-class samples. *Unseen*: v1 is always "
        "wrong there, so every correct v2 answer is a positive flip (PFR there = 1 - error). "
        "*To new classes*: the share of the seen-class negative flips that v2 assigns to a class "
        "v1 never saw.", "",
        "| row | error seen | Δ seen (points) | error unseen | error all | NFR seen | "
        "NFR 95% CI | NFR / plain [95% CI] | McNemar p (NFR) | PFR seen | to new classes |",
        "|---|---|---:|---|---|---|---|---|---:|---|---:|",
    ]
    for r in rows:
        low, high = r["nfr_ci_pooled"]
        ratio_low, ratio_high = r["nfr_vs_plain_ci"]
        lines.append(
            f"| {r['row']} | {mean_std(r['error'])} | "
            f"{(np.mean(r['error']) - plain_seen) * 100:+.2f} | {mean_std(r['error_unseen'])} | "
            f"{mean_std(r['error_all'])} | {mean_std(r['nfr'])} | [{low:.2%}, {high:.2%}] | "
            f"{r['nfr_vs_plain']:.2f} [{ratio_low:.2f}, {ratio_high:.2f}] | "
            f"{fmt_p(r['mcnemar_p_nfr'])} | {mean_std(r['pfr'])} | "
            f"{r['flips_to_new_classes']:.0%} |")
    plain_flips = round(np.mean(plain["nfr"]) * plain["seeds"] * int(seen.sum()))
    lines += ["", f"Plain v2's seen-class negative flips, pooled over its {plain['seeds']} seeds: "
              f"{plain_flips} (the resolution of every NFR / plain above)."]
    return "\n".join(lines) + "\n"
