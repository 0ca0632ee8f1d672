"""MNIST-1D from the ``mnist1d`` package's generator, cached on disk by its configuration.

The generator is slow (it builds the samples one by one in a Python loop) and deterministic for a
seed, so the arrays are kept in ``$REGFREE_CACHE_DIR`` (default ``~/.cache/regfree``) after the
first call. The package's download path is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from regfree.atomic import atomic_write
from regfree.data.arrays import DataSplit

_CACHE_VERSION = 1


def _cache_dir() -> Path:
    root = os.environ.get("REGFREE_CACHE_DIR") or Path.home() / ".cache" / "regfree"
    return Path(root) / "mnist1d"


def _generate(config: dict) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    for key, value in config.items():
        setattr(args, key, value)
    # make_dataset reseeds numpy's global generator; leave the caller's state as it was.
    state = np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
    return {
        "x_train": data["x"].astype(np.float32),
        "y_train": data["y"].astype(np.int64),
        "x_test": data["x_test"].astype(np.float32),
        "y_test": data["y_test"].astype(np.int64),
    }


def load_mnist1d(num_samples: int = 12000, seed: int = 42, test_fraction: float = 0.2,
                 cache: bool = True) -> DataSplit:
    """Generate MNIST-1D offline: ``num_samples`` 40-long signals of 10 classes.

    Args:
        num_samples: total samples (train + test), at least 10; the generator makes
            ``num_samples // 10`` per class.
        seed: the generator's seed; the same seed gives the same arrays.
        test_fraction: share of samples held out as the test split.
        cache: keep the generated arrays on disk and reuse them.

    Returns:
        A :class:`DataSplit` with ``x_*`` of shape ``(n, 40)``.

    Example:
        >>> split = load_mnist1d(num_samples=200, seed=0)
        >>> split.x_train.shape, split.num_classes
        ((160, 40), 10)
    """
    if int(num_samples) != num_samples or num_samples < 10:
        raise ValueError(f"num_samples must be an integer >= 10, got {num_samples!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    config = {"num_samples": int(num_samples), "seed": int(seed),
              "train_split": 1.0 - float(test_fraction)}
    key = hashlib.sha1(json.dumps([_CACHE_VERSION, config], sort_keys=True).encode()).hexdigest()
    path = _cache_dir() / f"{key[:16]}.npz"
    arrays = None
    if cache and path.exists():
        try:
            with np.load(path) as stored:
                arrays = {name: stored[name] for name in stored.files}
        except (OSError, ValueError):
            arrays = None  # a damaged cache file is regenerated below
    if arrays is None:
        arrays = _generate(config)
        if cache:
            atomic_write(path, lambda handle: np.savez(handle, **arrays))
    return DataSplit(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                     num_classes=10)
