"""Tables of experiments/compat_chain.py: every seed file of a dataset into one markdown report.

Read by ``compat_chain.py --combine``; writes experiments/results/compat_chain_<dataset>.md and
the seeds' results together in compat_chain_<dataset>.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from common import mean_std
from regfree.reporting import write_text_atomic

RESULTS = Path(__file__).parent / "results"
METRICS = (("top1", "top-1"), ("mAP", "mAP@100"))


def load_seeds(name: str, missing_ok: bool = False) -> list[dict]:
    files = sorted(RESULTS.glob(f"compat_chain_{name}.seed*.json"))
    seeds = [json.loads(path.read_text()) for path in files]
    if not seeds and not missing_ok:
        raise SystemExit(f"no seed files experiments/results/compat_chain_{name}.seed*.json; "
                         "run the seeds first")
    return sorted(seeds, key=lambda r: r["seed"])


def matrices(seeds: list[dict], family: str, metric: str) -> np.ndarray:
    """``(seeds, T, T)`` matrices of one chain family, NaN above the diagonal."""
    return np.array([s["chain"][family]["matrices"][metric] for s in seeds], dtype=float)


def worst_pair(matrix) -> float:
    """The lowest C[i][j] − C[j][j] over pairs i > j: how far the worst later version's search of
    an earlier gallery lies above that version's own search (negative: below)."""
    return min(matrix[i][j] - matrix[j][j] for i in range(len(matrix)) for j in range(i))


def chain_summary(seeds: list[dict]) -> list[str]:
    families = list(seeds[0]["chain"])
    own = {f: np.diagonal(matrices(seeds, f, "top1"), axis1=1, axis2=2) for f in families}
    lines = ["| family | AC top-1 | AC mAP@100 | AM top-1 | worst C[i][j] − C[j][j] (top-1) "
             "| new/new cost v2, v3, v4 (points) | goal (AC = 1, cost < 1) |",
             "|---|---|---|---|---|---|---|"]
    for family in families:
        ac = [s["chain"][family]["AC"]["top1"] for s in seeds]
        ac_map = [s["chain"][family]["AC"]["mAP"] for s in seeds]
        am = [s["chain"][family]["AM"]["top1"] for s in seeds]
        m = matrices(seeds, family, "top1")
        worst = [worst_pair(seed_matrix) for seed_matrix in m]
        cost = 100 * (own["independent"] - own[family])[:, 1:]  # v1 is shared (or simplex)
        costs = ", ".join(f"{c:+.1f}" for c in cost.mean(axis=0))
        met = all(a == 1.0 for a in ac) and bool((cost.mean(axis=0) < 1.0).all())
        verdict = "n/a (reference)" if family == "independent" else ("met" if met else "missed")
        lines.append(f"| {family} | {mean_std(ac, 1.0, 2)} | {mean_std(ac_map, 1.0, 2)} | "
                     f"{mean_std(am, digits=1)} | {mean_std(worst, digits=1)} | {costs} | "
                     f"{verdict} |")
    return lines


def candidate_scores(seeds: list[dict], family: str) -> dict:
    """What the pick rule reads of one family: AC (top-1, mAP) per seed and the mean new/new
    cost in points at v2, v3, v4 against the independent family of the same seeds."""
    own = {f: np.diagonal(matrices(seeds, f, "top1"), axis1=1, axis2=2)
           for f in ("independent", family)}
    cost = 100 * (own["independent"] - own[family])[:, 1:].mean(axis=0)
    return {"ac": [s["chain"][family]["AC"]["top1"] for s in seeds],
            "ac_map": [s["chain"][family]["AC"]["mAP"] for s in seeds],
            "worst_cost": float(cost.max())}


def candidate_order(candidate: dict) -> tuple[float, int, int]:
    """(weight, simplicity rank, 1 if not the first temperature) of a sweep candidate: an L2
    one (``l2_weight``, head weights equal or oldest) or a contrastive one (``weight``, ``rank``
    0 without heads, 1 with, ``temperature``)."""
    if "l2_weight" in candidate:
        return candidate["l2_weight"], int(candidate["head_weights"] != "equal"), 0
    return (candidate["weight"], candidate["rank"],
            int(candidate.get("temperature", 0.1) != 0.1))


def with_other_temperatures(seeds: list[dict], name: str) -> list[dict]:
    """The contrastive validation seeds with the candidates of the sweeps at other temperatures
    (compat_chain_<name>_t<T>.seed*.json, same seeds and independent reference) merged in."""
    others = {}
    for path in sorted(RESULTS.glob(f"compat_chain_{name}_t*.seed*.json")):
        other = json.loads(path.read_text())
        if "seconds" in other:
            others.setdefault(other["seed"], []).append(other)
    if not seeds or not all(s["seed"] in others for s in seeds):
        return seeds
    for seed in seeds:
        for other in others[seed["seed"]]:
            seed["chain"].update({k: v for k, v in other["chain"].items() if k != "independent"})
            seed["candidates"].update(other["candidates"])
            seed.setdefault("commands", [seed["command"]]).append(other["command"])
    return seeds


def pick(seeds: list[dict]) -> tuple[str, str]:
    """The validation sweep's choice and the rule step that chose it.

    Rule (fixed before the sweep was run; the same for the L2 sweep and the contrastive one):
    (1) a candidate meets the goal when its top-1 AC is 1 on every seed and its mean new/new
    cost is under 1 point at each of v2, v3, v4; pick the one with the smallest weight, then
    the simpler candidate (equal head weights before oldest-weighted; contrastive before all
    heads + contrastive; temperature 0.1 before the temperatures added later). (2) If none meets it, among those with every mean cost under 1 point
    pick the highest mean top-1 AC (ties: higher mean mAP AC, then the smaller weight, then the
    simpler candidate). (3) If no candidate costs under 1 point, the lowest worst mean cost.
    """
    candidates = seeds[0]["candidates"]
    order = sorted(candidates, key=lambda f: candidate_order(candidates[f]))
    scores = {f: candidate_scores(seeds, f) for f in order}
    met = [f for f in order if all(a == 1.0 for a in scores[f]["ac"])
           and scores[f]["worst_cost"] < 1.0]
    if met:
        return met[0], "(1) the smallest weight with AC = 1 on every seed at cost < 1 point"
    cheap = [f for f in order if scores[f]["worst_cost"] < 1.0]
    if cheap:
        best = max(cheap, key=lambda f: (np.mean(scores[f]["ac"]), np.mean(scores[f]["ac_map"]),
                                         -order.index(f)))
        return best, "(2) none meets the goal: the highest mean AC among costs < 1 point"
    best = min(order, key=lambda f: scores[f]["worst_cost"])
    return best, "(3) no candidate costs < 1 point: the lowest worst mean cost"


def chain_matrix(seeds: list[dict], family: str, metric: str = "top1") -> list[str]:
    m = matrices(seeds, family, metric)
    size = m.shape[1]
    names = [f"v{k + 1}" for k in range(size)]
    lines = ["| query \\ gallery | " + " | ".join(names) + " |", "|---" * (size + 1) + "|"]
    for i in range(size):
        cells = [mean_std(list(m[:, i, j]), digits=1) if j <= i else "" for j in range(size)]
        lines.append(f"| {names[i]} | " + " | ".join(cells) + " |")
    return lines


def new_class_table(seeds: list[dict]) -> list[str]:
    options = list(seeds[0]["new classes"])
    lines = ["| v2 training | queries | old/old top-1 | new/old top-1 | new/old − old/old | "
             "new/new top-1 | new/new cost vs independent | old/old mAP@100 | new/old mAP@100 "
             "| seeds new/old ≥ old/old |", "|---" * 10 + "|"]
    for option in options:
        for group in ("seen", "unseen"):
            def values(key: str, option: str = option, group: str = group) -> list[float]:
                return [s["new classes"][option][group][key] for s in seeds]

            gap = [n - o for n, o in zip(values("new/old top1"), values("old/old top1"))]
            cost = [i - n for i, n in zip(values("new/new top1", "independent"),
                                          values("new/new top1"))]
            met = sum(g >= 0 for g in gap)
            lines.append(" | ".join([
                f"| {option}", group, mean_std(values("old/old top1"), digits=1),
                mean_std(values("new/old top1"), digits=1), mean_std(gap, digits=1),
                mean_std(values("new/new top1"), digits=1), mean_std(cost, digits=1),
                mean_std(values("old/old mAP"), digits=1), mean_std(values("new/old mAP"), digits=1),
                f"{met}/{len(seeds)}"]) + " |")
    return lines


def queries_sentence(first: dict) -> str:
    if first.get("split", "test") == "val":
        return ("Retrieval (validation, the test split unread): queries = a stratified 20% of "
                "the training split drawn with the seed, gallery = the rest of the training "
                "split (what the versions train on) embedded by the gallery's version")
    return ("Retrieval: queries = the test split, gallery = the whole training split embedded "
            "by the gallery's version")


def l2_sentence(first: dict) -> str:
    pull = ("- all heads + L2: as all heads, plus `EmbeddingRegressionLoss(normalize=True)` "
            "pulling v_k's unit embeddings onto v_(k-1)'s")
    if first.get("split", "test") == "val":
        return (pull + " at weight w (`+ L2 w<w>`); `oldest weighted`: the heads of v1 .. "
                "v_(k-1) get head_weights k-1, ..., 1 (the oldest counts most).")
    if first.get("head_weights", "equal") == "oldest":
        return pull + f" (weight {first['setting']['l2_weight']:g}), head_weights k-1, ..., 1."
    return pull + f" (weight {first['setting']['l2_weight']:g})."


def family_lines(first: dict) -> list[str]:
    """One line per family (or sweep candidate group) present in the seed files."""
    families = list(first["chain"])
    lines = ["- independent: each version trained alone (the new/new reference)."]
    if "last head" in families:
        lines.append("- last head: v_k with BCT through v_(k-1)'s head only.")
    if "all heads" in families or any("+ L2" in f for f in families):
        lines.append("- all heads: v_k with one BackwardCompatibleLoss over the heads of v1 .. "
                     "v_(k-1), equal head_weights.")
    if any("+ L2" in f for f in families):
        lines.append(l2_sentence(first))
    if "simplex" in families:
        lines.append("- simplex: every version, v1 included, trained alone with the same fixed "
                     "d-simplex head (`simplex_head`, 9-d embeddings), no influence loss.")
    if any(f.startswith(("nca", "all heads + nca")) for f in families):
        setting = first["setting"]
        weight = (" at weight w (`w<w>`), temperature 0.1" if first.get("split") == "val" else
                  f" (weight {setting['contrastive_weight']:g}, temperature "
                  f"{setting['temperature']:g})")
        lines += [f"- nca: v_k trained with `CrossModelNCALoss`{weight}: each query's nearest "
                  "neighbours among every earlier version's embeddings of v_k's whole training "
                  "data (itself left out) should share its class; equal version_weights; no "
                  "influence loss.",
                  "- all heads + nca: the same plus BCT over every earlier head (one "
                  "BackwardCompatibleLoss, equal head_weights, weight 1)."]
    if any("adapters" in f for f in families):
        lines.append("- independent + mlp adapters (with labels): every version trained alone; "
                     "v_k queries v_j's gallery through `fit_adapter(kind=\"mlp\"[, labels=])` "
                     "fitted on v_k's training data embedded by both (see "
                     "`compat_chain_adapters.py`), its own gallery natively.")
    if any(f.startswith("nca + mlp adapters") for f in families):
        lines.append("- nca + mlp adapters with labels: the nca family's versions, their queries "
                     "mapped into every earlier space by the labelled adapters as above.")
    if any("contrastive" in f for f in families):
        setting = first["setting"]
        weight = (" at weight w (`w<w>`) and temperature T (` T<T>`; none: 0.1)"
                  if first.get("split") == "val" else
                  f" (weight {setting['contrastive_weight']:g}, temperature "
                  f"{setting['temperature']:g})")
        lines += [f"- contrastive: v_k trained with `CrossModelContrastiveLoss`{weight}, "
                  "onto the embeddings that every "
                  "earlier version (v1 .. v_(k-1), equal version_weights) gives v_k's training "
                  "data; no influence loss.",
                  "- all heads + contrastive: the same plus BCT over every earlier head (one "
                  "BackwardCompatibleLoss, equal head_weights, weight 1)."]
    return lines


def loss_of(first: dict) -> Optional[str]:
    """The term a contrastive-script file sweeps or tests ("nca" or "contrastive"), else None."""
    for loss in ("nca", "contrastive"):
        if any(f.startswith((loss, f"all heads + {loss}")) for f in first["chain"]):
            return loss
    return None


def is_contrastive(first: dict) -> bool:
    return loss_of(first) is not None


def contrastive_choice(first: dict) -> list[str]:
    """How the contrastive (or NCA) weight of a test file was chosen (the dataset's validation
    sweep)."""
    name = f"{first['dataset']}_val_{loss_of(first)}"
    validation = with_other_temperatures(
        [s for s in load_seeds(name, missing_ok=True) if "seconds" in s], name)
    if not validation:
        return [f"The {loss_of(first)} weight was not chosen on validation data (no sweep "
                "yet).", ""]
    family, _ = pick(validation)
    chosen = validation[0]["candidates"][family]
    here = (first["setting"]["contrastive_weight"] == chosen["weight"]
            and first["setting"]["temperature"] == chosen.get("temperature", 0.1))
    return [f"{loss_of(first).capitalize()} weight chosen on validation data (seeds "
            f"{[s['seed'] for s in validation]}, `compat_chain_{name}.md`): **{family}**; "
            + (f"this file's {loss_of(first)} families run at that weight (the pick is the "
               f"{chosen['family']} family; the other is shown at the same weight)." if here
               else "this file's weight or temperature is not the pick's (shown for "
               "comparison)."), ""]


def choice_lines(seeds: list[dict]) -> list[str]:
    """How the chain's L2 weight was chosen: the validation pick (this file's, or the one the
    dataset's validation sweep made) and whether this file holds it."""
    first = seeds[0]
    if first.get("split", "test") == "val":
        family, step = pick(seeds)
        grid = ("Grid, in the order it grew: weights 0.5, 1, 2 at temperature 0.1; 4 and 8 added "
                "after digits' first sweep picked 2 (its edge); temperatures 0.05 and 0.2 at "
                "weights 1, 2, 4 added after the temperature-0.1 picks missed AC = 1 on every "
                "dataset. The rule was not changed. " if loss_of(first) == "contrastive" else
                "Grid (fixed before the sweep ran): weights 1, 2, 4, 8 at temperature 0.1. "
                if loss_of(first) == "nca" else "")
        return [grid + "**Pick** (rule fixed before the sweep ran, `compat_chain_report.pick`: the "
                "smallest weight with AC = 1 on every seed at a mean cost < 1 point at each "
                "of v2..v4, the simpler candidate first; else the highest mean AC among costs "
                f"< 1 point; else the lowest cost): **{family}**, by rule {step}. Its test "
                + ("numbers: `compat_chain_contrastive.py --weight W` (`--loss nca` for an "
                   "NCA pick; `--temperature T` unless 0.1; 3 seeds)." if
                   is_contrastive(first) else
                   "numbers: `--split test --l2-weight W` (3 seeds; `--head-weights oldest` for "
                   "an oldest-weighted pick)."), ""]
    if is_contrastive(first):
        return contrastive_choice(first)
    if any("adapters" in f for f in first["chain"]):
        if first.get("adapter temperature") is not None:
            return [f"Labelled adapters at temperature {first['adapter temperature']:g}, anchor "
                    f"weight {first.get('adapter anchor weight', 0):g}, given on the command line (validated "
                    "choices: `compat_new_class_adapter_val*.md` for the library's defaults, "
                    "`compat_chain_<dataset>_adapters_val.md` per dataset).", ""]
        return ["Adapters: library defaults, nothing chosen on validation.", ""]
    name = f"{first['dataset']}_val"
    validation = [s for s in load_seeds(name, missing_ok=True) if "seconds" in s]
    if not validation:
        return ["The L2 weight was not chosen on validation data (no validation sweep yet).", ""]
    family, _ = pick(validation)
    chosen = validation[0]["candidates"][family]
    here = (first["setting"]["l2_weight"] == chosen["l2_weight"]
            and first.get("head_weights", "equal") == chosen["head_weights"])
    return [f"L2 weight chosen on validation data (seeds {[s['seed'] for s in validation]}, "
            f"`compat_chain_{name}.md`): **{family}**; "
            + ("this file's all heads + L2 family is that pick." if here else
               "this file's all heads + L2 family is not the pick (shown for comparison)."), ""]


def merge_existing(seeds: list[dict], name: str) -> list[str]:
    """Add to each contrastive test seed the families and new-class options already measured
    for the same seed in compat_chain_<dataset>.seed*.json (same v1, not rerun); returns the
    lines that say so, with how far the two independent references differ."""
    dataset = seeds[0]["dataset"]
    existing = {s["seed"]: s for s in load_seeds(dataset, missing_ok=True) if "new classes" in s}
    if not all(s["seed"] in existing for s in seeds):
        return [f"(compat_chain_{dataset} has not every seed of this file: its families are "
                "not shown.)", ""]
    gaps = []
    for seed in seeds:
        other = existing[seed["seed"]]
        gaps.append(np.nanmax(np.abs(
            np.array(seed["chain"]["independent"]["matrices"]["top1"], dtype=float)
            - np.array(other["chain"]["independent"]["matrices"]["top1"], dtype=float))))
        for part in ("chain", "new classes") if seed["new classes"] else ("chain",):
            ours = seed[part]
            seed[part] = {"independent": ours["independent"],
                          **{k: v for k, v in other[part].items() if k != "independent"},
                          **{k: v for k, v in ours.items() if k != "independent"}}
    return [f"Families and new-class options other than the {loss_of(seeds[0])} ones come from "
            f"`compat_chain_{dataset}.seed*.json` (same seeds, same v1, not rerun); the "
            f"independent reference retrained here differs from theirs by at most "
            f"{100 * max(gaps):.2f} points in any top-1 cell.", ""]


def render(seeds: list[dict], combine_command: str, notes: Optional[list[str]] = None) -> str:
    first = seeds[0]
    dataset = first["dataset"]
    setting = first["setting"]
    minutes = [s.get("seconds", float("nan")) / 60 for s in seeds]
    commands = sorted({c for s in seeds for c in s.get("commands", [s["command"]])})
    lines = [f"# Compatibility that lasts on {dataset}: a four-version chain and new classes", "",
             "Commands (one process per seed, then the table):", ""]
    lines += [f"    {c}" for c in commands] + [f"    {combine_command}", ""]
    lines += [f"Seeds {[s['seed'] for s in seeds]}, {np.nanmean(minutes):.1f} min a seed on "
              f"{first['cpu']} (OMP_NUM_THREADS=1, the machine shared). Values in %, mean ± "
              "std over seeds.", "",
              queries_sentence(first) + ", cosine similarity; top-1 = the nearest gallery item has "
              "the query's label; mAP@100 over each query's 100 nearest items. C[i][j] = "
              "version-i queries on the version-j gallery; AC = share of pairs i > j with "
              "C[i][j] ≥ C[j][j] (every later version searches every earlier gallery at least "
              "as well as that version itself); AM = mean of the filled entries.", "",
              f"Setting: `{json.dumps(setting)}`", "",
              f"## Chain v1 -> v2 -> v3 -> v4 (widths {setting['widths']}, training shares "
              f"{setting['shares']})", "",
              *family_lines(first),
              "- new/new cost = independent C[k][k] − the family's C[k][k] (positive = worse); "
              "the simplex family's v1 is its own, the others share v1.", ""]
    lines += (notes or []) + chain_summary(seeds) + [""] + choice_lines(seeds)
    for family in first["chain"]:
        lines += [f"### {family}: top-1", ""] + chain_matrix(seeds, family) + [""]
    if not first["new classes"]:
        return "\n".join(lines)
    lines += [f"## New classes: v1 on classes 0-{setting['seen_classes'] - 1}, v2 on all ten", "",
              f"v1 = the chain's v1 size on its data part restricted to classes "
              f"< {setting['seen_classes']}; v2 = the chain's v2 size and data (independent v2 is "
              "the chain's). extend_head rows: class means of v1's embeddings of v2's data "
              "(BCT's recipe) or fitted (`rows=\"fit\"`: directions trained by cross-entropy on "
              "those embeddings, old rows fixed). Margin: `NewClassMargin` adds the offset to the "
              "new classes' logits in the influence loss (+: MPT's sign, old classes must win by "
              "more; −: new-class samples pulled harder onto their rows). Unseen left out: "
              "`unseen=\"ignore\"`. + L2: class-mean rows plus `EmbeddingRegressionLoss("
              "normalize=True)` onto v1's embeddings of v2's data (every class). Simplex: v1 and v2 trained with the fixed simplex head (its "
              "own v1). Contrastive onto v1: `CrossModelContrastiveLoss` onto v1's embeddings of "
              "v2's data (every class: v1 embeds classes it never saw), at the chain's "
              "contrastive weight; + class-mean rows: with BCT through those rows too. "
              "Goal: unseen queries on v1's gallery at least as well as v1 searches "
              "them (new/old − old/old ≥ 0).", ""]
    lines += new_class_table(seeds) + [""]
    return "\n".join(lines)


def combine(name: str, combine_command: str) -> str:
    """Write compat_chain_<name>.md and .json from the seed files of ``name`` (a dataset, or a
    dataset and a tag such as ``mnist1d_l2w3``)."""
    seeds = load_seeds(name)
    complete = [s for s in seeds if "new classes" in s]
    if len(complete) < len(seeds):
        missing = [s["seed"] for s in seeds if "new classes" not in s]
        print(f"seeds {missing} have no new-class results yet (still running?): left out")
    notes = merge_existing(complete, name) if "_cw" in name or "_nw" in name else []
    if name.endswith("_val_contrastive"):
        complete = with_other_temperatures(complete, name)
    markdown = render(complete, combine_command, notes)
    write_text_atomic(RESULTS / f"compat_chain_{name}.md", markdown)
    write_text_atomic(RESULTS / f"compat_chain_{name}.json",
                      json.dumps({"dataset": complete[0]["dataset"], "seeds": complete}, indent=1))
    return markdown
