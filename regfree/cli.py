"""The ``regfree`` command: parses arguments, calls the library, prints, sets the exit code.

Exit codes: 0 success (gate passed or no gate), 1 a quality gate failed, 2 bad input or usage
(one line on stderr, never a traceback). Each subcommand adds itself with an
``_add_<name>_parser(subparsers)`` function that sets ``func`` to a ``(args) -> int`` handler.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import NoReturn, Optional, Sequence

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class CliError(Exception):
    """Bad input or usage; its message is printed as one line and the exit code is 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line on stderr with exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(EXIT_BAD_INPUT)


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _check_output_path(option: str, path: Optional[str]) -> None:
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CliError(f"{option} {path}: directory {directory} does not exist")
    if os.path.isdir(path):
        raise CliError(f"{option} {path}: is a directory")


# --------------------------------------------------------------------------------------------
# regfree report

_REPORT_OPTIONS = {"y_true": "--labels", "old_pred": "--old", "new_pred": "--new",
                   "num_classes": "--class-names"}


def _explain(err: ValueError, paths: dict[str, Optional[str]]) -> str:
    """Rewrite a metrics error ('old_pred: ...') in terms of the command line ('--old F: ...')."""
    message = " ".join(str(err).split())
    head, sep, rest = message.partition(": ")
    if sep and head in _REPORT_OPTIONS:
        option = _REPORT_OPTIONS[head]
        message = f"{option} {paths[option]}: {rest}" if paths.get(option) else f"{option}: {rest}"
    pattern = r"\b(" + "|".join(_REPORT_OPTIONS) + r")\b"
    return re.sub(pattern, lambda m: _REPORT_OPTIONS[m.group(1)], message)


def _add_report_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="negative flips between an old and a new model's predictions",
        description="Compare an old and a new model's predictions on labelled data. Each input "
                    "is .npy, .csv/.txt (FILE.csv:column picks a column; several numeric "
                    "columns are scores) or .parquet (FILE.parquet:column); 2-D inputs are "
                    "scores reduced by argmax. Exit 0: passed, 1: NFR above --max-nfr, "
                    "2: bad input.")
    parser.add_argument("--labels", required=True, metavar="FILE", help="true class ids")
    parser.add_argument("--old", required=True, metavar="FILE",
                        help="old model's class ids or scores")
    parser.add_argument("--new", required=True, metavar="FILE",
                        help="new model's class ids or scores")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--html", metavar="FILE", help="write a self-contained HTML page")
    parser.add_argument("--max-nfr", type=_share, metavar="X",
                        help="fail (exit 1) when NFR is above X, a share such as 0.02")
    parser.add_argument("--class-names", metavar="FILE",
                        help="one class name per line (or a .json list); sets the class count")
    parser.add_argument("--top", type=int, default=5, metavar="K",
                        help="how many most-regressed classes to list (default 5)")
    parser.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from regfree.metrics import flip_report
    from regfree.reporting import print_flip_report, read_array, read_class_names
    from regfree.reporting.files import write_text_atomic

    paths = {"--labels": args.labels, "--old": args.old, "--new": args.new,
             "--class-names": args.class_names}
    _check_output_path("--json", args.json)
    _check_output_path("--html", args.html)
    arrays = {}
    for option in ("--labels", "--old", "--new"):
        try:
            arrays[option] = read_array(paths[option])
        except ValueError as err:
            raise CliError(f"{option} {err}") from None
    try:
        names = read_class_names(args.class_names) if args.class_names else None
    except ValueError as err:
        raise CliError(f"--class-names {err}") from None
    try:
        report = flip_report(arrays["--labels"], arrays["--old"], arrays["--new"],
                             num_classes=None if names is None else len(names))
    except ValueError as err:
        raise CliError(_explain(err, paths)) from None

    # Render everything before writing anything, so a failure leaves no partial output.
    outputs = []
    if args.json:
        outputs.append((args.json, report.to_json()))
    if args.html:
        from regfree.reporting import flip_report_page

        outputs.append((args.html, flip_report_page(report, names)))
    print_flip_report(report, names, Console(), top=args.top)
    for path, text in outputs:
        write_text_atomic(path, text)

    if args.max_nfr is None:
        return EXIT_OK
    passed = report.nfr <= args.max_nfr
    verdict = "passed" if passed else "FAILED"
    print(f"gate {verdict}: NFR {report.nfr:.4%} {'<=' if passed else '>'} "
          f"--max-nfr {args.max_nfr:.4%}")
    return EXIT_OK if passed else EXIT_GATE_FAILED


# --------------------------------------------------------------------------------------------
# regfree demo

_DEMO_HELP = {
    "samples": "mnist1d samples generated offline (train + test)",
    "old_fraction": "share of the training split v1 is trained on",
    "old_width": "v1's convolution channels",
    "new_width": "v2's convolution channels",
    "embedding_dim": "embedding size of both models",
    "old_epochs": "v1's training epochs",
    "new_epochs": "each v2's training epochs",
    "batch_size": "training batch size",
    "lr": "Adam learning rate (cosine schedule)",
    "bct_weight": "weight of the backward-compatible influence loss",
    "max_nfr": "exit 1 when a v2's NFR is above this share",
    "seed": "seed of training (data is fixed)",
    "output": "folder for the HTML reports, plot and summary.json",
}


def _add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    from dataclasses import fields

    from regfree.demo import DemoConfig

    parser = subparsers.add_parser(
        "demo", help="train v1 and three v2s on mnist1d and report flips and retrieval",
        description="Train v1, then v2 three ways (plain, positive-congruent, backward-"
                    "compatible + positive-congruent) on mnist1d generated offline; print "
                    "error, NFR, McNemar p and retrieval against v1's FAISS gallery with no "
                    "backfill; write HTML reports and a plot.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for field in fields(DemoConfig):
        if field.name == "progress":
            continue
        kind = {"max_nfr": _share}.get(field.name, type(field.default))
        parser.add_argument("--" + field.name.replace("_", "-"), type=kind,
                            default=field.default, help=_DEMO_HELP[field.name])
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from regfree.demo import DemoConfig

    values = {f.name: getattr(args, f.name) for f in fields(DemoConfig) if f.name != "progress"}
    try:
        config = DemoConfig(**values, progress=not args.no_progress)
        config.validate()
    except ValueError as err:
        raise CliError(str(err)) from None
    from regfree.demo.run import main as demo_main  # torch: only once the knobs are valid

    return demo_main(config)


# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``regfree`` parser with all subcommands."""
    parser = _Parser(prog="regfree", description="Regression-free model updates.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_report_parser(subparsers)
    _add_demo_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``regfree`` with ``argv`` (default: the process arguments); returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as err:
        sys.stderr.write(f"regfree {args.command}: error: {err}\n")
        return EXIT_BAD_INPUT
    except OSError as err:  # e.g. the disk fills while writing an output file
        sys.stderr.write(f"regfree {args.command}: error: {err.strerror or err}"
                         f"{': ' + err.filename if err.filename else ''}\n")
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
