"""The reduce step: counts -> :class:`FlipReport`, and the one-shot :func:`flip_report`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from regfree.metrics.classes import encode_flip_inputs
from regfree.metrics.counts import FlipCounts, flip_counts
from regfree.metrics.flips import FlipTotals, _ratio
from regfree.metrics.stats import mcnemar_exact_p, wilson_interval


class ClassFlips(NamedTuple):
    """Flips among the samples of one true class."""

    label: int
    count: int
    negative_flips: int
    positive_flips: int
    nfr: float
    pfr: float


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (nan, inf) inside dicts/lists/tuples set to None.

    Example:
        >>> json_safe({"a": [1.0, float("nan")]})
        {'a': [1.0, None]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _nan_if_none(value: Optional[float]) -> float:
    return float("nan") if value is None else float(value)


@dataclass(frozen=True, eq=False)
class FlipReport:
    """Everything about the flips from an old to a new model on one labelled set.

    Rates are shares of all ``n`` samples unless named otherwise; undefined ratios (zero
    denominators, see :mod:`regfree.metrics.flips`) are ``nan`` and become ``null`` in JSON.

    Attributes:
        n: number of samples.
        error_rate_old: old model's error rate.
        error_rate_new: new model's error rate.
        nfr: negative flip rate (old right, new wrong).
        pfr: positive flip rate (old wrong, new right).
        relative_nfr: ``nfr / ((1 - error_rate_old) * error_rate_new)``.
        nfi: negative flip impact, negative flips / new errors.
        btc: backward trust compatibility (BTC), both right / old right.
        bec: backward error compatibility, both wrong / new wrong.
        nfr_ci: 95% Wilson interval of ``nfr`` as ``(low, high)``.
        mcnemar_p: exact two-sided McNemar p-value that the two models' accuracies differ.
        per_class: one :class:`ClassFlips` per true class ``0 .. K-1`` (rates within the class;
            ``nan`` for classes with no samples).
        negative_flip_confusion: int array ``(K, K)``; ``[t, p]`` counts negative flips of true
            class ``t`` that the new model predicts as ``p``.
        class_names: the name of each class id when the classes were given by name, else None.
    """

    n: int
    error_rate_old: float
    error_rate_new: float
    nfr: float
    pfr: float
    relative_nfr: float
    nfi: float
    btc: float
    bec: float
    nfr_ci: tuple[float, float]
    mcnemar_p: float
    per_class: tuple[ClassFlips, ...]
    negative_flip_confusion: np.ndarray
    class_names: Optional[tuple[str, ...]] = None

    @property
    def num_classes(self) -> int:
        return len(self.per_class)

    @property
    def negative_flips(self) -> int:
        return sum(c.negative_flips for c in self.per_class)

    @property
    def positive_flips(self) -> int:
        return sum(c.positive_flips for c in self.per_class)

    def most_regressed(self, top: int = 5) -> list[ClassFlips]:
        """Classes with negative flips, highest per-class NFR first (ties: more flips first)."""
        hit = [c for c in self.per_class if c.negative_flips > 0]
        return sorted(hit, key=lambda c: (-c.nfr, -c.negative_flips, c.label))[:top]

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values under the attribute names (``nan`` kept as float nan)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["nfr_ci"] = list(self.nfr_ci)
        out["per_class"] = [c._asdict() for c in self.per_class]
        out["negative_flip_confusion"] = self.negative_flip_confusion.tolist()
        out["class_names"] = None if self.class_names is None else list(self.class_names)
        return out

    def to_json(self, indent: Optional[int] = 2) -> str:
        """Valid JSON of :meth:`to_dict`; ``nan`` is written as ``null``."""
        return json.dumps(json_safe(self.to_dict()), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlipReport:
        """Inverse of :meth:`to_dict` (also accepts the parsed output of :meth:`to_json`)."""
        scalars = {f.name: data[f.name] for f in fields(cls)
                   if f.name not in ("nfr_ci", "per_class", "negative_flip_confusion", "class_names")}
        scalars = {k: (int(v) if k == "n" else _nan_if_none(v)) for k, v in scalars.items()}
        per_class = tuple(
            ClassFlips(int(c["label"]), int(c["count"]), int(c["negative_flips"]),
                       int(c["positive_flips"]), _nan_if_none(c["nfr"]), _nan_if_none(c["pfr"]))
            for c in data["per_class"])
        confusion = np.asarray(data["negative_flip_confusion"], dtype=np.int64)
        confusion = confusion.reshape(len(per_class), len(per_class))
        low, high = data["nfr_ci"]
        names = data.get("class_names")
        return cls(nfr_ci=(float(low), float(high)), per_class=per_class,
                   negative_flip_confusion=confusion,
                   class_names=None if names is None else tuple(str(n) for n in names), **scalars)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FlipReport):
            return NotImplemented
        return self.to_json() == other.to_json()  # exact: JSON floats round-trip

    __hash__ = None  # type: ignore[assignment]

    def summary(self, class_names: Optional[Sequence[str]] = None, top: int = 5) -> str:
        """A few readable lines: errors, NFR with interval, the other metrics, worst classes."""
        low, high = self.nfr_ci
        lines = [
            f"n={self.n}  error old {self.error_rate_old:.2%}  new {self.error_rate_new:.2%}",
            f"NFR {self.nfr:.2%} (95% CI {low:.2%} to {high:.2%})  PFR {self.pfr:.2%}  "
            f"relative NFR {self.relative_nfr:.3f}",
            f"NFI {self.nfi:.3f}  BTC {self.btc:.4f}  BEC {self.bec:.3f}  "
            f"McNemar p {self.mcnemar_p:.3g}",
        ]
        worst = self.most_regressed(top)
        class_names = self.class_names if class_names is None else class_names
        if worst:
            names = [class_label(c.label, class_names) for c in worst]
            lines.append("most regressed classes: " + ", ".join(
                f"{name} ({c.nfr:.2%}, {c.negative_flips} of {c.count})"
                for name, c in zip(names, worst)))
        else:
            lines.append("no negative flips")
        return "\n".join(lines)


def class_label(label: int, class_names: Optional[Sequence[str]]) -> str:
    """The name of class ``label`` if names are given and cover it, else its number."""
    if class_names is not None and label < len(class_names):
        return str(class_names[label])
    return str(label)


def report_from_counts(counts: FlipCounts, *,
                       class_names: Optional[Sequence[str]] = None) -> FlipReport:
    """Reduce sufficient statistics to a :class:`FlipReport` (the reduce step).

    Args:
        counts: the counts of every sample.
        class_names: the name of each class id, recorded in the report (padded to the count).

    Example:
        >>> from regfree.metrics import flip_counts
        >>> report_from_counts(flip_counts([0, 1, 1], [0, 1, 0], [1, 1, 1])).nfr
        0.3333333333333333
    """
    if class_names is not None:
        counts = counts.padded(max(counts.num_classes, len(class_names)))
    joint = counts.joint
    k = counts.num_classes
    diag = np.arange(k)
    per_count = joint.sum(axis=(1, 2))
    old_correct = joint[:, :, 1].sum(axis=1)
    both_correct = joint[diag, diag, 1]
    positive = joint[diag, diag, 0]
    negative = old_correct - both_correct
    confusion = joint[:, :, 1].copy()
    confusion[diag, diag] = 0

    n = int(per_count.sum())
    if n == 0:
        raise ValueError("counts: no samples were counted")
    totals = FlipTotals(n, int(old_correct.sum()), int((both_correct + positive).sum()),
                        int(both_correct.sum()))
    per_class = tuple(
        ClassFlips(c, int(cnt), int(nf), int(pf), _ratio(int(nf), int(cnt)),
                   _ratio(int(pf), int(cnt)))
        for c, (cnt, nf, pf) in enumerate(zip(per_count, negative, positive)))
    return FlipReport(
        n=n,
        error_rate_old=totals.error_rate_old,
        error_rate_new=totals.error_rate_new,
        nfr=totals.nfr,
        pfr=totals.pfr,
        relative_nfr=totals.relative_nfr,
        nfi=totals.nfi,
        btc=totals.btc,
        bec=totals.bec,
        nfr_ci=wilson_interval(totals.negative_flips, n),
        mcnemar_p=mcnemar_exact_p(totals.negative_flips, totals.positive_flips),
        per_class=per_class,
        negative_flip_confusion=confusion,
        class_names=None if class_names is None else tuple(str(n) for n in class_names),
    )


def flip_report(
    y_true: Any,
    old_pred: Any,
    new_pred: Any,
    *,
    num_classes: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    validate: bool = True,
) -> FlipReport:
    """All flip metrics of an update from ``old_pred`` to ``new_pred`` in one call.

    Args:
        y_true: 1-D true class ids or class names (list, numpy array or torch tensor).
        old_pred: old model's class ids or names (1-D) or scores/logits (2-D, argmax).
        new_pred: new model's class ids or names (1-D) or scores/logits (2-D).
        num_classes: class count; from the score width or the largest id if None. At most
            ``MAX_REPORT_CLASSES`` (4096), since the negative-flip confusion is ``K x K``.
        class_names: the name of each class id. With names as inputs it fixes their order
            (default: sorted); with ids it names them. Recorded in the report.
        validate: check the inputs (raises ValueError naming the argument); ``False`` skips
            the checks for speed.

    Returns:
        A :class:`FlipReport`; :class:`FlipCounter` gives the identical report batch by batch.

    Example:
        >>> report = flip_report([0, 1, 2, 2], [0, 1, 0, 2], [0, 2, 2, 2])
        >>> report.nfr, report.pfr, report.per_class[1].negative_flips
        (0.25, 0.25, 1)
        >>> int(report.negative_flip_confusion[1, 2])
        1
        >>> named = flip_report(["cat", "dog", "dog"], ["cat", "dog", "cat"], ["dog", "dog", "cat"])
        >>> named.nfr, named.class_names
        (0.3333333333333333, ('cat', 'dog'))
    """
    y_true, old_pred, new_pred, names = encode_flip_inputs(y_true, old_pred, new_pred,
                                                           class_names)
    if names is not None:
        if num_classes is not None and num_classes != len(names):
            raise ValueError(f"num_classes: is {num_classes} but class_names has {len(names)}")
        num_classes = len(names)
    counts = flip_counts(y_true, old_pred, new_pred, num_classes=num_classes, validate=validate)
    return report_from_counts(counts, class_names=names)
