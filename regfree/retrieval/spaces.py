"""Embedding spaces: which stored vectors a query may be compared with.

Every version in a :class:`~regfree.retrieval.Gallery` belongs to one embedding *space*. Vectors
of one space are comparable (v1 and a v2 trained backward-compatibly with v1 share a space);
vectors of different spaces are not, even when their dimensions match (an independently trained
v2 scores v1's items at random). By default every version joins :data:`DEFAULT_SPACE`, so a
gallery whose versions were trained to be compatible searches exactly as before.

A version's space is fixed when the version is first added (``add``/``replace`` with
``space=``, or :meth:`Gallery.transform`); naming another space for it later is an error. A
search over a gallery that holds items in more than one space must name the space its queries
were embedded in, and then only that space's items are searched (a FAISS id selector, on the
CPU index): a search never ranks one space's scores against another's.

Why restrict rather than merge per-space results on their scores: a query expressed in each space
through an adapter scores that space's items on a scale of its own, and
``experiments/results/posthoc_mixed_gallery.md`` measures what ranking those scores together
costs against re-expressing the old items in the query's space (:meth:`Gallery.transform`).

Example:
    >>> import numpy as np
    >>> from regfree.retrieval import Gallery
    >>> g = Gallery(dim=2)
    >>> g.add(np.array([[1.0, 0.0], [0.0, 1.0]]), ids=[0, 1], version="v1")
    >>> g.replace(np.array([[0.0, 1.0]]), ids=[1], version="v2", space="v2")
    >>> g.spaces()
    {'shared': 1, 'v2': 1}
    >>> g.search(np.array([[1.0, 0.0]]), k=1, space="v2")[1].tolist()
    [[1]]
"""

from __future__ import annotations

from typing import Any, Optional

import faiss
import numpy as np

from regfree.retrieval._checks import Version, as_ids, check_version, preview
from regfree.retrieval.index_types import IndexType

DEFAULT_SPACE = "shared"

__all__ = ["DEFAULT_SPACE", "GalleryLabels", "check_space", "restricted_search"]


def check_space(space: Any, name: str = "space") -> str:
    """A space name: a non-empty string."""
    if not isinstance(space, str) or not space:
        raise ValueError(f"{name} must be a non-empty string naming an embedding space, "
                         f"got {space!r}")
    return space


def restricted_search(index: Any, queries: np.ndarray, k: int, kind: IndexType,
                      allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` over the items labelled ``allowed`` only (stale hnsw labels are never
    among them); the search effort is widened by ``ntotal / len(allowed)`` where the index type
    needs it (see ``IndexType.filtered_search``)."""
    params = kind.filtered_search(index, index.ntotal / max(allowed.size, 1))
    params.sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
    return index.search(queries, k, params=params)


class GalleryLabels:
    """The version and space labels of a :class:`~regfree.retrieval.Gallery`'s items (mixed
    in; not used alone).

    It reads the gallery's ``_ids``, ``_codes``, ``_version_labels`` and ``_spaces``
    (``{version: space}``).
    """

    _ids: np.ndarray
    _codes: np.ndarray
    _version_labels: list[Version]
    _spaces: dict[Version, str]

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

    def _version_code(self, version: Version, space: str) -> int:
        if version not in self._version_labels:
            self._version_labels.append(version)
            self._spaces[version] = space
        return self._version_labels.index(version)

    def spaces(self) -> dict[str, int]:
        """``{space: number of items}`` for every space that holds items, in the order the
        spaces' versions were first added.

        Example:
            >>> import numpy as np
            >>> from regfree.retrieval import Gallery
            >>> g = Gallery(dim=2)
            >>> g.add(np.eye(2), ids=[0, 1], version="v1")
            >>> g.spaces()
            {'shared': 2}
        """
        counts = np.bincount(self._codes, minlength=len(self._version_labels))
        out: dict[str, int] = {}
        for label, n in zip(self._version_labels, counts):
            if n > 0:
                space = self._spaces[label]
                out[space] = out.get(space, 0) + int(n)
        return out

    def space_of(self, version: Version) -> str:
        """The embedding space of ``version`` (a version the gallery has held).

        Raises:
            ValueError: the gallery never held ``version``.
        """
        version = check_version(version)
        if version not in self._spaces:
            raise ValueError(f"version {version!r} is not in the gallery; known versions: "
                             f"{list(self._spaces)}")
        return self._spaces[version]

    def _resolve_space(self, version: Version, space: Optional[str]) -> str:
        """The space ``version``'s items go to: its own if known, else ``space`` (default
        :data:`DEFAULT_SPACE`); a version never changes space."""
        if space is not None:
            space = check_space(space)
        known = self._spaces.get(version)
        if known is None:
            return DEFAULT_SPACE if space is None else space
        if space is not None and space != known:
            raise ValueError(f"version {version!r} is in space {known!r}, not {space!r}: a "
                             "version belongs to one embedding space (store the other space's "
                             "embeddings under a new version label)")
        return known

    def _allowed_ids(self, space: Optional[str]) -> Optional[np.ndarray]:
        """The ids a search in ``space`` may return, or None when no filter is needed (the
        gallery holds that space only)."""
        held = self.spaces()
        if space is None:
            if len(held) > 1:
                raise ValueError(
                    f"the gallery holds items in {len(held)} embedding spaces {held}: pass "
                    "space=<the space the queries were embedded in>; scores of different "
                    "spaces are not comparable, so a search never mixes them (to search "
                    "every item, transform the other space's items with Gallery.transform)")
            return None
        space = check_space(space)
        if space not in held:
            raise ValueError(f"space {space!r} holds no items; the gallery's spaces are {held}")
        if len(held) == 1:
            return None
        codes = [c for c, label in enumerate(self._version_labels)
                 if self._spaces[label] == space]
        return self._ids[np.isin(self._codes, codes)]
