"""Self-contained HTML pages: sections of tables and base64-embedded matplotlib images.

A page is ``render_html_page(title, [section, ...])``; :func:`flip_report_section` is the flip
part, and other reports (retrieval tables, backfill curves) add their own
:class:`HtmlSection` built with :func:`html_table` and :func:`figure_to_data_uri`.
matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from regfree.metrics import FlipReport
from regfree.reporting.console import (
    GROUP_HEADER,
    REGRESSED_HEADER,
    churn_rows,
    group_rows,
    metric_rows,
    regressed_rows,
)

PLOT_CLASSES, HEATMAP_CLASSES = 30, 20  # what the plots show at most (see reporting.plots)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; display: block; margin: 1em 0; }
.note { color: #666; font-size: 0.9em; }
.passed { color: #1e7b34; font-weight: bold; } .failed { color: #b3261e; font-weight: bold; }
"""


@dataclass(frozen=True)
class HtmlSection:
    """One titled part of a page; ``body`` is trusted HTML (escape user text with html_table)."""

    title: str
    body: str


def html_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; every cell is escaped.

    Example:
        >>> html_table(["a"], [["<b>"]])
        '<table><tr><th>a</th></tr><tr><td>&lt;b&gt;</td></tr></table>'
    """
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def figure_to_data_uri(fig: Any, dpi: int = 100) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI (the figure is not shown).

    Example:
        >>> from matplotlib.figure import Figure
        >>> fig = Figure(figsize=(1, 1)); _ = fig.add_subplot().plot([0, 1])
        >>> figure_to_data_uri(fig).startswith("data:image/png;base64,")
        True
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_html(fig: Any, alt: str) -> str:
    """An ``<img>`` tag embedding ``fig``."""
    return f'<img alt="{html.escape(alt)}" src="{figure_to_data_uri(fig)}">'


def render_html_page(title: str, sections: Sequence[HtmlSection]) -> str:
    """One self-contained HTML page (inline CSS and images, no external links).

    Example:
        >>> page = render_html_page("t", [HtmlSection("s", "<p>hi</p>")])
        >>> "<h2>s</h2>" in page and page.startswith("<!DOCTYPE html>")
        True
    """
    parts = [f"<section><h2>{html.escape(s.title)}</h2>\n{s.body}\n</section>" for s in sections]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
            f"<body><h1>{html.escape(title)}</h1>\n" + "\n".join(parts) + "\n</body></html>\n")


def flip_report_section(report: FlipReport, class_names: Optional[Sequence[str]] = None,
                        title: str = "Negative flips: old -> new", top: int = 10) -> HtmlSection:
    """The flip part of a page: metric table, worst classes, per-class bars, confusion heatmap.

    Args:
        report: the flip report to show.
        class_names: names for class ids (index = id); ids are shown where missing.
        title: the section heading.
        top: how many most-regressed classes to list.

    Returns:
        An :class:`HtmlSection` for :func:`render_html_page`.
    """
    from regfree.reporting.plots import plot_negative_flip_confusion, plot_per_class_nfr

    class_names = report.class_names if class_names is None else class_names
    worst = regressed_rows(report, class_names, top)
    present = sum(1 for c in report.per_class if c.count > 0)
    parts = [
        html_table(("metric", "value", "meaning"), metric_rows(report)),
        "<h3>Classes that regress most</h3>",
        html_table(REGRESSED_HEADER, worst) if worst else '<p class="note">No negative flips.</p>',
        image_html(plot_per_class_nfr(report, class_names, top=PLOT_CLASSES),
                   "per-class NFR and PFR"),
    ]
    if present > PLOT_CLASSES:
        parts.append(f'<p class="note">{PLOT_CLASSES} of {present:,} classes: the highest '
                     "NFR.</p>")
    parts.append(image_html(plot_negative_flip_confusion(report, class_names,
                                                         top=HEATMAP_CLASSES),
                            "negative-flip confusion"))
    if report.num_classes > HEATMAP_CLASSES:
        parts.append(f'<p class="note">{HEATMAP_CLASSES} of {report.num_classes:,} classes: '
                     "those in the most negative flips.</p>")
    return HtmlSection(title, "\n".join(parts))


def flip_report_page(report: FlipReport, class_names: Optional[Sequence[str]] = None,
                     title: str = "regfree flip report") -> str:
    """A whole page holding just :func:`flip_report_section`."""
    return render_html_page(title, [flip_report_section(report, class_names)])


def counted_report_page(counted: Any, gate: Any, inputs: dict[str, Optional[str]],
                        title: str = "regfree report", *,
                        blend: Optional[dict[str, Any]] = None) -> str:
    """The page of one ``regfree report`` run: gate verdict, inputs and date, flips, churn,
    groups and notes.

    Args:
        counted: a :class:`~regfree.reporting.counting.CountedReport`.
        gate: a :class:`~regfree.reporting.gate.Gate`, or None without thresholds.
        inputs: ``{option: FILE[:column]}`` as given on the command line.
        blend: the applied blend's dict (``LogitBlend.to_dict()``) when the new predictions
            are a blend of the old and new scores.
    """
    from datetime import datetime, timezone

    sections = []
    if gate is not None:
        verdict = ('<p class="passed">Gate passed</p>' if gate.passed
                   else '<p class="failed">Gate FAILED</p>')
        sections.append(HtmlSection("Gate", verdict + html_table(
            ("check", "result"), [(line, "passed" if line not in gate.failed else "FAILED")
                                  for line in gate.checks])))
    rows = [(option, spec) for option, spec in inputs.items() if spec is not None]
    rows.append(("date", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))
    sections.append(HtmlSection("Inputs", html_table(("input", "file"), rows)))
    if blend is not None:
        sections.append(HtmlSection("Blend applied", '<p class="note">The new predictions are '
                                    "the blend of the old and new scores (v1 keeps running "
                                    "beside v2).</p>" + html_table(("field", "value"),
                                                                   list(blend.items()))))
    if counted.flips is not None:
        sections.append(flip_report_section(counted.flips))
    sections.append(HtmlSection("Churn: old -> new", html_table(
        ("metric", "value", "meaning"), churn_rows(counted.churn))))
    if counted.groups is not None:
        sections.append(HtmlSection("Groups", html_table(GROUP_HEADER,
                                                         group_rows(counted.groups))))
    if counted.notes:
        sections.append(HtmlSection("Notes", "".join(
            f'<p class="note">{html.escape(note)}</p>' for note in counted.notes)))
    return render_html_page(title, sections)
