"""The container every offline loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DataSplit:
    """Train and test arrays of one dataset.

    ``x_*`` are float32 features, ``y_*`` int64 class ids in ``[0, num_classes)``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    def subset_train(self, size: int, seed: int = 0) -> DataSplit:
        """A split whose training part is a random ``size`` samples of this one (test unchanged).

        Example:
            >>> from regfree.data import load_digits_split
            >>> load_digits_split().subset_train(100).x_train.shape[0]
            100
        """
        if not 0 < size <= len(self.y_train):
            raise ValueError(f"size must be in [1, {len(self.y_train)}], got {size}")
        pick = np.random.default_rng(seed).permutation(len(self.y_train))[:size]
        pick.sort()
        return DataSplit(self.x_train[pick], self.y_train[pick], self.x_test, self.y_test,
                         self.num_classes)
