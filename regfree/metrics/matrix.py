"""Pairwise negative flip rates between several model versions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from regfree.metrics.flips import correct_mask


@dataclass(frozen=True, eq=False)
class FlipMatrix:
    """``nfr[i, j]``: NFR of an update from model ``names[i]`` (old) to ``names[j]`` (new)."""

    names: tuple[str, ...]
    nfr: np.ndarray

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{old: {new: nfr}}`` with plain floats."""
        return {old: {new: float(self.nfr[i, j]) for j, new in enumerate(self.names)}
                for i, old in enumerate(self.names)}


def flip_matrix(y_true: Any, predictions: Mapping[str, Any], *,
                validate: bool = True) -> FlipMatrix:
    """NFR between every ordered pair of models (row = old, column = new; diagonal 0).

    Args:
        y_true: 1-D true class ids (first, as in every flip metric).
        predictions: ``{name: class ids (1-D) or scores (2-D)}``, at least one model.
        validate: check the inputs; ``False`` skips the checks for speed.

    Returns:
        A :class:`FlipMatrix` in the mapping's order.

    Example:
        >>> m = flip_matrix([0, 1, 1], {"v1": [0, 1, 1], "v2": [0, 0, 1]})
        >>> m.to_dict()["v1"]["v2"], m.to_dict()["v2"]["v1"]
        (0.3333333333333333, 0.0)
    """
    if not isinstance(predictions, Mapping) and isinstance(y_true, Mapping):
        raise TypeError("flip_matrix: y_true comes first, then the {name: predictions} mapping")
    if not isinstance(predictions, Mapping) or len(predictions) == 0:
        raise ValueError("predictions: expected a non-empty mapping {name: predictions}")
    names = tuple(str(name) for name in predictions)
    correct = []
    for name, pred in predictions.items():
        correct.append(correct_mask(y_true, pred, name=f"predictions[{name!r}]",
                                    validate=validate))
    n = len(correct[0])
    nfr = np.zeros((len(names), len(names)))
    for i, old_ok in enumerate(correct):
        old_count = np.count_nonzero(old_ok)
        for j, new_ok in enumerate(correct):
            if i != j:
                nfr[i, j] = (old_count - np.count_nonzero(old_ok & new_ok)) / n
    return FlipMatrix(names, nfr)
