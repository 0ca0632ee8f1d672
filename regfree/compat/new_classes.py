"""Classes the old model never saw: fitted head rows for them, and a margin on their logits.

In a class-incremental update (v1 trained on some classes, v2 on more) BCT's influence loss
needs a row of v1's head for every class v2 learns. :func:`fit_new_rows` fits those rows in v1's
embedding space (used by ``extend_head(..., rows="fit")``); :class:`NewClassMargin` adds a
fixed offset to the new classes' logits, the margin-calibrated softmax of MPT (Ricci et al.,
AAAI 2026): a positive offset makes every old class win by that much more against the new
ones, so new-class samples cannot crowd into the old classes' regions of the old space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fit_new_rows(head: nn.Module, embeddings: torch.Tensor, labels: torch.Tensor,
                 old_classes: int, *, steps: int = 300, lr: float = 0.05) -> nn.Module:
    """Fit the rows ``old_classes ..`` of ``head`` (in place) to separate their classes.

    Full-batch Adam on ``CE(head(embeddings), labels)``: the old rows and biases stay fixed;
    each new row keeps its L2 norm (only its direction moves, so a linear head cannot win by
    growing a row) and, for ``nn.Linear``, its bias is fitted too. Deterministic: no sampling.

    Args:
        head: an ``nn.Linear`` or :class:`~regfree.compat.CosineClassifier` whose new rows hold
            their starting values (e.g. class means).
        embeddings: ``(N, D)`` old-model embeddings of samples of every class.
        labels: ``(N,)`` int64 class ids.
        old_classes: how many leading rows belong to the old model (kept).
        steps: optimisation steps.
        lr: Adam's learning rate.

    Returns:
        ``head``, its new rows replaced (parameters left as they were: frozen stays frozen).

    Example:
        >>> head = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = head.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.1]]))
        ...     _ = head.bias.zero_()
        >>> x = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
        >>> fitted = fit_new_rows(head, x, torch.tensor([0, 1]), old_classes=1, steps=100)
        >>> fitted(x).argmax(1).tolist()
        [0, 1]
    """
    weight = head.weight.detach()
    bias = getattr(head, "bias", None)
    num_classes = weight.shape[0]
    if not 0 < old_classes < num_classes:
        raise ValueError(f"old_classes must be in [1, {num_classes - 1}] (the head has "
                         f"{num_classes} rows), got {old_classes}")
    x = embeddings.detach().to(weight)
    y = labels.detach().to(device=weight.device, dtype=torch.int64)
    norms = weight[old_classes:].norm(dim=1, keepdim=True).clamp_min(1e-12)
    direction = (weight[old_classes:] / norms).clone().requires_grad_(True)
    params = [direction]
    new_bias = None
    if bias is not None:
        new_bias = bias.detach()[old_classes:].clone().requires_grad_(True)
        params.append(new_bias)
    optimizer = torch.optim.Adam(params, lr=lr)

    def rows() -> torch.Tensor:
        return torch.cat([weight[:old_classes], F.normalize(direction, dim=1) * norms])

    for _ in range(int(steps)):
        optimizer.zero_grad()
        # the head's own forward on the candidate rows, whatever the head's formula
        candidate = {"weight": rows()}
        if new_bias is not None:
            candidate["bias"] = torch.cat([bias.detach()[:old_classes], new_bias])
        logits = torch.func.functional_call(head, candidate, (x,))
        F.cross_entropy(logits, y).backward()
        optimizer.step()
    with torch.no_grad():
        head.weight.copy_(rows())
        if new_bias is not None:
            head.bias[old_classes:] = new_bias
    return head


class NewClassMargin(nn.Module):
    """``head(embeddings)`` with ``margin`` added to the logits of classes ``>= old_classes``.

    Pass it as the head of a :class:`~regfree.compat.BackwardCompatibleLoss` (after
    :func:`~regfree.compat.extend_head`): the influence loss then asks an old-class sample to
    beat every new class by ``margin`` more, and a new-class sample needs less to win (MPT's
    margin calibration). A negative margin does the opposite: it pulls new-class samples harder
    onto their synthesised rows. Used for training only; search never reads logits.

    Args:
        head: the (extended) old head.
        old_classes: how many leading outputs are old classes.
        margin: the offset added to every new-class logit.

    Example:
        >>> head = NewClassMargin(nn.Linear(2, 3, bias=False), old_classes=2, margin=1.5)
        >>> with torch.no_grad():
        ...     _ = head.head.weight.zero_()
        >>> head(torch.ones(1, 2)).tolist()
        [[0.0, 0.0, 1.5]]
    """

    def __init__(self, head: nn.Module, old_classes: int, margin: float) -> None:
        super().__init__()
        if not isinstance(head, nn.Module):
            raise ValueError(f"head must be an nn.Module, got {type(head).__name__}")
        if int(old_classes) != old_classes or old_classes < 1:
            raise ValueError(f"old_classes must be an integer >= 1, got {old_classes!r}")
        if not isinstance(margin, (int, float)) or margin != margin:
            raise ValueError(f"margin must be a number, got {margin!r}")
        self.head = head
        self.old_classes = int(old_classes)
        self.margin = float(margin)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        logits = self.head(embeddings)
        if logits.shape[1] <= self.old_classes:
            raise ValueError(f"head gives {logits.shape[1]} logits, no new class beyond "
                             f"old_classes={self.old_classes}; extend it with extend_head first")
        offset = torch.zeros(logits.shape[1], dtype=logits.dtype, device=logits.device)
        offset[self.old_classes:] = self.margin
        return logits + offset

    def extra_repr(self) -> str:
        return f"old_classes={self.old_classes}, margin={self.margin}"
