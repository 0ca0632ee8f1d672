"""Bridges to the tools ML teams already run: torchmetrics (and so Lightning) and MLflow.

Each lives in its own module and needs its own extra; nothing here is imported by ``import
regfree``, and the library behind a name is imported only when the name is first used:

- :mod:`regfree.integrations.torchmetrics` (``pip install 'regfree[torchmetrics]'``):
  :class:`NegativeFlipRate`, :class:`PositiveFlipRate`, :class:`RelativeNegativeFlipRate` and
  :class:`ChurnRate` as ``torchmetrics.Metric`` classes (summed counts, synced under DDP).
- :mod:`regfree.integrations.mlflow` (``pip install 'regfree[mlflow]'``):
  :func:`log_upgrade_report` and :func:`log_flip_report` log a report's numbers, the gate and
  the report files to an MLflow run.

Example:
    >>> from regfree.integrations import NegativeFlipRate
    >>> metric = NegativeFlipRate()
    >>> metric.update([0, 1, 1], [0, 1, 0], [1, 1, 1])
    >>> round(metric.compute().item(), 4)
    0.3333
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "ChurnRate": "torchmetrics",
    "NegativeFlipRate": "torchmetrics",
    "PositiveFlipRate": "torchmetrics",
    "RelativeNegativeFlipRate": "torchmetrics",
    "log_flip_report": "mlflow",
    "log_upgrade_report": "mlflow",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        module = importlib.import_module(f"regfree.integrations.{_HOMES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'regfree.integrations' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
