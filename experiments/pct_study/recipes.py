"""Term specs: the loss terms of a v2 run, as data.

A :class:`Run` is a seed and a tuple of specs (no spec: plain cross-entropy). Each spec says
what it is (``family``, ``label``) and builds its loss term (``build``); a run's family and
label are those of its specs, joined in order, e.g. FD-KL defaults + ens-KD + noisy FD.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from pct_study.models import cosine_model
from pct_study.settings import Data, Setup
from regfree.pctraining import (
    DistillationLoss,
    DistillationTerm,
    FocalDistillationLoss,
    KnowledgeDistillationLoss,
    NoisyDistillationTerm,
    OldLogitCache,
    ScheduledTerm,
    TemporalEnsemble,
    TopKLogitInhibitionLoss,
    linear_ramp,
    margin_logit_distance,
    uniform_weights,
)

V1_CACHE = "v1_cache"  # v1's training logits
ENSEMBLE_CACHE = "ensemble_cache"  # mean training logits of the v1-architecture ensemble
V2_ENSEMBLE_CACHE = "v2_ensemble_cache"  # mean training logits of plain v2s (ens-KD)
V1_WEIGHTS = "v1.pt"  # noisy FD runs v1 live


@dataclass
class TermContext:
    """Where a spec finds its teacher: the work folder of the run's caches and v1's weights."""

    setup: Setup
    workdir: Path
    data: Data

    def cache(self, name: str) -> OldLogitCache:
        # v1 and its ensemble have v1's head (setup.v1_classes outputs); the v2 ensemble all 10
        classes = 10 if name == V2_ENSEMBLE_CACHE else self.setup.v1_classes
        return OldLogitCache.open(self.workdir / name, num_samples=len(self.data.y_train),
                                  num_classes=classes)


@dataclass(frozen=True)
class FocalDistillation:
    """Focal distillation toward v1's cached logits; a field left None takes the library
    default (``FocalDistillationLoss``), all four None is the "defaults" row. ``ramp``: the
    weight rises linearly from 0 in the first epoch to ``weight`` in the last
    (:func:`regfree.pctraining.linear_ramp`)."""

    kind: str = "kl"  # "kl" (FD-KL) or "logit" (FD-LM)
    alpha: Optional[float] = None
    beta: Optional[float] = None
    temperature: Optional[float] = None
    weight: Optional[float] = None
    ramp: bool = False
    new_classes: str = "ignore"  # "zero": v1 gives classes it never saw probability 0 (KL)
    # with alpha 0: no distillation on v1's own training samples, where v1 is right because it
    # memorised them (v1's cache there is marked wrong, so the focal weight is alpha = 0)
    skip_v1_training: bool = False

    @property
    def family(self) -> str:
        return "FD-KL" if self.kind == "kl" else "FD-LM"

    @property
    def defaults(self) -> bool:
        return (self.alpha, self.beta, self.temperature, self.weight) == (None,) * 4

    def label(self, alone: bool = True) -> str:
        if self.ramp:
            return _unramped(self).label(alone) + ", ramped 0->w"
        if self.skip_v1_training:
            return (replace(self, skip_v1_training=False).label(alone)
                    + ", not on v1's training samples")
        if self.new_classes != "ignore":
            return (replace(self, new_classes="ignore").label(alone)
                    + f", new classes: {self.new_classes}")
        if self.defaults:
            if not alone:
                return f"{self.family} defaults"
            fd = FocalDistillationLoss(kind=self.kind)
            temperature = f" T={fd.temperature:g}" if self.kind == "kl" else ""
            return (f"{self.family} defaults (a={fd.alpha:g} b={fd.beta:g}{temperature} "
                    f"w={fd.weight:g})")
        parts = [f"{k}={v:g}" for k, v in (("a", self.alpha), ("b", self.beta),
                                          ("T", self.temperature), ("w", self.weight))
                 if v is not None]
        return f"{self.family} " + " ".join(parts)

    def matches_library_defaults(self) -> bool:
        """Whether this setting is what ``FocalDistillationLoss(kind=...)`` gives today."""
        fd = FocalDistillationLoss(kind=self.kind)
        keys = ("alpha", "beta", "weight") + (("temperature",) if self.kind == "kl" else ())
        return all(getattr(self, k) == getattr(fd, k) for k in keys)

    def build(self, context: TermContext) -> Any:
        loss = FocalDistillationLoss(alpha=self.alpha, beta=self.beta, kind=self.kind,
                                     temperature=self.temperature, weight=self.weight,
                                     new_classes=self.new_classes)
        cache = context.cache(V1_CACHE)
        if self.skip_v1_training:
            if self.alpha != 0:
                raise ValueError("skip_v1_training needs alpha=0 (it marks v1 wrong there)")
            cache = marked_wrong(cache, context.data.v1_subset, context.data.y_train)
        term = DistillationTerm(loss, cache)
        return ScheduledTerm(term, linear_ramp(context.setup.v2_epochs)) if self.ramp else term


def marked_wrong(cache: OldLogitCache, samples: np.ndarray, labels: np.ndarray) -> OldLogitCache:
    """An in-memory copy of ``cache`` whose rows at ``samples`` predict a wrong class (their
    label's logit set below the row's lowest), so focal weighting counts v1 wrong there."""
    logits = np.array(cache.logits, dtype=np.float32)
    logits[samples, labels[samples]] = logits[samples].min(axis=1) - 1.0
    return OldLogitCache(cache.directory, logits, cache.meta)


def _unramped(spec: FocalDistillation) -> FocalDistillation:
    return replace(spec, ramp=False)


@dataclass(frozen=True)
class TopKInhibition:
    """Logit-difference inhibition toward v1's cached logits on the top-k classes only
    (:class:`regfree.pctraining.TopKLogitInhibitionLoss`, every sample weighted 1)."""

    k: int
    margin: float
    weight: float
    family = "LDI-topk"

    def label(self, alone: bool = True) -> str:
        return f"LDI top-{self.k} vs v1 m={self.margin:g} w={self.weight:g}"

    def build(self, context: TermContext) -> Any:
        loss = TopKLogitInhibitionLoss(k=self.k, margin=self.margin, weight=self.weight)
        return DistillationTerm(loss, context.cache(V1_CACHE))


@dataclass(frozen=True)
class KnowledgeDistillation:
    """KD toward v1 (``teacher="v1"``, family KD) or toward the mean logits of plain v2s of
    other seeds (``teacher="v2 ensemble"``, family ens-KD)."""

    temperature: float
    weight: float
    teacher: str = "v1"

    @property
    def family(self) -> str:
        return "KD" if self.teacher == "v1" else "ens-KD"

    def label(self, alone: bool = True) -> str:
        return f"{self.family} T={self.temperature:g} w={self.weight:g}"

    def build(self, context: TermContext) -> Any:
        if self.teacher == "v1":
            loss = KnowledgeDistillationLoss(temperature=self.temperature, weight=self.weight)
            return DistillationTerm(loss, context.cache(V1_CACHE))
        loss = KnowledgeDistillationLoss(temperature=self.temperature, weight=self.weight,
                                         name="kd_v2_ensemble")
        return DistillationTerm(loss, context.cache(V2_ENSEMBLE_CACHE))


@dataclass(frozen=True)
class Elodi:
    """ELODI-style: the v1-architecture ensemble's mean logits, every sample weighted 1,
    ``margin_logit_distance`` at ``Setup.elodi_margin``."""

    weight: float
    family = "ELODI"

    def label(self, alone: bool = True) -> str:
        return f"ELODI w={self.weight:g}"

    def build(self, context: TermContext) -> Any:
        margin = context.setup.elodi_margin
        loss = DistillationLoss(uniform_weights,
                                lambda new, old: margin_logit_distance(new, old, margin=margin),
                                weight=self.weight, name="elodi")
        return DistillationTerm(loss, context.cache(ENSEMBLE_CACHE))


@dataclass(frozen=True)
class NoisyFocalDistillation:
    """Focal distillation toward live v1 on noisy copies of each batch: noise std ``noise``
    times each input feature's training std, ``FocalDistillationLoss(weight=weight)``."""

    noise: float
    weight: float
    family = "noisy"

    def label(self, alone: bool = True) -> str:
        return f"noisy FD {self.noise:g} std w={self.weight:g}"

    def build(self, context: TermContext) -> Any:
        setup = context.setup
        v1 = cosine_model(setup.v1_width, setup, 0, setup.v1_classes)
        v1.load_state_dict(torch.load(context.workdir / V1_WEIGHTS))
        feature_std = torch.as_tensor(context.data.x_train.std(axis=0), dtype=torch.float32)
        return NoisyDistillationTerm(FocalDistillationLoss(weight=self.weight), v1,
                                     self.noise * feature_std)


@dataclass(frozen=True)
class TemporalKnowledgeDistillation:
    """KD toward v2's own past logits per training sample (a
    :class:`regfree.pctraining.TemporalEnsemble` of ``momentum`` per epoch): an ensemble over
    the run's own trajectory, no training beyond v2's."""

    temperature: float
    weight: float
    momentum: float = 0.6
    family = "TE-KD"

    def label(self, alone: bool = True) -> str:
        return (f"own-average KD T={self.temperature:g} w={self.weight:g} "
                f"m={self.momentum:g}")

    def build(self, context: TermContext) -> Any:
        loss = KnowledgeDistillationLoss(temperature=self.temperature, weight=self.weight,
                                         name="kd_own_average")
        ensemble = TemporalEnsemble(len(context.data.y_train), 10, momentum=self.momentum)
        return DistillationTerm(loss, ensemble)


# the steps of v2's training on mnist1d (9,600 samples in batches of 128, 30 epochs): the run
# length a WeightAveraging decay is stated for
REFERENCE_STEPS = 75 * 30


@dataclass(frozen=True)
class WeightAveraging:
    """Not a loss term: v2 trained with ``fit(ema_decay=...)``, an exponential moving average
    of its weights after every step, which it ends holding. ``decay`` is the per-step decay of
    a run of ``REFERENCE_STEPS`` steps (mnist1d's); a run of another length gets the decay
    whose average spans the same share of it (``1 - decay`` scaled by the ratio of lengths)."""

    decay: float
    family = "EMA"

    def label(self, alone: bool = True) -> str:
        return f"EMA {self.decay:g}"

    def build(self, context: TermContext) -> None:
        return None

    def decay_for(self, steps: int) -> float:
        """fit's ``ema_decay`` for a run of ``steps`` optimizer steps."""
        return 1.0 - (1.0 - self.decay) * REFERENCE_STEPS / steps


@dataclass(frozen=True)
class LearningRateFloor:
    """Not a loss term: v2's cosine learning rate ends at ``fraction`` of the base rate instead
    of zero (``fit_adam_cosine(lr_floor=...)``), so that its last weights still move and a
    weight average beside it (:class:`WeightAveraging`) has noise to remove."""

    fraction: float
    family = "LR floor"

    def label(self, alone: bool = True) -> str:
        return f"LR cosine to {self.fraction:g}x"

    def build(self, context: TermContext) -> None:
        return None


TermSpec = Union[FocalDistillation, KnowledgeDistillation, Elodi, NoisyFocalDistillation,
                 TopKInhibition, WeightAveraging, LearningRateFloor,
                 TemporalKnowledgeDistillation]
SPECS = {cls.__name__: cls for cls in (FocalDistillation, KnowledgeDistillation, Elodi,
                                       NoisyFocalDistillation, TopKInhibition, WeightAveraging,
                                       LearningRateFloor, TemporalKnowledgeDistillation)}


@dataclass(frozen=True)
class Run:
    """One v2 training run: a seed and the loss terms next to cross-entropy (in order)."""

    seed: int
    terms: tuple[TermSpec, ...] = ()
    keep_weights: bool = False  # a member of the v2 ensemble: its weights are saved

    @property
    def family(self) -> str:
        return "+".join(term.family for term in self.terms) or "plain"

    def label(self) -> str:
        alone = len(self.terms) == 1
        return " + ".join(term.label(alone) for term in self.terms) or "plain"

    def spec(self, kind: type) -> Any:
        """The run's one spec of class ``kind``."""
        return next(term for term in self.terms if isinstance(term, kind))

    def build_terms(self, context: TermContext) -> list:
        return [built for term in self.terms if (built := term.build(context)) is not None]

    def fit_options(self, steps: int) -> dict[str, Any]:
        """fit_adam_cosine's keywords for the run's non-loss specs in a run of ``steps``
        optimizer steps (``ema_decay`` of a WeightAveraging, ``lr_floor`` of a
        LearningRateFloor)."""
        options: dict[str, Any] = {}
        for term in self.terms:
            if isinstance(term, WeightAveraging):
                options["ema_decay"] = term.decay_for(steps)
            elif isinstance(term, LearningRateFloor):
                options["lr_floor"] = term.fraction
        return options

    def record(self) -> dict[str, Any]:
        """JSON-ready form (read back by :func:`run_from_record`)."""
        return {"seed": self.seed,
                "terms": [{"spec": type(t).__name__, **asdict(t)} for t in self.terms]}


def run_from_record(record: dict[str, Any]) -> Run:
    """A :class:`Run` from :meth:`Run.record`, or from the flat records of earlier result files
    (``family`` plus settings), which hold single-term sweep runs only."""
    if "family" not in record:
        terms = []
        for term in record["terms"]:
            cls = SPECS[term["spec"]]
            terms.append(cls(**{f.name: term[f.name] for f in fields(cls) if f.name in term}))
        return Run(record["seed"], tuple(terms))
    family, seed = record["family"], record["seed"]
    if family == "plain":
        return Run(seed)
    if family == "KD":
        return Run(seed, (KnowledgeDistillation(record["temperature"], record["weight"]),))
    if family == "ELODI":
        return Run(seed, (Elodi(record["weight"]),))
    if family in ("FD-KL", "FD-LM"):
        kind = "kl" if family == "FD-KL" else "logit"
        if record.get("defaults"):
            return Run(seed, (FocalDistillation(kind),))
        return Run(seed, (FocalDistillation(kind, record["alpha"], record["beta"],
                                            record["temperature"], record["weight"]),))
    raise ValueError(f"cannot read a run of family {family!r} from a result file")
