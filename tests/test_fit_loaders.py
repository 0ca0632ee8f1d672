"""fit on users' own data: DataLoaders used as given, IterableDatasets, dict batches,
HuggingFace-style models, other dtypes; the batch bar and the nfr_warning switch."""

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from test_training import TurnAgainstLabels, adam, same_weights
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, TensorDataset

from regfree.pctraining import OldLogitCache
from regfree.training import NFRRiseWarning, fit, predict_logits
from regfree.training.feeds import check_distributed


def tensors(x, y):
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


class Stream(IterableDataset):
    """The samples of ``(x, y)`` in order, with no random access."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        for xi, yi in zip(self.x, self.y):
            yield torch.from_numpy(xi), int(yi)


class Records(Dataset):
    """HuggingFace-style samples: a dict of integer token ids, a mask and a label."""

    def __init__(self, x, y, label="labels"):
        # tokens: the sign pattern of x, as ids in [0, 2 * dim): an integer input, like text
        dims = np.arange(x.shape[1])
        self.ids = torch.from_numpy(dims * 2 + (x > 0)).long()
        self.y, self.label = torch.from_numpy(y), label

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(len(self.ids[i])),
                self.label: self.y[i]}


@dataclass
class Output:  # the shape of a HuggingFace ModelOutput: attributes, logits among them
    logits: torch.Tensor
    hidden_states: torch.Tensor


class TinyTextModel(nn.Module):
    """Takes keyword inputs and returns an object with ``.logits``, like a HuggingFace model."""

    def __init__(self, vocab=12, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, classes)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1)
        hidden = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)
        return Output(logits=self.head(hidden), hidden_states=hidden)


def test_every_data_form_in_the_same_order_trains_the_same_weights(make_data, make_model):
    x, y = make_data(n=50)
    common = dict(epochs=2, optimizer=adam, progress=False)
    arrays = make_model()
    fit(arrays, (x, y), batch_size=8, shuffle=False, **common)
    dataset, loader, stream = make_model(), make_model(), make_model()
    fit(dataset, tensors(x, y), batch_size=8, shuffle=False, **common)
    fit(loader, DataLoader(tensors(x, y), batch_size=8), **common)
    fit(stream, Stream(x, y), batch_size=8, **common)
    # the same batches in the same order through the same operations: the same weights
    assert same_weights(arrays, dataset)
    assert same_weights(arrays, loader)
    assert same_weights(arrays, stream)
    # shuffled by the loader instead of by fit: another order, a comparable model
    shuffled = make_model()
    history = fit(shuffled, DataLoader(tensors(x, y), batch_size=8, shuffle=True),
                  val_data=(x, y), epochs=8, optimizer=adam, progress=False)
    reference = fit(make_model(), (x, y), batch_size=8, val_data=(x, y), epochs=8,
                    optimizer=adam, progress=False)
    assert history.val_error[-1] < 0.1 and reference.val_error[-1] < 0.1
    np.testing.assert_allclose(history.train_loss[-1], reference.train_loss[-1], rtol=0.5)


def test_a_shuffling_loader_hands_terms_the_dataset_positions_of_its_samples(make_data,
                                                                            make_model):
    x, y = make_data(n=50)
    seen = []

    class IndexCheck(nn.Module):
        name = "index_check"

        def forward(self, step):
            seen.append(step.indices.tolist())
            assert torch.equal(step.inputs, torch.from_numpy(x)[step.indices])
            return step.logits.new_zeros(())

    loader = DataLoader(tensors(x, y), batch_size=8, shuffle=True, num_workers=2)
    fit(make_model(), loader, loss_terms=[IndexCheck()], epochs=2, optimizer=adam,
        progress=False)
    assert len(seen) == 2 * 7
    epochs = [sum(seen[:7], []), sum(seen[7:], [])]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(50))
    assert epochs[0] != epochs[1] and epochs[0] != list(range(50))  # shuffled, anew each epoch


def test_validation_through_any_loader_matches_arrays(make_data, make_model):
    x, y = make_data(n=140, seed=3)
    (xt, yt), (xv, yv) = (x[:80], y[:80]), (x[80:], y[80:])
    v1 = make_model(7, hidden=4)
    fit(v1, (xt[:20], yt[:20]), epochs=1, optimizer=adam, progress=False)
    old = predict_logits(v1, xv).argmax(1)
    assert 0 < (old != yv).sum() < len(yv)  # a weak v1: lining it up wrongly changes the NFR
    vals = {"arrays": (xv, yv), "dataset": tensors(xv, yv),
            "loader": DataLoader(tensors(xv, yv), batch_size=16),
            "shuffled": DataLoader(tensors(xv, yv), batch_size=16, shuffle=True),
            "stream": Stream(xv, yv)}
    results = {}
    for name, val in vals.items():
        h = fit(make_model(), (xt, yt), epochs=3, batch_size=16, optimizer=adam, val_data=val,
                old_val_preds=old, eval_batch_size=16, progress=False)
        results[name] = np.array([h.val_error, h.val_nfr, h.val_pfr], dtype=float)
    assert results["arrays"][1].max() > 0  # there are negative flips to line up
    for name, numbers in results.items():
        # the same predictions of the same samples; batch composition may move logits in the
        # last bits, which could turn one near-tie: allow one sample
        np.testing.assert_allclose(numbers, results["arrays"], atol=1.01 / len(yv),
                                   err_msg=name)


def test_dict_batches_and_a_huggingface_style_model(make_data):
    x, y = make_data(n=96)
    loader = DataLoader(Records(x, y), batch_size=16, shuffle=True)
    model = TinyTextModel()
    history = fit(model, loader, val_data=Records(x, y), old_val_preds=y, epochs=6,
                  optimizer=lambda p: torch.optim.Adam(p, lr=5e-2), progress=False)
    assert history.val_error[-1] < history.val_error[0]
    assert history.val_error[-1] < 0.2
    # the map-style Dataset of dicts directly, and a validation DataLoader of dicts
    again = fit(TinyTextModel(), Records(x, y), batch_size=16, epochs=1,
                optimizer=lambda p: torch.optim.Adam(p, lr=5e-2), val_data=loader,
                progress=False)
    assert 0 <= again.val_error[0] <= 1


def test_label_key_names_the_labels_of_dict_batches(make_data):
    x, y = make_data(n=32)
    data = Records(x, y, label="target")
    with pytest.raises(ValueError, match="train_data: cannot tell which entry.*pass label_key="):
        fit(TinyTextModel(), data, epochs=1, optimizer=adam, progress=False)
    history = fit(TinyTextModel(), DataLoader(data, batch_size=8), label_key="target",
                  val_data=data, epochs=2, optimizer=adam, progress=False)
    assert len(history) == 2 and history.val_error[-1] is not None
    with pytest.raises(ValueError, match="train_data: a batch has no 'label' entry"):
        fit(TinyTextModel(), data, label_key="label", epochs=1, optimizer=adam, progress=False)
    with pytest.raises(TypeError, match="label_key must be a string"):
        fit(TinyTextModel(), data, label_key=3, epochs=1, optimizer=adam, progress=False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_a_model_in_another_dtype_trains_on_float32_data(make_data, make_model, dtype):
    x, y = make_data(n=64)
    model = make_model().to(dtype)
    before = [p.detach().clone() for p in model.parameters()]
    history = fit(model, DataLoader(tensors(x, y), batch_size=16, shuffle=True),
                  val_data=(x, y), old_val_preds=y, epochs=4,
                  optimizer=lambda p: torch.optim.Adam(p, lr=3e-2), progress=False)
    assert all(p.dtype == dtype for p in model.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert history.train_ce[-1] < history.train_ce[0]
    assert history.val_error[-1] < 0.2


def test_a_term_keyed_by_sample_index_refuses_an_iterable_dataset(tmp_path, make_data,
                                                                  make_model):
    x, y = make_data(n=40)
    cache = OldLogitCache.build(make_model(3), (x, y), tmp_path / "cache")

    class CachedDistance(nn.Module):
        name = "cached"

        def forward(self, step):
            old = cache.lookup(step.indices).to(step.logits.device)
            return ((step.logits - old) ** 2).mean()

    with pytest.raises(ValueError, match="'cached' failed on a batch without sample positions"
                                         r".*needs a map-style Dataset \(or a DataLoader"):
        fit(make_model(), Stream(x, y), loss_terms=[CachedDistance()], epochs=1,
            optimizer=adam, progress=False)
    # the same term over a loader of the same samples finds them by position
    history = fit(make_model(), DataLoader(tensors(x, y), batch_size=8, shuffle=True),
                  loss_terms=[CachedDistance()], epochs=1, optimizer=adam, progress=False)
    assert history.term("cached")[0] > 0


def test_a_loader_is_used_as_given_and_contradicting_options_are_refused(make_data,
                                                                         make_model):
    x, y = make_data(n=24)
    loader = DataLoader(tensors(x, y), batch_size=8)
    base = dict(epochs=1, optimizer=adam, progress=False)
    model = make_model()
    with pytest.raises(ValueError, match="batch_size=16 conflicts with train_data, a DataLoader "
                                         "whose batch_size is 8"):
        fit(model, loader, batch_size=16, **base)
    with pytest.raises(ValueError, match="shuffle=True conflicts with train_data, a DataLoader "
                                         "whose shuffle is False"):
        fit(model, loader, shuffle=True, **base)
    with pytest.raises(ValueError, match="num_workers=2 conflicts with val_data, a DataLoader "
                                         "whose num_workers is 0"):
        fit(model, (x, y), val_data=loader, num_workers=2, **base)
    with pytest.raises(ValueError, match="eval_batch_size=4 conflicts with val_data"):
        fit(model, (x, y), val_data=loader, eval_batch_size=4, **base)
    with pytest.raises(ValueError, match="shuffle=True: train_data is an IterableDataset"):
        fit(model, Stream(x, y), shuffle=True, **base)
    with pytest.raises(ValueError, match="train_data: a DataLoader built with batch_size=None"):
        fit(model, DataLoader(tensors(x, y), batch_size=None), **base)
    # values the loader agrees with are accepted; its batch size is the run's
    fit(model, loader, batch_size=8, shuffle=False, num_workers=0, **base)


def test_errors_name_the_argument_and_the_fix(make_data, make_model):
    x, y = make_data(n=24)
    base = dict(epochs=1, optimizer=adam, progress=False)
    with pytest.raises(ValueError, match="train_data must be .x, y. arrays, a map-style "
                                         "Dataset, an IterableDataset or a DataLoader; got str"):
        fit(make_model(), "images/", **base)
    with pytest.raises(ValueError, match="val_data must be .* got int"):
        fit(make_model(), (x, y), val_data=3, **base)
    one_hot = TensorDataset(torch.from_numpy(x), torch.eye(3)[torch.from_numpy(y)])
    with pytest.raises(ValueError, match=r"train_data: labels must be 1-D integer class ids, "
                                         r"got a torch.float32 batch of shape \(8, 3\)"):
        fit(make_model(), DataLoader(one_hot, batch_size=8), **base)
    loader = DataLoader(tensors(x, y), batch_size=8, shuffle=True)
    with pytest.raises(ValueError, match="old_val_preds has 5 entries but val_data's dataset "
                                         "has 24 samples .old_val_preds is in dataset order"):
        fit(make_model(), (x, y), val_data=loader, old_val_preds=y[:5], **base)
    with pytest.raises(ValueError, match="old_val_preds has 5 entries but val_data .an "
                                         "IterableDataset. yielded 24 samples"):
        fit(make_model(), (x, y), val_data=Stream(x, y), old_val_preds=y[:5], **base)


def test_under_torchrun_a_training_loader_must_split_its_samples(make_data):
    x, y = make_data(n=24)
    data = tensors(x, y)
    check_distributed(DataLoader(data, batch_size=8, shuffle=True), "train_data", 1)
    with pytest.raises(ValueError, match="train_data: under torchrun .2 processes. a DataLoader "
                                         "must split its samples with a .*DistributedSampler"):
        check_distributed(DataLoader(data, batch_size=8, shuffle=True), "train_data", 2)
    with pytest.raises(ValueError, match="cannot split an IterableDataset evenly"):
        check_distributed(DataLoader(Stream(x, y), batch_size=8), "train_data", 2)
    sampler = DistributedSampler(data, num_replicas=2, rank=0)
    check_distributed(DataLoader(data, batch_size=8, sampler=sampler), "train_data", 2)
    with pytest.raises(ValueError, match="num_replicas=2 but torchrun started 3 processes"):
        check_distributed(DataLoader(data, batch_size=8, sampler=sampler), "train_data", 3)


@pytest.mark.parametrize("with_generator", [False, True])
def test_resume_through_a_shuffling_loader_equals_an_uninterrupted_run(
        tmp_path, make_data, make_model, with_generator):
    x, y = make_data(n=40)

    def loader():
        gen = torch.Generator().manual_seed(5) if with_generator else None
        return DataLoader(tensors(x, y), batch_size=8, shuffle=True, generator=gen)

    common = dict(optimizer=adam, seed=3, progress=False, val_data=loader(), old_val_preds=y)
    straight = make_model()
    full = fit(straight, loader(), epochs=4, **common)
    fit(make_model(), loader(), epochs=2, checkpoint_dir=tmp_path, **common)
    resumed = make_model(seed=9)
    history = fit(resumed, loader(), epochs=4, checkpoint_dir=tmp_path, resume=True, **common)
    # the same batches in the same order in one process: the same weights
    assert same_weights(straight, resumed)
    assert history.train_loss == full.train_loss
    # the order comes from fit's seed, unless the loader has a generator of its own
    other = fit(make_model(), loader(), epochs=2, optimizer=adam, seed=4, progress=False)
    assert (other.train_loss == full.train_loss[:2]) == with_generator


def test_a_batch_bar_inside_each_epoch_and_tqdm_disable(monkeypatch, capsys, make_data,
                                                        make_model):
    x, y = make_data(n=40)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    fit(make_model(), DataLoader(tensors(x, y), batch_size=8), epochs=2, optimizer=adam)
    err = capsys.readouterr().err
    # each epoch's bar shows itself when it starts (later refreshes depend on the clock)
    assert "epoch 1/2:   0%" in err and "epoch 2/2:   0%" in err and "0/5 [" in err
    assert "batch/s" in err and "epoch/s" in err  # and the outer bar over epochs
    monkeypatch.setenv("TQDM_DISABLE", "1")
    fit(make_model(), (x, y), batch_size=8, epochs=2, optimizer=adam)
    assert capsys.readouterr().err == ""


def test_nfr_warning_once_every_or_off(make_data, make_model):
    x, y = make_data(n=150)
    common = dict(loss_terms=[TurnAgainstLabels()], epochs=4, optimizer=adam, batch_size=32,
                  val_data=(x, y), old_val_preds=y, progress=False)
    counts = {}
    for mode in ("once", "every", "off"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(make_model(), (x, y), nfr_warning=mode, **common)
        alarms = [str(w.message) for w in caught if w.category is NFRRiseWarning]
        counts[mode] = len(alarms)
        if alarms:
            assert ("Reported at each such epoch" in alarms[0]) == (mode == "every")
    assert counts["once"] == 1 and counts["every"] >= 2 and counts["off"] == 0
    with pytest.raises(ValueError, match="nfr_warning must be one of 'once', 'every', 'off', "
                                         "got 'always'"):
        fit(make_model(), (x, y), nfr_warning="always", epochs=1, optimizer=adam,
            progress=False)
