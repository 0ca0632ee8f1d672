"""``regfree report``: flips (with labels) or churn (without) between two models' predictions."""

from __future__ import annotations

import argparse

from regfree.cli.common import (
    EXIT_GATE_FAILED,
    EXIT_OK,
    CliError,
    check_output_path,
    positive_int,
    share,
)

_DESCRIPTION = (
    "Compare an old and a new model's predictions. Each input is FILE or FILE:column, with FILE "
    ".csv, .tsv, .txt, .jsonl or .parquet (read through DuckDB, streamed at constant memory) "
    "or .npy. Values are class ids, class names, or per-class scores (several float columns "
    "or a list column; argmax). An id/index column is never a value; with --id the inputs are "
    "joined by that column in any row order. Without --labels the report is label-free churn. "
    "Exit 0: passed, 1: a gate failed, 2: bad input.")


def add_report_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="negative flips (or churn) between an old and a new model's predictions",
        description=_DESCRIPTION)
    parser.add_argument("--labels", metavar="FILE", help="true classes (omit for churn only)")
    parser.add_argument("--old", required=True, metavar="FILE",
                        help="old model's classes or scores")
    parser.add_argument("--new", required=True, metavar="FILE",
                        help="new model's classes or scores")
    parser.add_argument("--id", metavar="COLUMN",
                        help="join the inputs by this column instead of by row order")
    parser.add_argument("--group", metavar="FILE",
                        help="a slice per row (country, device, ...): NFR per group")
    parser.add_argument("--class-names", metavar="FILE",
                        help="one class name per line (or a .json list): the class order")
    parser.add_argument("--blend", metavar="FILE",
                        help="a blend from `regfree blend --json`: the new predictions become "
                             "the blend of the --old and --new scores")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--html", metavar="FILE", help="write a self-contained HTML page")
    parser.add_argument("--max-nfr", type=share, metavar="X",
                        help="fail (exit 1) when NFR is above X, a share such as 0.02")
    parser.add_argument("--max-group-nfr", type=share, metavar="X",
                        help="fail when any group of at least --min-group-size has NFR above X")
    parser.add_argument("--min-group-size", type=positive_int, default=100, metavar="N",
                        help="smallest group --max-group-nfr applies to (default 100)")
    parser.add_argument("--max-churn", type=share, metavar="X",
                        help="fail when the share of changed predictions is above X")
    parser.add_argument("--top", type=positive_int, default=5, metavar="K",
                        help="how many most-regressed classes to list (default 5)")
    parser.set_defaults(func=run_report)


def _check_options(args: argparse.Namespace) -> None:
    if args.labels is None:
        for option, value in (("--max-nfr", args.max_nfr), ("--max-group-nfr",
                                                            args.max_group_nfr)):
            if value is not None:
                raise CliError(f"{option}: needs --labels (without labels, gate on "
                               "--max-churn)")
    if args.max_group_nfr is not None and args.group is None:
        raise CliError("--max-group-nfr: needs --group FILE[:column]")
    check_output_path("--json", args.json)
    check_output_path("--html", args.html)


def read_blend(path: str):
    """The :class:`~regfree.pctraining.LogitBlend` in a ``regfree blend --json`` file (or a bare
    ``LogitBlend.to_dict()``); raises :class:`CliError` naming the file."""
    import json

    from regfree.pctraining.blend import LogitBlend
    from regfree.reporting.inputs import InputError, check_file_any, one_line

    try:
        check_file_any(path)
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if isinstance(data, dict) and isinstance(data.get("blend"), dict):
            data = data["blend"]
        return LogitBlend.from_dict(data)
    except (InputError, OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError,
            KeyError) as err:
        text = str(err) if isinstance(err, InputError) else f"{path}: {one_line(err)}"
        if isinstance(err, KeyError):
            text = f"{path}: the blend has no {err.args[0]!r}"
        raise CliError(f"--blend {text}") from None


def run_report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from regfree.metrics.classes import check_class_names
    from regfree.reporting import InputError, read_class_names
    from regfree.reporting.console import print_counted_report
    from regfree.reporting.counting import count_report
    from regfree.reporting.files import write_text_atomic
    from regfree.reporting.gate import evaluate_gate
    from regfree.reporting.record import record_json, report_record

    _check_options(args)
    blend = read_blend(args.blend) if args.blend else None
    names = None
    if args.class_names:
        try:
            names = list(check_class_names(read_class_names(args.class_names)))
        except ValueError as err:
            raise CliError(f"--class-names {err}") from None
    specs = {"--labels": args.labels, "--old": args.old, "--new": args.new,
             "--group": args.group}
    specs = {option: spec for option, spec in specs.items() if spec is not None}
    try:
        counted = count_report(specs, id_column=args.id, class_names=names, blend=blend)
    except InputError as err:
        raise CliError(str(err)) from None
    except ValueError as err:  # from the counters: already names the problem
        raise CliError(" ".join(str(err).split())) from None
    gate = evaluate_gate(counted, max_nfr=args.max_nfr, max_group_nfr=args.max_group_nfr,
                         min_group_size=args.min_group_size, max_churn=args.max_churn)
    inputs = {**specs, "--id": args.id, "--class-names": args.class_names,
              "--blend": args.blend}
    applied = None if blend is None else blend.to_dict()

    # Render everything before writing anything, so a failure leaves no partial output.
    outputs = []
    if args.json:
        record = report_record(counted, gate, inputs, blend=applied)
        outputs.append((args.json, record_json(record)))
    if args.html:
        from regfree.reporting.html import counted_report_page

        outputs.append((args.html, counted_report_page(counted, gate, inputs, blend=applied)))
    if blend is not None:
        print(f"new predictions: the blend of --old and --new scores ({blend.kind} "
              f"{blend.knob:g}, scores: {blend.scores}; v1 keeps running beside v2)")
    print_counted_report(counted, Console(), top=args.top)
    for path, text in outputs:
        write_text_atomic(path, text)
    if gate is None:
        return EXIT_OK
    for line in gate.checks:
        print(f"  {line}")
    print(f"gate {'passed' if gate.passed else 'FAILED'}"
          + ("" if gate.passed else f": {'; '.join(gate.failed)}"))
    return EXIT_OK if gate.passed else EXIT_GATE_FAILED
