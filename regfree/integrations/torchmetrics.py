"""Flip metrics as ``torchmetrics.Metric`` classes, for Lightning's ``self.log`` and DDP.

Each class keeps integer counts (summed across processes when torch.distributed is running) and
reduces them with the same formulas as :mod:`regfree.metrics`, so ``compute()`` equals
:func:`regfree.metrics.negative_flip_rate` and its siblings on the same samples, however they
were split into batches or processes. Counting runs on the tensors' device: no copy to the CPU.

``update(y_true, old_pred, new_pred)`` takes the true class ids first, then the old and the
new model's class ids (1-D) or scores/logits (2-D, reduced by argmax). Needs the ``torchmetrics``
extra (``pip install 'regfree[torchmetrics]'``).

Example:
    >>> import torch
    >>> nfr = NegativeFlipRate()
    >>> nfr.update(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([[0.9, 0.1], [0.8, 0.2]]))
    >>> nfr.update(torch.tensor([2, 2]), torch.tensor([0, 2]), torch.tensor([2, 2]))
    >>> nfr.compute().item()
    0.25
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from regfree.integrations._optional import require
from regfree.metrics import FlipTotals

_torchmetrics = require("torchmetrics", "torchmetrics", "regfree.integrations.torchmetrics")

__all__ = ["ChurnRate", "NegativeFlipRate", "PositiveFlipRate", "RelativeNegativeFlipRate"]


def _as_tensor(x: Any, name: str, device: torch.device) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        try:  # through numpy, so that lists of floats stay float64 as in regfree.metrics
            x = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"{name}: expected a tensor, array or list of numbers, got "
                            f"{type(x).__name__} ({error})") from error
    x = x.detach().to(device)
    return x.long() if x.dtype == torch.bool else x


def _class_ids(x: Any, name: str, device: torch.device, *, allow_scores: bool,
               validate: bool) -> tuple[torch.Tensor, Optional[int]]:
    """1-D class ids of ``x`` (argmax of 2-D scores) and the score width (None for ids)."""
    t = _as_tensor(x, name, device)
    if t.ndim not in ((1, 2) if allow_scores else (1,)):
        expected = "1-D class ids or 2-D scores" if allow_scores else "1-D class ids"
        raise ValueError(f"{name}: expected {expected}, got shape {tuple(t.shape)}")
    if validate and t.is_complex():
        raise ValueError(f"{name}: expected integer class ids or real scores, got {t.dtype}")
    if t.ndim == 2:
        if t.shape[1] == 0:
            raise ValueError(f"{name}: scores have no columns")
        if validate and t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"{name}: scores contain NaN or inf")
        return t.argmax(dim=1), t.shape[1]
    if validate and t.numel():
        if t.is_floating_point():
            if not torch.isfinite(t).all():
                raise ValueError(f"{name}: contains NaN or inf")
            if (t != t.floor()).any():
                raise ValueError(f"{name}: class ids must be integers, found non-integer values")
        if (t < 0).any():
            raise ValueError(f"{name}: class ids must be >= 0, found {t.min().item():g}")
    return t.long(), None


def _check_batch(ids: dict[str, tuple[torch.Tensor, Optional[int]]], validate: bool) -> None:
    """Equal lengths, equal score widths, and (validating) labels below the score width."""
    (first, (first_ids, _)), *rest = ids.items()
    for name, (other, _) in rest:
        if len(other) != len(first_ids):
            raise ValueError(f"{name}: has {len(other)} rows but {first} has {len(first_ids)}")
    widths = {name: width for name, (_, width) in ids.items() if width is not None}
    if not widths:
        return
    (source, width), *others = widths.items()
    for name, other in others:
        if other != width:
            raise ValueError(f"{name}: has {other} classes but {source} has {width}")
    if validate and first == "y_true" and first_ids.numel() and first_ids.max() >= width:
        raise ValueError(f"y_true: class id {first_ids.max().item()} is out of range for "
                         f"{width} classes (from {source})")


def _float_result(value: float, device: torch.device) -> torch.Tensor:
    # float64 keeps the ratio bit for bit equal to regfree.metrics' Python float (MPS has none)
    dtype = torch.float32 if device.type == "mps" else torch.float64
    return torch.tensor(value, dtype=dtype, device=device)


class _FlipCounts(_torchmetrics.Metric):
    """The four counts every flip rate is a ratio of (:class:`regfree.metrics.FlipTotals`)."""

    is_differentiable = False
    full_state_update = False
    plot_lower_bound = 0.0

    n: torch.Tensor
    old_correct: torch.Tensor
    new_correct: torch.Tensor
    both_correct: torch.Tensor

    def __init__(self, *, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validate_args = validate_args
        for state in ("n", "old_correct", "new_correct", "both_correct"):
            self.add_state(state, default=torch.tensor(0, dtype=torch.long),
                           dist_reduce_fx="sum")

    def update(self, y_true: Any, old_pred: Any, new_pred: Any) -> None:
        """Count one batch.

        Args:
            y_true: 1-D true class ids.
            old_pred: the old model's class ids (1-D) or scores/logits (2-D, argmax).
            new_pred: the new model's class ids (1-D) or scores/logits (2-D, argmax).
        """
        device = self.n.device
        options = {"device": device, "validate": self.validate_args}
        ids = {"y_true": _class_ids(y_true, "y_true", allow_scores=False, **options),
               "old_pred": _class_ids(old_pred, "old_pred", allow_scores=True, **options),
               "new_pred": _class_ids(new_pred, "new_pred", allow_scores=True, **options)}
        _check_batch(ids, self.validate_args)
        y, old, new = (value[0] for value in ids.values())
        old_ok = old == y
        new_ok = new == y
        self.n += y.numel()
        self.old_correct += old_ok.sum()
        self.new_correct += new_ok.sum()
        self.both_correct += (old_ok & new_ok).sum()

    def _totals(self) -> FlipTotals:
        return FlipTotals(int(self.n), int(self.old_correct), int(self.new_correct),
                          int(self.both_correct))


class NegativeFlipRate(_FlipCounts):
    """NFR: share of samples the old model got right and the new model gets wrong.

    ``compute()`` equals :func:`regfree.metrics.negative_flip_rate` on every sample counted
    (across processes under torch.distributed); ``nan`` before any sample.

    Args:
        validate_args: check each batch (shapes, NaN scores, negative or non-integer ids);
            ``False`` skips the checks, which cost a device sync per batch.
        **kwargs: torchmetrics' options (``dist_sync_on_step``, ``sync_on_compute``, ...).

    Example:
        >>> nfr = NegativeFlipRate()
        >>> nfr.update([0, 1, 2, 2], [0, 1, 0, 2], [0, 2, 2, 2])
        >>> nfr.compute().item()
        0.25
    """

    higher_is_better = False
    plot_upper_bound = 1.0

    def compute(self) -> torch.Tensor:
        """NFR of everything counted since the last reset, as a float64 scalar tensor."""
        return _float_result(self._totals().nfr, self.n.device)


class PositiveFlipRate(_FlipCounts):
    """PFR: share of samples the old model got wrong and the new model gets right.

    ``compute()`` equals :func:`regfree.metrics.positive_flip_rate`; Args as
    :class:`NegativeFlipRate`.

    Example:
        >>> pfr = PositiveFlipRate()
        >>> pfr.update([0, 1, 2, 2], [0, 1, 0, 2], [0, 2, 2, 2])
        >>> pfr.compute().item()
        0.25
    """

    higher_is_better = True
    plot_upper_bound = 1.0

    def compute(self) -> torch.Tensor:
        """PFR of everything counted since the last reset, as a float64 scalar tensor."""
        return _float_result(self._totals().pfr, self.n.device)


class RelativeNegativeFlipRate(_FlipCounts):
    """NFR divided by the NFR of two independent models: ``NFR / ((1 - ER_old) * ER_new)``.

    ``compute()`` equals :func:`regfree.metrics.relative_nfr` (``nan`` when the new model makes
    no errors or the old one is never right); Args as :class:`NegativeFlipRate`.

    Example:
        >>> rel = RelativeNegativeFlipRate()
        >>> rel.update([0, 1, 2, 2], [0, 1, 0, 2], [0, 2, 2, 2])
        >>> round(rel.compute().item(), 4)
        1.3333
    """

    higher_is_better = False

    def compute(self) -> torch.Tensor:
        """Relative NFR of everything counted since the last reset (float64 scalar tensor)."""
        return _float_result(self._totals().relative_nfr, self.n.device)


class ChurnRate(_torchmetrics.Metric):
    """Label-free churn: share of samples whose predicted class changed from old to new.

    ``update(old_pred, new_pred)`` takes no labels (shadow traffic); ``compute()`` equals
    :func:`regfree.metrics.churn_report`'s ``churn``. In a ``MetricCollection`` with the flip
    rates, pass keyword arguments (``y_true=..., old_pred=..., new_pred=...``): torchmetrics
    hands each metric the ones it takes.

    Args:
        validate_args: check each batch; ``False`` skips the checks.
        **kwargs: torchmetrics' options.

    Example:
        >>> churn = ChurnRate()
        >>> churn.update([0, 1, 2], [0, 2, 2])
        >>> churn.update([1], [1])
        >>> churn.compute().item()
        0.25
    """

    is_differentiable = False
    full_state_update = False
    higher_is_better = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    n: torch.Tensor
    changed: torch.Tensor

    def __init__(self, *, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validate_args = validate_args
        for state in ("n", "changed"):
            self.add_state(state, default=torch.tensor(0, dtype=torch.long),
                           dist_reduce_fx="sum")

    def update(self, old_pred: Any, new_pred: Any) -> None:
        """Count one batch of old and new class ids (1-D) or scores (2-D, argmax)."""
        options = {"device": self.n.device, "validate": self.validate_args,
                   "allow_scores": True}
        ids = {"old_pred": _class_ids(old_pred, "old_pred", **options),
               "new_pred": _class_ids(new_pred, "new_pred", **options)}
        _check_batch(ids, self.validate_args)
        old, new = (value[0] for value in ids.values())
        self.n += old.numel()
        self.changed += (old != new).sum()

    def compute(self) -> torch.Tensor:
        """Churn of everything counted since the last reset, as a float64 scalar tensor."""
        n = int(self.n)
        return _float_result(int(self.changed) / n if n else float("nan"), self.n.device)
