"""The study's models: one per dataset, each with a cosine head."""

from __future__ import annotations

import torch

from pct_study.settings import Setup
from regfree.models import MLP, ConvNet2D, cosine_convnet1d


def cosine_model(width: int, setup: Setup, seed: int, num_classes: int = 10) -> torch.nn.Module:
    """ConvNet1D with a cosine head, as in the demo (bct_mnist1d chose cosine heads); on
    MNIST-5k a ConvNet2D, on scikit-learn digits an MLP (``width`` hidden units), same head."""
    if setup.dataset in ("mnist5k", "digits"):
        from regfree.compat.heads import CosineClassifier

        torch.manual_seed(seed)
        model = (ConvNet2D(width=width, embedding_dim=setup.embedding_dim)
                 if setup.dataset == "mnist5k" else
                 MLP(64, hidden=width, embedding_dim=setup.embedding_dim))
        model.head = CosineClassifier(setup.embedding_dim, num_classes, scale=16.0)
        return model
    return cosine_convnet1d(width, setup.embedding_dim, num_classes=num_classes, seed=seed)
