"""What ``regfree blend`` shows and writes: the validation Pareto table, the JSON record (the
chosen blend, its numbers, the inputs, the version) and a small HTML page with the plot."""

from __future__ import annotations

from typing import Any, Optional, Sequence

BLEND_HEADER = ("kind", "knob", "val. error", "val. NFR", "")
SERVING_NOTE = ("serving cost: v1 keeps running beside v2 for a blend (two forward passes per "
                "request), unless the chosen blend is v2 alone")


def blend_rows(points: Sequence[Any], front: Sequence[Any], chosen: tuple[str, float]
               ) -> list[tuple[str, str, str, str, str]]:
    """The Pareto front plus v2 alone and the chosen blend (when off the front), by NFR.

    Example:
        >>> from regfree.pctraining.blend import BlendPoint
        >>> alone = BlendPoint("weighted", 0.0, 0.2, 0.1)
        >>> half = BlendPoint("weighted", 0.5, 0.2, 0.0)
        >>> for row in blend_rows([alone, half], [half], ("weighted", 0.5)):
        ...     print(row)
        ('weighted', '0.5', '20.00%', '0.00%', 'chosen')
        ('weighted', '0', '20.00%', '10.00%', 'v2 alone')
    """
    alone = points[0]
    best = next(p for p in points if (p.kind, p.knob) == tuple(chosen))
    shown = list(front) + [p for p in (alone, best) if p not in front]
    rows = []
    for point in sorted(dict.fromkeys(shown), key=lambda p: (p.nfr, p.error_rate)):
        marks = [mark for mark, hit in (("chosen", point == best), ("v2 alone", point == alone))
                 if hit]
        rows.append((point.kind, f"{point.knob:g}", f"{point.error_rate:.2%}",
                     f"{point.nfr:.2%}", ", ".join(marks)))
    return rows


def blend_record(blend: Any, points: Sequence[Any], front: Sequence[Any], n: int,
                 max_error_increase: float, inputs: dict[str, Optional[str]]) -> dict[str, Any]:
    """The JSON of one ``regfree blend`` run; ``blend`` is what ``regfree report --blend`` reads."""
    from regfree import __version__

    best = next(p for p in points if (p.kind, p.knob) == (blend.kind, blend.knob))

    def numbers(point: Any) -> dict[str, Any]:
        return {"kind": point.kind, "knob": point.knob, "error_rate": point.error_rate,
                "nfr": point.nfr}

    return {"blend": blend.to_dict(),
            "validation": {"n": n, "max_error_increase": max_error_increase,
                           "chosen": numbers(best), "v2_alone": numbers(points[0]),
                           "pareto_front": [numbers(p) for p in front]},
            "serving": SERVING_NOTE,
            "inputs": {option.lstrip("-").replace("-", "_"): value
                       for option, value in inputs.items() if value is not None},
            "regfree_version": __version__}


def blend_page(record: dict[str, Any], points: Sequence[Any], front: Sequence[Any],
               title: str = "regfree blend") -> str:
    """A self-contained page: the chosen blend, the Pareto table and plot, the inputs."""
    from regfree.reporting.html import HtmlSection, html_table, image_html, render_html_page
    from regfree.reporting.plots import plot_blend_pareto

    chosen = (record["blend"]["kind"], record["blend"]["knob"])
    summary = html_table(("", "kind", "knob", "val. error", "val. NFR"), [
        (name, p["kind"], f"{p['knob']:g}", f"{p['error_rate']:.2%}", f"{p['nfr']:.2%}")
        for name, p in (("chosen", record["validation"]["chosen"]),
                        ("v2 alone", record["validation"]["v2_alone"]))])
    return render_html_page(title, [
        HtmlSection("Chosen blend", summary + f'<p class="note">{SERVING_NOTE}.</p>'),
        HtmlSection("Validation Pareto front", html_table(
            BLEND_HEADER, blend_rows(points, front, chosen))
            + image_html(plot_blend_pareto(points, front, chosen), "error against NFR")),
        HtmlSection("Inputs", html_table(("input", "file"), list(record["inputs"].items()))),
    ])
