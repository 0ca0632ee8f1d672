"""The quality gate of ``regfree report``: thresholds in, one verdict and its reasons out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from regfree.reporting.counting import CountedReport


@dataclass(frozen=True)
class Gate:
    """Thresholds (None when not set) and the verdict on one report.

    Attributes:
        max_nfr: highest NFR that passes.
        max_group_nfr: highest NFR that passes in every group of at least ``min_group_size``.
        min_group_size: smallest group ``max_group_nfr`` applies to.
        max_churn: highest label-free churn that passes.
        passed: the verdict.
        checks: one line per threshold, e.g. ``NFR 1.20% <= --max-nfr 2.00%``.
        failed: the lines of the checks that failed.
    """

    max_nfr: Optional[float] = None
    max_group_nfr: Optional[float] = None
    min_group_size: Optional[int] = None
    max_churn: Optional[float] = None
    passed: bool = True
    checks: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """``{threshold: value, ..., "passed": bool, "failed": [...]}`` (set thresholds only)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in
                               ("max_nfr", "max_group_nfr", "min_group_size", "max_churn")
                               if getattr(self, name) is not None}
        out["passed"] = self.passed
        out["failed"] = list(self.failed)
        return out


def _check(value: float, limit: float, what: str, option: str) -> tuple[bool, str]:
    ok = not math.isnan(value) and value <= limit
    return ok, f"{what} {value:.4%} {'<=' if ok else '>'} {option} {limit:.4%}"


def evaluate_gate(counted: CountedReport, *, max_nfr: Optional[float] = None,
                  max_group_nfr: Optional[float] = None, min_group_size: int = 1,
                  max_churn: Optional[float] = None) -> Optional[Gate]:
    """Apply every threshold that is set; None when none is.

    Example:
        >>> from regfree.metrics import churn_report
        >>> gate = evaluate_gate(CountedReport(None, churn_report([0, 1], [0, 0])), max_churn=0.4)
        >>> gate.passed, gate.failed
        (False, ['churn 50.0000% > --max-churn 40.0000%'])
    """
    if max_nfr is None and max_group_nfr is None and max_churn is None:
        return None
    results = []
    if max_nfr is not None and counted.flips is not None:
        results.append(_check(counted.flips.nfr, max_nfr, "NFR", "--max-nfr"))
    if max_churn is not None:
        results.append(_check(counted.churn.churn, max_churn, "churn", "--max-churn"))
    if max_group_nfr is not None and counted.groups is not None:
        for group in counted.groups:
            if group.n >= min_group_size:
                results.append(_check(group.nfr, max_group_nfr, f"group {group.name} NFR",
                                      "--max-group-nfr"))
    return Gate(max_nfr, max_group_nfr, min_group_size if max_group_nfr is not None else None,
                max_churn, all(ok for ok, _ in results), [line for _, line in results],
                [line for ok, line in results if not ok])
