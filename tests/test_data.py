import numpy as np
import pytest

from regfree.data import load_digits_split, load_mnist1d


def test_mnist1d_is_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("REGFREE_CACHE_DIR", str(tmp_path))
    state = np.random.get_state()
    first = load_mnist1d(num_samples=100, seed=3)
    # the generator reseeds numpy's global state; the loader must restore it
    assert np.array_equal(np.random.get_state()[1], state[1])
    assert len(list(tmp_path.rglob("*.npz"))) == 1
    second = load_mnist1d(num_samples=100, seed=3)
    assert first.x_train.shape == (80, 40) and first.x_test.shape == (20, 40)
    assert first.x_train.dtype == np.float32 and first.y_train.dtype == np.int64
    np.testing.assert_array_equal(first.x_train, second.x_train)
    fresh = load_mnist1d(num_samples=100, seed=3, cache=False)
    np.testing.assert_array_equal(first.x_test, fresh.x_test)
    other = load_mnist1d(num_samples=100, seed=4, cache=False)
    assert not np.array_equal(first.x_train, other.x_train)


def test_mnist1d_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_samples must be an integer >= 10"):
        load_mnist1d(num_samples=5)
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        load_mnist1d(test_fraction=1.5)


def test_digits_split_and_subset():
    split = load_digits_split(test_fraction=0.25, seed=0)
    assert len(split.y_train) + len(split.y_test) == 1797
    assert split.x_train.max() <= 1.0 and split.x_train.min() >= 0.0
    sub = split.subset_train(50, seed=1)
    assert sub.x_train.shape == (50, 64)
    with pytest.raises(ValueError, match=r"size must be in \[1, "):
        split.subset_train(0)


def test_mnist5k_is_real_balanced_and_read_offline(monkeypatch):
    import socket

    from regfree.data import load_mnist5k

    def no_network(*args, **kwargs):
        raise AssertionError("load_mnist5k opened a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    split = load_mnist5k(test_fraction=0.2, seed=3)
    assert split.x_train.shape == (4000, 1, 28, 28) and split.x_test.shape == (1000, 1, 28, 28)
    assert split.x_train.dtype == np.float32 and split.y_train.dtype == np.int64
    labels = np.concatenate([split.y_train, split.y_test])
    np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
    assert 0.0 == split.x_train.min() and split.x_train.max() == 1.0
    # real digits: ink covers a minority of pixels, and a digit's mean image differs by class
    assert 0.05 < (split.x_train > 0.5).mean() < 0.3
    means = np.stack([split.x_train[split.y_train == c].mean(0).ravel() for c in range(10)])
    assert np.linalg.norm(means[0] - means[1]) > 3.0
    other = load_mnist5k(test_fraction=0.2, seed=4)
    assert not np.array_equal(split.y_test, other.y_test)
