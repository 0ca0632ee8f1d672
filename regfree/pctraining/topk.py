"""Logit-difference inhibition on the top-k classes only (the LDI objective of ELODI, Zhao et al.,
TPAMI 2024), with the old model as the only reference.

Plain logit matching pulls every one of the new model's logits toward the old model's, including
classes that never compete for the prediction; holding them costs accuracy and buys no fewer
flips. Here only the classes that can decide a prediction are held: those among the ``k`` highest
logits of the old model or of the new one (a class rising into the new model's top-k is where a
flip starts), and gaps within ``margin`` are free.
"""

from __future__ import annotations

from functools import partial

import torch

from regfree.pctraining.distances import at_least_float32
from regfree.pctraining.losses import DistillationLoss
from regfree.pctraining.weighting import focal_weighting


def topk_class_mask(new_logits: torch.Tensor, old_logits: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean ``(B, C)``: the class is among the ``k`` highest logits of the old model or of the
    new one (ties broken by ``torch.topk``).

    Example:
        >>> topk_class_mask(torch.tensor([[0.0, 3.0, 1.0]]), torch.tensor([[2.0, 0.0, 1.0]]),
        ...                 k=1).tolist()
        [[True, True, False]]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, new_logits.shape[1])
    mask = torch.zeros(new_logits.shape, dtype=torch.bool, device=new_logits.device)
    mask.scatter_(1, old_logits.detach().topk(k, dim=1).indices, True)
    mask.scatter_(1, new_logits.detach().topk(k, dim=1).indices, True)
    return mask


def topk_logit_distance(new_logits: torch.Tensor, old_logits: torch.Tensor, k: int = 2,
                        margin: float = 0.0, power: float = 2.0) -> torch.Tensor:
    """``sum_{c in top-k} clamp(|new_c - old_c| - margin, min=0) ** power`` per sample, over the
    classes of :func:`topk_class_mask`.

    Example:
        >>> topk_logit_distance(torch.tensor([[3.0, 0.0, 5.0]]), torch.tensor([[1.0, 0.0, 0.0]]),
        ...                     k=1, margin=0.5).tolist()  # classes 0 (old top) and 2 (new top)
        [22.5]
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    new, old = at_least_float32(new_logits), at_least_float32(old_logits.detach())
    gap = ((new - old).abs() - margin).clamp(min=0).pow(power)
    return (gap * topk_class_mask(new, old, k).to(gap.dtype)).sum(dim=1)


class TopKLogitInhibitionLoss(DistillationLoss):
    """Logit-difference inhibition toward the old model on the top-k classes only.

    ``weight * mean_i(w_i * D_i)`` with ``D_i`` = :func:`topk_logit_distance` and the focal
    per-sample weight ``w_i = alpha + beta * 1[old argmax == target]`` (``beta=0``: every sample
    alike, as in ELODI). Behaves like every :class:`DistillationLoss` (fewer old classes than
    new, autocast, ``last_stats``); pass it to a :class:`DistillationTerm` with an
    :class:`OldLogitCache` of v1, so it needs no training beyond v2's own.

    Args:
        k: how many of each model's highest logits are held.
        margin: logit gaps up to this size cost nothing.
        weight: overall factor lambda.
        alpha: weight of every sample.
        beta: extra weight where the old model was right.
        power: exponent of the gap beyond the margin.
        name: label in the training history.

    Returns:
        Called as ``loss(new_logits, old_logits, targets)``: a scalar tensor.

    Example:
        >>> ldi = TopKLogitInhibitionLoss(k=1, margin=0.5, weight=0.1)
        >>> new, old = torch.tensor([[3.0, 0.0, 5.0]]), torch.tensor([[1.0, 0.0, 0.0]])
        >>> round(ldi(new, old, torch.tensor([0])).item(), 4)
        2.25
    """

    def __init__(self, *, k: int = 2, margin: float = 0.5, weight: float = 0.01,
                 alpha: float = 1.0, beta: float = 0.0, power: float = 2.0,
                 name: str = "ldi_topk") -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        weighting = focal_weighting(alpha, beta)
        distance = partial(topk_logit_distance, k=int(k), margin=float(margin),
                           power=float(power))
        super().__init__(weighting, distance, weight, name)
        self.k, self.margin, self.alpha, self.beta, self.power = k, margin, alpha, beta, power

    def extra_repr(self) -> str:
        return (f"k={self.k}, margin={self.margin}, alpha={self.alpha}, beta={self.beta}, "
                f"power={self.power}, weight={self.weight}")
