"""What :func:`regfree.training.fit` records per epoch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass
class EpochStats:
    """Numbers of one finished epoch.

    Attributes:
        epoch: 1-based epoch number.
        train_loss: mean total loss (cross-entropy + all loss terms) over the epoch's samples.
        train_ce: mean cross-entropy part of it.
        terms: mean of each loss term over the epoch, keyed by the term's ``name``.
        val_error: validation error rate, when validation data was given.
        val_nfr: validation negative flip rate against v1, when ``old_val_preds`` was given.
        val_pfr: validation positive flip rate against v1, when ``old_val_preds`` was given.
        lr: learning rate of the first parameter group at the end of the epoch.
        seconds: wall time of the epoch (training + validation).
    """

    epoch: int
    train_loss: float
    train_ce: float
    terms: dict[str, float] = field(default_factory=dict)
    val_error: Optional[float] = None
    val_nfr: Optional[float] = None
    val_pfr: Optional[float] = None
    lr: Optional[float] = None
    seconds: float = 0.0


@dataclass
class History:
    """Per-epoch record of a training run (``epochs[k]`` is epoch ``k + 1``).

    Example:
        >>> h = History([EpochStats(1, 0.9, 0.8, {"fd": 0.1}, val_error=0.2)])
        >>> h.train_loss, h.term("fd"), h.val_error
        ([0.9], [0.1], [0.2])
    """

    epochs: list[EpochStats] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def train_loss(self) -> list[float]:
        return [e.train_loss for e in self.epochs]

    @property
    def train_ce(self) -> list[float]:
        return [e.train_ce for e in self.epochs]

    @property
    def val_error(self) -> list[Optional[float]]:
        return [e.val_error for e in self.epochs]

    @property
    def val_nfr(self) -> list[Optional[float]]:
        return [e.val_nfr for e in self.epochs]

    @property
    def val_pfr(self) -> list[Optional[float]]:
        return [e.val_pfr for e in self.epochs]

    def term(self, name: str) -> list[float]:
        """Per-epoch mean of the loss term called ``name``."""
        if self.epochs and name not in self.epochs[-1].terms:
            raise ValueError(f"no loss term named {name!r}; have {sorted(self.epochs[-1].terms)}")
        return [e.terms[name] for e in self.epochs]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and floats (JSON- and checkpoint-safe)."""
        return {"epochs": [asdict(e) for e in self.epochs]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        return cls([EpochStats(**e) for e in data["epochs"]])
