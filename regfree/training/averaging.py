"""fit's ``ema_decay``: an exponential moving average of the model's weights (Polyak averaging).

After every optimizer step the average moves toward the current weights,
``avg <- decay * avg + (1 - decay) * weights`` (the first step copies them), with torch's
:class:`~torch.optim.swa_utils.AveragedModel` and :func:`~torch.optim.swa_utils.get_ema_multi_avg_fn`.
Buffers (batch-norm running statistics) are averaged too (``use_buffers=True``), so the averaged
model's statistics belong to the averaged weights rather than to the last step's; integer
buffers (batch norm's step counter) are counts, copied from the model.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from regfree.training.distributed import ProcessContext


def check_ema_decay(decay: object) -> Optional[float]:
    """``ema_decay`` as a float (None: no averaging), or an error naming it and the fix."""
    if decay is None:
        return None
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real):
        raise TypeError(f"ema_decay must be a float in (0, 1), such as 0.999, or None (no "
                        f"weight averaging), got {type(decay).__name__}")
    if not 0.0 < float(decay) < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1) (the share of the average kept at each "
                         f"step, e.g. 0.999; None turns averaging off), got {decay!r}")
    return float(decay)


class WeightAverage:
    """The moving average of ``model``'s weights and buffers that :func:`fit` keeps.

    Args:
        model: the model being trained (the average starts as a copy of it).
        decay: the share of the average kept at each :meth:`update`, in (0, 1).

    Example:
        >>> model = nn.Linear(2, 1)
        >>> average = WeightAverage(model, decay=0.5)
        >>> with torch.no_grad():
        ...     _ = model.bias.fill_(1.0); average.update(model)
        ...     _ = model.bias.fill_(3.0); average.update(model)
        >>> float(average.model.bias)  # 0.5 * 1 + 0.5 * 3
        2.0
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = check_ema_decay(decay)
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay),
                                      use_buffers=True)
        self.averaged.requires_grad_(False)  # evaluated and copied, never trained

    @property
    def model(self) -> nn.Module:
        """The averaged copy of the model (evaluate it; it is not trained)."""
        return self.averaged.module

    def update(self, model: nn.Module) -> None:
        """Move the average toward ``model``'s current weights and buffers (after a step);
        integer buffers (batch norm's ``num_batches_tracked``) are counters and are copied."""
        self.averaged.update_parameters(model)
        with torch.no_grad():
            for mean, current in zip(self.averaged.module.buffers(), model.buffers()):
                if not mean.is_floating_point():
                    mean.copy_(current)

    def sync(self, ctx: ProcessContext) -> None:
        """Give every process rank 0's average. Parameters already agree (DDP steps every rank
        alike); buffers do not, since each rank's batch-norm statistics see its own share."""
        if ctx.distributed:
            for buffer in self.averaged.buffers():
                dist.broadcast(buffer, src=0)

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights and buffers into ``model``."""
        model.load_state_dict(self.averaged.module.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)


def start_average(model: nn.Module, decay: Optional[float]) -> Optional[WeightAverage]:
    """A :class:`WeightAverage` of ``model``, or None when ``decay`` is None."""
    with torch.no_grad():
        return None if decay is None else WeightAverage(model, decay)
