"""The JSON record of one ``regfree report`` run: the report, the gate, the inputs, the version."""

from __future__ import annotations

import json
from typing import Any, Optional

from regfree.metrics import json_safe
from regfree.reporting.counting import CountedReport
from regfree.reporting.gate import Gate


def report_record(counted: CountedReport, gate: Optional[Gate],
                  inputs: dict[str, Optional[str]], *,
                  blend: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The FlipReport fields at the top level (with labels), then ``churn``, ``groups`` (when
    grouped), ``gate`` (None without thresholds), ``blend`` (the applied blend's dict, when the
    new predictions are a blend), ``inputs``, ``notes`` and ``regfree_version``.

    Example:
        >>> from regfree.metrics import churn_report
        >>> record = report_record(CountedReport(None, churn_report([0, 1], [0, 0])), None,
        ...                        {"--old": "old.csv", "--new": "new.csv"})
        >>> record["churn"]["churn"], record["gate"], record["inputs"]
        (0.5, None, {'old': 'old.csv', 'new': 'new.csv'})
    """
    from regfree import __version__

    out: dict[str, Any] = counted.flips.to_dict() if counted.flips is not None else {}
    out["churn"] = counted.churn.to_dict()
    if counted.groups is not None:
        out["groups"] = [group.to_dict() for group in counted.groups]
    out["gate"] = None if gate is None else gate.to_dict()
    if blend is not None:
        out["blend"] = blend
    out["inputs"] = {option.lstrip("-").replace("-", "_"): value
                     for option, value in inputs.items() if value is not None}
    out["notes"] = list(counted.notes)
    out["regfree_version"] = __version__
    return out


def record_json(record: dict[str, Any]) -> str:
    """Valid JSON (nan written as null)."""
    return json.dumps(json_safe(record), indent=2, allow_nan=False)
