"""Backward-compatible weight interpolation (BCWI): a training-free v2 between v1 and v2.

``theta = alpha * theta_old + (1 - alpha) * theta_new`` for two models of one architecture.
Averaging weights only makes sense when both sit in one loss basin, that is when v2 was
fine-tuned from v1; for independently trained models the mix is usually worse than either.
Unlike a score blend, the result is a single model: serving costs what v2 costs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch import nn

from regfree.pctraining.blend import BlendPoint
from regfree.training.data import TrainData
from regfree.training.predict import run_model


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) \
            or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] (0: new_model, 1: old_model), got "
                         f"{alpha!r}")
    return float(alpha)


def interpolate_weights(old_model: nn.Module, new_model: nn.Module, alpha: float) -> nn.Module:
    """A copy of ``new_model`` whose weights are ``alpha * old + (1 - alpha) * new``.

    Valid only when v2 was fine-tuned from v1 (same architecture, one loss basin). Integer
    buffers (such as BatchNorm's batch counter) are taken from ``new_model``.

    Args:
        old_model: v1.
        new_model: v2, the same architecture as v1 (same parameter names and shapes).
        alpha: weight of v1, in [0, 1]: 0 gives v2, 1 gives v1's weights.

    Returns:
        A new module; neither input is changed.

    Example:
        >>> from torch import nn
        >>> old, new = nn.Linear(2, 1), nn.Linear(2, 1)
        >>> for layer, value in ((old, 0.0), (new, 1.0)):
        ...     _ = nn.init.constant_(layer.weight, value)
        >>> interpolate_weights(old, new, 0.25).weight.tolist()
        [[0.75, 0.75]]
    """
    alpha = _check_alpha(alpha)
    old_state, new_state = old_model.state_dict(), new_model.state_dict()
    if old_state.keys() != new_state.keys():
        missing = sorted(set(old_state) ^ set(new_state))[:5]
        raise ValueError(f"old_model and new_model must share one architecture; parameter names "
                         f"differ: {missing}")
    mixed = {}
    for name, new_value in new_state.items():
        old_value = old_state[name]
        if old_value.shape != new_value.shape:
            raise ValueError(f"old_model and new_model must share one architecture; {name!r} is "
                             f"{tuple(old_value.shape)} in old_model, {tuple(new_value.shape)} "
                             "in new_model")
        if torch.is_floating_point(new_value):
            mixed[name] = torch.lerp(new_value, old_value.to(new_value), alpha)
        else:
            mixed[name] = new_value.clone()
    model = copy.deepcopy(new_model)
    model.load_state_dict(mixed)
    return model


@dataclass(frozen=True)
class InterpolationChoice:
    """The alpha chosen on validation data and every alpha's validation error and NFR."""

    alpha: float
    points: list[BlendPoint]


def interpolation_sweep(old_model: nn.Module, new_model: nn.Module, val_data: TrainData, *,
                        alphas: Sequence[float] = tuple(np.round(np.linspace(0, 1, 11), 2)),
                        max_error_increase: float = 0.0, batch_size: int = 512,
                        device: Union[str, torch.device] = "cpu") -> InterpolationChoice:
    """Pick BCWI's alpha with the least validation NFR within an error budget over v2 alone.

    Args:
        old_model: v1.
        new_model: v2, fine-tuned from v1.
        val_data: validation ``(x, y)`` arrays or a map-style Dataset of ``(x, y)``.
        alphas: candidates, each in [0, 1]; 0 (v2 alone) is always evaluated.
        max_error_increase: validation error (a fraction) the choice may add over v2 alone.
        batch_size: samples per forward pass.
        device: where to run the models.

    Returns:
        An :class:`InterpolationChoice`; ``points`` hold ``BlendPoint("bcwi", alpha, ...)``.

    Example:
        >>> from regfree.models import MLP
        >>> x, y = np.zeros((6, 4), "float32"), np.arange(6) % 2
        >>> choice = interpolation_sweep(MLP(4, 2), MLP(4, 2), (x, y), alphas=[0.5])
        >>> [p.knob for p in choice.points]
        [0.0, 0.5]
    """
    if not (isinstance(max_error_increase, (int, float)) and np.isfinite(max_error_increase)
            and max_error_increase >= 0):
        raise ValueError(f"max_error_increase must be a finite number >= 0, got "
                         f"{max_error_increase!r}")
    candidates = sorted({0.0, *(_check_alpha(a) for a in alphas)})
    old_run = run_model(old_model, val_data, batch_size=batch_size, device=device,
                        progress=False)
    y, old_right = old_run.labels, old_run.logits.argmax(1) == old_run.labels
    points = []
    for alpha in candidates:
        model = interpolate_weights(old_model, new_model, alpha).to(device)
        run = run_model(model, val_data, batch_size=batch_size, device=device, progress=False)
        wrong = run.logits.argmax(1) != y
        points.append(BlendPoint("bcwi", alpha, float(wrong.mean()),
                                 float((wrong & old_right).mean())))
    limit = points[0].error_rate + max_error_increase + 1e-12
    best = min((p for p in points if p.error_rate <= limit),
               key=lambda p: (p.nfr, p.error_rate, p.knob))
    return InterpolationChoice(best.knob, points)
