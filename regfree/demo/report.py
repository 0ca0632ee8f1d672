"""What the demo shows: its table, the sentences that read it, the plot and summary files.

The closing sentences are built from the run's numbers (a short run with tiny settings can
end with v2 worse than v1, no significant change and no compatibility: they say so). Post-hoc
rows (plain v2 with an adapter or a blend, :mod:`regfree.demo.posthoc`) leave the columns that
do not apply to them as ``None`` (``-`` in the table).

Example:
    >>> row = DemoRow("plain", error=0.10, nfr=0.04, nfr_ci=(0.03, 0.05), mcnemar_p=0.01,
    ...               nfr_vs_plain_p=None, top1_new_old=0.08, top1_new_new=0.90,
    ...               top1_old_old=0.80, old_error=0.20)
    >>> changed("error", row.old_error, row.error)
    'lowers the error from 20.0% to 10.0%'
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from regfree.atomic import atomic_write
from regfree.demo.config import DemoConfig
from regfree.reporting import write_text_atomic

if TYPE_CHECKING:
    from regfree.upgrade import UpgradeReport

VARIANTS = ("plain", "pc", "bct+pc")
ADAPTER_GALLERY, ADAPTER_QUERY, BLEND = "adapter: gallery", "adapter: query", "blend"
POSTHOC_VARIANTS = (ADAPTER_GALLERY, ADAPTER_QUERY, BLEND)
VARIANT_TITLES = {"plain": "plain", "pc": "PC (FD-KL)", "bct+pc": "BCT + PC",
                  ADAPTER_GALLERY: "plain + adapter (gallery)",
                  ADAPTER_QUERY: "plain + adapter (query)", BLEND: "plain + blend"}
SIGNIFICANCE = 0.05


@dataclass
class DemoRow:
    """One v2 variant's line of the demo table (``old_error``: v1's test error; ``None``: the
    column does not apply to a post-hoc row)."""

    variant: str
    error: Optional[float]
    nfr: Optional[float]
    nfr_ci: Optional[tuple[float, float]]
    mcnemar_p: Optional[float]
    nfr_vs_plain_p: Optional[float]
    top1_new_old: Optional[float]
    top1_new_new: Optional[float]
    top1_old_old: float
    old_error: float


def changed(what: str, before: float, after: float) -> str:
    """``"lowers the error from 20.0% to 10.0%"`` (or raises, or leaves it at)."""
    if f"{after:.1%}" == f"{before:.1%}":
        return f"leaves the {what} at {after:.1%}"
    verb = "lowers" if after < before else "raises"
    return f"{verb} the {what} from {before:.1%} to {after:.1%}"


def _nfr_change(pc: DemoRow, plain: DemoRow) -> str:
    p = pc.nfr_vs_plain_p
    test = f"McNemar p = {p:.2g} against plain" if p is not None else "no test against plain"
    if pc.nfr < plain.nfr:
        verdict = ("a significant cut" if p is not None and p < SIGNIFICANCE
                   else "a cut that is not significant")
        return f"positive-congruent training brings that to {pc.nfr:.1%} ({verdict}, {test})"
    more = "no fewer" if pc.nfr == plain.nfr else "more"
    return f"positive-congruent training breaks {more} of them ({pc.nfr:.1%}, {test})"


def _compatibility(plain: DemoRow, both: DemoRow) -> str:
    old_old = both.top1_old_old
    met = {name: row.top1_new_old > old_old for name, row in (("plain", plain), ("BCT", both))}
    if all(met.values()):
        verdict = "both meet the compatibility criterion (v2/v1 above v1/v1)"
    elif met["BCT"]:
        verdict = ("only the backward-compatible v2 meets the compatibility criterion (v2/v1 "
                   "above v1/v1): it can search v1's gallery without a backfill")
    elif met["plain"]:
        verdict = ("plain v2 meets the compatibility criterion (v2/v1 above v1/v1) and the "
                   "backward-compatible v2 does not")
    else:
        verdict = ("neither meets the compatibility criterion (v2/v1 above v1/v1), so neither "
                   "should search v1's gallery before a backfill")
    return (f"Searching v1's gallery with no backfill, plain v2 reaches {plain.top1_new_old:.1%}"
            f" top-1 and BCT + PC v2 {both.top1_new_old:.1%}, against {old_old:.1%} for v1 "
            f"itself: {verdict}.")


def _adapter(gallery: DemoRow, query: DemoRow, share: float) -> str:
    old_old = query.top1_old_old
    met = {"gallery": gallery.top1_new_old > old_old, "query": query.top1_new_old > old_old}
    if all(met.values()):
        verdict = "both meet the compatibility criterion with no backfill beyond the paired items"
    elif met["query"]:
        verdict = ("the adapted query meets the compatibility criterion and the transformed "
                   "gallery does not")
    elif met["gallery"]:
        verdict = ("the transformed gallery meets the compatibility criterion and the adapted "
                   "query does not")
    else:
        verdict = ("neither meets the compatibility criterion, so plain v2 should not search "
                   "v1's gallery through them before a backfill")
    return (f"With no retraining, adapters fit on {share:.0%} of the gallery (re-embedded by v2)"
            f" let plain v2 search v1's gallery at {query.top1_new_old:.1%} top-1 with its "
            f"queries mapped into v1's space, and at {gallery.top1_new_old:.1%} with v1's "
            f"gallery mapped into v2's space (the paired {share:.0%} as v2 embeds them), against "
            f"{old_old:.1%} for v1 itself: {verdict}.")


def _blend(blend: DemoRow, plain: DemoRow, max_error_increase: float) -> str:
    p = blend.nfr_vs_plain_p
    test = f"McNemar p = {p:.2g} against plain"
    if blend.nfr < plain.nfr:
        verdict = ("a significant cut" if p < SIGNIFICANCE else "a cut that is not significant")
        flips = f"brings the negative flips from {plain.nfr:.1%} to {blend.nfr:.1%} ({verdict}, "
    elif blend.nfr == plain.nfr:
        flips = f"leaves the negative flips at {blend.nfr:.1%} ("
    else:
        flips = f"raises the negative flips from {plain.nfr:.1%} to {blend.nfr:.1%} ("
    return (f"Blending v1's and v2's scores, also with no retraining (the blend for each half "
            f"of the test split chosen on the other half, the error allowed to rise by up to "
            f"{max_error_increase * 100:.2g} points), "
            f"{changed('error', plain.error, blend.error)} and {flips}{test}); v1 keeps "
            "running beside v2 to serve it.")


def conclusion(rows: list[DemoRow], config: Optional[DemoConfig] = None) -> str:
    """What the numbers of this run say: error and flips of plain v2, what positive-congruent
    training does to the flips (and whether it is significant), which v2 meets the
    compatibility criterion on v1's gallery; then, when the post-hoc rows are there, whether
    plain v2 meets it through an adapter, and what a blend does to the flips.

    Args:
        rows: the demo's rows, one per variant in :data:`VARIANTS` (and optionally
            :data:`POSTHOC_VARIANTS`).
        config: the run's knobs (the adapter's paired share, the blend's error allowance);
            default :class:`DemoConfig`'s.

    Returns:
        The sentences, one paragraph.
    """
    config = config or DemoConfig()
    by = {r.variant: r for r in rows}
    plain, pc, both = by["plain"], by["pc"], by["bct+pc"]
    first = (f"Plain v2 {changed('error', plain.old_error, plain.error)} and breaks "
             f"{plain.nfr:.1%} of the samples v1 got right; {_nfr_change(pc, plain)}, at "
             f"{pc.error:.1%} error.")
    sentences = [first, _compatibility(plain, both),
                 f"BCT + PC v2 breaks {both.nfr:.1%} of v1's correct samples."]
    if ADAPTER_GALLERY in by and ADAPTER_QUERY in by:
        sentences.append(_adapter(by[ADAPTER_GALLERY], by[ADAPTER_QUERY], config.adapter_pairs))
    if BLEND in by:
        sentences.append(_blend(by[BLEND], plain, config.blend_max_error_increase))
    return " ".join(sentences)


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2%}"


def print_rows(rows: list[DemoRow], seconds: float, config: Optional[DemoConfig] = None,
               pairs: Optional[int] = None) -> None:
    """The demo table on the terminal, then :func:`conclusion` (``pairs``: how many gallery
    items the adapters were fit on)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="v1 -> v2 on mnist1d (test split; gallery = training split embedded by v1)")
    for header in ("v2", "error", "NFR [95% CI]", "McNemar p v1", "NFR p plain",
                   "top-1 v2/v1", "top-1 v2/v2"):
        table.add_column(header, justify="right" if header != "v2" else "left")
    for r in rows:
        nfr = "-" if r.nfr is None else f"{r.nfr:.2%} [{r.nfr_ci[0]:.2%}, {r.nfr_ci[1]:.2%}]"
        table.add_row(VARIANT_TITLES[r.variant], _percent(r.error), nfr,
                      "-" if r.mcnemar_p is None else f"{r.mcnemar_p:.2g}",
                      "-" if r.nfr_vs_plain_p is None else f"{r.nfr_vs_plain_p:.2g}",
                      _percent(r.top1_new_old), _percent(r.top1_new_new))
    console = Console()
    console.print(table)
    console.print(f"v1: error {rows[0].old_error:.2%}. v2/v1: v2 queries on v1's gallery, no "
                  f"backfill; v1/v1 today: {rows[0].top1_old_old:.2%}. 'McNemar p v1': v2 "
                  "differs from v1; 'NFR p plain': its negative flips differ from plain v2's. "
                  f"Took {seconds:.0f} s.")
    if any(r.variant in POSTHOC_VARIANTS for r in rows):
        config = config or DemoConfig()
        console.print(f"Post-hoc rows: plain v2 with no retraining. Adapters (fit_adapter) fit "
                      f"on {pairs} gallery items ({config.adapter_pairs:.0%}) embedded by both "
                      "models; '(gallery)': v2 queries on v1's gallery mapped into v2's space "
                      "(those items as v2 embeds them); '(query)': v2 queries "
                      "mapped into v1's space on v1's gallery as is. Blend (fit_blend): the "
                      "blend for each half of the test split chosen on the other half; v1 "
                      "runs beside v2.")
    console.print(conclusion(rows, config))


def write_outputs(config: DemoConfig, rows: list[DemoRow], reports: dict[str, UpgradeReport],
                  posthoc: Optional[dict] = None) -> None:
    """``report_<variant>.html`` per trained v2, ``summary.json`` (with ``posthoc``: what the
    post-hoc rows were fit with) and ``demo.png`` under the output."""
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    for variant, report in reports.items():
        report.to_html(str(out / f"report_{variant.replace('+', '_')}.html"),
                       title=f"v1 -> v2 {VARIANT_TITLES[variant]}")
    summary = {"config": asdict(config), "rows": [asdict(r) for r in rows]}
    if posthoc is not None:
        summary["posthoc"] = posthoc
    write_text_atomic(str(out / "summary.json"), json.dumps(summary, indent=2))
    _plot(rows, out / "demo.png")


_PLOT_NAMES = {ADAPTER_GALLERY: "plain + adapter\n(gallery)", ADAPTER_QUERY: "plain + adapter\n(query)",
               BLEND: "plain + blend"}


def _plot(rows: list[DemoRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    flipped = [r for r in rows if r.nfr is not None]
    nfr = [100 * r.nfr for r in flipped]
    err = [[100 * (r.nfr - r.nfr_ci[0]) for r in flipped],
           [100 * (r.nfr_ci[1] - r.nfr) for r in flipped]]
    left.bar([_PLOT_NAMES.get(r.variant, r.variant) for r in flipped], nfr, yerr=err, capsize=4, color="#c44e52")
    left.tick_params(axis="x", labelsize=8)
    left.set_ylabel("negative flip rate vs v1 (%)")
    left.set_title("Regressions (95% Wilson interval)")
    width = 0.38
    searched = [r for r in rows if r.top1_new_old is not None]
    pos = np.arange(len(searched))
    right.bar(pos - width / 2, [100 * r.top1_new_old for r in searched], width,
              label="v2 query, v1 gallery (no backfill; adapter rows through the adapter)")
    right.bar(pos + width / 2, [np.nan if r.top1_new_new is None else 100 * r.top1_new_new
                                for r in searched], width, label="v2 query, v2 gallery")
    right.axhline(100 * rows[0].top1_old_old, color="k", ls="--", lw=1, label="v1/v1 today")
    right.set_xticks(pos, [_PLOT_NAMES.get(r.variant, r.variant) for r in searched], fontsize=8)
    right.set_ylabel("retrieval top-1 (%)")
    right.set_title("Search without backfilling")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1)
    fig.tight_layout()
    try:
        atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    finally:
        plt.close(fig)
