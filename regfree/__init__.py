"""regfree: regression-free model updates.

Rooms: :mod:`regfree.metrics` (flip metrics, numpy only), :mod:`regfree.pctraining`
(positive-congruent training), :mod:`regfree.compat` (backward-compatible embeddings),
:mod:`regfree.retrieval` (FAISS galleries across model versions), :mod:`regfree.data`
(offline datasets), :mod:`regfree.models` (small reference models), :mod:`regfree.reporting`
(input files, tables, HTML pages) and :mod:`regfree.training` (the one trainer they share).
:func:`evaluate_upgrade` makes the whole check in one call.

``import regfree`` imports none of them: each room (and ``evaluate_upgrade``) is imported on
first use, so ``regfree report`` and :mod:`regfree.metrics` run without torch.

Example:
    >>> import regfree
    >>> {"evaluate_upgrade", "metrics", "pctraining", "compat"} <= set(dir(regfree))
    True
    >>> regfree.metrics.negative_flip_rate([0, 1], [0, 1], [0, 0])
    0.5
"""

import importlib
import importlib.util

__version__ = "0.1.0"

# name -> the module that defines it (imported on first use, PEP 562)
_NAMES = {"UpgradeReport": "regfree.upgrade", "evaluate_upgrade": "regfree.upgrade"}
_ROOMS = ("compat", "data", "integrations", "metrics", "models", "pctraining", "reporting",
          "retrieval", "training")
_ROOMS = tuple(room for room in _ROOMS if importlib.util.find_spec(f"regfree.{room}") is not None)

__all__ = ["UpgradeReport", "evaluate_upgrade", *_ROOMS]


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in _ROOMS:
        value = importlib.import_module(f"regfree.{name}")
    else:
        raise AttributeError(f"module 'regfree' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # the public API and the module's dunders, not its helpers (importlib, _NAMES) or internal
    # submodules that happen to be imported (upgrade, cli)
    return sorted(set(__all__) | {name for name in globals() if name.startswith("__")})
