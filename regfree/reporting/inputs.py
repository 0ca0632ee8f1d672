"""Input files of ``regfree report``: the ``FILE[:column]`` syntax, file checks, class names.

Supported: ``.npy``; ``.csv``/``.tsv``/``.txt``; JSON lines (``.jsonl``/``.ndjson``/``.json``);
``.parquet``. ``FILE:column`` picks a column by name (or 0-based index) in every table format.
Every problem raises :class:`InputError` (a ValueError) whose one-line message starts with
the file name. Reading the rows is :mod:`regfree.reporting.sources` and
:mod:`regfree.reporting.stream`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
SUFFIXES = (".npy", ".parquet", *TEXT_SUFFIXES, *JSON_SUFFIXES)


class InputError(ValueError):
    """A file that cannot be used as input; the message names the file and the problem."""


def split_spec(spec: str) -> tuple[str, Optional[str]]:
    """Split ``FILE[:column]`` into the path and the column (None when not given).

    Example:
        >>> split_spec("preds.jsonl:label")
        ('preds.jsonl', 'label')
        >>> split_spec("labels.npy")
        ('labels.npy', None)
    """
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, column = spec.rsplit(":", 1)
    if Path(path).suffix.lower() in SUFFIXES and column:
        return path, column
    return spec, None


def check_file(path: str) -> None:
    """Raise :class:`InputError` unless ``path`` is a readable, non-empty file of a known type."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: unsupported file type {suffix or '(none)'!r} "
                         f"(expected {', '.join(SUFFIXES)})")
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: cannot read file (permission denied)")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: file is empty")


def one_line(err: BaseException) -> str:
    """An exception's message on one line, at most 200 characters."""
    text = " ".join(str(err).split())
    return text[:200] or type(err).__name__


def sql_string(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def read_array(spec: str, *, id_column: Optional[str] = None) -> np.ndarray:
    """Read one whole input from ``FILE`` or ``FILE:column`` (small files; reports stream).

    Args:
        spec: path to a .npy, .csv, .tsv, .txt, .jsonl or .parquet file, optionally ``:column``.
        id_column: a column that is never a value (besides ``id`` and ``index``).

    Returns:
        A 1-D array (class ids or names) or a 2-D array (scores).

    Raises:
        InputError: one line naming the file: missing, unreadable, empty, ambiguous, ...

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "labels.csv")
        >>> _ = open(path, "w").write("id,label\\n7,cat\\n8,dog\\n")
        >>> read_array(path).tolist()
        ['cat', 'dog']
    """
    from regfree.reporting.stream import read_whole

    return read_whole(spec, id_column=id_column)


def read_class_names(path: str) -> list[str]:
    """Class names from a text file (one per line) or a .json list; line ``i`` names class ``i``.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "names.txt")
        >>> _ = open(path, "w").write("cat\\ndog\\n")
        >>> read_class_names(path)
        ['cat', 'dog']
    """
    check_file_any(path)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read file ({one_line(err)})") from None
    if path.lower().endswith(".json"):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: invalid JSON ({one_line(err)})") from None
        if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
            raise InputError(f"{path}: expected a JSON list of class names")
        names = [str(n) for n in names]
    else:
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
    if not names:
        raise InputError(f"{path}: no class names")
    return names


def check_file_any(path: str) -> None:
    """Like :func:`check_file` for a file of any type (class-name lists)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected a file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: file is empty")
