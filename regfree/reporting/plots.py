"""matplotlib figures of a flip report and of a partial-backfill curve (Agg canvas; pyplot and
its global state are not used)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from regfree.atomic import atomic_write
from regfree.metrics import FlipReport, wilson_interval
from regfree.metrics.report import class_label

if TYPE_CHECKING:
    from regfree.retrieval import BackfillCurve


def _legend_beside(ax) -> None:
    # Beside the axes, not inside: a legend drawn over the plot hides the bars or points under
    # it (constrained layout makes room for it).
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_per_class_nfr(report: FlipReport, class_names: Optional[Sequence[str]] = None,
                       top: int = 30) -> Figure:
    """Bars of per-class NFR (with 95% Wilson intervals) and PFR.

    Shows every class when there are at most ``top``, else the ``top`` with the highest NFR.
    """
    classes = [c for c in report.per_class if c.count > 0]
    if len(classes) > top:
        classes = sorted(sorted(classes, key=lambda c: -c.nfr)[:top], key=lambda c: c.label)
    x = np.arange(len(classes))
    nfr = np.array([c.nfr for c in classes])
    pfr = np.array([c.pfr for c in classes])
    bounds = np.array([wilson_interval(c.negative_flips, c.count) for c in classes])
    bounds = bounds.reshape(-1, 2)
    err = np.vstack([nfr - bounds[:, 0], bounds[:, 1] - nfr])
    fig = _new_figure(max(5.0, 0.45 * len(classes) + 2) + 1.6, 3.4)
    ax = fig.add_subplot()
    ax.bar(x - 0.2, nfr * 100, 0.4, yerr=err * 100, capsize=2, color="#c0392b",
           label="NFR (95% CI)")
    ax.bar(x + 0.2, pfr * 100, 0.4, color="#27ae60", label="PFR")
    ax.axhline(report.nfr * 100, color="#c0392b", linestyle="--", linewidth=1,
               label=f"overall NFR {report.nfr:.2%}")
    ax.set_xticks(x, [class_label(c.label, class_names) for c in classes],
                  rotation=45 if len(classes) > 12 else 0, ha="right" if len(classes) > 12
                  else "center")
    ax.set_ylabel("% of the class's samples")
    ax.set_xlabel("true class")
    ax.set_title("Per-class negative and positive flip rates")
    _legend_beside(ax)
    return fig


def plot_negative_flip_confusion(report: FlipReport,
                                 class_names: Optional[Sequence[str]] = None,
                                 top: int = 20) -> Figure:
    """Heatmap of negative flips: true class (rows) -> the new model's wrong class (columns).

    With more than ``top`` classes, only the ``top`` classes involved in most flips are shown.
    """
    confusion = report.negative_flip_confusion
    keep = np.arange(report.num_classes)
    if len(keep) > top:
        involvement = confusion.sum(axis=0) + confusion.sum(axis=1)
        keep = np.sort(np.argsort(-involvement, kind="stable")[:top])
    shown = confusion[np.ix_(keep, keep)]
    labels = [class_label(int(k), class_names) for k in keep]
    size = max(3.5, 0.4 * len(keep) + 2)
    fig = _new_figure(size + 1, size)
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Reds", vmin=0)
    fig.colorbar(image, ax=ax, label="negative flips")
    ax.set_xticks(np.arange(len(keep)), labels, rotation=45 if len(keep) > 12 else 0)
    ax.set_yticks(np.arange(len(keep)), labels)
    ax.set_xlabel("new model predicts")
    ax.set_ylabel("true class (old model was right)")
    ax.set_title("Negative-flip confusion")
    if len(keep) <= 15:
        peak = shown.max() if shown.size else 0
        for (i, j), value in np.ndenumerate(shown):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize="small",
                        color="white" if value > peak / 2 else "black")
    return fig


def plot_backfill_curves(curve: BackfillCurve, metric: str = "top1",
                         path: Union[str, None] = None, title: Optional[str] = None) -> Figure:
    """Plot ``metric`` against the backfilled share for every order of a backfill curve.

    Args:
        curve: from :func:`regfree.retrieval.backfill_curve`.
        metric: a score name such as ``"top1"`` or ``"mAP"``.
        path: also write a PNG there (written to a temporary name, then renamed).
        title: the axes title.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:
        >>> import numpy as np
        >>> from regfree.retrieval import BackfillCurve
        >>> curve = BackfillCurve(np.array([0.0, 1.0]), {"random": {"top1": np.array([0.2, 0.9])}})
        >>> len(plot_backfill_curves(curve).axes[0].lines)
        1
    """
    first = next(iter(curve.scores.values()))
    if metric not in first:
        raise ValueError(f"metric must be one of {sorted(first)}, got {metric!r}")
    fig = _new_figure(8, 4)
    ax = fig.add_subplot()
    for name, values in curve.scores.items():
        ax.plot(100 * curve.fractions, values[metric], marker="o",
                label=f"{name} (area {curve.area(name, metric):.3f})")
    ax.set_xlabel("gallery backfilled with the new model (%)")
    ax.set_ylabel(metric)
    ax.set_title(title or f"Partial backfill: {metric} of new-model queries")
    ax.grid(alpha=0.3)
    _legend_beside(ax)
    if path is not None:
        atomic_write(path, lambda handle: fig.savefig(handle, format="png"))
    return fig


def plot_blend_pareto(points: Sequence, front: Sequence, chosen: tuple[str, float]) -> Figure:
    """Validation error against NFR of every candidate blend, the Pareto front joined, v2 alone
    and the chosen blend marked.

    Args:
        points: every :class:`~regfree.pctraining.blend.BlendPoint` of the sweep.
        front: the Pareto front (:func:`~regfree.pctraining.pareto_front`).
        chosen: ``(kind, knob)`` of the chosen blend.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:
        >>> from regfree.pctraining.blend import BlendPoint
        >>> points = [BlendPoint("weighted", 0.0, 0.2, 0.1), BlendPoint("gate", 0.3, 0.2, 0.0)]
        >>> len(plot_blend_pareto(points, points[1:], ("gate", 0.3)).axes[0].collections)
        4
    """
    fig = _new_figure(7.5, 4)
    ax = fig.add_subplot()
    for kind, marker in (("weighted", "o"), ("gate", "s")):
        mine = [p for p in points if p.kind == kind]
        ax.scatter([100 * p.nfr for p in mine], [100 * p.error_rate for p in mine], s=18,
                   marker=marker, alpha=0.5, label=f"{kind} (each knob)")
    ax.plot([100 * p.nfr for p in front], [100 * p.error_rate for p in front], color="#555",
            linewidth=1, label="Pareto front")
    alone = points[0]
    ax.scatter([100 * alone.nfr], [100 * alone.error_rate], s=90, marker="x", color="#c0392b",
               label="v2 alone")
    best = next(p for p in points if (p.kind, p.knob) == tuple(chosen))
    ax.scatter([100 * best.nfr], [100 * best.error_rate], s=140, marker="*", color="#27ae60",
               label=f"chosen: {best.kind} {best.knob:g}")
    ax.set_xlabel("validation NFR (%)")
    ax.set_ylabel("validation error (%)")
    ax.set_title("Blends of v1 and v2: error against negative flips")
    ax.grid(alpha=0.3)
    _legend_beside(ax)
    return fig
