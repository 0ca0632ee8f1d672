"""Classifier heads for backward-compatible training: a cosine head, a fixed (stationary)
d-simplex head, freezing, and extending a frozen old head to classes the old model never saw."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class CosineClassifier(nn.Module):
    """A normalised (cosine) head: ``logits = scale * cos(embedding, class weight)``.

    Galleries search by cosine similarity, so a head that only sees directions trains
    embeddings whose geometry matches the search. ``weight`` has the ``nn.Linear`` layout
    ``(num_classes, in_features)``.

    Args:
        in_features: embedding size.
        num_classes: output classes.
        scale: the fixed temperature multiplying the cosines (cosines alone are too flat for
            cross-entropy).

    Example:
        >>> head = CosineClassifier(4, 3, scale=10.0)
        >>> head(torch.ones(2, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 16.0) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 1:
            raise ValueError(f"in_features and num_classes must be >= 1, got {in_features}, "
                             f"{num_classes}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=in_features ** -0.5)
        self.scale = float(scale)

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"scale={self.scale}"


def freeze(head: nn.Module) -> nn.Module:
    """A frozen copy of ``head``: same weights, ``requires_grad=False``, eval mode.

    The original module is left as it is (the old model keeps working).

    Example:
        >>> frozen = freeze(nn.Linear(3, 2))
        >>> any(p.requires_grad for p in frozen.parameters())
        False
    """
    if not isinstance(head, nn.Module):
        raise ValueError(f"head must be an nn.Module, got {type(head).__name__}")
    frozen = copy.deepcopy(head)
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
        parameter.grad = None
    return frozen.eval()


def _as_tensor(values, name: str, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().to(dtype=dtype, device="cpu")
    try:
        return torch.as_tensor(np.asarray(values), dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be an array or tensor: {error}") from None


def _head_weight(head: nn.Module, name: str) -> torch.Tensor:
    if not isinstance(head, (nn.Linear, CosineClassifier)):
        raise ValueError(f"{name} must be an nn.Linear or CosineClassifier, "
                         f"got {type(head).__name__}")
    return head.weight


_ROWS = ("mean", "fit")


def extend_head(old_head: nn.Module, old_embeddings, labels, num_classes: int, *,
                rows: str = "mean") -> nn.Module:
    """Extend a frozen old head to ``num_classes`` classes (BCT's synthesised classifier).

    Rows ``0 .. C_old-1`` keep the old weights (and biases) exactly. With ``rows="mean"`` the
    row of each new class ``c >= C_old`` is the old model's mean embedding of class ``c``,
    rescaled to the mean L2 norm of the old rows; a new row's bias is the mean old bias. With
    ``rows="fit"`` those rows are the starting point of a fit: the new rows (their directions,
    at the same norm, and their biases) are trained with cross-entropy on ``old_embeddings`` of
    every class while the old rows stay fixed (:func:`~regfree.compat.new_classes.fit_new_rows`),
    so each new row points where the old space separates its class from the others, not only at
    its centre. The result is a frozen copy; the old head itself is not modified.

    Args:
        old_head: the old model's head, ``nn.Linear`` or :class:`CosineClassifier`.
        old_embeddings: the old model's embeddings ``(N, D)`` of samples covering every new class.
        labels: class ids ``(N,)`` of those samples.
        num_classes: the number of classes of the extended head (> C_old).
        rows: ``"mean"`` (class means, BCT's recipe) or ``"fit"`` (class means refined by a fit
            on ``old_embeddings``; pass embeddings of the old classes too).

    Returns:
        A frozen head of the same type with ``num_classes`` outputs.

    Example:
        >>> old = nn.Linear(2, 1)
        >>> emb = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
        >>> extend_head(old, emb, torch.tensor([1, 1]), num_classes=2).weight.shape
        torch.Size([2, 2])
    """
    weight = _head_weight(old_head, "old_head").detach().cpu()
    if rows not in _ROWS:
        raise ValueError(f"rows must be one of {_ROWS}, got {rows!r}")
    old_classes, dim = weight.shape
    if int(num_classes) != num_classes or num_classes <= old_classes:
        raise ValueError(f"num_classes must be an integer > the old head's {old_classes} "
                         f"classes, got {num_classes!r}")
    embeddings = _as_tensor(old_embeddings, "old_embeddings", weight.dtype)
    targets = _as_tensor(labels, "labels", torch.int64)
    if embeddings.dim() != 2 or embeddings.shape[1] != dim:
        raise ValueError(f"old_embeddings must have shape (N, {dim}), got "
                         f"{tuple(embeddings.shape)}")
    if targets.shape != (embeddings.shape[0],):
        raise ValueError(f"labels must have shape ({embeddings.shape[0]},), got "
                         f"{tuple(targets.shape)}")
    new_classes = range(old_classes, int(num_classes))
    missing = [c for c in new_classes if not bool((targets == c).any())]
    if missing:
        raise ValueError(f"labels has no samples of new classes {missing}; every class in "
                         f"[{old_classes}, {num_classes}) needs old_embeddings")
    target_norm = weight.norm(dim=1).mean()
    means = torch.stack([embeddings[targets == c].mean(dim=0) for c in new_classes])
    new_rows = means / means.norm(dim=1, keepdim=True).clamp_min(1e-12) * target_norm

    extended = freeze(old_head)
    extended.weight = nn.Parameter(torch.cat([weight, new_rows]).to(old_head.weight.device),
                                   requires_grad=False)
    if isinstance(extended, nn.Linear):
        extended.out_features = int(num_classes)
        if extended.bias is not None:
            bias = old_head.bias.detach()
            fill = bias.mean().expand(len(new_classes))
            extended.bias = nn.Parameter(torch.cat([bias, fill]), requires_grad=False)
    if rows == "fit":
        from regfree.compat.new_classes import fit_new_rows

        fit_new_rows(extended, embeddings, targets, old_classes)
    return extended


def simplex_head(in_features: int, num_classes: int, *, scale: float = 16.0) -> CosineClassifier:
    """A fixed (stationary) cosine head whose rows are the vertices of a regular simplex.

    Every version of a model family trained with the same fixed head maps each class onto the
    same direction, so versions are compatible by construction, with no influence loss (CoReS,
    Biondi et al.: the d-simplex classifier). The first version must be trained with it too,
    and ``num_classes`` should cover the classes later versions will add (rows of classes not
    yet trained simply stay unused). Any two rows have cosine ``-1 / (num_classes - 1)``.

    Args:
        in_features: embedding size, at least ``num_classes - 1``.
        num_classes: number of rows (classes), at least 2.
        scale: the fixed temperature of the cosine logits.

    Returns:
        A :class:`CosineClassifier` with ``requires_grad=False`` weights (the trainer leaves
        frozen parameters out of the optimiser).

    Example:
        >>> head = simplex_head(4, 3)
        >>> rows = F.normalize(head.weight, dim=1)
        >>> round(float(rows[0] @ rows[1]), 4), head.weight.requires_grad
        (-0.5, False)
    """
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if int(in_features) != in_features or in_features < num_classes - 1:
        raise ValueError(f"in_features must be an integer >= num_classes - 1 = "
                         f"{num_classes - 1} (a simplex of {num_classes} vertices needs "
                         f"{num_classes - 1} dimensions), got {in_features!r}")
    centred = torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes
    basis, _ = torch.linalg.qr(centred)  # the centred rows span num_classes - 1 dimensions
    vertices = centred @ basis[:, :num_classes - 1]
    rows = torch.zeros(num_classes, int(in_features), dtype=torch.float64)
    rows[:, :num_classes - 1] = F.normalize(vertices, dim=1)
    head = CosineClassifier(int(in_features), int(num_classes), scale=scale)
    head.weight = nn.Parameter(rows.float(), requires_grad=False)
    return head
