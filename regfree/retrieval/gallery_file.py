"""The gallery file format: what :meth:`Gallery.save` writes and :meth:`Gallery.load` reads.

One ``numpy.savez`` archive: the serialised FAISS index, the sorted ids, each id's version code,
and JSON metadata (dim, similarity, index type, tuning parameters, version labels, each
version's embedding space). It is written
to a temporary name in the same folder, fsynced, then ``os.replace``-d over the target, so a
crash mid-save leaves the previous file intact (a stray ``.<name>.*.tmp`` may remain).

Format versions: 3 adds ``spaces`` (one per version label); 2 (before embedding spaces) put
every version in the one shared space; 1 (before 2's rename) also called the cosine/l2 choice
``metric`` instead of ``similarity``. All are read; files are written as 3.

Example:
    >>> import json, numpy as np
    >>> meta = upgrade_meta({"format": FORMAT, "format_version": 1, "metric": "l2"}, "g.gallery")
    >>> meta["similarity"], meta["spaces"], meta["format_version"]
    ('l2', [], 3)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Union

import faiss
import numpy as np

from regfree.atomic import atomic_write
from regfree.retrieval.spaces import DEFAULT_SPACE

FORMAT = "regfree.Gallery"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
_ARRAYS = ("index", "ids", "codes", "meta")


def write_gallery_file(path: Union[str, os.PathLike], index: Any, ids: np.ndarray,
                       codes: np.ndarray, meta: dict[str, Any]) -> None:
    """Write one gallery file atomically; ``meta`` gets the format name and version."""
    path = Path(path)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    arrays = {
        "index": faiss.serialize_index(index),
        "ids": ids,
        "codes": codes,
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    }
    atomic_write(path, lambda handle: np.savez(handle, **arrays), fsync=True)
    _fsync_dir(path.parent)


def read_gallery_file(path: Union[str, os.PathLike]) -> tuple[dict[str, Any], Any, np.ndarray,
                                                              np.ndarray]:
    """``(meta, index, ids, codes)`` from a gallery file, ``meta`` upgraded to the current format.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a regfree gallery file, damaged, or written by a newer regfree.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in _ARRAYS}
        meta = json.loads(arrays["meta"].tobytes().decode())
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise ValueError(f"{path} is not a readable regfree gallery file: {error}") from error
    meta = upgrade_meta(meta, path)
    index = faiss.deserialize_index(arrays["index"])
    ids, codes = arrays["ids"].astype(np.int64), arrays["codes"].astype(np.int32)
    if index.ntotal != ids.size:
        raise ValueError(f"{path} is damaged: index holds {index.ntotal} vectors, "
                         f"metadata {ids.size} ids")
    return meta, index, ids, codes


def upgrade_meta(meta: dict[str, Any], path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Check the format and bring older metadata to the current version's keys."""
    version = meta.get("format_version")
    if meta.get("format") != FORMAT or not isinstance(version, int):
        raise ValueError(f"{path} is not a regfree gallery file (format {meta.get('format')!r}, "
                         f"version {version!r})")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"{path} is a regfree gallery file of format version {version}; this "
                         f"regfree reads versions {READABLE_VERSIONS}: upgrade regfree to load it")
    meta = dict(meta)
    if version == 1:  # version 1 called the cosine/l2 choice "metric"
        meta["similarity"] = meta.pop("metric")
    if version < 3:  # before embedding spaces, every version shared one space
        meta["spaces"] = [DEFAULT_SPACE] * len(meta.get("versions", []))
    meta["format_version"] = FORMAT_VERSION
    return meta


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
