"""Logging regfree's reports to MLflow, against the real client and a local folder store."""

import importlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # read when mlflow is imported

import mlflow  # noqa: E402  (after the telemetry switch)
import pytest  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from regfree import evaluate_upgrade  # noqa: E402
from regfree.integrations.mlflow import log_flip_report, log_upgrade_report  # noqa: E402
from regfree.metrics import flip_report  # noqa: E402
from regfree.upgrade import GALLERY_TRANSFORMED  # noqa: E402


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """A fresh MLflow folder store in tmp_path, and no run left active afterwards."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks to opt in
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield MlflowClient()
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def upgrade(make_data, make_model):
    """An upgrade with a gallery, a fitted adapter, a backfill curve and a gate it fails."""
    x, y = make_data(90, seed=3)
    return evaluate_upgrade(make_model(2), make_model(3), (x[:40], y[:40]),
                            gallery=(x[40:], y[40:]), max_nfr=0.0, adapter="fit",
                            adapter_pairs=0.5, backfill_fractions=(0.0, 0.25, 0.5, 1.0),
                            progress=False)


def test_upgrade_report_metrics_tag_and_files(tracking, upgrade, tmp_path):
    assert upgrade.flips.negative_flips > 0  # the gate at 0 fails, as the tag must say
    with mlflow.start_run() as run:
        assert log_upgrade_report(upgrade) == run.info.run_id
    data = tracking.get_run(run.info.run_id).data
    flips = upgrade.flips
    expected = {"n": flips.n, "nfr": flips.nfr, "pfr": flips.pfr,
                "error_rate_old": flips.error_rate_old, "error_rate_new": flips.error_rate_new,
                "nfr_ci_low": flips.nfr_ci[0], "nfr_ci_high": flips.nfr_ci[1],
                "relative_nfr": flips.relative_nfr, "mcnemar_p": flips.mcnemar_p,
                "negative_flips": flips.negative_flips, "positive_flips": flips.positive_flips}
    for name, value in expected.items():
        assert data.metrics[f"regfree/{name}"] == pytest.approx(value, rel=1e-12, abs=0), name
    retrieval = upgrade.retrieval
    for query, gallery in (("v1", "v1"), ("v2", "v1"), ("v2", "v2")):
        for score in ("top1", "top5", "mAP"):
            key = f"regfree/retrieval/{query}_on_{gallery}/{score}"
            assert data.metrics[key] == pytest.approx(retrieval.value(query, gallery, score))
    assert "regfree/retrieval/v1_on_v2/top1" not in data.metrics  # never computed: NaN
    assert data.metrics["regfree/retrieval/v2_on_v1/update_gain_top1"] == pytest.approx(
        retrieval.update_gain("v2", "v1"))
    adapted = "regfree/adapter/v2_v1_transformed"
    assert data.metrics[f"{adapted}/top1"] == pytest.approx(
        upgrade.adapted[GALLERY_TRANSFORMED]["top1"])
    assert data.metrics[f"{adapted}/gain_recovered_top1"] == pytest.approx(
        upgrade.gain_recovered(GALLERY_TRANSFORMED))
    # each backfill curve is one metric over steps = backfilled percent
    for order, scores in upgrade.backfill.scores.items():
        key = "regfree/backfill/" + order.replace(" + ", "_")
        history = sorted(tracking.get_metric_history(run.info.run_id, f"{key}/top1"),
                         key=lambda m: m.step)
        assert [m.step for m in history] == [0, 25, 50, 100]
        assert [m.value for m in history] == pytest.approx(scores["top1"])
        assert data.metrics[f"{key}/area_top1"] == pytest.approx(upgrade.backfill.area(order))
    assert sorted(upgrade.backfill.scores) == ["margin", "margin + adapter", "random",
                                               "random + adapter"]
    assert data.tags["regfree/gate"] == "fail"
    assert float(data.tags["regfree/max_nfr"]) == 0.0
    assert data.tags["regfree/compatible"] == ("yes" if retrieval.criterion("v2", "v1") else "no")

    files = sorted(a.path for a in tracking.list_artifacts(run.info.run_id, "regfree"))
    assert files == ["regfree/upgrade_report.html", "regfree/upgrade_report.json"]
    got = Path(tracking.download_artifacts(run.info.run_id, "regfree", str(tmp_path)))
    assert json.loads((got / "upgrade_report.json").read_text()) == json.loads(upgrade.to_json())
    page = (got / "upgrade_report.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html>") and "FAIL" in page


def test_logs_into_a_given_run_without_prefix_or_files(tracking, make_data, make_model):
    x, y = make_data(30, seed=4)
    report = evaluate_upgrade(make_model(0), make_model(1), (x, y), progress=False)
    run = tracking.create_run(experiment_id="0")
    assert mlflow.active_run() is None
    assert log_upgrade_report(report, run_id=run.info.run_id, prefix="",
                              artifact_path=None) == run.info.run_id
    assert mlflow.active_run() is None  # nothing was started on the side
    data = tracking.get_run(run.info.run_id).data
    assert data.metrics["nfr"] == report.flips.nfr
    assert data.tags["gate"] == "none" and "max_nfr" not in data.tags
    assert not any(key.startswith("retrieval/") for key in data.metrics)  # no gallery
    assert tracking.list_artifacts(run.info.run_id) == []


def test_without_an_active_run_one_is_started_like_mlflow_log_metric(tracking):
    report = flip_report([0, 1, 1, 2], [0, 1, 0, 2], [0, 1, 1, 1])
    run_id = log_flip_report(report)
    assert mlflow.active_run().info.run_id == run_id
    assert tracking.get_run(run_id).data.metrics["regfree/pfr"] == 0.25


def test_flip_report_per_epoch_leaves_undefined_ratios_out(tracking, tmp_path):
    with mlflow.start_run() as run:
        # epoch 1: the new model makes no error, so relative NFR, NFI and BEC are undefined
        log_flip_report(flip_report([0, 1, 2], [0, 0, 2], [0, 1, 2]), step=1)
        log_flip_report(flip_report([0, 1, 2, 2], [0, 1, 0, 2], [0, 2, 2, 2]), step=2)
    history = tracking.get_metric_history(run.info.run_id, "regfree/nfr")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.0), (2, 0.25)]
    relative = tracking.get_metric_history(run.info.run_id, "regfree/relative_nfr")
    assert [(m.step, round(m.value, 6)) for m in relative] == [(2, 1.333333)]
    tracking.download_artifacts(run.info.run_id, "regfree/flip_report.json", str(tmp_path))
    assert json.loads((tmp_path / "flip_report.json").read_text())["nfr"] == 0.25  # the last


def test_bad_arguments_name_themselves(tracking, upgrade):
    report = upgrade.flips
    with pytest.raises(TypeError, match=r"report: expected an UpgradeReport .* got FlipReport"):
        log_upgrade_report(report)
    with pytest.raises(TypeError, match=r"report: expected a FlipReport .* got dict"):
        log_flip_report(report.to_dict())
    with pytest.raises(ValueError, match=r"run_id: no run 'f0f0' at tracking URI"):
        log_flip_report(report, run_id="f0f0")
    with pytest.raises(TypeError, match=r"run_id: expected an MLflow run id string"):
        log_flip_report(report, run_id=42)
    with pytest.raises(TypeError, match=r"prefix: expected a string"):
        log_flip_report(report, prefix=None)
    with pytest.raises(TypeError, match=r"step: expected an integer such as the epoch"):
        log_flip_report(report, step=1.5)
    assert mlflow.active_run() is None  # bad calls started no run


def test_without_mlflow_the_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what a missing package looks like
    monkeypatch.delitem(sys.modules, "regfree.integrations.mlflow")
    with pytest.raises(ImportError, match=r"pip install 'regfree\[mlflow\]'"):
        importlib.import_module("regfree.integrations.mlflow")
