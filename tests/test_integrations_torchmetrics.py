"""regfree's flip metrics as torchmetrics.Metric classes: the same numbers as regfree.metrics,
batch by batch and across 2 DDP processes.

Run as a script by torchrun (``python -m torch.distributed.run --nproc_per_node 2 THIS OUT``),
each rank counts its own share of the samples and writes what ``compute()`` gave it.

Rates here are ratios of the same integer counts through the same formulas
(``regfree.metrics.FlipTotals``), so they are compared with ``==``.
"""

import importlib
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchmetrics
from conftest import launch_ranks  # tests/ is on sys.path, also under torchrun

from regfree.integrations.torchmetrics import (
    ChurnRate,
    NegativeFlipRate,
    PositiveFlipRate,
    RelativeNegativeFlipRate,
)
from regfree.metrics import churn_report, negative_flip_rate, positive_flip_rate, relative_nfr

CLASSES = 5
# the DDP script's samples: rank 0 counts the first RANK0_ROWS in 3 batches, rank 1 the rest
N, RANK0_ROWS = 150, 61
REFERENCE = {"nfr": negative_flip_rate, "pfr": positive_flip_rate, "relative_nfr": relative_nfr}


def fresh_metrics():
    return {"nfr": NegativeFlipRate(), "pfr": PositiveFlipRate(),
            "relative_nfr": RelativeNegativeFlipRate()}


def labelled_predictions(n=N, seed=0):
    """Labels, and old and new logits that agree with them ~70% of the time."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, size=n)
    old = rng.normal(size=(n, CLASSES)).astype(np.float32)
    new = rng.normal(size=(n, CLASSES)).astype(np.float32)
    old[np.arange(n), y] += 1.5
    new[np.arange(n), y] += 1.8
    return y, old, new


def batches(y, old, new, bounds):
    """Slices of the data at ``bounds``, in the forms users pass: logits as tensors, class ids
    as numpy arrays and as lists."""
    for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        part = slice(start, stop)
        if i % 3 == 0:
            yield torch.from_numpy(y[part]), torch.from_numpy(old[part]), torch.from_numpy(new[part])
        elif i % 3 == 1:
            yield y[part], old[part].argmax(1), torch.from_numpy(new[part])
        else:
            yield y[part].tolist(), old[part].argmax(1).tolist(), new[part].argmax(1).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accumulated_over_batches_equals_regfree_metrics(seed):
    y, old, new = labelled_predictions(seed=seed)
    metrics = fresh_metrics()
    churn = ChurnRate()
    for y_true, old_pred, new_pred in batches(y, old, new, [0, 7, 40, 41, 99, N]):
        for metric in metrics.values():
            metric.update(y_true, old_pred, new_pred)
        churn.update(old_pred, new_pred)
    for name, metric in metrics.items():
        value = metric.compute()
        assert value.dtype == torch.float64 and value.ndim == 0
        assert value.item() == REFERENCE[name](y, old, new), name
    assert churn.compute().item() == churn_report(old, new).churn
    # the data were not trivial: some flips each way, some changed predictions
    assert 0 < metrics["nfr"].compute().item() < metrics["pfr"].compute().item() < 0.5
    assert 0 < churn.compute().item() < 1


def test_forward_gives_the_batch_value_and_keeps_counting():
    y, old, new = labelled_predictions(40, seed=3)
    metric = NegativeFlipRate()
    first = metric(torch.from_numpy(y[:15]), torch.from_numpy(old[:15]), torch.from_numpy(new[:15]))
    second = metric(torch.from_numpy(y[15:]), torch.from_numpy(old[15:]), torch.from_numpy(new[15:]))
    assert first.item() == negative_flip_rate(y[:15], old[:15], new[:15])
    assert second.item() == negative_flip_rate(y[15:], old[15:], new[15:])
    assert metric.compute().item() == negative_flip_rate(y, old, new)
    # spawned DDP workers and checkpoints get a pickled copy: the counts travel with it
    assert pickle.loads(pickle.dumps(metric)).compute().item() == negative_flip_rate(y, old, new)
    metric.reset()
    metric.update([1, 1], [1, 0], [0, 0])
    assert metric.compute().item() == 0.5


def test_metric_collection_with_keyword_arguments_feeds_churn_too():
    y, old, new = labelled_predictions(60, seed=4)
    collection = torchmetrics.MetricCollection({**fresh_metrics(), "churn": ChurnRate()})
    for part in (slice(0, 25), slice(25, 60)):
        collection.update(y_true=torch.from_numpy(y[part]), old_pred=torch.from_numpy(old[part]),
                          new_pred=torch.from_numpy(new[part]))
    values = {name: value.item() for name, value in collection.compute().items()}
    assert values == {**{name: fn(y, old, new) for name, fn in REFERENCE.items()},
                      "churn": churn_report(old, new).churn}


def test_undefined_ratios_are_nan_like_regfree_metrics():
    rel = RelativeNegativeFlipRate()
    rel.update([0, 1, 2], [0, 0, 2], [0, 1, 2])  # the new model makes no errors
    assert math.isnan(rel.compute().item()) and math.isnan(relative_nfr([0, 1, 2], [0, 0, 2],
                                                                        [0, 1, 2]))
    with pytest.warns(UserWarning, match="compute.*before.*update"):
        assert math.isnan(NegativeFlipRate().compute().item())


def test_scores_as_lists_keep_their_float64_precision():
    # 1 + 1e-9 rounds to 1.0 in float32: the argmax would fall on class 0 there
    y_true, old, new = [1, 1], [[1.0, 1.0 + 1e-9], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]
    metric = NegativeFlipRate()
    metric.update(y_true, old, new)
    assert metric.compute().item() == negative_flip_rate(y_true, old, new) == 0.5


def test_without_validation_the_counts_are_the_same():
    y, old, new = labelled_predictions(50, seed=5)
    fast, checked = NegativeFlipRate(validate_args=False), NegativeFlipRate()
    for metric in (fast, checked):
        metric.update(torch.from_numpy(y), torch.from_numpy(old), torch.from_numpy(new))
    assert fast.compute().item() == checked.compute().item() == negative_flip_rate(y, old, new)


@pytest.mark.parametrize("args, message", [
    (([0, 1, 1], [0, 1], [0, 1, 1]), r"old_pred: has 2 rows but y_true has 3"),
    (([0, 1], [[0.1, float("nan")], [0.2, 0.8]], [0, 1]), r"old_pred: scores contain NaN or inf"),
    (([0, -1], [0, 1], [0, 1]), r"y_true: class ids must be >= 0, found -1"),
    (([0, 1], [0, 1], [0.0, 1.5]), r"new_pred: class ids must be integers"),
    (([[0, 1]], [0], [0]), r"y_true: expected 1-D class ids, got shape \(1, 2\)"),
    (([0, 1], np.zeros((2, 3)), np.zeros((2, 4))), r"new_pred: has 4 classes but old_pred has 3"),
    (([0, 3], np.zeros((2, 3)), [0, 1]), r"y_true: class id 3 is out of range for 3 classes "
                                         r"\(from old_pred\)"),
    (([0], np.zeros((1, 0)), [0]), r"old_pred: scores have no columns"),
])
def test_bad_batches_name_the_argument(args, message):
    metric = NegativeFlipRate()
    with pytest.raises(ValueError, match=message):
        metric.update(*args)
    assert metric.n.item() == 0  # nothing half-counted


def test_unconvertible_input_is_a_type_error():
    with pytest.raises(TypeError, match=r"old_pred: expected a tensor, array or list"):
        NegativeFlipRate().update([0, 1], ["a", "b"], [0, 1])
    with pytest.raises(ValueError, match=r"new_pred: has 1 rows but old_pred has 2"):
        ChurnRate().update([0, 1], [0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_counts_on_the_gpu_equal_the_cpu():
    y, old, new = labelled_predictions(seed=6)
    metric = NegativeFlipRate().to("cuda")
    for part in (slice(0, 70), slice(70, N)):
        metric.update(*(torch.from_numpy(a[part]).cuda() for a in (y, old, new)))
    value = metric.compute()
    assert value.device.type == "cuda" and metric.n.device.type == "cuda"
    assert value.item() == negative_flip_rate(y, old, new)


def test_importing_regfree_imports_neither_torchmetrics_nor_mlflow():
    code = ("import sys, regfree, regfree.metrics, regfree.integrations; "
            "print(sorted(m for m in ('torchmetrics', 'mlflow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
                          check=True)
    assert done.stdout.strip() == "[]"


def test_without_torchmetrics_the_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # what a missing package looks like
    monkeypatch.delitem(sys.modules, "regfree.integrations.torchmetrics")
    with pytest.raises(ImportError, match=r"pip install 'regfree\[torchmetrics\]'"):
        importlib.import_module("regfree.integrations.torchmetrics")
    with pytest.raises(ImportError, match=r"regfree\.integrations\.torchmetrics needs"):
        from regfree.integrations import NegativeFlipRate  # noqa: F401


def rank_batches(rank):
    """This rank's share: rank 0 the first RANK0_ROWS in 3 batches, rank 1 the rest in 2."""
    y, old, new = labelled_predictions()
    bounds = [0, 20, 21, RANK0_ROWS] if rank == 0 else [RANK0_ROWS, 100, N]
    return list(batches(y, old, new, bounds))


def test_two_processes_sync_to_the_value_on_all_samples(tmp_path):
    done = launch_ranks(__file__, str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    y, old, new = labelled_predictions()
    single = {**fresh_metrics(), "churn": ChurnRate()}
    for y_true, old_pred, new_pred in rank_batches(0) + rank_batches(1):
        for name, metric in single.items():
            metric.update(*(() if name == "churn" else (y_true,)), old_pred, new_pred)
    expected = {name: metric.compute().item() for name, metric in single.items()}
    assert expected == {**{name: fn(y, old, new) for name, fn in REFERENCE.items()},
                        "churn": churn_report(old, new).churn}
    for rank in range(2):
        synced = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert synced["after_sync"] == expected
        # each rank counted only its own share: the sync, not the data, made them equal
        assert synced["local_n"] == (RANK0_ROWS if rank == 0 else N - RANK0_ROWS)


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    metrics = {**fresh_metrics(), "churn": ChurnRate()}
    for y_true, old_pred, new_pred in rank_batches(rank):
        for name, metric in metrics.items():
            metric.update(*(() if name == "churn" else (y_true,)), old_pred, new_pred)
    local_n = metrics["nfr"].n.item()
    result = {"after_sync": {name: metric.compute().item() for name, metric in metrics.items()},
              "local_n": local_n}
    Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()
