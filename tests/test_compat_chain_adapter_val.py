"""The choice rule of experiments/compat_chain_adapter_val.py, on made-up seed files."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from compat_chain_adapter_val import DEFAULT, OPTIONS, name, pick  # noqa: E402
from compat_chain_report import worst_pair  # noqa: E402


def seed_file(ac: dict, worst: dict) -> dict:
    return {"options": {name(o): {"AC": ac.get(o, 0.5), "worst pair": worst.get(o, -1.0)}
                        for o in OPTIONS}}


def test_worst_pair_is_the_lowest_later_minus_earlier_own_search():
    matrix = [[0.90, None, None], [0.92, 0.95, None], [0.91, 0.94, 0.97]]
    assert worst_pair(matrix) == pytest.approx(-0.01)  # v3 on v2, a point below


def test_pick_takes_the_highest_mean_ac_then_the_worst_pair_then_the_default():
    other = next(o for o in OPTIONS if o != DEFAULT)
    best_ac = [seed_file({other: 1.0}, {}), seed_file({other: 0.5}, {})]  # mean 0.75 > 0.5
    assert pick(best_ac) == other
    tie = [seed_file({o: 1.0 for o in OPTIONS}, {other: 0.4, DEFAULT: 0.2})]
    assert pick(tie) == other
    assert pick([seed_file({o: 1.0 for o in OPTIONS}, {})]) == DEFAULT
