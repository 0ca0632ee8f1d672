"""Embedding-size changes and turning models into embedders.

A v2 whose embedding size differs from v1's learns a projection into v1's space, either inside
the loss term (``BackwardCompatibleLoss(old_head, projection=...)``, optimised with the model by
:func:`regfree.training.fit`) or inside :class:`ProjectedModel`, whose ``forward`` returns
``(logits, projected_embeddings)``. Either way v2 is served as a ``ProjectedModel``: native
embeddings for a gallery v2 embeds, projected ones for the gallery v1 embedded.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
from torch import nn

from regfree.retrieval import embed
from regfree.training.predict import Embedder

_SPACES = ("native", "compatible")


class ProjectedModel(nn.Module):
    """A new model plus a learned projection of its embeddings into the old model's space.

    v2 serves ``native_embeddings`` for a gallery it embeds itself and ``compatible_embeddings``
    (projected) for the gallery v1 embedded. Its logits come from its own head on the native
    embeddings.

    Args:
        model: a model with ``forward_features(x)`` and ``head`` (e.g. ``ConvNet1D``).
        projection: an ``nn.Module`` mapping native to old embeddings, or the old embedding size
            (an ``int``) for a linear projection from ``model.embedding_dim``.

    Example:
        >>> from regfree.models import ConvNet1D
        >>> wrapped = ProjectedModel(ConvNet1D(width=8, embedding_dim=32), projection=16)
        >>> logits, projected = wrapped(torch.zeros(3, 40))
        >>> projected.shape, wrapped.native_embeddings(torch.zeros(3, 40)).shape
        (torch.Size([3, 16]), torch.Size([3, 32]))
    """

    def __init__(self, model: nn.Module, projection: Union[nn.Module, int]) -> None:
        super().__init__()
        if not (hasattr(model, "forward_features") and isinstance(getattr(model, "head", None),
                                                                  nn.Module)):
            raise ValueError("model must have forward_features(x) and a head module, got "
                             f"{type(model).__name__}")
        if isinstance(projection, bool) or not isinstance(projection, (int, nn.Module)):
            raise ValueError(f"projection must be an nn.Module or an int size, got "
                             f"{type(projection).__name__}")
        if isinstance(projection, int):
            native_dim = getattr(model, "embedding_dim", None)
            if not isinstance(native_dim, int):
                raise ValueError("projection as an int needs model.embedding_dim; pass an "
                                 "nn.Module instead")
            if projection < 1:
                raise ValueError(f"projection size must be >= 1, got {projection}")
            projection = nn.Linear(native_dim, projection)
        self.model = model
        self.projection = projection

    def native_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """v2's own embeddings (for a gallery v2 embeds)."""
        return self.model.forward_features(x)

    def compatible_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """v2's embeddings projected into v1's space (for v1's gallery)."""
        return self.projection(self.native_embeddings(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.compatible_embeddings(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        native = self.native_embeddings(x)
        return self.model.head(native), self.projection(native)


def embedder(model: nn.Module, space: str = "native", batch_size: int = 1024) -> Embedder:
    """An :data:`~regfree.training.predict.Embedder`: a callable ``inputs -> (N, D) float32
    array`` for :func:`~regfree.compat.compatibility_report` (or ``evaluate_upgrade``'s
    embedders), running ``model`` in eval mode without gradients through
    :func:`regfree.retrieval.embed`.

    Args:
        model: a model with ``forward_features`` (e.g. ``ConvNet1D``) or a
            :class:`ProjectedModel`.
        space: ``"native"`` (the model's own embeddings, for its own gallery) or
            ``"compatible"`` (a ``ProjectedModel``'s projected embeddings, for the old gallery;
            for a plain model the same as native).
        batch_size: samples per forward pass.

    Returns:
        The embedding function.

    Example:
        >>> from regfree.models import ConvNet1D
        >>> f = embedder(ConvNet1D(width=8, embedding_dim=16))
        >>> f(np.zeros((2, 40), np.float32)).shape
        (2, 16)
    """
    if space not in _SPACES:
        raise ValueError(f"space must be one of {_SPACES}, got {space!r}")
    if not hasattr(model, "forward_features"):
        raise ValueError(f"model must have forward_features(x), got {type(model).__name__}")
    method = "forward_features"
    if isinstance(model, ProjectedModel):
        method = "native_embeddings" if space == "native" else "compatible_embeddings"

    def run(inputs) -> np.ndarray:
        return embed(model, inputs, batch_size=batch_size, method=method, progress=False)

    return run
