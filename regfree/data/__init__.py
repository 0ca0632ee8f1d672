"""Offline datasets returned as numpy arrays; nothing is downloaded.

Example:
    >>> from regfree.data import load_digits_split
    >>> split = load_digits_split(seed=0)
    >>> split.x_train.shape[1], split.num_classes
    (64, 10)
"""

from regfree.data.arrays import DataSplit
from regfree.data.digits import load_digits_split
from regfree.data.mnist1d import load_mnist1d
from regfree.data.mnist5k import load_mnist5k

__all__ = ["DataSplit", "load_digits_split", "load_mnist1d", "load_mnist5k"]
