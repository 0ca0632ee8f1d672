"""``regfree blend``: choose how to combine v1's and v2's scores from validation score files."""

from __future__ import annotations

import argparse

from regfree.cli.common import EXIT_OK, CliError, check_output_path, share

_DESCRIPTION = (
    "Choose a training-free blend of the old and the new model's scores (a weighted blend of "
    "probabilities or a confidence gate) with the least validation NFR whose error stays "
    "within --max-error-increase of the new model alone. Inputs as for `regfree report` "
    "(FILE or FILE:column; .csv, .tsv, .txt, .jsonl, .parquet or .npy), except that --old and "
    "--new must be per-class scores (2-D .npy, several float columns or a list column): class "
    "ids cannot be blended. Apply the saved blend with `regfree report --blend FILE`. "
    "Exit 0: done, 2: bad input.")


def error_increase(text: str) -> float:
    """An argparse type: a share of error in [0, 1] (0.005 = half a point of error)."""
    return share(text, "a share in [0, 1] such as 0.005")


def add_blend_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "blend", help="fit a blend of the old and new model's scores on validation data",
        description=_DESCRIPTION)
    parser.add_argument("--labels", required=True, metavar="FILE", help="validation classes")
    parser.add_argument("--old", required=True, metavar="FILE",
                        help="old model's validation scores")
    parser.add_argument("--new", required=True, metavar="FILE",
                        help="new model's validation scores")
    parser.add_argument("--max-error-increase", type=error_increase, default=0.0, metavar="X",
                        help="validation error the blend may add over the new model alone, a "
                             "share such as 0.005 (default 0)")
    parser.add_argument("--scores", choices=("logits", "probabilities"), default="logits",
                        help="what the score files hold (default logits: softmax applied)")
    parser.add_argument("--id", metavar="COLUMN",
                        help="join the inputs by this column instead of by row order")
    parser.add_argument("--class-names", metavar="FILE",
                        help="one class name per line (or a .json list): the class order")
    parser.add_argument("--json", metavar="FILE",
                        help="write the chosen blend (for `regfree report --blend`) as JSON")
    parser.add_argument("--html", metavar="FILE", help="write a page with the Pareto plot")
    parser.set_defaults(func=run_blend)


def run_blend(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from regfree.metrics.classes import check_class_names
    from regfree.pctraining.blend import blend_sweep, fit_blend, pareto_front
    from regfree.reporting import InputError, read_class_names
    from regfree.reporting.blend_page import BLEND_HEADER, SERVING_NOTE, blend_record, blend_rows
    from regfree.reporting.files import write_text_atomic
    from regfree.reporting.record import record_json
    from regfree.reporting.scores import read_scored

    check_output_path("--json", args.json)
    check_output_path("--html", args.html)
    names = None
    if args.class_names:
        try:
            names = list(check_class_names(read_class_names(args.class_names)))
        except ValueError as err:
            raise CliError(f"--class-names {err}") from None
    specs = {"--labels": args.labels, "--old": args.old, "--new": args.new}
    try:
        read = read_scored(specs, id_column=args.id, class_names=names)
        blend = fit_blend(read.y, read.old, read.new, scores=args.scores,
                          max_error_increase=args.max_error_increase)
        points = blend_sweep(read.y, read.old, read.new, scores=args.scores)
    except InputError as err:
        raise CliError(str(err)) from None
    except ValueError as err:  # from fit_blend: names the problem (e.g. rows not summing to 1)
        text = " ".join(str(err).split())
        for name, option in (("old_val_scores", f"--old {args.old}"),
                             ("new_val_scores", f"--new {args.new}"),
                             ("scores='probabilities'", "--scores probabilities"),
                             ("scores='logits'", "--scores logits")):
            text = text.replace(name, option)
        raise CliError(text) from None
    # A chosen blend that ties a front point on both numbers stands for it in the table.
    best = next(p for p in points if (p.kind, p.knob) == (blend.kind, blend.knob))
    front = [best if (p.error_rate, p.nfr) == (best.error_rate, best.nfr) else p
             for p in pareto_front(points)]
    inputs = {**specs, "--id": args.id, "--class-names": args.class_names}
    record = blend_record(blend, points, front, len(read.y), args.max_error_increase, inputs)

    # Render everything before writing anything, so a failure leaves no partial output.
    outputs = []
    if args.json:
        outputs.append((args.json, record_json(record)))
    if args.html:
        from regfree.reporting.blend_page import blend_page

        outputs.append((args.html, blend_page(record, points, front)))
    table = Table(*BLEND_HEADER, title=f"Validation Pareto front ({len(read.y):,} samples)")
    for row in blend_rows(points, front, (blend.kind, blend.knob)):
        table.add_row(*row)
    console = Console()
    console.print(table)
    chosen, alone = record["validation"]["chosen"], record["validation"]["v2_alone"]
    print(f"chosen: {blend.kind} {blend.knob:g} (scores: {blend.scores}): validation NFR "
          f"{chosen['nfr']:.2%} (v2 alone {alone['nfr']:.2%}), error {chosen['error_rate']:.2%} "
          f"(v2 alone {alone['error_rate']:.2%}, allowed +{args.max_error_increase:.2%})")
    print(SERVING_NOTE)
    for path, text in outputs:
        write_text_atomic(path, text)
    return EXIT_OK
