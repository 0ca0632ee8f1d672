"""Per-sample weights of a distillation loss (the "filter" half; one small function each).

Each takes ``old_logits`` ``(B, C_old)`` and ``targets`` ``(B,)`` and returns ``(B,)`` float32
weights. Samples whose target the old model never saw are dropped by the loss itself.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch


def old_correct(old_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Boolean ``(B,)``: the old model's argmax equals the target."""
    return old_logits.detach().argmax(dim=1) == targets


def focal_weights(old_logits: torch.Tensor, targets: torch.Tensor, alpha: float,
                  beta: float) -> torch.Tensor:
    """``alpha + beta * 1[old argmax == target]`` (focal distillation, Yan et al. CVPR 2021).

    Example:
        >>> focal_weights(torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1]),
        ...               alpha=1.0, beta=5.0).tolist()
        [6.0, 1.0]
    """
    return alpha + beta * old_correct(old_logits, targets).float()


def focal_weighting(alpha: float, beta: float) -> Callable[[torch.Tensor, torch.Tensor],
                                                              torch.Tensor]:
    """:func:`focal_weights` with ``alpha`` and ``beta`` fixed, after checking them (both >= 0,
    not both 0).

    Example:
        >>> focal_weighting(1.0, 5.0)(torch.tensor([[2.0, 0.0]]), torch.tensor([0])).tolist()
        [6.0]
    """
    if alpha < 0 or beta < 0 or alpha + beta == 0:
        raise ValueError(f"alpha and beta must be >= 0 and not both 0, got {alpha}, {beta}")
    return partial(focal_weights, alpha=float(alpha), beta=float(beta))


def uniform_weights(old_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Weight 1 for every sample (plain knowledge distillation, ELODI)."""
    return torch.ones(targets.shape[0], device=old_logits.device)
