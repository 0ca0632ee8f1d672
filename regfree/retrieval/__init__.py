"""FAISS galleries holding embeddings of several model versions, retrieval evaluation, and
partial-backfill planning.

- :class:`Gallery`: flat / hnsw / ivf FAISS index under the caller's 64-bit ids, with the model
  version of every item, atomic save/load; every version belongs to an embedding space (a
  search never ranks one space's items against another's) and ``Gallery.transform`` re-expresses
  one version's stored items through an embedding adapter.
- :func:`evaluate`: top-k accuracy and mAP of one gallery (ties scored as one block; optional
  leave-one-out when the queries are gallery items).
- :func:`retrieval_matrix`, :func:`cross_model_table`: the same scores for every (query version,
  gallery version) pair, from ``{version: embeddings}``; the table adds mixed galleries.
- :func:`plan_backfill`, :func:`backfill_curve`: which items to re-embed first and what each step
  of a partial backfill buys (plotted by :func:`regfree.reporting.plots.plot_backfill_curves`).
- :func:`embed`: a model (``nn.Module`` method or any callable) over a dataset in batches.

Example:
    >>> import numpy as np
    >>> from regfree.retrieval import Gallery, evaluate
    >>> g = Gallery(dim=2)
    >>> g.add(np.array([[1.0, 0.0], [0.0, 1.0]]), ids=[0, 1], version="v1")
    >>> evaluate(np.array([[0.9, 0.1]]), [0], g, gallery_labels=[0, 1], ks=(1,))
    {'top1': 1.0, 'mAP': 1.0}
"""

from regfree.retrieval.backfill import BackfillCurve, backfill_curve, plan_backfill
from regfree.retrieval.cross_version import (
    CrossModelTable,
    RetrievalMatrix,
    cross_model_table,
    retrieval_matrix,
)
from regfree.retrieval.embedding import embed
from regfree.retrieval.evaluation import evaluate
from regfree.retrieval.gallery import Gallery, gpu_available

__all__ = [
    "BackfillCurve",
    "CrossModelTable",
    "Gallery",
    "RetrievalMatrix",
    "backfill_curve",
    "cross_model_table",
    "embed",
    "evaluate",
    "gpu_available",
    "plan_backfill",
    "retrieval_matrix",
]
