"""User image data from local paths: torchvision ImageFolder trees and CIFAR-format folders.

Nothing is downloaded. CIFAR-format folders are read directly (the pickled ``data_batch_*`` /
``test_batch`` or ``train`` / ``test`` files) rather than through torchvision's CIFAR classes,
which insist on the official archives' checksums and so refuse a user's own export.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

PathLike = Union[str, Path]

_CIFAR_LAYOUTS = {
    # folder name: (train files, test files, label key, meta file, names key)
    "cifar-10-batches-py": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                            b"labels", "batches.meta", b"label_names"),
    "cifar-100-python": (["train"], ["test"], b"fine_labels", "meta", b"fine_label_names"),
}


class CifarFolder(Dataset):
    """A CIFAR-10/100-format folder on disk, as ``(image, label)`` pairs.

    ``root`` is the folder that holds the batch files, or its parent holding
    ``cifar-10-batches-py`` / ``cifar-100-python``. Missing ``data_batch_*`` files are skipped,
    so a subset export works.

    Args:
        root: the folder.
        train: read the training batches (else the test batch).
        transform: applied to each PIL image.

    Example:
        >>> ds = CifarFolder("path/to/cifar-10-batches-py", train=False)  # doctest: +SKIP
        >>> image, label = ds[0]  # doctest: +SKIP
    """

    def __init__(self, root: PathLike, train: bool = True,
                 transform: Optional[Callable] = None) -> None:
        folder, layout = _find_cifar_layout(Path(root))
        train_files, test_files, label_key, meta_file, names_key = layout
        files = [folder / name for name in (train_files if train else test_files)]
        files = [f for f in files if f.exists()]
        if not files:
            raise ValueError(f"root: no {'training' if train else 'test'} batches in {folder}")
        images, labels = [], []
        for file in files:
            with open(file, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            images.append(np.asarray(batch[b"data"], dtype=np.uint8))
            labels.extend(int(v) for v in batch[label_key])
        self.data = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        self.targets = labels
        self.classes = _read_class_names(folder / meta_file, names_key, max(labels) + 1)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.data[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def _find_cifar_layout(root: Path):
    for name, layout in _CIFAR_LAYOUTS.items():
        for folder in (root, root / name):
            if any((folder / f).is_file() for f in layout[0] + layout[1]):
                return folder, layout
    raise ValueError(f"root: {root} is not a CIFAR-format folder "
                     "(expected data_batch_*/test_batch or train/test pickles)")


def _read_class_names(meta: Path, key: bytes, count: int) -> list[str]:
    if meta.exists():
        with open(meta, "rb") as handle:
            names = pickle.load(handle, encoding="bytes").get(key)
        if names:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return [str(i) for i in range(count)]


def image_transform(image_size: int, train: bool):
    """The torchvision transform used for images: resize, (flip when training), normalise.

    Example:
        >>> image_transform(32, train=False)  # doctest: +ELLIPSIS
        Compose(...)
    """
    from torchvision import transforms

    steps = [transforms.Resize((image_size, image_size))]
    if train:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(),
              transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    return transforms.Compose(steps)


def load_image_dataset(root: PathLike, *, layout: str = "auto", train: bool = True,
                       image_size: int = 224) -> Dataset:
    """A local image dataset: an ImageFolder tree (``root/<class>/<image>``) or a CIFAR folder.

    Args:
        root: the dataset folder; for ImageFolder, the split folder itself (e.g. ``data/train``).
        layout: ``"imagefolder"``, ``"cifar"`` or ``"auto"`` (CIFAR when batch files are found).
        train: training split (random flips) or evaluation split; for CIFAR also which batches.
        image_size: images are resized to this square size.

    Returns:
        A dataset of ``(image_tensor, label)`` with a ``classes`` list.

    Example:
        >>> ds = load_image_dataset("data/train", image_size=64)  # doctest: +SKIP
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"root: {root} is not a folder")
    if layout not in ("auto", "imagefolder", "cifar"):
        raise ValueError(f"layout must be 'auto', 'imagefolder' or 'cifar', got {layout!r}")
    transform = image_transform(image_size, train)
    if layout == "cifar" or (layout == "auto" and _is_cifar(root)):
        return CifarFolder(root, train=train, transform=transform)
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as error:
        raise ValueError(f"root: {error}") from None


def _is_cifar(root: Path) -> bool:
    try:
        _find_cifar_layout(root)
    except ValueError:
        return False
    return True


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """All labels of an image dataset without decoding its images.

    Example:
        >>> dataset_labels(load_image_dataset("data/train"))  # doctest: +SKIP
    """
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [int(dataset[i][1]) for i in range(len(dataset))]
    return np.asarray(targets, dtype=np.int64)


def as_tensor_dataset(x: np.ndarray, y: np.ndarray) -> Dataset:
    """Wrap numpy arrays as a torch dataset of ``(x, y)`` pairs.

    Example:
        >>> len(as_tensor_dataset(np.zeros((3, 2), np.float32), np.zeros(3, np.int64)))
        3
    """
    return torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
