"""The inference entry points on users' data: arrays, Datasets, DataLoaders used as given
(shuffled or not), IterableDatasets, dict batches, HuggingFace-style and bfloat16 models."""

import io
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
import torch
from conftest import blobs, mlp
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from regfree.pctraining import OldLogitCache
from regfree.retrieval import embed
from regfree.training.predict import predict_logits, run_model, run_models
from regfree.upgrade import evaluate_upgrade

TOL = {"rtol": 1e-5, "atol": 1e-6}


class Stream(IterableDataset):
    """Yields ``(x, y)`` samples in order; no random access."""

    def __init__(self, x, y):
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)

    def __iter__(self):
        return iter(zip(self.x, self.y))


def loaders(x, y, batch_size=7):
    """The same samples as every accepted form, each with a name."""
    data = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    shuffled = DataLoader(data, batch_size=batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(3))
    return {"arrays": (x, y), "dataset": data,
            "loader": DataLoader(data, batch_size=batch_size),
            "shuffled loader": shuffled, "iterable": Stream(x, y),
            "iterable loader": DataLoader(Stream(x, y), batch_size=batch_size)}


@pytest.fixture()
def data():
    return blobs(45)


def test_predict_logits_and_run_model_give_dataset_order_from_every_form(data):
    x, y = data
    model = mlp(1)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
        features = model.forward_features(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(predict_logits(model, x, batch_size=8), expected, **TOL)
    for name, form in loaders(x, y).items():
        np.testing.assert_allclose(predict_logits(model, form), expected, **TOL, err_msg=name)
        run = run_model(model, form, embedder="forward_features", progress=False)
        np.testing.assert_allclose(run.logits, expected, **TOL, err_msg=name)
        np.testing.assert_allclose(run.embeddings, features, **TOL, err_msg=name)
        np.testing.assert_array_equal(run.labels, y, err_msg=name)
        if name.startswith("iterable"):
            assert run.positions is None
        else:
            np.testing.assert_array_equal(run.positions, np.arange(len(y)))
    assert model.training, "the training flag is restored"


def test_a_shuffled_loader_is_used_as_given(data):
    x, y = data
    seen = []

    def collate(items):  # the loader's own collate function runs, once per batch it yields
        seen.append(len(items))
        return torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])

    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = DataLoader(dataset, batch_size=10, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))
    run = run_model(mlp(1), loader, progress=False)
    assert seen == [10, 10, 10, 10, 5]
    np.testing.assert_array_equal(run.labels, y)


def test_dict_batches_with_a_named_label_key_and_dict_columns(data):
    x, y = data

    class Records(Dataset):
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return {"x": torch.from_numpy(x[i]), "target": int(y[i])}

    class Named(nn.Module):  # takes its inputs as keyword arguments
        def __init__(self):
            super().__init__()
            self.inner = mlp(2)

        def forward(self, x):
            return self.inner(x)

    model = Named()
    expected = predict_logits(model.inner, x)
    run = run_model(model, Records(), label_key="target", batch_size=16, progress=False)
    np.testing.assert_allclose(run.logits, expected, **TOL)
    np.testing.assert_array_equal(run.labels, y)
    columns = run_model(model, {"x": x, "target": y}, label_key="target", progress=False)
    np.testing.assert_allclose(columns.logits, expected, **TOL)
    with pytest.raises(ValueError, match="a batch has no 'label' entry .* pass label_key="):
        run_model(model, Records(), label_key="label", progress=False)
    with pytest.raises(ValueError, match=r"data needs labels: pass an \(inputs, labels\) pair"):
        run_model(model, x, progress=False)
    with pytest.raises(ValueError, match="data: labels must be integer class ids, got float32"):
        run_model(model, (x, y.astype(np.float32)), progress=False)
    with pytest.raises(ValueError, match="data must be an array of inputs, .* or a DataLoader"):
        predict_logits(model, object())


def test_embed_reads_every_form_in_dataset_order(data):
    x, y = data
    model = mlp(3, return_embeddings=True)
    with torch.no_grad():
        expected = model.forward_features(torch.from_numpy(x)).numpy()
    for name, form in loaders(x, y).items():
        for method in ("forward_features", "outputs"):
            out = embed(model, form, method=method, progress=False)
            np.testing.assert_allclose(out, expected, **TOL, err_msg=f"{name} {method}")
    doubled = embed(lambda batch: batch * 2, loaders(x, y)["shuffled loader"], progress=False)
    np.testing.assert_allclose(doubled, x * 2, **TOL)
    with pytest.raises(ValueError, match="method='outputs': MLP's forward returns no embeddings"):
        embed(mlp(3), x, method="outputs", progress=False)


def test_cache_builds_from_loaders_and_refuses_what_has_no_sample_index(tmp_path, data):
    x, y = data
    v1, other = mlp(1), mlp(2)
    expected = predict_logits(v1, x)
    forms = loaders(x, y)
    for name in ("arrays", "dataset", "shuffled loader"):
        cache = OldLogitCache.build(v1, forms[name], tmp_path / name, progress=False)
        np.testing.assert_allclose(cache.lookup(np.arange(len(y))).numpy(), expected, **TOL,
                                   err_msg=name)
    ensemble = OldLogitCache.build([v1, other], forms["shuffled loader"], tmp_path / "e",
                                   progress=False)
    np.testing.assert_allclose(np.asarray(ensemble.logits),
                               (expected + predict_logits(other, x)) / 2, **TOL)
    # built from a shuffling loader, opened against the arrays: the same labels in the same order
    OldLogitCache.open(tmp_path / "shuffled loader", data=(x, y), num_classes=3)
    OldLogitCache.open(tmp_path / "arrays", data=forms["shuffled loader"])
    for name in ("iterable", "iterable loader"):
        with pytest.raises(ValueError, match="data: the old-logit cache is keyed by sample index "
                                             "and an IterableDataset has none"):
            OldLogitCache.build(v1, forms[name], tmp_path / "never", progress=False)
    dropping = DataLoader(forms["dataset"], batch_size=10, drop_last=True)
    with pytest.raises(ValueError, match="covering 40 of the 45 samples .* without drop_last"):
        OldLogitCache.build(v1, dropping, tmp_path / "never", progress=False)
    assert not (tmp_path / "never" / "logits.npy").exists()


def test_cache_build_shows_a_bar_unless_switched_off(tmp_path, data, monkeypatch, capsys):
    x, y = data
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    OldLogitCache.build(mlp(1), (x, y), tmp_path / "a", batch_size=10)
    assert "old-logit cache" in capsys.readouterr().err
    OldLogitCache.build(mlp(1), (x, y), tmp_path / "b", batch_size=10, progress=False)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    OldLogitCache.build(mlp(1), (x, y), tmp_path / "c", batch_size=10)
    embed(mlp(1), x, batch_size=10)
    assert capsys.readouterr().err == ""


def top_two_gap(logits: np.ndarray) -> float:
    top = np.sort(logits, axis=1)[:, -2:]
    return float((top[:, 1] - top[:, 0]).min())


def test_evaluate_upgrade_gives_the_same_report_from_every_form(data):
    x, y = data
    old, new = mlp(1), mlp(2)
    gallery = blobs(60, seed=1)
    # flips compare argmaxes, exact across batch shapes only away from near-ties
    assert min(top_two_gap(predict_logits(m, x)) for m in (old, new)) > 1e-4
    reference = evaluate_upgrade(old, new, (x, y), gallery=gallery, backfill_orders=(),
                                 progress=False)
    for name, form in loaders(x, y).items():
        report = evaluate_upgrade(old, new, form, gallery=loaders(*gallery)[name],
                                  backfill_orders=(), progress=False)
        assert report.flips.to_dict() == reference.flips.to_dict(), name
        np.testing.assert_array_equal(report.negative_flip_mask, reference.negative_flip_mask)
        np.testing.assert_allclose(report.retrieval.matrix("mAP"),
                                   reference.retrieval.matrix("mAP"), rtol=1e-5, err_msg=name)


@dataclass
class Output:
    """What a HuggingFace model returns: an object with ``.logits``."""

    logits: torch.Tensor
    hidden_states: Optional[torch.Tensor] = None


class TokenClassifier(nn.Module):
    """A HuggingFace-style text classifier: keyword inputs, ``Output`` with ``.logits``."""

    def __init__(self, seed: int, vocab: int = 12, dim: int = 8, classes: int = 3):
        super().__init__()
        torch.manual_seed(seed)
        self.embeddings = nn.Embedding(vocab, dim)
        self.encoder = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.classifier = nn.Linear(dim, classes)

    def get_text_features(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(self.embeddings.weight.dtype)
        pooled = (self.embeddings(input_ids) * mask).sum(1) / mask.sum(1)
        return self.encoder(pooled)

    def forward(self, input_ids, attention_mask):
        return Output(logits=self.classifier(self.get_text_features(input_ids, attention_mask)))


class Tokenized(Dataset):
    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        self.ids = torch.from_numpy(rng.integers(1, 12, size=(n, 5)))
        self.mask = torch.from_numpy((rng.random((n, 5)) < 0.8).astype(np.int64))
        self.mask[:, 0] = 1
        self.labels = torch.from_numpy(self.ids[:, 0].numpy() % 3)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i],
                "labels": self.labels[i]}


def test_huggingface_style_models_through_evaluate_upgrade():
    old, new = TokenClassifier(1), TokenClassifier(2)
    data, items = Tokenized(40, 0), Tokenized(50, 1)
    loader = DataLoader(data, batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    report = evaluate_upgrade(old, new, loader, gallery=items, old_embedder="get_text_features",
                              new_embedder=lambda **batch: new.get_text_features(**batch),
                              backfill_orders=(), batch_size=16, progress=False)
    with torch.no_grad():
        old_logits = old(data.ids, data.mask).logits
        new_logits = new(data.ids, data.mask).logits
    assert min(top_two_gap(old_logits.numpy()), top_two_gap(new_logits.numpy())) > 1e-4
    correct_old = old_logits.argmax(1) == data.labels
    correct_new = new_logits.argmax(1) == data.labels
    assert report.flips.nfr == pytest.approx((correct_old & ~correct_new).float().mean().item())
    np.testing.assert_array_equal(report.negative_flip_mask, (correct_old & ~correct_new).numpy())
    assert 0.0 <= report.retrieval.value("v2", "v1") <= 1.0
    columns = {"input_ids": data.ids, "attention_mask": data.mask}  # tokenizer output, no labels
    np.testing.assert_allclose(predict_logits(old, columns, batch_size=16), old_logits.numpy(),
                               **TOL)
    with pytest.raises(ValueError, match="old_embedder='auto': TokenClassifier's forward returns "
                                         "only logits and it has no forward_features method; "
                                         "pass old_embedder= .* or a callable"):
        evaluate_upgrade(old, new, data, gallery=items, progress=False)


def test_bfloat16_model_is_fed_bfloat16(data):
    x, _ = data
    model = mlp(1)
    expected = predict_logits(model, x)
    low = mlp(1).to(torch.bfloat16)
    logits = predict_logits(low, x)  # float32 data, a bfloat16 model
    assert logits.dtype == np.float32
    with torch.no_grad():
        direct = low(torch.from_numpy(x).to(torch.bfloat16)).float().numpy()
    np.testing.assert_allclose(logits, direct, rtol=1e-6, atol=1e-6)
    # bfloat16 keeps 8 bits of mantissa: within a few percent of the float32 model
    np.testing.assert_allclose(logits, expected, rtol=0.05, atol=0.05)
    assert next(low.parameters()).dtype == torch.bfloat16


def count_backbone_calls(model: nn.Module) -> list:
    calls = []
    model.features.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_one_backbone_pass_per_batch_when_forward_returns_embeddings(data):
    x, y = data
    gallery = blobs(60, seed=1)
    reports, counts = [], []
    for embedder in ("auto", "forward_features"):
        old, new = mlp(1, return_embeddings=True), mlp(2, return_embeddings=True)
        calls = [count_backbone_calls(old), count_backbone_calls(new)]
        reports.append(evaluate_upgrade(old, new, (x, y), gallery=gallery, old_embedder=embedder,
                                        new_embedder=embedder, batch_size=10, progress=False,
                                        backfill_orders=()))
        counts.append([len(c) for c in calls])
    batches = 5 + 6  # 45 queries and 60 gallery items in batches of 10
    assert counts == [[batches, batches], [2 * batches, 2 * batches]]
    np.testing.assert_allclose(reports[0].retrieval.matrix("mAP"),
                               reports[1].retrieval.matrix("mAP"), rtol=1e-6)


def test_run_models_share_one_read_of_an_iterable(data):
    x, y = data
    reads = []

    class Counted(Stream):
        def __iter__(self):
            reads.append(1)
            return super().__iter__()

    (a,), (b,) = run_models([(mlp(1), []), (mlp(2), [])], Counted(x, y), progress=False)
    assert len(reads) == 1
    np.testing.assert_allclose(a.logits, predict_logits(mlp(1), x), **TOL)
    np.testing.assert_allclose(b.logits, predict_logits(mlp(2), x), **TOL)


def test_embedder_errors_name_the_callers_argument(data):
    x, y = data
    old, new = mlp(1), mlp(2)
    with pytest.raises(ValueError, match="new_embedder='outputs': MLP's forward returns no "
                                         "embeddings, only logits; pass new_embedder="):
        evaluate_upgrade(old, new, (x, y), gallery=(x, y), new_embedder="outputs",
                         progress=False)
    with pytest.raises(TypeError, match="old_embedder must be 'auto', 'outputs', a method name "
                                        "or a callable"):
        evaluate_upgrade(old, new, (x, y), gallery=(x, y), old_embedder=3, progress=False)
    with pytest.raises(ValueError, match="gallery: labels must be integer class ids"):
        evaluate_upgrade(old, new, (x, y), gallery=(x, y.astype(float)), progress=False)


def test_progress_bar_of_a_pass_goes_to_stderr(data, monkeypatch):
    x, y = data
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    embed(mlp(1), loaders(x, y)["loader"], desc="gallery pass")
    assert "gallery pass" in stream.getvalue()


def test_a_dataset_read_by_worker_processes_gives_the_same_rows(data):
    x, y = data
    model = mlp(1)
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    run = run_model(model, dataset, batch_size=8, num_workers=1, progress=False)
    np.testing.assert_allclose(run.logits, predict_logits(model, x), **TOL)
    np.testing.assert_array_equal(run.labels, y)
    with pytest.raises(ValueError, match="num_workers must be a non-negative integer"):
        run_model(model, dataset, num_workers=-1, progress=False)
