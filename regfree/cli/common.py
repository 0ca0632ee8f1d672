"""What every ``regfree`` subcommand shares: exit codes, the one-line error, option types."""

from __future__ import annotations

import argparse
import os
from typing import Optional

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class CliError(Exception):
    """Bad input or usage; its message is printed as one line and the exit code is 2."""


def share(text: str, expected: str = "a number in [0, 1]") -> float:
    """An argparse type: a number in [0, 1] (``expected`` describes it in the error)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")  # fails the range check below, with the same message
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def check_output_path(option: str, path: Optional[str]) -> None:
    """Raise :class:`CliError` when ``path`` cannot be written (no folder, or a folder)."""
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CliError(f"{option} {path}: directory {directory} does not exist")
    if os.path.isdir(path):
        raise CliError(f"{option} {path}: is a directory")
