"""Re-express a gallery's stored items of one version through an embedding adapter.

The adapter is any object with ``transform(x)`` (``(n, source_dim)`` float32 numpy in, ``(n,
target_dim)`` array out), and integer ``source_dim`` and ``target_dim`` attributes, such as the
``EmbeddingAdapter`` that ``regfree.compat.fit_adapter`` returns (duck typing keeps
``regfree.retrieval`` free of ``regfree.compat``, which imports it).

Why the gallery is rebuilt rather than edited item by item: an adapter may change the dimension
(a 32-d v1 into a 64-d v2) and a FAISS index has one dimension, so the new vectors and the kept
ones go into a fresh index of the target dimension (for ivf of the same dimension, a copy of the
trained index, emptied; of another dimension, an ivf trained on the new vectors). The adapter
runs on every batch first, its outputs are checked, and only then are the gallery's index,
dimension and labels swapped in one step: a failing adapter or a bad output leaves the gallery
exactly as it was (all or nothing, as :meth:`Gallery.save` is for files). It holds the stored
vectors twice in memory meanwhile.

For a cosine gallery the adapter sees the stored, L2-normalised vectors (adapters fitted with
normalised inputs, ``fit_adapter``'s default, expect exactly these) and its outputs are
normalised again on the way in.
"""

from __future__ import annotations

from typing import Any, Optional

import faiss
import numpy as np

from regfree.progress import progress_bar
from regfree.retrieval._checks import (
    Version,
    as_numpy,
    check_adapter,
    check_positive_int,
    check_version,
)
from regfree.retrieval.spaces import check_space
from regfree.retrieval.stored import stored_vectors


class GalleryTransform:
    """:meth:`transform` of :class:`~regfree.retrieval.Gallery` (mixed in; not used alone)."""

    def transform(self, adapter: Any, *, version: Version, new_version: Version,
                  space: Optional[str] = None, batch_size: int = 65536,
                  progress: bool = True) -> None:
        """Re-express every stored item of ``version`` through ``adapter``, in place: they
        become items of ``new_version``, in ``new_version``'s embedding space.

        All or nothing: the adapter runs on every batch and its outputs are checked before the
        gallery changes; on any error the gallery is unchanged. The dimension may change (then
        ``version`` must hold every item, since a gallery has one dimension).

        Args:
            adapter: an object with ``transform(x)``, ``source_dim`` (the gallery's dim) and
                ``target_dim``, e.g. ``regfree.compat.fit_adapter(v1_emb, v2_emb)``.
            version: the version whose stored items are transformed.
            new_version: their label afterwards (not ``version``); may already hold items,
                e.g. the ones backfilled with the new model.
            space: ``new_version``'s embedding space when it is a new label (default: the
                label itself, as a string); a known ``new_version`` keeps its own.
            batch_size: rows per ``adapter.transform`` call.
            progress: show a tqdm bar over batches.

        Returns:
            None; :meth:`versions`, :meth:`spaces` and ``dim`` show the result.

        Example:
            >>> import numpy as np
            >>> from regfree.retrieval import Gallery
            >>> class Swap:  # a rotation of the plane: any object with these three works
            ...     source_dim = target_dim = 2
            ...     def transform(self, x):
            ...         return x[:, ::-1]
            >>> g = Gallery(dim=2)
            >>> g.add(np.array([[1.0, 0.0], [0.0, 1.0]]), ids=[0, 1], version="v1")
            >>> g.transform(Swap(), version="v1", new_version="v2", progress=False)
            >>> g.versions(), g.spaces()
            ({'v2': 2}, {'v2': 2})
            >>> g.search(np.array([[0.0, 1.0]]), k=1)[1].tolist()
            [[0]]
        """
        transform_gallery(self, adapter, version=version, new_version=new_version, space=space,
                          batch_size=batch_size, progress=progress)


def adapt_in_batches(adapter: Any, vectors: np.ndarray, target_dim: int, *, batch_size: int,
                     progress: bool, nonzero: bool) -> np.ndarray:
    """``adapter.transform`` over ``vectors`` in batches (a tqdm bar unless ``progress`` is
    False), each output checked for shape, finiteness and (``nonzero``) zero rows."""
    out = np.empty((vectors.shape[0], target_dim), dtype=np.float32)
    starts = range(0, vectors.shape[0], batch_size)
    for start in progress_bar(starts, desc="transform", unit="batch", enabled=progress):
        batch = vectors[start:start + batch_size]
        mapped = np.asarray(as_numpy(adapter.transform(batch)), dtype=np.float32)
        if mapped.shape != (batch.shape[0], target_dim):
            raise ValueError(f"adapter.transform returned shape {mapped.shape} for a batch of "
                             f"{batch.shape[0]}; expected ({batch.shape[0]}, {target_dim})")
        if not np.isfinite(mapped).all():
            raise ValueError("adapter.transform returned NaN or inf; the gallery is unchanged")
        if nonzero and not np.linalg.norm(mapped, axis=1).all():
            raise ValueError("adapter.transform returned zero vectors, whose cosine similarity "
                             "is undefined; the gallery is unchanged")
        out[start:start + batch.shape[0]] = mapped
    return out


def transform_gallery(gallery: Any, adapter: Any, *, version: Version, new_version: Version,
                      space: Optional[str], batch_size: int, progress: bool) -> None:
    """The work of :meth:`Gallery.transform` (see there)."""
    _, target_dim = check_adapter(adapter, source_dim=gallery.dim, require_dims=True,
                                  context=f"the gallery stores {gallery.dim}-d vectors")
    version, new_version = check_version(version), check_version(new_version)
    batch_size = check_positive_int(batch_size, "batch_size")
    if new_version == version:
        raise ValueError(f"new_version must differ from version ({version!r}): the transformed "
                         "items are in another embedding space, so they need their own label")
    if new_version in gallery._spaces:
        new_space = gallery._resolve_space(new_version, space)
    else:  # a new label: its own space unless the caller names one
        new_space = str(new_version) if space is None else check_space(space)
    moved = gallery.ids(version)
    if moved.size == 0:
        raise ValueError(f"no items of version {version!r} to transform; the gallery holds "
                         f"{gallery.versions()}")
    if target_dim != gallery.dim and moved.size != len(gallery):
        others = {v: n for v, n in gallery.versions().items() if v != version}
        raise ValueError(f"adapter maps to {target_dim}-d but items of {others} stay "
                         f"{gallery.dim}-d, and a gallery has one dimension: transform them "
                         "too first, or keep them in their own Gallery")
    ids, vectors = stored_vectors(gallery._index)
    chosen = np.isin(ids, moved)
    mapped = adapt_in_batches(adapter, vectors[chosen], target_dim, batch_size=batch_size,
                              progress=progress, nonzero=gallery.similarity == "cosine")
    if gallery.similarity == "cosine":
        faiss.normalize_L2(mapped)
    if target_dim == gallery.dim:
        vectors = vectors.copy()
        vectors[chosen] = mapped
    else:
        vectors = mapped
    index = _fresh_index(gallery, target_dim, vectors)
    index.add_with_ids(vectors, ids)
    codes = gallery._codes.copy()
    labels = list(gallery._version_labels)
    if new_version not in labels:
        labels.append(new_version)
    codes[chosen] = labels.index(new_version)
    # every check passed and the new index is complete: swap it in (assignments cannot fail)
    gallery._index, gallery.dim, gallery._codes = index, target_dim, codes
    gallery._version_labels = labels
    gallery._spaces = {**gallery._spaces, new_version: new_space}
    gallery._changed()


def _fresh_index(gallery: Any, dim: int, vectors: np.ndarray) -> Any:
    if not gallery._type.needs_training:
        return gallery._type.build(dim, gallery._index.metric_type, gallery.params)
    if dim == gallery.dim:  # keep the trained quantizer: a copy, emptied
        index = faiss.clone_index(gallery._index)
        index.reset()
        return index
    nlist = gallery.params["nlist"]
    if vectors.shape[0] < nlist:
        raise ValueError(f"the {dim}-d ivf index must be trained anew on the transformed items, "
                         f"which are {vectors.shape[0]}, fewer than nlist={nlist}")
    index = gallery._type.build(dim, gallery._index.metric_type, gallery.params)
    index.train(vectors)
    return index
