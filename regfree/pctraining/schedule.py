"""A loss term whose weight follows the epoch: ramp distillation in as training goes on.

Early epochs shape the features, late ones (with a decaying learning rate) settle the decision
boundaries, which is where flips are made; a ramp spends the distillation where it counts and
leaves v2 free to learn from the data first.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from regfree.training.steps import TrainStep, as_loss_term

Schedule = Callable[[int], float]


def linear_ramp(epochs: int, *, start: float = 0.0) -> Schedule:
    """A schedule rising linearly from ``start`` (epoch 0) to 1 at epoch ``epochs - 1``, then 1.

    Args:
        epochs: epochs to reach full weight (the training's length: full weight at its end).
        start: the factor at epoch 0, in [0, 1].

    Returns:
        ``epoch -> factor`` (0-based epochs, as :class:`~regfree.training.TrainStep` counts).

    Example:
        >>> ramp = linear_ramp(5)
        >>> [ramp(e) for e in range(6)]
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"start must be in [0, 1], got {start}")

    def factor(epoch: int) -> float:
        if epochs == 1:
            return 1.0
        return start + (1.0 - start) * min(1.0, epoch / (epochs - 1))

    return factor


class ScheduledTerm(nn.Module):
    """A :class:`~regfree.training.LossTerm` times ``schedule(step.epoch)``.

    The wrapped term runs every step (its cost does not change with the factor), so a ramp that
    ends at 1 is the same term at its full weight in the last epoch.

    Args:
        term: e.g. a :class:`~regfree.pctraining.DistillationTerm`.
        schedule: ``epoch -> factor`` (>= 0), e.g. :func:`linear_ramp`.
        name: label in the training history (default: the term's name).

    Example:
        >>> from regfree.pctraining import DistillationTerm, FocalDistillationLoss
        >>> from regfree.models import MLP
        >>> x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
        >>> v1, v2 = MLP(3, num_classes=2), MLP(3, num_classes=2)
        >>> term = ScheduledTerm(DistillationTerm(FocalDistillationLoss(), teacher=v1),
        ...                      linear_ramp(3))
        >>> step = TrainStep(x, y, torch.arange(4), v2(x), epoch=0)
        >>> term(step).item(), term.name
        (0.0, 'fd_kl')
    """

    def __init__(self, term: Callable[[TrainStep], torch.Tensor], schedule: Schedule, *,
                 name: str | None = None) -> None:
        super().__init__()
        if not callable(term) or not callable(schedule):
            raise TypeError("term must be a loss (e.g. DistillationTerm) or a step term and "
                            "schedule a callable epoch -> factor, e.g. linear_ramp(epochs)")
        self.term = as_loss_term(term)
        self.schedule = schedule
        self.name = name or getattr(term, "name", type(term).__name__)

    def forward(self, step: TrainStep) -> torch.Tensor:
        factor = float(self.schedule(step.epoch))
        if factor < 0:
            raise ValueError(f"schedule gave factor {factor} at epoch {step.epoch}; it must be "
                             ">= 0")
        return factor * self.term(step)
