"""The demo's knobs, importable without torch (the CLI builds ``regfree demo --help`` from them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class DemoConfig:
    """The demo's knobs (``regfree demo --help`` shows them)."""

    samples: int = 12000
    old_fraction: float = 1 / 3
    old_width: int = 16
    new_width: int = 64
    embedding_dim: int = 32
    old_epochs: int = 20
    new_epochs: int = 30
    batch_size: int = 128
    lr: float = 3e-3
    bct_weight: float = 1.0
    adapter_pairs: float = 0.1
    blend_max_error_increase: float = 0.005
    max_nfr: Optional[float] = None
    seed: int = 0
    output: str = "demo_output"
    progress: bool = True

    def validate(self) -> None:
        """Raise ValueError naming the first knob out of range."""
        positive = ("samples", "old_width", "new_width", "embedding_dim", "old_epochs",
                    "new_epochs", "batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.samples < 100:
            raise ValueError(f"samples must be at least 100, got {self.samples}")
        if not 0.0 < self.old_fraction <= 1.0:
            raise ValueError(f"old_fraction must be in (0, 1], got {self.old_fraction}")
        if not 0.0 < self.adapter_pairs <= 1.0:
            raise ValueError(f"adapter_pairs must be in (0, 1], got {self.adapter_pairs}")
        if not 0.0 <= self.blend_max_error_increase <= 1.0:
            raise ValueError("blend_max_error_increase must be in [0, 1], got "
                             f"{self.blend_max_error_increase}")
        if not self.lr > 0 or self.bct_weight < 0:
            raise ValueError("lr must be positive and bct_weight non-negative")
