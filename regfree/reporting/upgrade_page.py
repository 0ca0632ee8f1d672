"""The upgrade page: the flip report plus the retrieval matrix and the backfill curve."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Optional, Sequence

from regfree.reporting.html import (
    HtmlSection,
    flip_report_section,
    html_table,
    image_html,
    render_html_page,
)

if TYPE_CHECKING:
    from regfree.compat import CompatibilityReport
    from regfree.metrics import FlipReport
    from regfree.retrieval import BackfillCurve


def _percent(value: float) -> str:
    return "" if math.isnan(value) else f"{100 * value:.1f}%"


def retrieval_section(compat: CompatibilityReport) -> HtmlSection:
    """Top-1 / top-5 / mAP of v1/v1, v2/v1 (no backfill) and v2/v2, with the verdict."""
    rows = []
    for query, gallery, meaning in (("v1", "v1", "today: v1 queries on v1's gallery"),
                                    ("v2", "v1", "v2 queries on v1's gallery, no backfill"),
                                    ("v2", "v2", "after a full backfill")):
        rows.append([f"{query}/{gallery}", meaning] +
                    [_percent(compat.value(query, gallery, m)) for m in ("top1", "top5", "mAP")])
    gain = compat.update_gain("v2", "v1")
    verdict = ("v2 can search v1's gallery without a backfill (v2/v1 beats v1/v1)"
               if compat.criterion("v2", "v1") else
               "v2 is NOT compatible with v1's gallery: backfill before switching queries to v2")
    body = [html_table(("query/gallery", "what it is", "top-1", "top-5", "mAP"), rows),
            f"<p><b>{html.escape(verdict)}</b>. Update gain without backfill: "
            f"{'n/a' if math.isnan(gain) else f'{gain:.2f}'} (share of the full-backfill "
            "improvement).</p>"]
    return HtmlSection("Retrieval across versions", "\n".join(body))


def backfill_section(curve: BackfillCurve) -> HtmlSection:
    """The partial-backfill curve, per order."""
    from regfree.reporting.plots import plot_backfill_curves

    header = ["order"] + [f"{100 * f:g}%" for f in curve.fractions] + ["area"]
    rows = [[order] + [_percent(v) for v in scores["top1"]] + [_percent(curve.area(order))]
            for order, scores in curve.scores.items()]
    figure = plot_backfill_curves(curve, title="v2 queries while v1's gallery is backfilled")
    return HtmlSection("Partial backfill (top-1)",
                       html_table(header, rows) + "\n" + image_html(figure, "backfill curve"))


def upgrade_page(flips: FlipReport, *, retrieval: Optional[CompatibilityReport] = None,
                 backfill: Optional[BackfillCurve] = None, max_nfr: Optional[float] = None,
                 passed: Optional[bool] = None, class_names: Optional[Sequence[str]] = None,
                 title: str = "regfree upgrade report") -> str:
    """One self-contained page for an upgrade check (what
    :meth:`regfree.upgrade.UpgradeReport.to_html` writes), from its parts.

    Args:
        flips: the v1 -> v2 flip report.
        retrieval: the cross-version retrieval report; ``None`` leaves the section out.
        backfill: the partial-backfill curve; ``None`` leaves the section out.
        max_nfr: the gate's maximum NFR; ``None``: no gate section.
        passed: whether the gate passed (required with ``max_nfr``).
        class_names: names of the classes.
        title: the page title.

    Returns:
        The HTML page.

    Example:
        >>> from regfree.metrics import flip_report
        >>> page = upgrade_page(flip_report([0, 1], [0, 1], [0, 0]), max_nfr=0.1, passed=False)
        >>> "FAIL" in page
        True
    """
    sections = []
    if max_nfr is not None:
        if passed is None:
            raise ValueError("passed must be given with max_nfr (whether the gate passed)")
        sections.append(HtmlSection("Gate", f"<p><b>{'PASS' if passed else 'FAIL'}</b>: NFR "
                                            f"{flips.nfr:.2%} against a maximum of "
                                            f"{max_nfr:.2%}.</p>"))
    sections.append(flip_report_section(flips, class_names))
    if retrieval is not None:
        sections.append(retrieval_section(retrieval))
    if backfill is not None:
        sections.append(backfill_section(backfill))
    return render_html_page(title, sections)
