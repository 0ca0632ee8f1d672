"""CrossModelNCALoss: its value, where its gradients go, its checks, and searching an old gallery
better than the old model does."""

import math

import numpy as np
import pytest
import torch

from regfree.compat import (
    CrossModelNCALoss,
    EmbeddingRegressionLoss,
    compatibility_report,
    embedder,
)
from regfree.training import TrainStep, fit
from regfree.training.steps import StepTerm

V = dict(in_dim=64, classes=10, hidden=32, embedding_dim=16, return_embeddings=True)


def _by_hand(new, memory, labels, targets, indices, temperature):
    """mean over queries with a same-class neighbour of -log(sum_same exp / sum_all exp), the
    query's own memory row left out, with Python loops."""
    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) *
                                                              sum(y * y for y in b))

    values = []
    for i, query in enumerate(new.tolist()):
        rows = [j for j in range(len(memory)) if indices is None or j != int(indices[i])]
        scores = {j: math.exp(cos(query, memory[j].tolist()) / temperature) for j in rows}
        same = [j for j in rows if int(labels[j]) == int(targets[i])]
        if same:
            values.append(-math.log(sum(scores[j] for j in same) / sum(scores.values())))
    return sum(values) / len(values)


def test_value_matches_a_direct_computation_with_the_query_left_out():
    torch.manual_seed(0)
    memory, labels = torch.randn(7, 3), torch.tensor([0, 0, 1, 2, 1, 2, 0])
    new, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    indices = torch.tensor([0, 2, 3, 6])
    loss = CrossModelNCALoss(memory, labels, weight=1.5, temperature=0.2)
    expected = 1.5 * _by_hand(new, memory, labels, targets, indices, 0.2)
    np.testing.assert_allclose(float(loss(new, targets, indices)), expected, rtol=1e-5)
    kept = 1.5 * _by_hand(new, memory, labels, targets, None, 0.2)
    np.testing.assert_allclose(float(loss(new, targets)), kept, rtol=1e-5)
    # lengths do not matter (cosine similarities)
    np.testing.assert_allclose(float(loss(3 * new, targets, indices)), expected, rtol=1e-5)


def test_leaving_the_query_out_asks_for_neighbours_not_a_copy():
    # the query equals its own old embedding, while the other row of its class points away:
    # with itself counted the loss is low, left out it is high
    memory = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    loss = CrossModelNCALoss(memory, labels, temperature=0.1)
    query, target = memory[:1].clone(), labels[:1]
    assert float(loss(query, target)) < 0.1
    assert float(loss(query, target, torch.tensor([0]))) > 5.0


def test_versions_gradients_and_a_query_without_neighbours():
    torch.manual_seed(2)
    olds, labels = [torch.randn(8, 4), torch.randn(8, 4)], torch.tensor([0, 1, 2, 0, 1, 2, 0, 3])
    new, targets = torch.randn(3, 4, requires_grad=True), torch.tensor([0, 1, 3])
    indices = torch.tensor([0, 1, 7])  # class 3's only sample is the query itself: skipped
    each = [float(CrossModelNCALoss(old, labels)(new.detach(), targets, indices))
            for old in olds]
    both = CrossModelNCALoss(olds, labels, weight=2.0, version_weights=[3.0, 1.0])
    value = both(new, targets, indices)
    np.testing.assert_allclose(float(value.detach()), 2.0 * (3 * each[0] + each[1]) / 4, rtol=1e-5)
    value.backward()
    assert float(new.grad[:2].abs().sum()) > 0
    assert float(new.grad[2].abs().sum()) == 0.0
    alone = CrossModelNCALoss(olds[0], labels)(new[2:].detach(), torch.tensor([3]),
                                               torch.tensor([7]))
    assert float(alone) == 0.0


def test_bad_inputs_are_named():
    memory, labels = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="temperature"):
        CrossModelNCALoss(memory, labels, temperature=0)
    with pytest.raises(ValueError, match="labels"):
        CrossModelNCALoss(memory, labels[:3])
    with pytest.raises(ValueError, match="labels"):
        CrossModelNCALoss(memory, labels.float())
    with pytest.raises(ValueError, match="same shape"):
        CrossModelNCALoss([memory, torch.randn(4, 2)], labels)
    with pytest.raises(ValueError, match="version_weights"):
        CrossModelNCALoss([memory, memory], labels, version_weights=[1.0])
    with pytest.raises(ValueError, match="old_embeddings"):
        CrossModelNCALoss([], labels)
    loss = CrossModelNCALoss(memory, labels)
    with pytest.raises(ValueError, match="dimensions"):
        loss(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="indices"):
        loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="targets"):
        loss(torch.randn(2, 3), torch.tensor([0, 1, 1]))
    step = TrainStep(inputs=None, targets=torch.tensor([0]), indices=None,
                     logits=torch.zeros(1, 2), embeddings=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="sample positions"):
        StepTerm(loss)(step)


def _train(model, digits, terms, seed, n=None, epochs=8):
    x, y = digits.x_train[:n], digits.y_train[:n]
    return fit(model, (x, y), loss_terms=terms, epochs=epochs, batch_size=64, seed=seed,
               optimizer=lambda p: torch.optim.Adam(p, lr=1e-2), progress=False)


def _v2_on_v1s_gallery(digits, make_model, seed):
    """A small v1 on 100 samples; a wider v2 trained onto v1's embeddings of the training set by
    NCA and, apart, by the L2 pull at the same weight: each one's top-1 on v1's gallery, and
    v1's own."""
    x, y = digits.x_train, digits.y_train
    v1 = make_model(seed, **{**V, "hidden": 16})
    _train(v1, digits, [], seed, n=100, epochs=4)
    memory = embedder(v1)(x)
    nca, l2 = make_model(seed + 1, **V), make_model(seed + 1, **V)
    _train(nca, digits, [CrossModelNCALoss(memory, y, weight=4.0)], seed + 1)
    _train(l2, digits, [EmbeddingRegressionLoss(memory, weight=4.0, normalize=True)], seed + 1)
    report = compatibility_report(
        digits.x_test, digits.x_train,
        {"v1": embedder(v1), "nca": embedder(nca), "l2": embedder(l2)},
        digits.y_test, digits.y_train, ks=(1,))
    return {pair: report.value(*pair) for pair in (("v1", "v1"), ("nca", "v1"), ("l2", "v1"))}


def test_inside_fit_nca_searches_v1s_gallery_where_the_l2_pull_falls_short(digits, make_model):
    # three seeds: a CPU that rounds differently moves one run like a new seed, so the claim
    # is on the mean, where one run's drift is diluted
    runs = [_v2_on_v1s_gallery(digits, make_model, seed) for seed in (0, 10, 20)]
    mean = {pair: float(np.mean([r[pair] for r in runs])) for pair in runs[0]}
    # in 8 epochs the L2 pull does not copy v1 well enough to search its gallery; NCA, which
    # asks for same-class old neighbours, searches it about as well as v1 itself
    assert mean["nca", "v1"] > mean["l2", "v1"] + 0.06
    assert mean["nca", "v1"] > mean["v1", "v1"] - 0.03
