"""regfree.metrics against hand-computed cases, identities and every kind of bad input."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regfree.metrics import (
    FlipCounter,
    FlipReport,
    backward_error_compatibility,
    compatibility_score,
    discordant_pairs,
    error_rate,
    flip_matrix,
    flip_report,
    mcnemar_exact_p,
    negative_flip_impact,
    negative_flip_rate,
    positive_flip_rate,
    relative_nfr,
    wilson_interval,
)

# Hand-computed case (indices 0..9):
#   old right: 0 1 3 4 6 7          new right: 0 3 6 8 9        both right: 0 3 6
#   negative flips: 1 (0->1), 4 (1->2), 7 (2->0)    positive flips: 8, 9    both wrong: 2, 5
Y = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
OLD = [0, 0, 1, 1, 1, 0, 2, 2, 0, 1]
NEW = [0, 1, 1, 1, 2, 2, 2, 0, 2, 2]


def test_scalar_metrics_match_hand_computation():
    assert error_rate(Y, OLD) == 0.4
    assert error_rate(Y, NEW) == 0.5
    assert negative_flip_rate(Y, OLD, NEW) == 0.3
    assert positive_flip_rate(Y, OLD, NEW) == 0.2
    assert relative_nfr(Y, OLD, NEW) == pytest.approx(0.3 / (0.6 * 0.5))
    assert negative_flip_impact(Y, OLD, NEW) == pytest.approx(3 / 5)
    assert compatibility_score(Y, OLD, NEW) == pytest.approx(3 / 6)
    assert backward_error_compatibility(Y, OLD, NEW) == pytest.approx(2 / 5)


def test_relative_nfr_and_btc_on_a_second_case():
    y, old, new = [0, 1, 2, 2], [0, 1, 0, 2], [0, 2, 2, 2]
    assert relative_nfr(y, old, new) == pytest.approx(0.25 / (0.75 * 0.25))
    assert compatibility_score(y, old, new) == pytest.approx(1 - 0.25 / 0.75)


def test_flip_report_fields_match_hand_computation():
    report = flip_report(Y, OLD, NEW)
    assert report.n == 10
    assert (report.error_rate_old, report.error_rate_new) == (0.4, 0.5)
    assert (report.nfr, report.pfr) == (0.3, 0.2)
    assert report.nfi == pytest.approx(0.6)
    assert report.btc == pytest.approx(0.5)
    assert report.bec == pytest.approx(0.4)
    assert [(c.label, c.count, c.negative_flips, c.positive_flips) for c in report.per_class] == [
        (0, 3, 1, 0), (1, 3, 1, 0), (2, 4, 1, 2)]
    assert report.per_class[2].nfr == 0.25 and report.per_class[2].pfr == 0.5
    expected_confusion = np.zeros((3, 3), dtype=int)
    expected_confusion[0, 1] = expected_confusion[1, 2] = expected_confusion[2, 0] = 1
    np.testing.assert_array_equal(report.negative_flip_confusion, expected_confusion)
    # McNemar with 3 vs 2 discordant pairs: 2 * P(X <= 2 | 5, 1/2) = 2 * 16/32 -> capped at 1
    assert report.mcnemar_p == 1.0
    low, high = report.nfr_ci
    assert low == pytest.approx(0.1078, abs=1e-4) and high == pytest.approx(0.6032, abs=1e-4)


def test_report_names_are_exactly_the_issue_fields():
    assert list(flip_report(Y, OLD, NEW).to_dict()) == [
        "n", "error_rate_old", "error_rate_new", "nfr", "pfr", "relative_nfr", "nfi",
        "btc", "bec", "nfr_ci", "mcnemar_p", "per_class", "negative_flip_confusion", "class_names"]


def test_scores_are_reduced_by_argmax():
    eye = np.eye(3)
    old_scores = eye[OLD] * 5 + 0.1
    new_logits = eye[NEW] * 2 - 1
    assert flip_report(Y, old_scores, new_logits) == flip_report(Y, OLD, NEW)
    assert flip_report(Y, old_scores, NEW).num_classes == 3


def test_float_labels_with_integer_values_are_accepted():
    assert negative_flip_rate(np.array(Y, float), OLD, np.array(NEW, float)) == 0.3


def test_zero_denominators_give_nan_and_json_null():
    y = [0, 1, 1]
    perfect = flip_report(y, [1, 0, 0], y)  # new makes no errors; old never right
    assert perfect.nfr == 0.0 and perfect.pfr == 1.0
    for value in (perfect.relative_nfr, perfect.nfi, perfect.bec, perfect.btc):
        assert math.isnan(value)
    data = json.loads(perfect.to_json())
    assert data["relative_nfr"] is None and data["nfi"] is None and data["bec"] is None
    assert data["mcnemar_p"] == pytest.approx(0.25)  # 0 vs 3 discordant: 2 / 8
    unchanged = flip_report(y, y, y)
    assert unchanged.mcnemar_p == 1.0 and unchanged.nfr_ci[0] == 0.0


def test_empty_class_has_nan_rates():
    report = flip_report([0, 0], [0, 0], [0, 1], num_classes=3)
    assert report.per_class[2].count == 0 and math.isnan(report.per_class[2].nfr)
    assert json.loads(report.to_json())["per_class"][2]["nfr"] is None


def test_json_round_trip_and_summary():
    report = flip_report(Y, OLD, NEW)
    assert FlipReport.from_dict(json.loads(report.to_json())) == report
    text = report.summary(class_names=["cat", "dog", "eel"])
    assert "NFR 30.00%" in text and "cat (33.33%, 1 of 3)" in text


def test_most_regressed_orders_by_class_nfr():
    assert [c.label for c in flip_report(Y, OLD, NEW).most_regressed(2)] == [0, 1]


def test_mcnemar_matches_scipy_binomtest():
    from scipy.stats import binomtest

    for b, c in [(0, 1), (2, 10), (7, 7), (30, 12), (400, 455), (3, 20000), (51234, 50000)]:
        assert mcnemar_exact_p(b, c) == pytest.approx(binomtest(b, b + c).pvalue, rel=1e-7)
    assert mcnemar_exact_p(0, 0) == 1.0


def test_discordant_pairs_count_each_side_and_feed_mcnemar():
    plain = np.zeros(40, dtype=bool)
    plain[:12] = True  # 12 flips, 2 of them shared
    distilled = np.zeros(40, dtype=bool)
    distilled[10:13] = True
    assert discordant_pairs(plain, distilled) == (10, 1)
    assert discordant_pairs(distilled, plain) == (1, 10)
    assert mcnemar_exact_p(*discordant_pairs(plain, distilled)) == pytest.approx(
        2 * (1 + 11) / 2**11)


@pytest.mark.parametrize("a, b, match", [
    (np.array([1, 0]), np.array([True, False]), "events_a"),
    (np.array([True]), np.array([True, False]), "same samples"),
    (np.array([True]), np.array([[True]]), "events_b"),
])
def test_discordant_pairs_reject_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        discordant_pairs(a, b)


def test_wilson_interval_formula():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(50, 100)
    assert (low + high) / 2 == pytest.approx(0.5) and high - low == pytest.approx(0.1923, abs=1e-4)


def test_flip_matrix_is_pairwise_nfr():
    preds = {"v1": OLD, "v2": NEW, "v3": Y}
    matrix = flip_matrix(Y, preds)
    assert matrix.names == ("v1", "v2", "v3")
    for i, a in enumerate(preds):
        for j, b in enumerate(preds):
            assert matrix.nfr[i, j] == (0.0 if i == j else negative_flip_rate(Y, preds[a], preds[b]))
    assert matrix.to_dict()["v1"]["v2"] == 0.3 and matrix.to_dict()["v3"]["v1"] == 0.4


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    y = torch.tensor(Y)
    old_logits = torch.nn.functional.one_hot(torch.tensor(OLD), 3).float().requires_grad_()
    new = torch.tensor(NEW, dtype=torch.int32)
    assert flip_report(y, old_logits, new) == flip_report(Y, OLD, NEW)
    assert negative_flip_rate(y, old_logits.bfloat16(), new) == 0.3
    assert flip_matrix(y, {"a": old_logits, "b": new}).nfr[0, 1] == 0.3


def test_importing_metrics_does_not_import_torch():
    code = "import regfree.metrics, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("args, kwargs, match", [
    ((Y, OLD, NEW[:-1]), {}, r"new_pred: has 9 rows but y_true has 10"),
    ((Y[:-1], OLD, NEW[:-1]), {}, r"old_pred: has 10 rows but y_true has 9"),
    (([], [], []), {}, r"y_true: is empty"),
    ((Y, OLD, [-1] + NEW[1:]), {}, r"new_pred: class ids must be >= 0"),
    (([-1.0] + Y[1:], OLD, NEW), {}, r"y_true: class ids must be >= 0"),
    (([0.5] + Y[1:], OLD, NEW), {}, r"y_true: class ids must be integers"),
    ((Y, [np.nan] + OLD[1:], NEW), {}, r"old_pred: contains NaN or inf"),
    ((Y, np.full((10, 3), np.inf), NEW), {}, r"old_pred: scores contain NaN or inf"),
    ((Y, np.zeros((10, 3)), np.zeros((10, 4))), {}, r"new_pred: has 4 classes but old_pred has 3"),
    ((Y, np.zeros((10, 2)), NEW), {}, r"y_true: class id 2 is out of range for 2 classes"),
    ((Y, OLD, [5] + NEW[1:]), {"num_classes": 3}, r"new_pred: class id 5 is out of range"),
    ((Y, OLD, np.zeros((10, 3))), {"num_classes": 4}, r"new_pred: has 3 classes but num_classes"),
    ((Y, OLD, NEW), {"num_classes": 0}, r"num_classes: expected a positive integer"),
    ((np.zeros((10, 3)), OLD, NEW), {}, r"y_true: expected 1-D class ids, got shape"),
    ((Y, OLD, np.zeros((10, 2, 2))), {}, r"new_pred: expected 1-D class ids or 2-D scores"),
    ((Y, ["a"] * 10, NEW), {}, r"y_true: holds class ids but old_pred holds class names"),
    ((["a"] * 10, OLD, NEW), {}, r"old_pred: holds class ids but y_true holds class names"),
    ((["a"] * 10, ["a"] * 10, ["b"] * 10), {"class_names": ["a"]},
     r"new_pred: 10 values are not class names \(first: 'b'\); the classes are a"),
    ((["a"] * 10, ["a"] * 10, np.zeros((10, 2))), {},
     r"class_names: needed to read scores next to class-name labels"),
    ((Y, OLD, NEW), {"class_names": ["a", "a", "b"]}, r"class_names: 'a' appears more than once"),
    ((Y, OLD, NEW), {"num_classes": 5000}, r"num_classes: flip reports support up to 4096"),
])
def test_bad_input_raises_value_error_naming_the_argument(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        flip_report(*args, **kwargs)


def test_scalar_metrics_validate_too():
    with pytest.raises(ValueError, match="old_pred: contains NaN or inf"):
        negative_flip_rate(Y, [np.nan] + OLD[1:], NEW)
    with pytest.raises(ValueError, match="^pred: has 9 rows but y_true has 10$"):
        error_rate(Y, NEW[:-1])
    with pytest.raises(ValueError, match=r"predictions\['b'\]: has 9 rows"):
        flip_matrix(Y, {"a": OLD, "b": NEW[:-1]})
    with pytest.raises(ValueError, match="predictions: expected a non-empty mapping"):
        flip_matrix(Y, {})
    with pytest.raises(TypeError, match="flip_matrix: y_true comes first, then the {name: predictions} mapping"):
        flip_matrix({"a": OLD}, Y)


def test_validate_false_gives_the_same_numbers_on_good_input():
    assert flip_report(Y, OLD, NEW, validate=False) == flip_report(Y, OLD, NEW)
    assert negative_flip_rate(np.array(Y), np.array(OLD), np.array(NEW), validate=False) == 0.3


@st.composite
def flip_data(draw):
    k = draw(st.integers(1, 5))
    n = draw(st.integers(1, 60))
    ids = st.lists(st.integers(0, k - 1), min_size=n, max_size=n)
    return np.array(draw(ids)), np.array(draw(ids)), np.array(draw(ids))


@settings(max_examples=150, deadline=None)
@given(flip_data())
def test_identities_hold_for_any_data(data):
    y, old, new = data
    r = flip_report(y, old, new)
    assert r.error_rate_new - r.error_rate_old == pytest.approx(r.nfr - r.pfr, abs=1e-12)
    assert r.nfr_ci[0] <= r.nfr <= r.nfr_ci[1]
    assert 0.0 <= r.mcnemar_p <= 1.0
    if r.error_rate_old < 1:
        assert r.btc == pytest.approx(1 - r.nfr / (1 - r.error_rate_old))
    if r.error_rate_new > 0 and r.error_rate_old < 1:
        assert r.relative_nfr == pytest.approx(
            r.nfr / ((1 - r.error_rate_old) * r.error_rate_new))
        assert r.nfi == pytest.approx(r.nfr / r.error_rate_new)
    assert r.negative_flips == int(r.negative_flip_confusion.sum())
    assert sum(c.count for c in r.per_class) == r.n
    assert r.nfr == negative_flip_rate(y, old, new)
    assert r.pfr == positive_flip_rate(y, old, new)
    assert r.btc == compatibility_score(y, old, new) or math.isnan(r.btc)


def _exact_tail(k, m):
    """P(X <= k), X ~ Binomial(m, 1/2), as an exact fraction (big integers)."""
    from fractions import Fraction

    term, total = 1, 1
    for i in range(1, k + 1):
        term = term * (m - i + 1) // i
        total += term
    return Fraction(total, 2 ** m)


@pytest.mark.parametrize("m", [1, 2, 7, 100, 10**3, 10**4, 10**5, 10**6, 10**7, 10**8, 10**9])
def test_mcnemar_matches_scipy_binomtest_to_1e_9_up_to_1e9_pairs(m):
    from scipy.stats import binomtest

    for k in sorted({0, 1, m // 10, int(m / 2 - 3 * m**0.5), int(m / 2 - m**0.5),
                     (m - 1) // 2, m // 2}):
        if not 0 <= k <= m:
            continue
        for b, c in ((k, m - k), (m - k, k)):
            expected = binomtest(b, m).pvalue
            got = mcnemar_exact_p(b, c)
            if expected > 1e-300:
                assert got == pytest.approx(expected, rel=1e-9, abs=0), (b, c)
            else:  # scipy's tail underflows: ours must be tiny too, never a wrong large value
                assert got <= 1e-300, (b, c)


@pytest.mark.parametrize("k, m", [(0, 1000), (3, 1000), (10, 1010), (60, 1100), (4, 40),
                                  (2000, 5000), (24_000, 50_000)])
def test_mcnemar_deep_tail_is_exact(k, m):
    # Tails down to 1e-300 against exact big-integer sums (a relative error of 1e-9 at most).
    expected = float(min(1, 2 * _exact_tail(k, m)))
    assert mcnemar_exact_p(k, m - k) == pytest.approx(expected, rel=1e-9, abs=0)


def test_mcnemar_at_1e10_pairs_allocates_no_large_arrays():
    import tracemalloc

    tracemalloc.start()
    p = mcnemar_exact_p(5 * 10**9 - 10**5, 5 * 10**9 + 10**5)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # z = 2e5 / sqrt(1e10) = 2: two-sided normal tail 0.0455 (the exact value is a hair above)
    assert p == pytest.approx(0.04550, rel=1e-3)
    assert peak < 1 << 20
    assert mcnemar_exact_p(0, 10**10) == 0.0 and mcnemar_exact_p(10**10, 10**10) == 1.0
    with pytest.raises(TypeError, match="b: expected an integer count, got float"):
        mcnemar_exact_p(1.5, 2)
    with pytest.raises(ValueError, match="c: counts must be >= 0, got -1"):
        mcnemar_exact_p(1, -1)


NAMES = ["cat", "dog", "eel"]


def test_class_names_as_labels_and_predictions():
    named = flip_report([NAMES[c] for c in Y], [NAMES[c] for c in OLD], [NAMES[c] for c in NEW])
    by_id = flip_report(Y, OLD, NEW)
    assert named.class_names == ("cat", "dog", "eel") and by_id.class_names is None
    assert named.to_dict() | {"class_names": None} == by_id.to_dict()
    # --class-names order: eel first, and a class ("fox") that nobody uses
    ordered = flip_report([NAMES[c] for c in Y], [NAMES[c] for c in OLD],
                          [NAMES[c] for c in NEW], class_names=["eel", "cat", "dog", "fox"])
    assert [c.count for c in ordered.per_class] == [4, 3, 3, 0]
    assert ordered.nfr == 0.3 and math.isnan(ordered.per_class[3].nfr)
    assert FlipReport.from_dict(json.loads(ordered.to_json())) == ordered
    # a name only a prediction uses is a class the labels never show, not an error
    odd = flip_report(["cat", "cat"], ["cat", "cat"], ["cat", "zebra"])
    assert odd.class_names == ("cat", "zebra") and odd.per_class[1].count == 0
    assert odd.nfr == 0.5


def test_flip_counter_streams_class_names_with_a_fixed_order():
    counter = FlipCounter(class_names=NAMES)
    for lo in range(0, 10, 4):
        counter.update([NAMES[c] for c in Y[lo:lo + 4]], [NAMES[c] for c in OLD[lo:lo + 4]],
                       [NAMES[c] for c in NEW[lo:lo + 4]])
    assert counter.compute().to_dict() == flip_report(Y, OLD, NEW, class_names=NAMES).to_dict()
    with pytest.raises(ValueError, match="new_pred: holds class ids but y_true holds class "
                                         "names; give both as names or both as ids"):
        counter.update(["cat"], ["cat"], [1])
    counter.reset()
    with pytest.raises(ValueError, match=r"FlipCounter: no samples; call update\(\) with data"):
        counter.compute()
    with pytest.raises(ValueError, match="y_true: holds class names; pass class_names= to "
                                         "FlipCounter"):
        FlipCounter().update(["cat"], ["cat"], ["dog"])


def test_churn_needs_no_labels():
    from regfree.metrics import ChurnCounter, churn_report

    report = churn_report(OLD, NEW)
    assert (report.n, report.changed, report.churn) == (10, 6, 0.6)
    assert report.change_confusion.tolist() == [[0, 1, 2], [0, 0, 2], [1, 0, 0]]
    low, high = report.churn_ci
    assert (low, high) == wilson_interval(6, 10)
    a, b = ChurnCounter(), ChurnCounter()
    a.update(OLD[:3], NEW[:3])
    b.update(OLD[3:], NEW[3:])
    assert a.merge(b) is a
    merged = a.compute()
    assert merged.changed == 6 and merged.change_confusion.tolist() == [[0, 1, 2], [0, 0, 2],
                                                                         [1, 0, 0]]
    a.reset()
    with pytest.raises(ValueError, match=r"ChurnCounter: no samples; call update\(\) with data first"):
        a.compute()
    named = churn_report([NAMES[c] for c in OLD], [NAMES[c] for c in NEW])
    assert named.class_names == ("cat", "dog", "eel") and named.changed == 6


def test_group_counter_gives_flip_totals_per_group():
    from regfree.metrics import GroupCounter

    groups = [0, 1] * 5  # group 0: rows 0 2 4 6 8, group 1: rows 1 3 5 7 9
    counter = GroupCounter()
    counter.update(groups[:4], Y[:4], OLD[:4], NEW[:4])
    other = GroupCounter()
    other.update(groups[4:], Y[4:], OLD[4:], NEW[4:])
    totals = counter.merge(other).compute()
    assert totals[0].n == 5 and totals[0].negative_flips == 1 and totals[0].nfr == 0.2
    assert totals[1].n == 5 and totals[1].negative_flips == 2 and totals[1].nfr == 0.4
    assert counter.unchanged() == {0: 3, 1: 1}  # rows 0 2 6 and row 3 keep their prediction
