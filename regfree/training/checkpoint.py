"""Per-epoch training checkpoints, written atomically (temporary name, then ``os.replace``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

import torch

from regfree.atomic import atomic_write

CHECKPOINT_FORMAT = 1
_NAME = re.compile(r"^epoch_(\d{4,})\.pt$")


def checkpoint_path(directory: str | os.PathLike, epoch: int) -> Path:
    """Where the checkpoint taken after ``epoch`` (1-based) lives."""
    return Path(directory) / f"epoch_{epoch:04d}.pt"


def latest_checkpoint(directory: str | os.PathLike) -> Optional[Path]:
    """The checkpoint of the highest epoch in ``directory``, or None when there is none."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return max(found)[1] if found else None


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically."""
    atomic_write(path, lambda handle: torch.save({"format": CHECKPOINT_FORMAT, **state}, handle))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors, numbers and strings only)."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a regfree training checkpoint "
                         f"(format {state.get('format')!r}, expected {CHECKPOINT_FORMAT})")
    return state
