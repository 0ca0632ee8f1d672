"""Training-free positive-congruent updates on the positive-congruent study's setup (mnist1d).

v1 and the plain v2s are the study's (experiments/pct_study: same setup, seeds and data), so
the rows read beside results/pct_mnist1d.md. Rows, scored on the test split after choosing
on the validation split:
  plain          v2 alone.
  blend          regfree.pctraining.fit_blend on validation scores (weighted probabilities or a
                 confidence gate), with no error increase allowed, and with +0.5 points allowed.
  fine-tuned v2  v1's architecture fine-tuned from v1 on the whole training split (the setting
                 BCWI needs), alone and with BCWI's alpha chosen on validation (no error
                 increase allowed).
NFR / plain: pooled flips over seeds with a 95% paired bootstrap interval; p: exact McNemar on
negative flips against the row's own plain. Serving cost: forward time per sample over v2's.

Run:  OMP_NUM_THREADS=1 .venv/bin/python experiments/posthoc_blend.py --seeds S   (one seed each,
      several processes), then --combine; --quick for a smoke run.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from common import cpu_name, mean_std
from pct_study.analysis import ratio_interval
from pct_study.models import cosine_model
from pct_study.runner import train_v1
from pct_study.settings import QUICK, Setup, load_data
from regfree.metrics import discordant_pairs, flip_totals, mcnemar_exact_p
from regfree.pctraining import fit_blend, interpolation_sweep
from regfree.pctraining.interpolation import interpolate_weights
from regfree.reporting import write_text_atomic
from regfree.training import fit_adam_cosine, predict_logits

OUTPUT = Path(__file__).parent / "output" / "posthoc_blend"
BUDGETS = (0.0, 0.005)


def forward_seconds(model: torch.nn.Module, x: np.ndarray, repeats: int = 3) -> float:
    """Best-of-``repeats`` time to predict ``x`` (per sample)."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        predict_logits(model, x)
        best = min(best, time.perf_counter() - start)
    return best / len(x)


def run_seed(setup: Setup, seed: int) -> dict:
    torch.set_num_threads(1)
    data = load_data(setup)
    v1 = train_v1(setup, data, 0)  # the study's v1 (seed 0 of its ensemble)
    v2 = cosine_model(setup.v2_width, setup, seed)
    fit_adam_cosine(v2, (data.x_train, data.y_train), epochs=setup.v2_epochs, lr=setup.lr,
                    batch_size=setup.batch_size, seed=seed, progress=False)
    tuned = copy.deepcopy(v1)
    fit_adam_cosine(tuned, (data.x_train, data.y_train), epochs=setup.v2_epochs, lr=setup.lr,
                    batch_size=setup.batch_size, seed=seed, progress=False)
    out = {"y_test": data.y_test}
    logits = {name: {split: predict_logits(model, x) for split, x in
                     (("val", data.x_val), ("test", data.x_test))}
              for name, model in (("v1", v1), ("v2", v2), ("tuned", tuned))}
    out["v1"] = logits["v1"]["test"].argmax(1)
    out["plain"] = logits["v2"]["test"].argmax(1)
    out["tuned"] = logits["tuned"]["test"].argmax(1)
    chosen = {}
    for budget in BUDGETS:
        blend = fit_blend(data.y_val, logits["v1"]["val"], logits["v2"]["val"],
                          max_error_increase=budget)
        out[f"blend_{budget}"] = blend.predict(logits["v1"]["test"], logits["v2"]["test"])
        chosen[f"blend_{budget}"] = blend.to_dict()
    choice = interpolation_sweep(v1, tuned, (data.x_val, data.y_val))
    out["bcwi"] = predict_logits(interpolate_weights(v1, tuned, choice.alpha),
                                 data.x_test).argmax(1)
    chosen["bcwi"] = {"alpha": choice.alpha}
    cost = {name: forward_seconds(model, data.x_test) for name, model in
            (("v1", v1), ("v2", v2), ("tuned", tuned))}
    return {"seed": seed, "arrays": out, "chosen": chosen, "seconds_per_sample": cost}


ROWS = (  # (label, predictions key, plain key, serving cost as a function of times)
    ("plain v2 (width {w})", "plain", "plain", lambda c: 1.0),
    ("blend, no error increase", "blend_0.0", "plain", lambda c: (c["v1"] + c["v2"]) / c["v2"]),
    ("blend, +0.5 points allowed", "blend_0.005", "plain",
     lambda c: (c["v1"] + c["v2"]) / c["v2"]),
    ("fine-tuned v1 (width {w1})", "tuned", "tuned", lambda c: c["tuned"] / c["v2"]),
    ("BCWI on the fine-tuned v1", "bcwi", "tuned", lambda c: c["tuned"] / c["v2"]),
)


def table(setup: Setup, seeds: list[dict]) -> str:
    y = seeds[0]["arrays"]["y_test"]
    old = seeds[0]["arrays"]["v1"]
    lines = ["| v2 | test error % | NFR % | NFR / its plain [95%] | p (NFR) | training | "
             "serving cost |", "|---|---:|---:|---:|---:|---|---:|"]
    for label, key, plain_key, cost in ROWS:
        totals = [flip_totals(y, old, s["arrays"][key]) for s in seeds]
        flips = np.sum([(old == y) & (s["arrays"][key] != y) for s in seeds], axis=0)
        plain = np.sum([(old == y) & (s["arrays"][plain_key] != y) for s in seeds], axis=0)
        ratio = flips.sum() / max(plain.sum(), 1)
        if key == plain_key:
            ratio_cell, p_cell = "1.00", "-"
        else:
            low, high = ratio_interval(flips.astype(float), plain.astype(float))
            b, c = discordant_pairs(np.concatenate([(old == y) & (s["arrays"][key] != y)
                                                    for s in seeds]),
                                    np.concatenate([(old == y) & (s["arrays"][plain_key] != y)
                                                    for s in seeds]))
            ratio_cell, p_cell = f"{ratio:.2f} [{low:.2f}, {high:.2f}]", f"{mcnemar_exact_p(b, c):.1e}"
        training = {"plain": "one training", "tuned": "one fine-tuning"}.get(
            key, "none (v1 and v2 as they are)" if key.startswith("blend") else "none (alpha on val)")
        serving = np.mean([cost(s["seconds_per_sample"]) for s in seeds])
        lines.append(f"| {label.format(w=setup.v2_width, w1=setup.v1_width)} | "
                     f"{mean_std([t.error_rate_new for t in totals])} | "
                     f"{mean_std([t.nfr for t in totals])} | {ratio_cell} | {p_cell} | "
                     f"{training} | {serving:.2f}x |")
    return "\n".join(lines)


def save_seed(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **result["arrays"])
    path.with_suffix(".json").write_text(json.dumps({k: v for k, v in result.items()
                                                     if k != "arrays"}))


def load_seed(path: Path) -> dict:
    with np.load(path) as arrays:
        result = {"arrays": {k: arrays[k] for k in arrays.files}}
    return {**result, **json.loads(path.with_suffix(".json").read_text())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", help="train and score these seeds")
    parser.add_argument("--combine", action="store_true",
                        help="write the table from every seed saved in the output folder")
    args = parser.parse_args(argv)
    setup = QUICK if args.quick else Setup()
    folder = OUTPUT.with_name(OUTPUT.name + ("_quick" if args.quick else ""))
    for seed in args.seeds or ([] if args.combine else list(setup.seeds)):
        start = time.perf_counter()
        save_seed(run_seed(setup, seed), folder / f"seed{seed}.npz")
        print(f"seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    if args.combine or not args.seeds:
        seeds = [load_seed(p) for p in sorted(folder.glob("seed*.npz"))]
        setup = replace(setup, seeds=tuple(s["seed"] for s in seeds))
        name = "posthoc_blend_quick.md" if args.quick else "posthoc_blend.md"
        quick = " --quick" if args.quick else ""
        text = ["# Training-free positive-congruent updates (mnist1d, the PC study's setup)\n",
                f"Commands: `OMP_NUM_THREADS=1 .venv/bin/python experiments/posthoc_blend.py"
                f"{quick} --seeds S` for S in {list(setup.seeds)} (one process each), then "
                f"`... --combine{quick}`. CPU: {cpu_name()}.\n",
                __doc__.split("\n\n", 1)[1].split("Run:")[0].strip() + "\n",
                table(setup, seeds) + "\n",
                "Choices per seed: " + json.dumps({s["seed"]: s["chosen"] for s in seeds}) + "\n"]
        out = Path(__file__).parent / "results" / name
        write_text_atomic(out, "\n".join(text))
        print(out.read_text())


if __name__ == "__main__":
    main()
