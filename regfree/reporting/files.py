"""Write output files whole or not at all."""

from __future__ import annotations

import os
from typing import Union

from regfree.atomic import atomic_write


def write_text_atomic(path: Union[str, os.PathLike], text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    A crash or error leaves either the old file or none, never a half-written one.

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "out.json")
        >>> write_text_atomic(target, "{}")
        >>> open(target).read()
        '{}'
    """
    atomic_write(path, lambda handle: handle.write(str.encode(text, "utf-8")))
