"""The ``regfree`` command: parses arguments, calls the library, prints, sets the exit code.

Exit codes: 0 success (gate passed or no gate), 1 a quality gate failed, 2 bad input or usage
(one line on stderr, never a traceback). Each subcommand module has an
``add_<name>_parser(subparsers)`` function that sets ``func`` to a ``(args) -> int`` handler.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Optional, Sequence

from regfree.cli.common import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_OK, CliError

__all__ = ["EXIT_BAD_INPUT", "EXIT_GATE_FAILED", "EXIT_OK", "CliError", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line on stderr with exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    """The ``regfree`` parser with all subcommands."""
    from regfree import __version__
    from regfree.cli.blend import add_blend_parser
    from regfree.cli.demo import add_demo_parser
    from regfree.cli.report import add_report_parser

    parser = _Parser(prog="regfree", description="Regression-free model updates.")
    parser.add_argument("--version", action="version", version=f"regfree {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       parser_class=_Parser)
    add_report_parser(subparsers)
    add_blend_parser(subparsers)
    add_demo_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``regfree`` with ``argv`` (default: the process arguments); returns the exit code.

    Example:
        >>> main(["report", "--old"])
        2
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version and usage errors
        return int(stop.code or 0)
    try:
        return args.func(args)
    except CliError as err:
        sys.stderr.write(f"regfree {args.command}: error: {err}\n")
        return EXIT_BAD_INPUT
    except OSError as err:  # e.g. the disk fills while writing an output file
        text = " ".join(str(err.strerror or err).split())
        sys.stderr.write(f"regfree {args.command}: error: {text}"
                         f"{': ' + str(err.filename) if err.filename else ''}\n")
        return EXIT_BAD_INPUT
