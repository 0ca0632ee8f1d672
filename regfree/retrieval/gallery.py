"""A FAISS gallery that holds embeddings of several model versions under the caller's ids.

Design (what FAISS can and cannot do, and what the gallery does about it):

- The FAISS labels *are* the caller's 64-bit ids (non-negative; ``-1`` is FAISS's "no result"),
  so ``gallery.index.search`` returns the same ids as :meth:`Gallery.search`.
  flat = ``IndexIDMap2(IndexFlat)``, ivf = ``IndexIVFFlat`` (ids stored natively),
  hnsw = ``IndexIDMap2(IndexHNSWFlat)``.
- cosine: vectors are L2-normalised on the way in and searched by inner product, so scores are
  cosine similarities (higher is closer). l2: scores are *squared* Euclidean distances (lower is
  closer), as FAISS reports them.
- remove/replace: flat and ivf remove ids natively (``remove_ids``). FAISS's HNSW cannot remove
  vectors, so on an hnsw gallery ``remove`` and ``replace`` rebuild the graph from the stored
  vectors that remain (cost of a fresh build of the whole gallery per call: batch them).
- ivf must be trained before the first ``add``: call :meth:`Gallery.train` with a sample of at
  least ``nlist`` embeddings (FAISS advises ~39 per list). ``add``/``search`` on an untrained ivf
  gallery raise ValueError; the gallery never trains itself behind the caller's back.
- device: ``"auto"`` uses a GPU when the installed faiss has GPU support and sees a GPU. The CPU
  index stays the source of truth (all mutations, ``index``, ``save``); searches use a GPU copy made
  on demand and dropped after each change. hnsw has no FAISS GPU form and stays on the CPU.
- save: one file (``numpy.savez``: serialised index + ids + versions + JSON metadata) written to a
  temporary name in the same folder, fsynced, then ``os.replace``-d over the target, so a crash
  mid-save leaves the previous file intact (a stray ``.<name>.*.tmp`` may remain).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import faiss
import numpy as np

from regfree.atomic import atomic_write
from regfree.retrieval._checks import (
    Version,
    as_ids,
    as_matrix,
    check_positive_int,
    check_version,
    preview,
)

METRICS = ("cosine", "l2")
INDEX_TYPES = ("flat", "hnsw", "ivf")
_FORMAT = "regfree.Gallery"
_FORMAT_VERSION = 1


def gpu_available() -> bool:
    """True when the installed faiss was built with GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if gpu_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device in ("cuda", "gpu"):
        if not gpu_available():
            raise ValueError(f"device={device!r} but faiss sees no GPU (faiss-cpu installed?)")
        return "cuda"
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


class Gallery:
    """Embeddings of several model versions in one FAISS index, under the caller's 64-bit ids.

    Args:
        dim: embedding dimension.
        metric: ``"cosine"`` (normalised, inner product; scores are cosine similarities) or
            ``"l2"`` (scores are squared Euclidean distances).
        index: ``"flat"`` (exact), ``"hnsw"`` (graph; remove/replace rebuild it) or ``"ivf"``
            (inverted lists; needs :meth:`train` before :meth:`add`).
        device: ``"auto"`` (GPU search when faiss has one), ``"cpu"`` or ``"cuda"``.
        nlist: ivf: number of inverted lists.
        nprobe: ivf: lists visited per query.
        hnsw_m: hnsw: graph degree.
        ef_construction: hnsw: candidate list size while building.
        ef_search: hnsw: candidate list size while searching (at least ``k`` is used).

    Example:
        >>> import numpy as np
        >>> g = Gallery(dim=4)
        >>> g.add(np.eye(4, dtype="float32"), ids=[10, 11, 12, 13], version="v1")
        >>> scores, ids = g.search(np.eye(4, dtype="float32")[:1], k=2)
        >>> int(ids[0, 0]), float(scores[0, 0])
        (10, 1.0)
        >>> g.replace([12], np.ones((1, 4), dtype="float32"), version="v2")
        >>> g.versions(), len(g)
        ({'v1': 3, 'v2': 1}, 4)
    """

    def __init__(self, dim: int, metric: str = "cosine", index: str = "flat",
                 device: str = "auto", *, nlist: int = 100, nprobe: int = 8, hnsw_m: int = 32,
                 ef_construction: int = 40, ef_search: int = 64) -> None:
        self.dim = check_positive_int(dim, "dim")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if index not in INDEX_TYPES:
            raise ValueError(f"index must be one of {INDEX_TYPES}, got {index!r}")
        self.metric = metric
        self.index_type = index
        self.device = _resolve_device(device)
        self.params = {
            "nlist": check_positive_int(nlist, "nlist"),
            "nprobe": check_positive_int(nprobe, "nprobe"),
            "hnsw_m": check_positive_int(hnsw_m, "hnsw_m"),
            "ef_construction": check_positive_int(ef_construction, "ef_construction"),
            "ef_search": check_positive_int(ef_search, "ef_search"),
        }
        self._index = self._new_index()
        # metadata, sorted by id: the caller's ids and the code of each item's version label
        self._ids = np.empty(0, dtype=np.int64)
        self._codes = np.empty(0, dtype=np.int32)
        self._version_labels: list[Version] = []
        self._gpu_index: Any = None
        self._gpu_resources: Any = None

    # -- FAISS objects ---------------------------------------------------------------------
    def _faiss_metric(self) -> int:
        return faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2

    def _new_index(self) -> Any:
        p, metric = self.params, self._faiss_metric()
        if self.index_type == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlat(self.dim, metric))
        if self.index_type == "hnsw":
            graph = faiss.IndexHNSWFlat(self.dim, p["hnsw_m"], metric)
            graph.hnsw.efConstruction = p["ef_construction"]
            graph.hnsw.efSearch = p["ef_search"]
            return faiss.IndexIDMap2(graph)
        quantizer = faiss.IndexFlat(self.dim, metric)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, p["nlist"], metric)
        ivf.nprobe = p["nprobe"]
        return ivf

    @property
    def index(self) -> Any:
        """The FAISS index (CPU). Its labels are the caller's ids; for cosine it holds
        L2-normalised vectors, so normalise queries (``faiss.normalize_L2``) before searching it."""
        return self._index

    def _search_index(self) -> Any:
        if self.device != "cuda" or self.index_type == "hnsw":
            return self._index
        if self._gpu_index is None:  # pragma: no cover - needs a GPU build of faiss
            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._index)
        return self._gpu_index  # pragma: no cover

    def _changed(self) -> None:
        self._gpu_index = None

    # -- state -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._ids.size)

    def __repr__(self) -> str:
        return (f"Gallery(dim={self.dim}, metric={self.metric!r}, index={self.index_type!r}, "
                f"device={self.device!r}, size={len(self)}, versions={self.versions()})")

    @property
    def is_trained(self) -> bool:
        """False only for an ivf gallery whose coarse quantizer has not been trained yet."""
        return bool(self._index.is_trained)

    def versions(self) -> dict[Version, int]:
        """``{version: number of items}`` for every version that still has items, in the order
        the versions were first added."""
        counts = np.bincount(self._codes, minlength=len(self._version_labels))
        return {label: int(n) for label, n in zip(self._version_labels, counts) if n > 0}

    def ids(self, version: Optional[Version] = None) -> np.ndarray:
        """The sorted ids in the gallery, or only those whose embedding is of ``version``."""
        if version is None:
            return self._ids.copy()
        version = check_version(version)
        if version not in self._version_labels:
            return np.empty(0, dtype=np.int64)
        return self._ids[self._codes == self._version_labels.index(version)]

    def version_of(self, ids: Any) -> list[Version]:
        """The version label of each of ``ids`` (all must be in the gallery)."""
        positions = self._positions(as_ids(ids))
        return [self._version_labels[c] for c in self._codes[positions]]

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        positions = np.searchsorted(self._ids, ids)
        found = positions < self._ids.size
        found[found] = self._ids[positions[found]] == ids[found]
        if not found.all():
            raise ValueError(f"unknown ids (not in the gallery): {preview(ids[~found])}")
        return positions

    def _version_code(self, version: Version) -> int:
        if version not in self._version_labels:
            self._version_labels.append(version)
        return self._version_labels.index(version)

    def _prepare(self, embeddings: Any, name: str = "embeddings") -> np.ndarray:
        vectors = as_matrix(embeddings, name, self.dim)
        if self.metric == "cosine":
            norms = np.linalg.norm(vectors, axis=1)
            if np.any(norms == 0):
                raise ValueError(f"{name} has {int((norms == 0).sum())} zero vector(s); "
                                 "cosine similarity is undefined for them")
            vectors = vectors.copy()  # normalize_L2 works in place; never touch the caller's array
            faiss.normalize_L2(vectors)
        return vectors

    def _require_trained(self) -> None:
        if not self.is_trained:
            raise ValueError("the ivf index is untrained: call gallery.train(sample_embeddings) "
                             f"with at least nlist={self.params['nlist']} embeddings first")

    # -- mutations -------------------------------------------------------------------------
    def train(self, embeddings: Any) -> None:
        """Train an ivf gallery's coarse quantizer on a sample (at least ``nlist`` rows; FAISS
        advises about 39 per list). A no-op for flat and hnsw, which need no training.

        Example:
            >>> import numpy as np
            >>> g = Gallery(dim=8, index="ivf", nlist=4)
            >>> g.train(np.random.default_rng(0).normal(size=(200, 8)))
            >>> g.is_trained
            True
        """
        vectors = self._prepare(embeddings)
        if self.index_type != "ivf":
            return
        if len(self):
            raise ValueError("the ivf index already holds items; train it before the first add")
        if vectors.shape[0] < self.params["nlist"]:
            raise ValueError(f"embeddings has {vectors.shape[0]} rows; training an ivf index "
                             f"needs at least nlist={self.params['nlist']}")
        self._index.train(vectors)
        self._changed()

    def add(self, embeddings: Any, ids: Any, version: Version) -> None:
        """Add new items embedded by model ``version``.

        Args:
            embeddings: ``(n, dim)`` float array (numpy or torch), finite, ``n >= 1``.
            ids: ``(n,)`` unique non-negative integer ids not yet in the gallery.
            version: the model version that produced the embeddings (str or int).
        """
        vectors = self._prepare(embeddings)
        new_ids = as_ids(ids, expected=vectors.shape[0])
        version = check_version(version)
        self._require_trained()
        present = np.isin(new_ids, self._ids)
        if present.any():
            raise ValueError(f"ids already in the gallery (use replace): {preview(new_ids[present])}")
        self._index.add_with_ids(vectors, new_ids)
        code = self._version_code(version)
        merged_ids = np.concatenate([self._ids, new_ids])
        merged_codes = np.concatenate([self._codes, np.full(new_ids.size, code, np.int32)])
        order = np.argsort(merged_ids, kind="stable")
        self._ids, self._codes = merged_ids[order], merged_codes[order]
        self._changed()

    def replace(self, ids: Any, embeddings: Any, version: Version) -> None:
        """Re-embed existing items (a backfill step): their vectors and version change.

        Args:
            ids: ``(n,)`` unique ids, all already in the gallery.
            embeddings: ``(n, dim)`` the new embeddings, in the order of ``ids``.
            version: the model version that produced them.
        """
        vectors = self._prepare(embeddings)
        ids = as_ids(ids, expected=vectors.shape[0])
        version = check_version(version)
        positions = self._positions(ids)
        if self.index_type == "hnsw":
            self._rebuild_hnsw(drop=ids, add_vectors=vectors, add_ids=ids)
        else:
            self._remove_from_faiss(ids)
            self._index.add_with_ids(vectors, ids)
        self._codes[positions] = self._version_code(version)
        self._changed()

    def remove(self, ids: Any) -> None:
        """Remove items; ``ids`` must be unique and all in the gallery."""
        ids = as_ids(ids)
        positions = self._positions(ids)
        if self.index_type == "hnsw":
            self._rebuild_hnsw(drop=ids)
        else:
            self._remove_from_faiss(ids)
        keep = np.ones(self._ids.size, dtype=bool)
        keep[positions] = False
        self._ids, self._codes = self._ids[keep], self._codes[keep]
        self._changed()

    def _remove_from_faiss(self, ids: np.ndarray) -> None:
        removed = self._index.remove_ids(ids)
        if removed != ids.size:  # the metadata said they were there; the index disagrees
            raise RuntimeError(f"FAISS removed {removed} of {ids.size} ids; gallery is inconsistent")

    def _rebuild_hnsw(self, drop: np.ndarray, add_vectors: Optional[np.ndarray] = None,
                      add_ids: Optional[np.ndarray] = None) -> None:
        labels = faiss.vector_to_array(self._index.id_map)
        stored = faiss.downcast_index(self._index.index).storage.reconstruct_n(0, labels.size)
        keep = ~np.isin(labels, drop)
        vectors, new_labels = stored[keep], labels[keep]
        if add_vectors is not None:
            vectors = np.concatenate([vectors, add_vectors])
            new_labels = np.concatenate([new_labels, add_ids])
        fresh = self._new_index()
        if new_labels.size:
            fresh.add_with_ids(np.ascontiguousarray(vectors), new_labels)
        self._index = fresh

    # -- search ----------------------------------------------------------------------------
    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest items of each query.

        Args:
            queries: ``(nq, dim)`` float array, finite.
            k: neighbours per query; when the gallery holds fewer, trailing ids are ``-1`` with
                score ``-inf`` (cosine) or ``inf`` (l2).

        Returns:
            ``(scores, ids)``, both ``(nq, k)``, best first: float32 cosine similarities (cosine)
            or squared L2 distances (l2), and the caller's int64 ids.
        """
        vectors = self._prepare(queries, "queries")
        k = check_positive_int(k, "k")
        self._require_trained()
        scores, ids = self._search_index().search(vectors, k)
        missing = ids < 0
        if missing.any():
            scores[missing] = -np.inf if self.metric == "cosine" else np.inf
        return scores, ids

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the gallery to one file atomically (temporary file + ``os.replace``).

        Example:
            >>> import numpy as np, tempfile, os
            >>> g = Gallery(dim=2, metric="l2")
            >>> g.add(np.ones((1, 2)), ids=[7], version=1)
            >>> path = os.path.join(tempfile.mkdtemp(), "g.gallery")
            >>> g.save(path)
            >>> Gallery.load(path).versions()
            {1: 1}
        """
        path = Path(path)
        meta = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "dim": self.dim,
                "metric": self.metric, "index_type": self.index_type, "params": self.params,
                "versions": self._version_labels}
        arrays = {
            "index": faiss.serialize_index(self._index),
            "ids": self._ids,
            "codes": self._codes,
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        }
        atomic_write(path, lambda handle: np.savez(handle, **arrays), fsync=True)
        _fsync_dir(path.parent)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], device: str = "auto") -> Gallery:
        """Read a gallery written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is not a regfree gallery (or is damaged).
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in ("index", "ids", "codes", "meta")}
            meta = json.loads(arrays["meta"].tobytes().decode())
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, EOFError) as error:
            raise ValueError(f"{path} is not a readable regfree gallery file: {error}") from error
        if meta.get("format") != _FORMAT or meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{path} is not a regfree gallery file (format {meta.get('format')!r}, "
                             f"version {meta.get('format_version')!r})")
        gallery = cls(meta["dim"], meta["metric"], meta["index_type"], device, **meta["params"])
        gallery._index = faiss.deserialize_index(arrays["index"])
        gallery._ids = arrays["ids"].astype(np.int64)
        gallery._codes = arrays["codes"].astype(np.int32)
        gallery._version_labels = list(meta["versions"])
        if gallery._index.ntotal != gallery._ids.size:
            raise ValueError(f"{path} is damaged: index holds {gallery._index.ntotal} vectors, "
                             f"metadata {gallery._ids.size} ids")
        return gallery


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
