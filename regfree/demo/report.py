"""What the demo shows: its table, the sentences that read it, the plot and summary files.

The closing sentences are built from the run's numbers (a short run with tiny settings can
end with v2 worse than v1, no significant change and no compatibility: they say so).

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
from regfree.reporting import write_text_atomic

if TYPE_CHECKING:
    from regfree.demo.config import DemoConfig
    from regfree.upgrade import UpgradeReport

VARIANTS = ("plain", "pc", "bct+pc")
VARIANT_TITLES = {"plain": "plain", "pc": "PC (FD-KL)", "bct+pc": "BCT + PC"}
SIGNIFICANCE = 0.05


@dataclass
class DemoRow:
    """One v2 variant's line of the demo table (``old_error``: v1's test error)."""

    variant: str
    error: float
    nfr: float
    nfr_ci: tuple[float, float]
    mcnemar_p: float
    nfr_vs_plain_p: Optional[float]
    top1_new_old: float
    top1_new_new: float
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


def conclusion(rows: list[DemoRow]) -> str:
    """What the numbers of this run say, in three sentences: error and flips of plain v2, what
    positive-congruent training does to the flips (and whether it is significant), and which
    v2 meets the compatibility criterion on v1's gallery.

    Args:
        rows: the demo's rows, one per variant in :data:`VARIANTS`.

    Returns:
        The sentences, one paragraph.
    """
    by = {r.variant: r for r in rows}
    plain, pc, both = by["plain"], by["pc"], by["bct+pc"]
    first = (f"Plain v2 {changed('error', plain.old_error, plain.error)} and breaks "
             f"{plain.nfr:.1%} of the samples v1 got right; {_nfr_change(pc, plain)}, at "
             f"{pc.error:.1%} error.")
    return (f"{first} {_compatibility(plain, both)} BCT + PC v2 breaks {both.nfr:.1%} of v1's "
            "correct samples.")


def print_rows(rows: list[DemoRow], seconds: float) -> None:
    """The demo table on the terminal, then :func:`conclusion`."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="v1 -> v2 on mnist1d (test split; gallery = training split embedded by v1)")
    for header in ("v2", "error", "NFR [95% CI]", "McNemar p v1", "NFR p plain",
                   "top-1 v2/v1", "top-1 v2/v2"):
        table.add_column(header, justify="right" if header != "v2" else "left")
    for r in rows:
        table.add_row(VARIANT_TITLES[r.variant], f"{r.error:.2%}",
                      f"{r.nfr:.2%} [{r.nfr_ci[0]:.2%}, {r.nfr_ci[1]:.2%}]",
                      f"{r.mcnemar_p:.2g}",
                      "-" if r.nfr_vs_plain_p is None else f"{r.nfr_vs_plain_p:.2g}",
                      f"{r.top1_new_old:.2%}", f"{r.top1_new_new:.2%}")
    console = Console()
    console.print(table)
    console.print(f"v1: error {rows[0].old_error:.2%}. v2/v1: v2 queries on v1's gallery, no "
                  f"backfill; v1/v1 today: {rows[0].top1_old_old:.2%}. 'McNemar p v1': v2 "
                  "differs from v1; 'NFR p plain': its negative flips differ from plain v2's. "
                  f"Took {seconds:.0f} s.")
    console.print(conclusion(rows))


def write_outputs(config: DemoConfig, rows: list[DemoRow], reports: dict[str, UpgradeReport]
                  ) -> None:
    """``report_<variant>.html`` per v2, ``summary.json`` and ``demo.png`` under the output."""
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    for variant, report in reports.items():
        report.to_html(str(out / f"report_{variant.replace('+', '_')}.html"),
                       title=f"v1 -> v2 {VARIANT_TITLES[variant]}")
    summary = {"config": asdict(config), "rows": [asdict(r) for r in rows]}
    write_text_atomic(str(out / "summary.json"), json.dumps(summary, indent=2))
    _plot(rows, out / "demo.png")


def _plot(rows: list[DemoRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.variant for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4))
    nfr = [100 * r.nfr for r in rows]
    err = [[100 * (r.nfr - r.nfr_ci[0]) for r in rows], [100 * (r.nfr_ci[1] - r.nfr) for r in rows]]
    left.bar(names, nfr, yerr=err, capsize=4, color="#c44e52")
    left.set_ylabel("negative flip rate vs v1 (%)")
    left.set_title("Regressions (95% Wilson interval)")
    width = 0.38
    pos = np.arange(len(rows))
    right.bar(pos - width / 2, [100 * r.top1_new_old for r in rows], width,
              label="v2 query, v1 gallery (no backfill)")
    right.bar(pos + width / 2, [100 * r.top1_new_new for r in rows], width,
              label="v2 query, v2 gallery")
    right.axhline(100 * rows[0].top1_old_old, color="k", ls="--", lw=1, label="v1/v1 today")
    right.set_xticks(pos, names)
    right.set_ylabel("retrieval top-1 (%)")
    right.set_title("Search without backfilling")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    try:
        atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    finally:
        plt.close(fig)
