"""Ready-made optimiser settings for :func:`regfree.training.fit`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from regfree.training.data import TrainData
from regfree.training.fit import fit
from regfree.training.history import History


def fit_adam_cosine(model: nn.Module, train_data: TrainData, *, epochs: int, lr: float,
                    **options: Any) -> History:
    """:func:`~regfree.training.fit` with Adam at ``lr`` and a cosine learning-rate decay to zero
    over ``epochs`` (stepped once per epoch): the recipe of the mnist1d demo and experiments.

    Args:
        model: as for :func:`~regfree.training.fit`.
        train_data: as for :func:`~regfree.training.fit`.
        epochs: number of epochs; also the length of the cosine schedule.
        lr: Adam's initial learning rate.
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
    return fit(model, train_data, epochs=epochs,
               optimizer=lambda params: torch.optim.Adam(params, lr=lr),
               scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs),
               **options)
