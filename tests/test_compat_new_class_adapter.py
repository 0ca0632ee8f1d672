"""The temperature rule of experiments/compat_new_class_adapter.py, on made-up seed files."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from compat_new_class_adapter import TEMPERATURES, gaps, pick, row_name  # noqa: E402


def seed_file(unseen: dict, seen: dict, old: float = 0.5) -> dict:
    """One seed's rows: new/old top-1 per temperature for unseen and seen queries."""
    rows = {row_name((t, 0.0)): {"unseen": {"old/old top1": old, "new/old top1": unseen[t]},
                          "seen": {"old/old top1": old, "new/old top1": seen[t]}}
            for t in TEMPERATURES}
    return {"rows": rows}


def test_pick_takes_the_best_worst_unseen_gap_over_datasets_and_seeds():
    flat = {t: 0.6 for t in TEMPERATURES}
    # 0.1 is best on average but collapses on one seed; 0.02 is never below v1
    collapse = flat | {0.1: 0.2}
    strong = flat | {0.1: 0.95}
    per_dataset = {"a": [seed_file(strong, flat), seed_file(collapse, flat)],
                   "b": [seed_file(strong, flat)]}
    assert gaps(per_dataset["a"], row_name((0.1, 0.0)), "unseen") == pytest.approx([45.0, -30.0])
    assert pick(per_dataset) == (0.05, 0.0)  # the others tie: the largest of them


def test_pick_breaks_ties_by_the_seen_gap_then_the_larger_temperature():
    unseen = {t: 0.7 for t in TEMPERATURES} | {0.05: 0.703}  # within 0.5 points of the rest
    seen = {t: 0.6 for t in TEMPERATURES} | {0.02: 0.65}
    assert pick({"a": [seed_file(unseen, seen)]}) == (0.02, 0.0)
    even = {t: 0.6 for t in TEMPERATURES}
    assert pick({"a": [seed_file(unseen, even)]}) == (max(TEMPERATURES), 0.0)
