"""Positive-congruent training: train v2 to keep v1's correct predictions.

Losses are a per-sample weighting times a distance (:mod:`~regfree.pctraining.weighting`,
:mod:`~regfree.pctraining.distances`), called on tensors (``fd(new_logits, old_logits,
targets)``) in your own loop; :class:`OldLogitCache` runs v1 once; a :class:`DistillationTerm`
binds a loss to its teacher (a cache or live old models) for the shared trainer
:func:`regfree.training.fit`; a :class:`NoisyDistillationTerm` distils the live v1 on noisy
copies of each batch as well. Training-free alternatives for a v2 trained without
regfree: :func:`fit_blend` (combine v1's and v2's scores) and :func:`interpolate_weights` (BCWI,
for a v2 fine-tuned from v1).

Only the blend is imported with the package (numpy and scipy: ``regfree blend`` runs from score
files without torch); every torch-backed name is imported on first use.

Example:
    >>> import numpy as np, torch
    >>> from regfree.models import MLP
    >>> from regfree.pctraining import DistillationTerm, FocalDistillationLoss
    >>> from regfree.training import fit
    >>> x, y = np.random.default_rng(0).normal(size=(32, 4)).astype("float32"), np.arange(32) % 2
    >>> v1 = MLP(4, num_classes=2)
    >>> term = DistillationTerm(FocalDistillationLoss(), teacher=v1)
    >>> history = fit(MLP(4, num_classes=2), (x, y), loss_terms=[term], epochs=1,
    ...               optimizer=lambda p: torch.optim.Adam(p, lr=1e-3), progress=False)
    >>> sorted(history.epochs[0].terms)
    ['fd_kl']
"""

import importlib

from regfree.pctraining.blend import LogitBlend, blend_sweep, fit_blend, pareto_front

# name -> submodule, for the names that need torch (imported on first use, PEP 562).
_LAZY = {
    "OldLogitCache": "cache",
    "kl_distance": "distances", "logit_distance": "distances",
    "margin_logit_distance": "distances",
    "interpolate_weights": "interpolation", "interpolation_sweep": "interpolation",
    "DistillationLoss": "losses", "FocalDistillationLoss": "losses",
    "KnowledgeDistillationLoss": "losses",
    "DistillationTerm": "term", "NoisyDistillationTerm": "term",
    "ScheduledTerm": "schedule", "linear_ramp": "schedule",
    "TemporalEnsemble": "temporal",
    "TopKLogitInhibitionLoss": "topk", "topk_logit_distance": "topk",
    "focal_weights": "weighting", "old_correct": "weighting", "uniform_weights": "weighting",
}

__all__ = [
    "DistillationLoss",
    "DistillationTerm",
    "FocalDistillationLoss",
    "KnowledgeDistillationLoss",
    "LogitBlend",
    "NoisyDistillationTerm",
    "OldLogitCache",
    "ScheduledTerm",
    "TemporalEnsemble",
    "TopKLogitInhibitionLoss",
    "blend_sweep",
    "fit_blend",
    "focal_weights",
    "interpolate_weights",
    "interpolation_sweep",
    "kl_distance",
    "linear_ramp",
    "logit_distance",
    "margin_logit_distance",
    "old_correct",
    "pareto_front",
    "topk_logit_distance",
    "uniform_weights",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"regfree.pctraining.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'regfree.pctraining' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
