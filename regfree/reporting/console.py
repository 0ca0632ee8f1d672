"""Terminal tables (rich) for a :class:`~regfree.metrics.FlipReport`."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from regfree.metrics import ChurnReport, FlipReport
from regfree.metrics.report import class_label
from regfree.reporting.counting import CountedReport, GroupFlips


def fmt_rate(value: float) -> str:
    """A share as a percentage with two decimals; ``n/a`` for nan."""
    return "n/a" if math.isnan(value) else f"{value:.2%}"


def fmt_number(value: float, digits: int = 4) -> str:
    """A ratio with ``digits`` significant digits; ``n/a`` for nan."""
    return "n/a" if math.isnan(value) else f"{value:.{digits}g}"


def metric_rows(report: FlipReport) -> list[tuple[str, str, str]]:
    """``(metric, value, meaning)`` rows shared by the terminal table and the HTML page."""
    low, high = report.nfr_ci
    return [
        ("samples", f"{report.n:,}", ""),
        ("error rate old", fmt_rate(report.error_rate_old), ""),
        ("error rate new", fmt_rate(report.error_rate_new), ""),
        ("NFR", f"{fmt_rate(report.nfr)} [{fmt_rate(low)}, {fmt_rate(high)}]",
         f"{report.negative_flips:,} negative flips; 95% Wilson interval"),
        ("PFR", fmt_rate(report.pfr), f"{report.positive_flips:,} positive flips"),
        ("relative NFR", fmt_number(report.relative_nfr), "NFR / NFR of independent errors"),
        ("NFI", fmt_number(report.nfi), "negative flips / new errors"),
        ("BTC", fmt_number(report.btc), "both right / old right"),
        ("BEC", fmt_number(report.bec), "both wrong / new wrong"),
        ("McNemar p", f"{report.mcnemar_p:.3g}", "exact test: do the error rates differ?"),
    ]


def regressed_rows(report: FlipReport, class_names: Optional[Sequence[str]] = None,
                   top: int = 5) -> list[tuple[str, str, str, str, str, str]]:
    """``(class, samples, negative flips, NFR, PFR, most often predicted as)`` of the worst
    classes, shared by the terminal table and the HTML page."""
    rows = []
    for c in report.most_regressed(top):
        worst_target = int(report.negative_flip_confusion[c.label].argmax())
        rows.append((class_label(c.label, class_names), f"{c.count:,}", f"{c.negative_flips:,}",
                     fmt_rate(c.nfr), fmt_rate(c.pfr), class_label(worst_target, class_names)))
    return rows


REGRESSED_HEADER = ("class", "samples", "negative flips", "NFR", "PFR", "flips mostly to")


def flip_report_tables(report: FlipReport, class_names: Optional[Sequence[str]] = None,
                       top: int = 5, title: str = "Flip report: old -> new") -> list[Table]:
    """The metric table and the most-regressed-classes table.

    Example:
        >>> from regfree.metrics import flip_report
        >>> tables = flip_report_tables(flip_report([0, 1, 1], [0, 1, 1], [0, 0, 1]))
        >>> [t.title for t in tables]
        ['Flip report: old -> new', 'Classes that regress most']
    """
    metrics = Table(title=title)
    for header in ("metric", "value", "meaning"):
        metrics.add_column(header)
    for row in metric_rows(report):
        metrics.add_row(*row)
    classes = Table(title="Classes that regress most")
    for header in REGRESSED_HEADER:
        classes.add_column(header, justify="left" if header in ("class", "flips mostly to")
                           else "right")
    rows = regressed_rows(report, class_names, top)
    for row in rows:
        classes.add_row(*row)
    if not rows:
        classes.caption = "no negative flips"
    return [metrics, classes]


def print_flip_report(report: FlipReport, class_names: Optional[Sequence[str]] = None,
                      console: Optional[Console] = None, top: int = 5) -> None:
    """Print :func:`flip_report_tables` to ``console`` (stdout by default)."""
    console = console or Console()
    class_names = report.class_names if class_names is None else class_names
    for table in flip_report_tables(report, class_names, top):
        console.print(table)


def churn_rows(churn: ChurnReport) -> list[tuple[str, str, str]]:
    """``(metric, value, meaning)`` rows of the label-free churn."""
    low, high = churn.churn_ci
    rows = [("samples", f"{churn.n:,}", ""),
            ("churn", f"{fmt_rate(churn.churn)} [{fmt_rate(low)}, {fmt_rate(high)}]",
             f"{churn.changed:,} predictions changed; 95% Wilson interval")]
    confusion = churn.change_confusion
    if churn.changed:
        flat = np.argsort(confusion, axis=None)[::-1][:3]
        for cell in flat:
            old, new = np.unravel_index(cell, confusion.shape)
            if confusion[old, new]:
                rows.append(("most common change" if len(rows) == 2 else "",
                             f"{class_label(int(old), churn.class_names)} -> "
                             f"{class_label(int(new), churn.class_names)}",
                             f"{int(confusion[old, new]):,} samples"))
    return rows


GROUP_HEADER = ("group", "samples", "negative flips", "NFR [95% CI]", "churn")


def group_rows(groups: Sequence[GroupFlips]) -> list[tuple[str, str, str, str, str]]:
    """One row per group: name, samples, negative flips, NFR with interval, churn."""
    rows = []
    for g in groups:
        nfr = "n/a" if g.negative_flips is None else (
            f"{fmt_rate(g.nfr)} [{fmt_rate(g.nfr_ci[0])}, {fmt_rate(g.nfr_ci[1])}]")
        rows.append((g.name, f"{g.n:,}", "n/a" if g.negative_flips is None
                     else f"{g.negative_flips:,}", nfr, fmt_rate(g.churn)))
    return rows


def print_counted_report(counted: CountedReport, console: Optional[Console] = None,
                         top: int = 5) -> None:
    """Print what ``regfree report`` found: flips, churn, groups and notes."""
    console = console or Console()
    if counted.flips is not None:
        print_flip_report(counted.flips, counted.class_names, console, top=top)
    table = Table(title="Churn: old -> new (no labels needed)")
    for header in ("metric", "value", "meaning"):
        table.add_column(header)
    for row in churn_rows(counted.churn):
        table.add_row(*row)
    console.print(table)
    if counted.groups is not None:
        groups = Table(title="Groups")
        for header in GROUP_HEADER:
            groups.add_column(header, justify="left" if header == "group" else "right")
        for row in group_rows(counted.groups):
            groups.add_row(*row)
        console.print(groups)
    for note in counted.notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
