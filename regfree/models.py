"""Small reference models for the offline datasets (mnist1d, digits, MNIST-5k).

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


def cosine_convnet1d(width: int, embedding_dim: int, *, num_classes: int = 10,
                     scale: float = 16.0, seed: int | None = None,
                     return_embeddings: bool = False) -> ConvNet1D:
    """A :class:`ConvNet1D` whose head is a :class:`~regfree.compat.CosineClassifier`.

    The model the mnist1d demo, experiments and notebook train: galleries search by cosine
    similarity, so a cosine head makes the class live in the embedding's direction.

    Args:
        width: channels of the convolutions.
        embedding_dim: size of the embedding before the head.
        num_classes: output classes.
        scale: the cosine head's fixed temperature.
        seed: when given, ``torch.manual_seed(seed)`` first, so the same seed builds the same
            initial weights.
        return_embeddings: ``forward`` returns ``(logits, embeddings)`` instead of logits.

    Returns:
        The model, in training mode.

    Example:
        >>> model = cosine_convnet1d(8, 16, seed=0)
        >>> type(model.head).__name__, model(torch.zeros(2, 40)).shape
        ('CosineClassifier', torch.Size([2, 10]))
    """
    from regfree.compat.heads import CosineClassifier  # compat imports the trainer: keep lazy

    if seed is not None:
        torch.manual_seed(seed)
    model = ConvNet1D(num_classes=num_classes, width=width, embedding_dim=embedding_dim,
                      return_embeddings=return_embeddings)
    # built after the linear head it replaces, so a seed gives the weights it always gave
    model.head = CosineClassifier(embedding_dim, num_classes, scale=scale)
    return model


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


class ConvNet2D(_EmbeddingClassifier):
    """A small 2-D CNN for grey images ``(B, 1, H, W)`` or ``(B, H, W)`` (MNIST: 28 x 28).

    Args:
        num_classes: output classes.
        width: channels of the first convolution (the second has twice as many).
        embedding_dim: size of the embedding before the head.
        return_embeddings: ``forward`` returns ``(logits, embeddings)`` instead of logits.

    Example:
        >>> ConvNet2D(width=4, embedding_dim=16)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, width: int = 16, embedding_dim: int = 64,
                 return_embeddings: bool = False) -> None:
        super().__init__(return_embeddings)
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(3), nn.Flatten(),
            nn.Linear(18 * width, embedding_dim),
        )
        self.head = nn.Linear(embedding_dim, num_classes)
        self.embedding_dim = embedding_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.features(x)


class ResNetEmbedder(_EmbeddingClassifier):
    """A torchvision ResNet whose pooled features (optionally projected) are the embedding.

    Weights come only from a local file (a torchvision-format state dict, as saved by
    ``torch.save(model.state_dict(), path)``); the ImageNet ``fc`` layer in it is ignored.

    Args:
        arch: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"``.
        num_classes: classes of the new head.
        embedding_dim: add a linear projection to this size (``None`` keeps the pooled size).
        weights: path to a local state dict, or ``None`` for random initialisation.
        return_embeddings: ``forward`` returns ``(logits, embeddings)``.

    Example:
        >>> model = ResNetEmbedder("resnet18", num_classes=3, embedding_dim=32)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 3])
    """

    def __init__(self, arch: str, num_classes: int, embedding_dim: int | None = None,
                 weights: str | None = None, return_embeddings: bool = False) -> None:
        super().__init__(return_embeddings)
        import torchvision

        if arch not in _RESNETS:
            raise ValueError(f"arch must be one of {sorted(_RESNETS)}, got {arch!r}")
        backbone = getattr(torchvision.models, arch)(weights=None)
        if weights is not None:
            _load_local_weights(backbone, weights)
        pooled = backbone.fc.in_features
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.neck = nn.Linear(pooled, embedding_dim) if embedding_dim else nn.Identity()
        self.embedding_dim = embedding_dim or pooled
        self.head = nn.Linear(self.embedding_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(x))


_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


def _load_local_weights(backbone: nn.Module, path: str) -> None:
    from pathlib import Path

    if not Path(path).is_file():
        raise ValueError(f"weights: no file at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches are raised even when not strict
        raise ValueError(f"weights: {path} does not match the architecture: "
                         f"{str(error).splitlines()[-1].strip()}") from None
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"weights: {path} does not match the architecture "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def build_model(name: str, num_classes: int, *, width: int = 32, embedding_dim: int = 64,
                in_features: int | None = None, weights: str | None = None,
                return_embeddings: bool = False) -> nn.Module:
    """Look a reference model up by name: ``convnet1d``, ``mlp`` or a ResNet name.

    Args:
        name: the model name.
        num_classes: output classes.
        width: capacity of ``convnet1d`` (channels) or ``mlp`` (hidden units).
        embedding_dim: embedding size (for ResNets, ``0`` keeps the pooled features).
        in_features: input size, required by ``mlp``.
        weights: local state-dict file for ResNets.
        return_embeddings: ``forward`` returns ``(logits, embeddings)``.

    Example:
        >>> build_model("convnet1d", 10, width=8, embedding_dim=16)(torch.zeros(1, 40)).shape
        torch.Size([1, 10])
    """
    if name == "convnet1d":
        return ConvNet1D(num_classes, width, embedding_dim, return_embeddings)
    if name == "mlp":
        if in_features is None:
            raise ValueError("in_features is required for the 'mlp' model")
        return MLP(in_features, num_classes, width, embedding_dim, return_embeddings)
    if name in _RESNETS:
        return ResNetEmbedder(name, num_classes, embedding_dim or None, weights,
                              return_embeddings)
    raise ValueError(f"name must be 'convnet1d', 'mlp' or one of {list(_RESNETS)}, got {name!r}")
