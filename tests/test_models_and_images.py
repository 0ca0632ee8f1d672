import pickle

import numpy as np
import pytest
import torch

from regfree.data.images import CifarFolder, dataset_labels, load_image_dataset
from regfree.models import ResNetEmbedder, build_model


def _write_cifar10(root, n_train=6, n_test=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, n in (("data_batch_1", n_train), ("test_batch", n_test)):
        batch = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                 b"labels": [i % 3 for i in range(n)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [b"plane", b"car", b"bird"]}, handle)
    return folder


def test_image_folder_loads_tensors_and_labels(tmp_path, make_image_folder):
    make_image_folder(tmp_path, classes=("cat", "dog"), per_class=3, size=20)
    ds = load_image_dataset(tmp_path, image_size=16, train=False)
    image, label = ds[0]
    assert image.shape == (3, 16, 16) and label == 0
    assert ds.classes == ["cat", "dog"]
    np.testing.assert_array_equal(dataset_labels(ds), [0, 0, 0, 1, 1, 1])


def test_cifar_folder_reads_user_batches(tmp_path):
    folder = _write_cifar10(tmp_path)
    train = load_image_dataset(tmp_path, image_size=32, train=True)
    test = CifarFolder(folder, train=False)
    assert isinstance(train, CifarFolder) and len(train) == 6 and len(test) == 4
    assert train.classes == ["plane", "car", "bird"]
    assert train[0][0].shape == (3, 32, 32)
    assert test.data.shape == (4, 32, 32, 3) and test.targets == [0, 1, 2, 0]


def test_image_loaders_reject_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="missing is not a folder"):
        load_image_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="is not a CIFAR-format folder"):
        CifarFolder(tmp_path)
    with pytest.raises(ValueError, match="layout must be 'auto', 'imagefolder' or 'cifar'"):
        load_image_dataset(tmp_path, layout="zip")


def test_resnet_embedder_loads_local_weights_and_projects(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pt"
    torch.save(reference.state_dict(), path)
    model = build_model("resnet18", 4, embedding_dim=16, weights=str(path),
                        return_embeddings=True)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    logits, emb = model(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 4) and emb.shape == (2, 16)
    with pytest.raises(ValueError, match="does not match the architecture"):
        ResNetEmbedder("resnet50", 4, weights=str(path))
    with pytest.raises(ValueError, match="name must be 'convnet1d', 'mlp' or one of"):
        build_model("vgg", 4)


def test_convnet_returns_embeddings_when_asked():
    model = build_model("convnet1d", 10, width=4, embedding_dim=8, return_embeddings=True)
    logits, emb = model(torch.zeros(3, 40))
    assert logits.shape == (3, 10) and emb.shape == (3, 8)
    assert torch.allclose(model.head(emb), logits)
