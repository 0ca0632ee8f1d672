"""Progress bars for regfree's long loops: tqdm, switched off by ``progress=False`` or, for a
whole process, by the environment variable ``TQDM_DISABLE=1`` (which tqdm itself only reads
when a caller leaves ``disable`` unset; regfree always sets it, so it reads the variable here).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional

from tqdm import tqdm


def progress_disabled_by_env() -> bool:
    """Whether ``TQDM_DISABLE`` asks for no progress bars (any value but empty, 0, false, no)."""
    value = os.environ.get("TQDM_DISABLE", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def progress_bar(iterable: Optional[Iterable[Any]] = None, *, enabled: bool = True,
                 **options: Any) -> tqdm:
    """A tqdm bar over ``iterable``, shown when ``enabled`` and ``TQDM_DISABLE`` is not set.

    Args:
        iterable: what to iterate (``None`` for a bar updated by hand).
        enabled: the caller's ``progress`` argument.
        **options: passed to tqdm (``desc``, ``total``, ``unit``, ``leave``, ...).

    Example:
        >>> sum(progress_bar(range(4), enabled=False, desc="demo"))
        6
    """
    return tqdm(iterable, disable=not enabled or progress_disabled_by_env(), **options)
