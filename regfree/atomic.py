"""Write files whole or not at all: every file regfree writes goes through :func:`atomic_write`.

Standard library only, so the numpy-only rooms (metrics, reporting) can use it too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union


def atomic_write(path: Union[str, os.PathLike], write: Callable[[BinaryIO], Any], *,
                 fsync: bool = False) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash or an error leaves the previous file (or none), never a half-written one; on error
    the temporary file is removed. The folder is created when missing. The file gets ordinary
    permissions (0644; ``mkstemp`` would leave 0600).

    Args:
        path: the file to write.
        write: writes the content to a binary handle.
        fsync: flush the content to disk before the rename (for files that must survive a
            power loss, such as a gallery index).

    Example:
        >>> import tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "out.bin")
        >>> atomic_write(target, lambda handle: handle.write(b"ok"))
        >>> open(target, "rb").read()
        b'ok'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
