"""Distillation losses for positive-congruent training: a per-sample weighting times a distance.

``loss = weight * mean_i(w_i * D_i)`` over the batch, where ``w_i`` comes from a weighting
function of the old logits and targets (:mod:`regfree.pctraining.weighting`) and ``D_i`` from a
distance between new and old logits (:mod:`regfree.pctraining.distances`). A new weighting or
distance is one small function passed to :class:`DistillationLoss`, not a new class.

Fewer old classes than new: when the old logits have ``C_old < C_new`` columns, the old model's
classes are taken to be the first ``C_old`` new classes. Samples whose target is a new class
(``>= C_old``) get weight 0 (no distillation term), and the remaining samples are compared on the
shared classes only (``new_logits[:, :C_old]``). The mean still runs over the whole batch, so the
term stays a per-sample mean (what the trainer's multi-process weighting assumes). With
``new_classes="zero"`` the old model instead gives the classes it never saw probability zero (its
logits are padded ``UNSEEN_GAP`` below its lowest), so a KL distance over all new classes also
charges the new model for the probability it moves to new classes on samples of old classes (the
old classes' margin that MPT, Ricci et al. AAAI 2026, protects).

Every loss is called like a torch loss, new model's output first:
``loss(new_logits, old_logits, targets)``, in your own training loop (the old logits computed
under ``torch.no_grad()``) or, bound to its teacher by a
:class:`~regfree.pctraining.DistillationTerm`, by :func:`regfree.training.fit`.

All arithmetic runs in float32 (float64 for float64 inputs) with autocast disabled, so the losses work under
``torch.autocast`` and on CUDA; gradients flow into ``new_logits`` only.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable, Optional

import torch
from torch import nn

from regfree.pctraining.distances import at_least_float32, kl_distance, logit_distance
from regfree.pctraining.weighting import focal_weighting, old_correct, uniform_weights

if TYPE_CHECKING:
    from regfree.training.steps import TrainStep

NEW_CLASS_RULES = ("ignore", "zero")
#: how far below the old model's lowest logit the classes it never saw are put by
#: ``new_classes="zero"``: softmax(old / T) gives them at most e^-100 of the mass at T <= 100
UNSEEN_GAP = 1e4

Weighting = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Defaults by distance, picked by the sweep in experiments/pct_mnist1d.py (see
#: FocalDistillationLoss). Logit distances are sums of squared logit gaps, far larger than KL,
#: hence the much smaller weight (lambda).
DEFAULTS: dict[str, dict[str, float]] = {
    "kl": {"alpha": 1.0, "beta": 20.0, "temperature": 4.0, "weight": 0.005},
    "logit": {"alpha": 1.0, "beta": 5.0, "temperature": 1.0, "weight": 0.0015},
}


class DistillationLoss(nn.Module):
    """``weight * mean_i(weighting(old, y)_i * distance(new, old)_i)``, the distillation term only.

    Records what its last call did in :attr:`last_stats` (floats): ``distilled_share`` (share
    of the batch whose target the old model knows), ``old_correct_share`` (share of those where
    the old model was right), ``mean_weight`` and ``mean_distance`` (over distilled samples).

    Args:
        weighting: ``(old_logits, targets) -> (B,)`` per-sample weights.
        distance: ``(new_logits, old_logits) -> (B,)`` per-sample distances.
        weight: the overall factor (lambda).
        name: label of the term in the training history.
        new_classes: when the old logits have fewer classes than the new: ``"ignore"``
            compares the shared classes only; ``"zero"`` pads the old logits ``UNSEEN_GAP``
            below their lowest (probability zero for the classes the old model never saw) and
            compares all classes: meant for probability distances such as KL (a logit distance
            would pull the new classes' logits down by the gap). Samples of new classes are
            not distilled either way. Use it at a low temperature: zero probability at ``T`` needs
            logit gaps of many ``T``, out of reach for bounded logits (a cosine head's lie within
            its scale), and the term then overwhelms the cross-entropy (the T = 100 row of
            ``experiments/results/pct_new_classes_mnist1d.md``).

    Example:
        >>> from regfree.pctraining.distances import logit_distance
        >>> from regfree.pctraining.weighting import uniform_weights
        >>> loss = DistillationLoss(uniform_weights, logit_distance, weight=2.0)
        >>> float(loss(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2), torch.tensor([0])))
        1.0
    """

    def __init__(self, weighting: Weighting, distance: Distance, weight: float = 1.0,
                 name: str = "distill", *, new_classes: str = "ignore") -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        if new_classes not in NEW_CLASS_RULES:
            raise ValueError(f"new_classes must be one of {NEW_CLASS_RULES}, got "
                             f"{new_classes!r}")
        self.new_classes = new_classes
        self.weighting = weighting
        self.distance = distance
        self.weight = float(weight)
        self.name = name
        self._last: tuple[torch.Tensor, ...] = ()

    def forward(self, new_logits: torch.Tensor, old_logits: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
        """The distillation term.

        Args:
            new_logits: ``(B, C)`` logits of the model being trained.
            old_logits: ``(B, C_old)`` logits of the old model (teacher) on the same samples,
                ``C_old <= C``; detached here.
            targets: ``(B,)`` int64 class ids.

        Returns:
            A scalar float32 tensor (float64 for float64 logits), differentiable in ``new_logits``.
        """
        _check_shapes(new_logits, old_logits, targets)
        old_logits = old_logits.detach().to(new_logits.device)
        targets = targets.to(new_logits.device)
        num_old = old_logits.shape[1]
        with torch.autocast(device_type=new_logits.device.type, enabled=False):
            new = at_least_float32(new_logits)
            old = at_least_float32(old_logits)
            known = targets < num_old
            weights = self.weighting(old, targets).to(new.dtype) * known.to(new.dtype)
            if self.new_classes == "zero" and num_old < new.shape[1]:
                floor = old.min(dim=1, keepdim=True).values - UNSEEN_GAP
                distances = self.distance(
                    new, torch.cat([old, floor.expand(-1, new.shape[1] - num_old)], dim=1))
            else:
                distances = self.distance(new[:, :num_old], old)
            value = self.weight * (weights * distances).mean()
        # kept, not reduced: last_stats does the reductions only when someone asks (each is a
        # small op, and a training step is only a few hundred of them)
        self._last = (old, targets, known, weights.detach(), distances.detach())
        return value

    def step_arguments(self, step: TrainStep) -> tuple[torch.Tensor, ...]:
        """Inside :func:`regfree.training.fit` the old logits come from a teacher, which the
        loss alone does not have: this raises, naming the fix."""
        raise ValueError(f"{type(self).__name__} {self.name!r} needs the old model's logits in "
                         "fit: pass DistillationTerm(loss, teacher=old_logit_cache or old_model)")

    @property
    def last_stats(self) -> dict[str, float]:
        """Statistics of the last call (empty before the first)."""
        if not self._last:
            return {}
        old, targets, known, weights, distances = self._last
        n_known = float(known.sum().clamp(min=1))
        return {
            "distilled_share": float(known.float().mean()),
            "old_correct_share": float((old_correct(old, targets) & known).sum()) / n_known,
            "mean_weight": float(weights.sum()) / n_known,
            "mean_distance": float((distances * known).sum()) / n_known,
        }


class FocalDistillationLoss(DistillationLoss):
    """Focal distillation (Yan et al., CVPR 2021): distil hardest where the old model was right.

    Per-sample weight ``alpha + beta * 1[old argmax == target]``; distance ``kind="kl"``:
    ``T^2 * KL(softmax(old/T) || softmax(new/T))`` or ``kind="logit"``: ``0.5 * ||new - old||^2``
    (temperature unused). Returns ``weight * mean_i(w_i * D_i)`` — only the distillation term;
    add the cross-entropy yourself (the trainer does). See the module docstring for fewer old
    classes than new, autocast and gradients.

    Defaults (``DEFAULTS``): ``kind="kl"`` alpha 1, beta 20, T 4, weight 0.005;
    ``kind="logit"`` alpha 1, beta 5 (the paper's), weight 0.0015. They are the picks of the
    sweep in ``experiments/pct_mnist1d.py`` (the demo's setup with a wider v2): the lowest
    validation NFR, averaged over seeds, among settings whose validation error stays within half
    a point of plain training's. The grid, its Pareto plot and the test tables (this loss alone,
    and beside :class:`~regfree.pctraining.NoisyDistillationTerm` and KD from an ensemble of
    plain new models) are in ``experiments/results/pct_mnist1d.md``. The trade-off between
    fewer flips and more error depends on the data: check it on yours with
    :func:`~regfree.training.fit`'s per-epoch ``val_nfr``.

    Args:
        alpha: weight of every sample (0 = distil only where the old model was right).
        beta: extra weight where the old model was right.
        temperature: softmax temperature of the KL distance.
        kind: ``"kl"`` or ``"logit"``, or a callable distance ``(new, old) -> (B,)``.
        weight: overall factor lambda.
        name: label in the training history.
        new_classes: for an old model with fewer classes, ``"ignore"`` (compare the shared
            classes) or ``"zero"`` (the old model gives the others probability zero; KL only):
            see :class:`DistillationLoss`.

    Each of ``alpha``, ``beta``, ``temperature`` and ``weight`` left as None takes the default of
    ``kind`` (``DEFAULTS``; a callable distance takes the KL defaults with weight 1).

    Example:
        >>> fd = FocalDistillationLoss(alpha=0.0, beta=1.0, kind="logit", weight=1.0)
        >>> new = torch.tensor([[2.0, 0.0], [0.0, 2.0]], requires_grad=True)
        >>> old = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        >>> fd(new, old, torch.tensor([0, 1])).item()  # only sample 0 (old right): 0.5*1/2
        0.25
        >>> fd.last_stats["old_correct_share"]
        0.5

        v1 knew classes 0 and 1; v2 gives the new class 2 as much as class 0. Over the shared
        classes the two agree; with ``new_classes="zero"`` v2 pays for the new class's share:

        >>> new3, old2, y0 = torch.tensor([[4.0, 0.0, 4.0]]), torch.tensor([[4.0, 0.0]]), torch.tensor([0])
        >>> FocalDistillationLoss(weight=1.0)(new3, old2, y0).item()
        0.0
        >>> FocalDistillationLoss(weight=1.0, new_classes="zero")(new3, old2, y0).item() > 1.0
        True
    """

    def __init__(self, alpha: Optional[float] = None, beta: Optional[float] = None,
                 temperature: Optional[float] = None, kind: str | Distance = "kl",
                 weight: Optional[float] = None, name: Optional[str] = None, *,
                 new_classes: str = "ignore") -> None:
        if new_classes == "zero" and kind == "logit":
            raise ValueError("new_classes='zero' needs a probability distance (kind='kl'): a "
                             "logit distance would pull the new classes' logits down by "
                             "UNSEEN_GAP")
        defaults = DEFAULTS.get(kind, DEFAULTS["kl"]) if isinstance(kind, str) else DEFAULTS["kl"]
        alpha = defaults["alpha"] if alpha is None else alpha
        beta = defaults["beta"] if beta is None else beta
        temperature = defaults["temperature"] if temperature is None else temperature
        if weight is None:
            weight = defaults["weight"] if isinstance(kind, str) else 1.0
        weighting = focal_weighting(alpha, beta)
        distance = _distance(kind, temperature)
        super().__init__(weighting, distance,
                         weight, name or f"fd_{kind if isinstance(kind, str) else 'custom'}",
                         new_classes=new_classes)
        self.alpha, self.beta, self.temperature, self.kind = alpha, beta, temperature, kind

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}, "
                f"kind={self.kind!r}, weight={self.weight}, new_classes={self.new_classes!r}")


class KnowledgeDistillationLoss(DistillationLoss):
    """Plain knowledge distillation: ``weight * T^2 * KL(softmax(old/T) || softmax(new/T))``,
    averaged over the batch, every sample weighted 1 (samples of classes the old model never saw
    excepted, as in the module docstring).

    Example:
        >>> kd = KnowledgeDistillationLoss(temperature=2.0, weight=0.5)
        >>> float(kd(torch.zeros(3, 4), torch.zeros(3, 4), torch.tensor([0, 1, 2])))
        0.0
    """

    def __init__(self, temperature: float = 4.0, weight: float = 1.0, name: str = "kd", *,
                 new_classes: str = "ignore") -> None:
        super().__init__(uniform_weights, _distance("kl", temperature), weight, name,
                         new_classes=new_classes)
        self.temperature = temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, weight={self.weight}"


def _distance(kind: str | Distance, temperature: float) -> Distance:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if callable(kind):
        return kind
    if kind == "kl":
        return partial(kl_distance, temperature=float(temperature))
    if kind == "logit":
        return logit_distance
    raise ValueError(f"kind must be 'kl', 'logit' or a callable, got {kind!r}")


def _check_shapes(new_logits: torch.Tensor, old_logits: torch.Tensor,
                  targets: torch.Tensor) -> None:
    if new_logits.dim() != 2:
        raise ValueError(f"new_logits must be (B, C), got shape {tuple(new_logits.shape)}")
    if old_logits.dim() != 2 or old_logits.shape[0] != new_logits.shape[0]:
        raise ValueError(f"old_logits must be (B, C_old) with B={new_logits.shape[0]}, got "
                         f"shape {tuple(old_logits.shape)}")
    if old_logits.shape[1] > new_logits.shape[1]:
        raise ValueError(f"old_logits has {old_logits.shape[1]} classes, more than new_logits' "
                         f"{new_logits.shape[1]}")
    if targets.shape != (new_logits.shape[0],):
        raise ValueError(f"targets must be ({new_logits.shape[0]},), got {tuple(targets.shape)}")
