"""How :func:`regfree.training.fit` was asked to train, as one validated value."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from regfree.training.averaging import check_ema_decay
from regfree.training.data import check_num_workers
from regfree.training.nfr_watch import check_nfr_warning

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
OptimizerSpec = Union[torch.optim.Optimizer, OptimizerFactory]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


@dataclass(frozen=True)
class FitOptions:
    """The training options of one :func:`~regfree.training.fit` call (its keywords, minus the
    data, the loss terms and the device); :func:`fit` documents each one.

    Building one checks the values and normalises the integers, so the training loop can trust
    them.

    Example:
        >>> FitOptions(epochs=2, optimizer=torch.optim.SGD, batch_size=32.0).batch_size
        32
    """

    epochs: int
    optimizer: OptimizerSpec
    batch_size: int = 128
    seed: int = 0
    checkpoint_dir: Optional[Union[str, os.PathLike]] = None
    resume: bool = False
    progress: bool = True
    scheduler: Optional[SchedulerFactory] = None
    eval_batch_size: int = 1024
    max_grad_norm: Optional[float] = None
    amp: bool = False
    shuffle: bool = True
    num_workers: int = 0
    nfr_warning: str = "once"
    ema_decay: Optional[float] = None

    def __post_init__(self) -> None:
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs!r}")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be positive, got {self.eval_batch_size!r}")
        num_workers = check_num_workers(self.num_workers)
        check_nfr_warning(self.nfr_warning)
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir")
        # frozen: normalise through object.__setattr__, once, here
        object.__setattr__(self, "epochs", int(self.epochs))
        object.__setattr__(self, "batch_size", int(self.batch_size))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "num_workers", num_workers)
        object.__setattr__(self, "ema_decay", check_ema_decay(self.ema_decay))

    def resume_key(self, num_samples: Optional[int]) -> dict[str, Any]:
        """What a checkpoint must share with this call to be resumed by it (with ``ema_decay``
        the checkpoint's averaged model is resumed too, so the decay must match)."""
        return {"seed": self.seed, "batch_size": self.batch_size, "num_samples": num_samples,
                "ema_decay": self.ema_decay}
