"""The new-class weight sweep of compat_chain_contrastive.py (--split val --new-classes): its
pick rule and its table.

Rule (written before the sweep ran): among the sweep's options (the term onto v1 alone, with
BCT through class-mean rows, or alone through a projection) and weights, keep those whose mean
new/new cost against the independent v2 (top-1, seen and unseen queries averaged) is under 1
point; pick the one with the highest mean unseen-class new/old − old/old top-1 over the seeds
(ties: the smaller weight, then the simpler option, in that order). The projection option was
added after a first digits run (seed 10) of the other two; the rule was not changed.
"""

from __future__ import annotations

import numpy as np

from common import mean_std

GROUPS = ("seen", "unseen")


def option_scores(seeds: list[dict], option: str) -> dict:
    """Per seed: unseen and seen new/old − old/old, and the new/new cost (points)."""
    def gap(seed: dict, group: str) -> float:
        row = seed["new classes"][option][group]
        return 100 * (row["new/old top1"] - row["old/old top1"])

    def cost(seed: dict) -> float:
        rows = seed["new classes"]
        return float(np.mean([100 * (rows["independent"][g]["new/new top1"]
                                     - rows[option][g]["new/new top1"]) for g in GROUPS]))

    return {"unseen": [gap(s, "unseen") for s in seeds], "seen": [gap(s, "seen") for s in seeds],
            "cost": [cost(s) for s in seeds]}


def pick(seeds: list[dict]) -> tuple[str, str]:
    """The option (name with its weight) the rule above chooses, and the rule step."""
    candidates = seeds[0]["candidates"]
    order = sorted(candidates, key=lambda o: (candidates[o]["weight"], candidates[o]["rank"]))
    scores = {o: option_scores(seeds, o) for o in order}
    cheap = [o for o in order if np.mean(scores[o]["cost"]) < 1.0]
    if cheap:
        best = max(cheap, key=lambda o: (np.mean(scores[o]["unseen"]), -order.index(o)))
        return best, "(1) the highest mean unseen new/old − old/old among costs < 1 point"
    return (min(order, key=lambda o: np.mean(scores[o]["cost"])),
            "(2) no option costs < 1 point: the lowest cost")


def markdown(seeds: list[dict], commands: list[str]) -> str:
    """The validation sweep's table and pick, or (a test run) every option's seen and unseen
    scores."""
    first = seeds[0]
    validation = first.get("split") == "val"
    lines = [f"# New classes on {first['dataset']}: the {first['loss']} options"
             + (", their weight on validation" if validation else
                f" at weight {first['setting']['contrastive_weight']:g}, test split"), "",
             "Commands:", ""] + [f"    {c}" for c in commands] + [
        "", f"Seeds {[s['seed'] for s in seeds]}; v1 on classes 0-"
        f"{first['setting']['seen_classes'] - 1} (the chain's v1 size and data part), v2 on all "
        "ten (the chain's v2 size and data part); "
        + ("queries = a stratified 20% of the training split (the test split unread), gallery "
           "= the rest" if validation else
           "queries = the test split, gallery = the whole training split")
        + " embedded by v1 (new/old) or v2 (new/new). Options: the term onto v1's embeddings "
        "of v2's data alone; with BCT through v1's head extended by class-mean rows; alone "
        "through a projection (v2 served as a `ProjectedModel`: a linear map of its embedding, "
        "trained by the term, queries v1's gallery; its own embedding serves its own "
        "gallery). Test runs add v2 trained alone with its queries mapped into v1's space by "
        "`fit_adapter(kind=\"mlp\")` fitted on v2's training data embedded by both models, "
        "copying v1's embeddings or, given the labels, for same-class neighbours among them (no "
        "weight to choose). Values: top-1 points, mean ± std over seeds.", ""]
    if not validation:
        from compat_chain_report import load_seeds, new_class_table

        name = f"{first['dataset']}_val_{first['loss']}_new"
        swept = load_seeds(name, missing_ok=True)
        chosen = (f"Picked on validation (seeds {[s['seed'] for s in swept]}, "
                  f"`compat_chain_{name}.md`): **{pick(swept)[0]}**; every option is shown at "
                  "that weight." if swept else "No validation sweep yet.")
        return "\n".join(lines + [chosen, ""] + new_class_table(seeds) + [""])
    choice, step = pick(seeds)
    lines += [__doc__.split("\n\n")[1].replace("\n", " "), "",
              "| option | unseen new/old − old/old | seen new/old − old/old | new/new cost |",
              "|---|---:|---:|---:|"]
    candidates = first["candidates"]
    for option in sorted(candidates, key=lambda o: (candidates[o]["weight"],
                                                    candidates[o]["rank"])):
        s = option_scores(seeds, option)
        lines.append(f"| {option} | {mean_std(s['unseen'], scale=1.0, digits=1)} | "
                     f"{mean_std(s['seen'], scale=1.0, digits=1)} | "
                     f"{mean_std(s['cost'], scale=1.0, digits=1)} |")
    lines += ["", f"**Pick**: **{choice}**, by rule {step}.", ""]
    return "\n".join(lines)
