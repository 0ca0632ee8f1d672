"""The upgrade page: the flip report plus the retrieval matrix and the backfill curve."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

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


_ADAPTED_MEANING = {
    "v2 adapted query/v1": "v2 queries mapped into v1's space by the query adapter, on v1's "
                           "gallery as stored",
    "v2/v1 transformed": "v2 queries on v1's gallery mapped into v2's space by the adapter "
                         "(items re-embedded to fit it stored as v2 embeds them)",
}


def _adapter_paragraph(compat: CompatibilityReport,
                       adapted: Mapping[str, Mapping[str, float]]) -> str:
    """One sentence per adapter entry: the share of the full-backfill gain it recovers."""
    parts = []
    for entry, scores in adapted.items():
        shares = [(m, compat.recovered_share(scores[m], "v2", "v1", m)) for m in ("top1", "mAP")]
        said = ", ".join(f"{'n/a' if math.isnan(v) else f'{100 * v:.0f}%'} in {label}"
                         for (m, v), label in zip(shares, ("top-1", "mAP")))
        parts.append(f"<b>{html.escape(entry)}</b> recovers {said} of the gain a full backfill "
                     "gives (v1/v1 to v2/v2)")
    return "<p>" + "; ".join(parts) + ".</p>"


def retrieval_section(compat: CompatibilityReport,
                      adapted: Optional[Mapping[str, Mapping[str, float]]] = None) -> HtmlSection:
    """Top-1 / top-5 / mAP of v1/v1, v2/v1 (no backfill) and v2/v2, with the verdict; with
    ``adapted`` (post-hoc adapter scores by entry), their rows and the share of the
    full-backfill gain each recovers."""
    rows = []
    for query, gallery, meaning in (("v1", "v1", "today: v1 queries on v1's gallery"),
                                    ("v2", "v1", "v2 queries on v1's gallery, no backfill"),
                                    ("v2", "v2", "after a full backfill")):
        rows.append([f"{query}/{gallery}", meaning] +
                    [_percent(compat.value(query, gallery, m)) for m in ("top1", "top5", "mAP")])
    for entry, scores in (adapted or {}).items():
        rows.insert(-1, [entry, _ADAPTED_MEANING.get(entry, "through an adapter")] +
                    [_percent(scores[m]) for m in ("top1", "top5", "mAP")])
    gain = compat.update_gain("v2", "v1")
    verdict = ("v2 can search v1's gallery without a backfill (v2/v1 beats v1/v1)"
               if compat.criterion("v2", "v1") else
               ("v2 is NOT compatible with v1's gallery as stored: backfill, or serve it "
                "through an adapter (below), before switching queries to v2") if adapted else
               "v2 is NOT compatible with v1's gallery: backfill before switching queries to v2")
    body = [html_table(("query/gallery", "what it is", "top-1", "top-5", "mAP"), rows),
            f"<p><b>{html.escape(verdict)}</b>. Update gain without backfill: "
            f"{'n/a' if math.isnan(gain) else f'{gain:.2f}'} (share of the full-backfill "
            "improvement).</p>"]
    if adapted:
        body.append(_adapter_paragraph(compat, adapted))
    return HtmlSection("Retrieval across versions", "\n".join(body))


def backfill_section(curve: BackfillCurve) -> HtmlSection:
    """The partial-backfill curve, per order (orders ending in ``" + adapter"`` keep the items
    not yet re-embedded through the adapter; ``" + query adapter"``, in v1's space, reached by
    the adapted queries)."""
    from regfree.reporting.plots import plot_backfill_curves

    header = ["order"] + [f"{100 * f:g}%" for f in curve.fractions] + ["area"]
    rows = [[order] + [_percent(v) for v in scores["top1"]] + [_percent(curve.area(order))]
            for order, scores in curve.scores.items()]
    figure = plot_backfill_curves(curve, title="v2 queries while v1's gallery is backfilled")
    note = ""
    if any(order.endswith(" + adapter") for order in curve.scores):
        note += ("<p>Orders marked <i>+ adapter</i> store the items not yet re-embedded "
                 "through the adapter (v1's embeddings mapped into v2's space) instead of "
                 "raw.</p>\n")
    if any(order.endswith(" + query adapter") for order in curve.scores):
        note += ("<p>Orders marked <i>+ query adapter</i> leave the items not yet re-embedded "
                 "in v1's space as stored; v2 queries reach them through the query adapter and "
                 "the re-embedded items natively, ranked together on cosine score.</p>\n")
    return HtmlSection("Partial backfill (top-1)", note + html_table(header, rows) + "\n"
                       + image_html(figure, "backfill curve"))


def upgrade_page(flips: FlipReport, *, retrieval: Optional[CompatibilityReport] = None,
                 backfill: Optional[BackfillCurve] = None, max_nfr: Optional[float] = None,
                 passed: Optional[bool] = None, class_names: Optional[Sequence[str]] = None,
                 title: str = "regfree upgrade report",
                 adapted: Optional[Mapping[str, Mapping[str, float]]] = None) -> str:
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
        adapted: post-hoc adapter scores ``{entry: {score name: value}}`` (as
            :attr:`regfree.upgrade.UpgradeReport.adapted`); shown with the retrieval matrix.

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
        sections.append(retrieval_section(retrieval, adapted))
    if backfill is not None:
        sections.append(backfill_section(backfill))
    return render_html_page(title, sections)
