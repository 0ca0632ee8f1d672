"""What the tests share: one torch thread, tiny labelled data, tiny models, image folders.

``blobs``, ``mlp`` and ``image_folder`` are plain functions behind the fixtures
``make_data``, ``make_model`` and ``make_image_folder``, so that the scripts some tests run under
torchrun, where fixtures do not reach, can import them (``from conftest import blobs``: a
script's own folder is on its import path).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from regfree.data import load_digits_split
from regfree.models import MLP
from regfree.training.distributed import launch_local

# gloo can abort a rank while the process group is torn down (a C++ thread left running:
# "terminate called without an active exception"), after the training itself went through.
_TEARDOWN_ABORT = "terminate called without an active exception"


def blobs(n: int = 120, *, dim: int = 6, classes: int = 3, seed: int = 0):
    """``n`` samples around one Gaussian centre per class: float32 ``x (n, dim)``, int64 ``y``."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(classes, dim))
    y = rng.integers(0, classes, size=n)
    x = (centers[y] + rng.normal(size=(n, dim))).astype(np.float32)
    return x, y.astype(np.int64)


def mlp(seed: int = 0, *, in_dim: int = 6, classes: int = 3, hidden: int = 16,
        embedding_dim: int = 8, return_embeddings: bool = False) -> MLP:
    """A small :class:`~regfree.models.MLP` initialised from ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return MLP(in_dim, num_classes=classes, hidden=hidden, embedding_dim=embedding_dim,
               return_embeddings=return_embeddings)


def image_folder(root: Path, classes=("cat", "dog"), per_class: int = 3, size: int = 20,
                 seed: int = 0) -> Path:
    """An ImageFolder tree ``root/<class>/<i>.png`` of random RGB images, one colour brighter
    per class (a cue a model can learn)."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            pixels[..., label % 3] += 150
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def launch_ranks(script, *args: str, nproc_per_node: int = 2):
    """``launch_local`` that relaunches once when a rank died of gloo's teardown abort; any
    other failure (an assertion, a wrong result, a hang) is returned as it happened."""
    done = launch_local(script, *args, nproc_per_node=nproc_per_node, timeout=300)
    if done.returncode != 0 and _TEARDOWN_ABORT in done.stdout + done.stderr:
        done = launch_local(script, *args, nproc_per_node=nproc_per_node, timeout=300)
    return done


@pytest.fixture(scope="session")
def make_data():
    return blobs


@pytest.fixture(scope="session")
def make_model():
    return mlp


@pytest.fixture(scope="session")
def make_image_folder():
    return image_folder


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits, split once for the whole session (read-only in tests)."""
    return load_digits_split(seed=0)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    # tiny models: extra threads only spin against the other processes on a 2-core machine.
    # Session scope, so module fixtures that train (set up before any function fixture) get it too.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
