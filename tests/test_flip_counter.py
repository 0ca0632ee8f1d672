"""FlipCounter (update / merge / compute) gives the one-shot report to the last digit."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regfree.metrics import FlipCounter, FlipCounts, flip_counts, flip_report, report_from_counts


@st.composite
def data_and_cuts(draw):
    k = draw(st.integers(1, 6))
    n = draw(st.integers(1, 80))
    ids = st.lists(st.integers(0, k - 1), min_size=n, max_size=n)
    y, old, new = (np.array(draw(ids)) for _ in range(3))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    return y, old, new, [0, *cuts, n]


def _pieces(arrays, bounds):
    return [tuple(a[lo:hi] for a in arrays) for lo, hi in zip(bounds[:-1], bounds[1:])]


@settings(max_examples=150, deadline=None)
@given(data_and_cuts())
def test_streaming_equals_one_shot_for_any_split(data):
    y, old, new, bounds = data
    counter = FlipCounter()
    for batch in _pieces((y, old, new), bounds):
        counter.update(*batch)  # includes empty batches and batches missing high classes
    assert counter.compute() == flip_report(y, old, new)
    assert counter.compute().to_json() == flip_report(y, old, new).to_json()


@settings(max_examples=100, deadline=None)
@given(data_and_cuts())
def test_merge_of_workers_equals_one_shot(data):
    y, old, new, bounds = data
    workers = []
    for batch in _pieces((y, old, new), bounds):
        worker = FlipCounter()
        worker.update(*batch)
        workers.append(worker)
    total = FlipCounter()
    for worker in reversed(workers):
        total.merge(worker)
    assert total.compute() == flip_report(y, old, new)


def test_counts_add_and_reduce_like_one_shot():
    rng = np.random.default_rng(0)
    y, old, new = (rng.integers(0, 7, 500) for _ in range(3))
    parts = [flip_counts(y[:200], old[:200], new[:200]), flip_counts(y[200:], old[200:], new[200:])]
    assert report_from_counts(parts[0] + parts[1]) == flip_report(y, old, new)


def test_sparse_and_dense_counting_paths_agree():
    # A tiny batch with many classes takes the np.unique path, a big one the bincount path.
    rng = np.random.default_rng(1)
    y, old, new = (rng.integers(0, 300, 5000) for _ in range(3))
    counter = FlipCounter(num_classes=300)
    for start in range(0, 5000, 7):
        counter.update(y[start:start + 7], old[start:start + 7], new[start:start + 7])
    assert counter.compute() == flip_report(y, old, new, num_classes=300)


def test_score_batches_and_torch_batches():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (64,), generator=gen)
    old = torch.randn(64, 4, generator=gen)
    new = torch.randn(64, 4, generator=gen)
    counter = FlipCounter()
    for lo in range(0, 64, 10):
        counter.update(y[lo:lo + 10], old[lo:lo + 10], new[lo:lo + 10])
    assert counter.compute() == flip_report(y.numpy(), old.numpy(), new.numpy())
    assert counter.compute().num_classes == 4


def test_merge_leaves_the_other_counter_untouched_and_reset_clears():
    a, b = FlipCounter(), FlipCounter()
    a.update([0, 1], [0, 1], [1, 1])
    b.update([2], [2], [0])
    before = b.counts.joint.copy()
    a.merge(b)
    a.update([2], [2], [2])
    np.testing.assert_array_equal(b.counts.joint, before)
    assert a.compute().n == 4
    empty = FlipCounter().merge(b)
    empty.update([0], [0], [0])
    np.testing.assert_array_equal(b.counts.joint, before)
    a.reset()
    with pytest.raises(ValueError, match=r"FlipCounter: no samples; call update\(\) with data first"):
        a.compute()


def test_update_validates_each_batch_and_fixed_class_count():
    counter = FlipCounter(num_classes=3)
    with pytest.raises(ValueError, match=r"new_pred: class id 3 is out of range for 3 classes \(from num_classes\)"):
        counter.update([0], [0], [3])
    with pytest.raises(ValueError, match="old_pred: has 2 rows but y_true has 1"):
        counter.update([0], [0, 1], [0])
    with pytest.raises(ValueError, match="other: expected a FlipCounter"):
        counter.merge(object())
    with pytest.raises(ValueError, match="num_classes: flip reports support up to 4096 classes, got 10000"):
        FlipCounter(num_classes=10_000)


def test_padding_counts():
    counts = flip_counts([0, 1], [0, 1], [1, 1])
    padded = counts.padded(4)
    assert padded.num_classes == 4 and padded.joint.sum() == 2
    assert report_from_counts(padded).per_class[3].count == 0
    with pytest.raises(ValueError, match="num_classes: cannot shrink 4 classes to 2"):
        padded.padded(2)
    with pytest.raises(ValueError, match="counts: no samples were counted"):
        report_from_counts(FlipCounts.zeros(2))


def test_inputs_longer_than_one_slice_match_a_direct_count():
    # More rows than CHUNK_SIZE, and class 7 only appears in the last slice.
    from regfree.metrics import flip_totals
    from regfree.metrics.inputs import CHUNK_SIZE

    rng = np.random.default_rng(2)
    n = 2 * CHUNK_SIZE + 1234
    y, old, new = (rng.integers(0, 7, n) for _ in range(3))
    y[-5:] = 7
    new[-3:] = 7
    report = flip_report(y, old, new)
    assert report.num_classes == 8 and report.per_class[7].count == 5
    negative = (old == y) & (new != y)
    expected = np.zeros((8, 8), dtype=np.int64)
    np.add.at(expected, (y[negative], new[negative]), 1)
    np.testing.assert_array_equal(report.negative_flip_confusion, expected)
    assert flip_totals(y, old, new) == (n, np.sum(old == y), np.sum(new == y),
                                        np.sum((old == y) & (new == y)))


def test_bad_values_in_a_later_slice_raise_and_leave_the_counter_unchanged():
    from regfree.metrics.inputs import CHUNK_SIZE

    n = CHUNK_SIZE + 10
    y = np.zeros(n, dtype=np.int64)
    scores = np.zeros((n, 3))
    scores[-1, 2] = np.nan
    counter = FlipCounter()
    counter.update([0, 1], [0, 1], [1, 1])
    before = counter.compute()
    with pytest.raises(ValueError, match="new_pred: scores contain NaN or inf"):
        counter.update(y, y, scores)
    assert counter.compute() == before
