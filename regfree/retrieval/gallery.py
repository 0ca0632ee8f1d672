"""A FAISS gallery that holds embeddings of several model versions under the caller's ids.

Design (what FAISS can and cannot do, and what the gallery does about it):

- The FAISS labels *are* the caller's 64-bit ids (non-negative; ``-1`` is FAISS's "no result"),
  so ``gallery.index.search`` returns the same ids as :meth:`Gallery.search`. Each index type
  (flat, hnsw, ivf) is one entry of ``regfree.retrieval.index_types.INDEX_TYPES``: how it is
  built, whether it needs training, removes natively, runs on a GPU.
- similarity: ``"cosine"`` L2-normalises vectors on the way in and searches by inner product, so
  scores are cosine similarities (higher is closer); ``"l2"`` scores are *squared* Euclidean
  distances (lower is closer), as FAISS reports them.
- remove/replace: flat and ivf remove ids natively (``remove_ids``). FAISS's HNSW cannot remove
  vectors, so on an hnsw gallery a removed or replaced item's node is marked stale (never returned,
  still routing searches, searched past with efSearch widened by nodes / live items) and a
  replacement is inserted into the graph; once stale nodes exceed half the live items the graph
  is rebuilt from the live vectors (``regfree.retrieval.stale``). A call costs the inserted
  vectors, not a whole build; ``index`` and ``save`` compact first.
- ivf must be trained before the first ``add``: call :meth:`Gallery.train` with a sample of at
  least ``nlist`` embeddings (FAISS advises ~39 per list). ``add``/``search`` on an untrained ivf
  gallery raise ValueError; the gallery never trains itself behind the caller's back.
- device: ``"auto"`` uses a GPU when the installed faiss has GPU support and sees a GPU. The CPU
  index stays the source of truth (all mutations, ``index``, ``save``); searches use a GPU copy made
  on demand and dropped after each change. hnsw has no FAISS GPU form and stays on the CPU.
- save: one file, written atomically (``regfree.retrieval.gallery_file``).
- spaces: every version belongs to an embedding space (``regfree.retrieval.spaces``; default one
  shared space); a search over items of several spaces must name one, and :meth:`transform`
  re-expresses a version's items through an adapter (``regfree.retrieval.transform``).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import faiss
import numpy as np

from regfree.retrieval._checks import (
    Version,
    as_ids,
    as_matrix,
    check_embeddings_then_ids,
    check_positive_int,
    check_version,
    preview,
)
from regfree.retrieval.devices import gpu_available, resolve_device
from regfree.retrieval.gallery_file import read_gallery_file, write_gallery_file
from regfree.retrieval.index_types import SIMILARITIES, faiss_metric, lookup_index_type
from regfree.retrieval.spaces import GalleryLabels, restricted_search
from regfree.retrieval.stale import mark_stale, rebuild_live, search_live
from regfree.retrieval.transform import GalleryTransform

# An hnsw graph is rebuilt once its stale nodes exceed this share of the live items: the graph
# stays within 1.5x the gallery (memory, search effort) and a backfill pays one rebuild per half
# a gallery replaced instead of one per call.
_MAX_STALE_SHARE = 0.5

__all__ = ["Gallery", "gpu_available"]


class Gallery(GalleryLabels, GalleryTransform):
    """Embeddings of several model versions in one FAISS index, under the caller's 64-bit ids.

    Args:
        dim: embedding dimension.
        similarity: ``"cosine"`` (normalised, inner product; scores are cosine similarities) or
            ``"l2"`` (scores are squared Euclidean distances).
        index_type: ``"flat"`` (exact), ``"hnsw"`` (graph; removed items stay as stale nodes
            until compacted) or ``"ivf"`` (inverted lists; needs :meth:`train` before
            :meth:`add`). The FAISS object itself is :attr:`index`.
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
        >>> g.replace(np.ones((1, 4), dtype="float32"), ids=[12], version="v2")
        >>> g.versions(), len(g)
        ({'v1': 3, 'v2': 1}, 4)
    """

    def __init__(self, dim: int, *, similarity: str = "cosine", index_type: str = "flat",
                 device: str = "auto", nlist: int = 100, nprobe: int = 8, hnsw_m: int = 32,
                 ef_construction: int = 40, ef_search: int = 64) -> None:
        self.dim = check_positive_int(dim, "dim")
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        self._type = lookup_index_type(index_type)
        self.similarity = similarity
        self.index_type = self._type.name
        self.device = resolve_device(device)
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
        self._spaces: dict[Version, str] = {}  # every version's embedding space
        self._gpu_index: Any = None
        self._gpu_resources: Any = None

    # -- FAISS objects ---------------------------------------------------------------------
    def _new_index(self) -> Any:
        return self._type.build(self.dim, faiss_metric(self.similarity), self.params)

    @property
    def index(self) -> Any:
        """The FAISS index (CPU) holding exactly the gallery's items, labelled by the caller's
        ids; for cosine it holds L2-normalised vectors, so normalise queries
        (``faiss.normalize_L2``) before searching it. On an hnsw gallery with stale nodes this
        first compacts the graph (:meth:`compact`)."""
        self.compact()
        return self._index

    def _search_index(self) -> Any:
        if self.device != "cuda" or not self._type.runs_on_gpu:
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
        return (f"Gallery(dim={self.dim}, similarity={self.similarity!r}, "
                f"index_type={self.index_type!r}, device={self.device!r}, size={len(self)}, "
                f"versions={self.versions()})")

    @property
    def is_trained(self) -> bool:
        """False only for an ivf gallery whose coarse quantizer has not been trained yet."""
        return bool(self._index.is_trained)

    @property
    def needs_training(self) -> bool:
        """True while :meth:`train` must still run before the first :meth:`add` (an ivf gallery
        not trained yet); always False for index types that need no training."""
        return self._type.needs_training and not self.is_trained

    @property
    def stale_count(self) -> int:
        """Nodes of removed or replaced items still in the FAISS index awaiting :meth:`compact`
        (hnsw only; never returned by :meth:`search`)."""
        return int(self._index.ntotal) - len(self)

    def _prepare(self, embeddings: Any, name: str = "embeddings") -> np.ndarray:
        vectors = as_matrix(embeddings, name, self.dim)
        if self.similarity == "cosine":
            norms = np.linalg.norm(vectors, axis=1)
            if np.any(norms == 0):
                raise ValueError(f"{name} has {int((norms == 0).sum())} zero vector(s); "
                                 "cosine similarity is undefined for them")
            vectors = vectors.copy()  # normalize_L2 works in place; never touch the caller's array
            faiss.normalize_L2(vectors)
        return vectors

    def _require_trained(self) -> None:
        if not self.is_trained:
            raise ValueError(f"the {self.index_type} index is untrained: call "
                             "gallery.train(sample_embeddings) with at least "
                             f"nlist={self.params['nlist']} embeddings first")

    # -- mutations -------------------------------------------------------------------------
    def train(self, embeddings: Any) -> None:
        """Train an ivf gallery's coarse quantizer on a sample (at least ``nlist`` rows; FAISS
        advises about 39 per list). A no-op for flat and hnsw, which need no training.

        Example:
            >>> import numpy as np
            >>> g = Gallery(dim=8, index_type="ivf", nlist=4)
            >>> g.train(np.random.default_rng(0).normal(size=(200, 8)))
            >>> g.is_trained, g.needs_training
            (True, False)
        """
        vectors = self._prepare(embeddings)
        if not self._type.needs_training:
            return
        if len(self):
            raise ValueError(f"the {self.index_type} index already holds items; train it before "
                             "the first add")
        if vectors.shape[0] < self.params["nlist"]:
            raise ValueError(f"embeddings has {vectors.shape[0]} rows; training an "
                             f"{self.index_type} index needs at least nlist={self.params['nlist']}")
        self._index.train(vectors)
        self._changed()

    def add(self, embeddings: Any, ids: Any, *, version: Version,
            space: Optional[str] = None) -> None:
        """Add new items embedded by model ``version``.

        Args:
            embeddings: ``(n, dim)`` float array (numpy or torch), finite, ``n >= 1``.
            ids: ``(n,)`` unique non-negative integer ids not yet in the gallery.
            version: the model version that produced the embeddings (str or int).
            space: the embedding space of ``version`` (see ``regfree.retrieval.spaces``): only
                for a new version (default ``"shared"``); a known version keeps its own.
        """
        check_embeddings_then_ids(embeddings, ids, "add")
        vectors = self._prepare(embeddings)
        new_ids = as_ids(ids, expected=vectors.shape[0])
        version = check_version(version)
        space = self._resolve_space(version, space)
        self._require_trained()
        present = np.isin(new_ids, self._ids)
        if present.any():
            raise ValueError(f"ids already in the gallery (use replace): {preview(new_ids[present])}")
        self._index.add_with_ids(vectors, new_ids)
        code = self._version_code(version, space)
        merged_ids = np.concatenate([self._ids, new_ids])
        merged_codes = np.concatenate([self._codes, np.full(new_ids.size, code, np.int32)])
        order = np.argsort(merged_ids, kind="stable")
        self._ids, self._codes = merged_ids[order], merged_codes[order]
        self._changed()

    def replace(self, embeddings: Any, ids: Any, *, version: Version,
                space: Optional[str] = None) -> None:
        """Re-embed existing items (a backfill step): their vectors and version change.

        Same argument order as :meth:`add`. On hnsw the cost is inserting ``n`` vectors into the
        graph (plus a rebuild whenever stale nodes exceed half the live items), not a rebuild.

        Args:
            embeddings: ``(n, dim)`` the new embeddings, in the order of ``ids``.
            ids: ``(n,)`` unique ids, all already in the gallery.
            version: the model version that produced them.
            space: the embedding space of ``version``, as for :meth:`add`; a v2 not trained
                to be compatible with the items it joins needs its own (e.g. ``"v2"``).

        Raises:
            TypeError: ``(ids, embeddings)`` passed in that order (a 1-D first argument and a
                2-D second one).
        """
        check_embeddings_then_ids(embeddings, ids, "replace")
        vectors = self._prepare(embeddings)
        ids = as_ids(ids, expected=vectors.shape[0])
        version = check_version(version)
        space = self._resolve_space(version, space)
        positions = self._positions(ids)
        self._drop(ids)
        self._index.add_with_ids(vectors, ids)
        self._codes[positions] = self._version_code(version, space)
        self._changed()
        self._compact_when_stale()

    def remove(self, ids: Any) -> None:
        """Remove items; ``ids`` must be unique and all in the gallery."""
        ids = as_ids(ids)
        positions = self._positions(ids)
        self._drop(ids)
        keep = np.ones(self._ids.size, dtype=bool)
        keep[positions] = False
        self._ids, self._codes = self._ids[keep], self._codes[keep]
        self._changed()
        self._compact_when_stale()

    def compact(self) -> None:
        """Rebuild an hnsw gallery's graph from its live items, dropping stale nodes (the
        gallery does this by itself when they exceed half the live items; call it to pay the
        rebuild at a time of your choosing). A no-op when there are none (always on flat, ivf).

        Example:
            >>> import numpy as np
            >>> g = Gallery(dim=4, index_type="hnsw")
            >>> g.add(np.eye(4), ids=[0, 1, 2, 3], version="v1")
            >>> g.remove([0])
            >>> g.stale_count, len(g)
            (1, 3)
            >>> g.compact()
            >>> g.stale_count
            0
        """
        if self.stale_count:
            self._index = rebuild_live(self._index, self._new_index)
            self._changed()

    def _compact_when_stale(self) -> None:
        if self.stale_count > _MAX_STALE_SHARE * len(self):
            self.compact()

    def _drop(self, ids: np.ndarray) -> None:
        if not self._type.removes_natively:
            mark_stale(self._index, ids)
            return
        removed = self._index.remove_ids(ids)
        if removed != ids.size:  # the metadata said they were there; the index disagrees
            raise RuntimeError(f"FAISS removed {removed} of {ids.size} ids; gallery is inconsistent")

    # -- search ----------------------------------------------------------------------------
    def search(self, queries: Any, k: int, *,
               space: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest items of each query, among the items of the queries' space.

        Args:
            queries: ``(nq, dim)`` float array, finite.
            k: neighbours per query; when the gallery holds fewer, trailing ids are ``-1`` with
                score ``-inf`` (cosine) or ``inf`` (l2).
            space: the embedding space the queries were embedded in; required when the
                gallery holds items of more than one space, and only its items are searched.

        Returns:
            ``(scores, ids)``, both ``(nq, k)``, best first: float32 cosine similarities (cosine)
            or squared L2 distances (l2), and the caller's int64 ids.

        Raises:
            ValueError: ``space`` left out while the gallery holds several spaces, or naming a
                space with no items.
        """
        vectors = self._prepare(queries, "queries")
        k = check_positive_int(k, "k")
        self._require_trained()
        allowed = self._allowed_ids(space)
        if allowed is not None:
            scores, ids = restricted_search(self._index, vectors, k, self._type, allowed)
        elif self.stale_count:
            scores, ids = search_live(self._index, vectors, k, self._type, len(self))
        else:
            scores, ids = self._search_index().search(vectors, k)
        missing = ids < 0
        if missing.any():
            scores[missing] = -np.inf if self.similarity == "cosine" else np.inf
        return scores, ids

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the gallery to one file atomically (temporary file + ``os.replace``); an hnsw
        gallery is compacted first.

        Example:
            >>> import numpy as np, tempfile, os
            >>> g = Gallery(dim=2, similarity="l2")
            >>> g.add(np.ones((1, 2)), ids=[7], version=1)
            >>> path = os.path.join(tempfile.mkdtemp(), "g.gallery")
            >>> g.save(path)
            >>> Gallery.load(path).versions()
            {1: 1}
        """
        meta = {"dim": self.dim, "similarity": self.similarity, "index_type": self.index_type,
                "params": self.params, "versions": self._version_labels,
                "spaces": [self._spaces[v] for v in self._version_labels]}
        write_gallery_file(path, self.index, self._ids, self._codes, meta)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], *, device: str = "auto") -> Gallery:
        """Read a gallery written by :meth:`save` (also files of regfree's format version 1,
        which called the similarity ``metric``).

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is not a regfree gallery (or is damaged, or newer than this
                regfree reads).
        """
        meta, index, ids, codes = read_gallery_file(path)
        gallery = cls(meta["dim"], similarity=meta["similarity"], index_type=meta["index_type"],
                      device=device, **meta["params"])
        gallery._index, gallery._ids, gallery._codes = index, ids, codes
        gallery._version_labels = list(meta["versions"])
        gallery._spaces = dict(zip(gallery._version_labels, meta["spaces"]))
        return gallery
