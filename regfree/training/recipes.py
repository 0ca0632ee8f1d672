"""Ready-made optimiser settings for :func:`regfree.training.fit`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from regfree.training.data import TrainData
from regfree.training.fit import fit
from regfree.training.history import History


def fit_adam_cosine(model: nn.Module, train_data: TrainData, *, epochs: int, lr: float,
                    lr_floor: float = 0.0, **options: Any) -> History:
    """:func:`~regfree.training.fit` with Adam at ``lr`` and a cosine learning-rate decay to zero
    (or to ``lr_floor * lr``) over ``epochs`` (stepped once per epoch): the recipe of the mnist1d
    demo and experiments.

    Args:
        model: as for :func:`~regfree.training.fit`.
        train_data: as for :func:`~regfree.training.fit`.
        epochs: number of epochs; also the length of the cosine schedule.
        lr: Adam's initial learning rate.
        lr_floor: the fraction of ``lr`` the cosine ends at, in [0, 1]: 0 decays to zero, 1
            keeps ``lr`` constant. A floor keeps the last epochs' weights moving, which a
            weight average (``ema_decay``) can then smooth.
        **options: any other keyword of :func:`~regfree.training.fit` (``loss_terms``,
            ``batch_size``, ``seed``, ``val_data``, ...), except ``optimizer`` and ``scheduler``.

    Returns:
        The :class:`~regfree.training.History` that :func:`~regfree.training.fit` returns.

    Example:
        >>> import numpy as np
        >>> from regfree.models import MLP
        >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
        >>> y = (x[:, 0] > 0).astype("int64")
        >>> history = fit_adam_cosine(MLP(4, num_classes=2), (x, y), epochs=2, lr=1e-2,
        ...                           batch_size=8, progress=False)
        >>> history.epochs[-1].lr
        0.0
    """
    taken = sorted({"optimizer", "scheduler"} & set(options))
    if taken:
        raise TypeError(f"fit_adam_cosine sets {' and '.join(taken)} itself; call fit to "
                        "choose your own")
    if isinstance(lr_floor, bool) or not isinstance(lr_floor, (int, float)) \
            or not 0.0 <= lr_floor <= 1.0:
        raise ValueError(f"lr_floor must be a fraction of lr in [0, 1] (e.g. 0.1), got "
                         f"{lr_floor!r}")
    return fit(model, train_data, epochs=epochs,
               optimizer=lambda params: torch.optim.Adam(params, lr=lr),
               scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(
                   opt, epochs, eta_min=lr_floor * lr),
               **options)
