"""scikit-learn's bundled 8x8 digits (shipped with the package, no download)."""

from __future__ import annotations

import numpy as np

from regfree.data.arrays import DataSplit


def load_digits_split(test_fraction: float = 0.25, seed: int = 0) -> DataSplit:
    """The 1,797 sklearn digits as flat 64-d features scaled to [0, 1], split at random.

    Example:
        >>> split = load_digits_split(test_fraction=0.2, seed=1)
        >>> len(split.y_train) + len(split.y_test)
        1797
    """
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return DataSplit(x[train], y[train], x[test], y[test], num_classes=10)
