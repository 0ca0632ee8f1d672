"""Per-sample distances between new and old logits (one small function each).

Each takes ``new_logits`` and ``old_logits`` of shape ``(B, C)`` and returns a ``(B,)`` float32
tensor (float64 for float64 inputs); ``old_logits`` is treated as a constant. They are the "distance" half of a
:class:`~regfree.pctraining.DistillationLoss` (the other half is a per-sample weighting).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32, or float64 when it already is (half precision is never used)."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def kl_distance(new_logits: torch.Tensor, old_logits: torch.Tensor,
                temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(softmax(old/T) || softmax(new/T))`` per sample (Hinton et al. 2015 scaling).

    Example:
        >>> kl_distance(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]])).tolist()
        [0.0]
    """
    log_new = F.log_softmax(at_least_float32(new_logits) / temperature, dim=1)
    log_old = F.log_softmax(at_least_float32(old_logits.detach()) / temperature, dim=1)
    kl = F.kl_div(log_new, log_old, reduction="none", log_target=True).sum(dim=1)
    return kl * (temperature * temperature)


def logit_distance(new_logits: torch.Tensor, old_logits: torch.Tensor) -> torch.Tensor:
    """``0.5 * ||new - old||^2`` per sample (the FD-LM distance of Yan et al. 2021).

    Example:
        >>> logit_distance(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])).tolist()
        [2.5]
    """
    diff = at_least_float32(new_logits) - at_least_float32(old_logits.detach())
    return 0.5 * diff.pow(2).sum(dim=1)


def margin_logit_distance(new_logits: torch.Tensor, old_logits: torch.Tensor,
                          margin: float = 0.0, power: float = 2.0) -> torch.Tensor:
    """``sum_c clamp(|new_c - old_c| - margin, min=0) ** power`` per sample (ELODI's logit
    difference inhibition: differences within ``margin`` are free).

    Example:
        >>> margin_logit_distance(torch.tensor([[3.0, 0.5]]), torch.tensor([[0.0, 0.0]]),
        ...                       margin=1.0).tolist()
        [4.0]
    """
    gap = (at_least_float32(new_logits) - at_least_float32(old_logits.detach())).abs() - margin
    return gap.clamp(min=0).pow(power).sum(dim=1)
