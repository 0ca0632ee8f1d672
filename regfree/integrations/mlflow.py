"""Log regfree's reports to an MLflow run: the numbers as metrics, the gate as a tag, the
report files as artifacts.

Metric names start with ``prefix`` (default ``"regfree/"``, which MLflow's UI groups into one
section): the flip numbers under their :class:`~regfree.metrics.FlipReport` names (``nfr``,
``nfr_ci_low``, ``nfr_ci_high``, ``pfr``, ``error_rate_old``, ...), retrieval as
``retrieval/<query>_on_<gallery>/<score>`` (plus ``update_gain_<score>`` for later-on-earlier
pairs), adapters as ``adapter/<entry>/<score>`` and ``gain_recovered_<score>``, and each backfill
order as ``backfill/<order>/<score>`` with the backfilled percent as the step (a curve in the UI)
plus ``area_<score>``. Undefined ratios (``nan``) are left out. Needs the ``mlflow`` extra
(``pip install 'regfree[mlflow]'``: the light ``mlflow-skinny`` client).

Each function's example logs to a throwaway local store: MLflow 3 keeps a folder store only
for those who opt in (``MLFLOW_ALLOW_FILE_STORE=true``); a team's tracking server needs none.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from regfree.integrations._optional import require
from regfree.metrics import FlipReport

if TYPE_CHECKING:
    from regfree.upgrade import UpgradeReport

_mlflow = require("mlflow", "mlflow", "regfree.integrations.mlflow")
from mlflow.entities import Metric, RunTag  # noqa: E402  (after the friendly ImportError)
from mlflow.exceptions import MlflowException  # noqa: E402

__all__ = ["log_flip_report", "log_upgrade_report"]

_FLIP_FIELDS = ("n", "error_rate_old", "error_rate_new", "nfr", "pfr", "relative_nfr", "nfi",
                "btc", "bec", "mcnemar_p", "negative_flips", "positive_flips")


def _slug(name: str) -> str:
    """A version, order or adapter entry name as one piece of an MLflow key."""
    return re.sub(r"[^\w\-.:]+", "_", str(name)).strip("_") or "_"


def _flip_metrics(report: FlipReport) -> dict[str, float]:
    """The flip numbers of ``report`` by metric name (no prefix), ``nan`` ones left out."""
    values = {name: float(getattr(report, name)) for name in _FLIP_FIELDS}
    values["nfr_ci_low"], values["nfr_ci_high"] = map(float, report.nfr_ci)
    return {name: value for name, value in values.items() if math.isfinite(value)}


def _upgrade_metrics(report: UpgradeReport) -> dict[str, list[tuple[float, int]]]:
    """Every number of ``report`` as ``{name: [(value, step), ...]}`` (no prefix): one step
    for most, one per backfilled percent for the backfill curves; ``nan`` ones left out."""
    out = {name: [(value, 0)] for name, value in _flip_metrics(report.flips).items()}
    retrieval = report.retrieval
    if retrieval is not None:
        scores = ["mAP"] + [f"top{k}" for k in retrieval.ks]
        versions = retrieval.versions
        for i, query in enumerate(versions):
            for j, gallery in enumerate(versions):
                key = f"retrieval/{_slug(query)}_on_{_slug(gallery)}"
                for score in scores:
                    out[f"{key}/{score}"] = [(retrieval.value(query, gallery, score), 0)]
                    if j < i and math.isfinite(retrieval.value(query, gallery, score)):
                        gain = retrieval.update_gain(query, gallery, score)
                        out[f"{key}/update_gain_{score}"] = [(gain, 0)]
    for entry, entry_scores in (report.adapted or {}).items():
        key = f"adapter/{_slug(entry)}"
        for score, value in entry_scores.items():
            out[f"{key}/{score}"] = [(value, 0)]
            out[f"{key}/gain_recovered_{score}"] = [(report.gain_recovered(entry, score), 0)]
    if report.backfill is not None:
        steps = [int(round(100 * f)) for f in report.backfill.fractions]
        for order, order_scores in report.backfill.scores.items():
            key = f"backfill/{_slug(order)}"
            for score, values in order_scores.items():
                out[f"{key}/{score}"] = list(zip(map(float, values), steps))
                out[f"{key}/area_{score}"] = [(report.backfill.area(order, score), 0)]
    return {name: [(float(v), s) for v, s in points if math.isfinite(v)]
            for name, points in out.items()}


def _run_id(run_id: Optional[str]) -> str:
    """The given run (checked to exist), else the active run, else a new one (as
    ``mlflow.log_metric`` does)."""
    if run_id is None:
        active = _mlflow.active_run() or _mlflow.start_run()
        return active.info.run_id
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"run_id: expected an MLflow run id string (run.info.run_id), got "
                        f"{run_id!r}")
    try:
        _mlflow.MlflowClient().get_run(run_id)
    except MlflowException as error:
        raise ValueError(f"run_id: no run {run_id!r} at tracking URI "
                         f"{_mlflow.get_tracking_uri()!r}; pass the id of an existing run "
                         "(run.info.run_id) or leave run_id out to use the active run") from error
    return run_id


def _check_prefix(prefix: str) -> None:
    if not isinstance(prefix, str):
        raise TypeError(f"prefix: expected a string such as 'regfree/', got {prefix!r}")


def _log(run_id: str, numbers: dict[str, list[tuple[float, int]]], tags: dict[str, str],
         prefix: str) -> None:
    now = int(time.time() * 1000)
    metrics = [Metric(prefix + name, value, now, step)
               for name, points in numbers.items() for value, step in points]
    _mlflow.MlflowClient().log_batch(run_id, metrics=metrics,
                                     tags=[RunTag(prefix + k, v) for k, v in tags.items()])


def _log_files(run_id: str, files: dict[str, Any], artifact_path: Optional[str]) -> None:
    """Write each ``{file name: writer(path)}`` into a temporary folder and upload it."""
    if artifact_path is None:
        return
    with tempfile.TemporaryDirectory() as folder:
        for name, write in files.items():
            write(str(Path(folder) / name))
        _mlflow.MlflowClient().log_artifacts(run_id, folder, artifact_path or None)


def log_flip_report(report: FlipReport, *, run_id: Optional[str] = None,
                    prefix: str = "regfree/", step: int = 0,
                    artifact_path: Optional[str] = "regfree") -> str:
    """Log a :class:`~regfree.metrics.FlipReport` to an MLflow run.

    Args:
        report: the flip report (from :func:`~regfree.metrics.flip_report` or a
            :class:`~regfree.metrics.FlipCounter`).
        run_id: the run to log to; default: the active run, or a new one if none is active.
        prefix: put before every metric name (``""`` for none).
        step: the metrics' step, e.g. the epoch when logged once per epoch.
        artifact_path: folder of the run's artifacts that receives ``flip_report.json``
            (``""``: the top folder); ``None`` logs no file.

    Returns:
        The run id.

    Example:
        >>> import os, tempfile, mlflow
        >>> from regfree.metrics import flip_report
        >>> os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        >>> store = tempfile.TemporaryDirectory()
        >>> mlflow.set_tracking_uri(os.path.join(store.name, "mlruns"))
        >>> with mlflow.start_run() as run:
        ...     _ = log_flip_report(flip_report([0, 1, 2, 2], [0, 1, 0, 2], [0, 2, 2, 2]), step=3)
        >>> mlflow.get_run(run.info.run_id).data.metrics["regfree/nfr"]
        0.25
        >>> [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "regfree/pfr")]
        [3]
        >>> mlflow.set_tracking_uri(None); store.cleanup()  # back to the default store
    """
    if not isinstance(report, FlipReport):
        raise TypeError(f"report: expected a FlipReport (regfree.metrics.flip_report), got "
                        f"{type(report).__name__}")
    _check_prefix(prefix)
    if not isinstance(step, int) or isinstance(step, bool):
        raise TypeError(f"step: expected an integer such as the epoch, got {step!r}")
    run_id = _run_id(run_id)
    numbers = {name: [(value, step)] for name, value in _flip_metrics(report).items()}
    _log(run_id, numbers, {}, prefix)
    _log_files(run_id, {"flip_report.json": lambda path: Path(path).write_text(report.to_json())},
               artifact_path)
    return run_id


def log_upgrade_report(report: UpgradeReport, *, run_id: Optional[str] = None,
                       prefix: str = "regfree/",
                       artifact_path: Optional[str] = "regfree") -> str:
    """Log an :class:`~regfree.upgrade.UpgradeReport` to an MLflow run.

    Logs the flip numbers (error rates, NFR with its 95% interval, PFR, relative NFR, ...), the
    retrieval matrix, adapter scores and backfill curves when the report has them (names in the
    module doc), the tags ``<prefix>gate`` (``"pass"``, ``"fail"`` or ``"none"`` without a gate),
    ``<prefix>max_nfr`` and, with a gallery, ``<prefix>compatible`` (``"yes"``/``"no"``: v2
    searching v1's gallery beats v1 on it, top-1), and the files ``upgrade_report.html`` and
    ``upgrade_report.json``.

    Args:
        report: what :func:`~regfree.upgrade.evaluate_upgrade` returned.
        run_id: the run to log to; default: the active run, or a new one if none is active.
        prefix: put before every metric and tag name (``""`` for none).
        artifact_path: folder of the run's artifacts that receives the two files (``""``: the
            top folder); ``None`` logs no file.

    Returns:
        The run id.

    Example:
        >>> import os, tempfile, mlflow, numpy as np
        >>> from regfree import evaluate_upgrade
        >>> from regfree.models import MLP
        >>> x, y = np.random.default_rng(0).normal(size=(20, 4)).astype("float32"), np.arange(20) % 2
        >>> report = evaluate_upgrade(MLP(4, 2), MLP(4, 2), (x, y), max_nfr=1.0, progress=False)
        >>> os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        >>> store = tempfile.TemporaryDirectory()
        >>> mlflow.set_tracking_uri(os.path.join(store.name, "mlruns"))
        >>> with mlflow.start_run() as run:
        ...     _ = log_upgrade_report(report)
        >>> mlflow.get_run(run.info.run_id).data.tags["regfree/gate"]
        'pass'
        >>> sorted(a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "regfree"))
        ['regfree/upgrade_report.html', 'regfree/upgrade_report.json']
        >>> mlflow.set_tracking_uri(None); store.cleanup()  # back to the default store
    """
    from regfree.upgrade import NEW, OLD, UpgradeReport

    if not isinstance(report, UpgradeReport):
        raise TypeError(f"report: expected an UpgradeReport (regfree.evaluate_upgrade), got "
                        f"{type(report).__name__}")
    _check_prefix(prefix)
    run_id = _run_id(run_id)
    tags = {"gate": "none" if report.max_nfr is None else "pass" if report.passed else "fail"}
    if report.max_nfr is not None:
        tags["max_nfr"] = repr(float(report.max_nfr))
    retrieval = report.retrieval
    if retrieval is not None and math.isfinite(retrieval.value(NEW, OLD)):
        tags["compatible"] = "yes" if retrieval.criterion(NEW, OLD) else "no"
    _log(run_id, _upgrade_metrics(report), tags, prefix)
    _log_files(run_id, {"upgrade_report.html": report.to_html,
                        "upgrade_report.json": lambda path: Path(path).write_text(report.to_json())},
               artifact_path)
    return run_id
