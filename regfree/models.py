"""Small reference models for the offline datasets (mnist1d, digits).

Each model has ``forward_features(x) -> embeddings`` and a linear ``head``; ``forward`` returns
logits, or ``(logits, embeddings)`` when built with ``return_embeddings=True`` (what the trainer
needs for embedding loss terms such as backward-compatible training).
"""

from __future__ import annotations

import torch
from torch import nn


class _EmbeddingClassifier(nn.Module):
    head: nn.Module

    def __init__(self, return_embeddings: bool) -> None:
        super().__init__()
        self.return_embeddings = return_embeddings

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        embeddings = self.forward_features(x)
        logits = self.head(embeddings)
        return (logits, embeddings) if self.return_embeddings else logits


class ConvNet1D(_EmbeddingClassifier):
    """A 1-D CNN for signals of shape ``(B, L)`` or ``(B, 1, L)`` (mnist1d: L = 40).

    Args:
        num_classes: output classes.
        width: channels of the convolutions (capacity knob: v1 small, v2 wide).
        embedding_dim: size of the embedding before the head.
        return_embeddings: ``forward`` returns ``(logits, embeddings)`` instead of logits.

    Example:
        >>> model = ConvNet1D(width=8, embedding_dim=16)
        >>> model(torch.zeros(4, 40)).shape
        torch.Size([4, 10])
    """

    def __init__(self, num_classes: int = 10, width: int = 32, embedding_dim: int = 64,
                 return_embeddings: bool = False) -> None:
        super().__init__(return_embeddings)
        self.features = nn.Sequential(
            nn.Conv1d(1, width, 5, padding=2), nn.ReLU(),
            nn.Conv1d(width, width, 3, padding=1, stride=2), nn.ReLU(),
            nn.Conv1d(width, width, 3, padding=1, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool1d(4), nn.Flatten(),
            nn.Linear(4 * width, embedding_dim),
        )
        self.head = nn.Linear(embedding_dim, num_classes)
        self.embedding_dim = embedding_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.features(x)


class MLP(_EmbeddingClassifier):
    """A two-layer perceptron for flat features (sklearn digits: 64 inputs).

    Example:
        >>> MLP(in_features=64, hidden=32)(torch.zeros(2, 64)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_features: int, num_classes: int = 10, hidden: int = 128,
                 embedding_dim: int = 64, return_embeddings: bool = False) -> None:
        super().__init__(return_embeddings)
        self.features = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, embedding_dim),
        )
        self.head = nn.Linear(embedding_dim, num_classes)
        self.embedding_dim = embedding_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x.flatten(1))
