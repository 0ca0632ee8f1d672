"""Backward-compatible embedding training (BCT): v2 queries search a gallery that v1 embedded.

- :class:`BackwardCompatibleLoss`: influence loss through the frozen old head (a loss term for
  :func:`regfree.training.fit`); :class:`EmbeddingRegressionLoss`: the L2 baseline;
  :class:`CrossModelContrastiveLoss` and :class:`CrossModelNCALoss`: new queries must find the
  old embeddings of their class (in the batch; in the whole training set, itself left out).
- :func:`extend_head`: the frozen old head extended to classes v1 never saw (class-mean or
  fitted rows, :func:`fit_new_rows`); :class:`NewClassMargin`: an offset on the new classes'
  logits in the influence loss (MPT's margin).
- :func:`simplex_head`: a fixed d-simplex head; versions trained with it are compatible by
  construction (CoReS).
- :class:`CosineClassifier`: a normalised head (galleries search by cosine).
- :class:`ProjectedModel`: v2 with a learned projection into v1's embedding space.
- :func:`compatibility_report`: the cross-version matrix, criterion, update gain, AC and AM
  (embedders in; for embeddings already at hand, ``CompatibilityReport(retrieval_matrix(...))``
  with :func:`regfree.retrieval.retrieval_matrix`).
- :func:`fit_adapter`, :class:`EmbeddingAdapter`: post-hoc compatibility, a learned map between
  two models' embedding spaces (for a v2 that was not trained with regfree); ``blend=`` makes an
  orthogonal one a SLERP query adapter.

Example:
    >>> from torch import nn
    >>> bct = BackwardCompatibleLoss(nn.Linear(16, 10), weight=1.0)
    >>> bct.name
    'bct'
"""

from regfree.compat.adapter import ADAPTER_KINDS, EmbeddingAdapter
from regfree.compat.adapter_fit import fit_adapter
from regfree.compat.contrastive import CrossModelContrastiveLoss
from regfree.compat.heads import CosineClassifier, extend_head, freeze, simplex_head
from regfree.compat.losses import BackwardCompatibleLoss, EmbeddingRegressionLoss
from regfree.compat.nca import CrossModelNCALoss
from regfree.compat.new_classes import NewClassMargin, fit_new_rows
from regfree.compat.projection import ProjectedModel, embedder
from regfree.compat.report import CompatibilityReport, compatibility_report

__all__ = [
    "ADAPTER_KINDS",
    "EmbeddingAdapter",
    "BackwardCompatibleLoss",
    "CompatibilityReport",
    "CosineClassifier",
    "CrossModelContrastiveLoss",
    "CrossModelNCALoss",
    "EmbeddingRegressionLoss",
    "NewClassMargin",
    "ProjectedModel",
    "compatibility_report",
    "embedder",
    "extend_head",
    "fit_adapter",
    "fit_new_rows",
    "freeze",
    "simplex_head",
]
