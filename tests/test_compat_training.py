"""Backward-compatible training through the shared trainer (regfree.training.fit)."""

import numpy as np
import pytest
import torch
from torch import nn

from regfree.compat import (
    BackwardCompatibleLoss,
    CosineClassifier,
    EmbeddingRegressionLoss,
    ProjectedModel,
    compatibility_report,
    embedder,
    extend_head,
)
from regfree.training import fit


def embed(model, inputs, space="native"):
    return embedder(model, space)(inputs)


def _adam(params):
    return torch.optim.Adam(params, lr=1e-2)


# v2 in these tests: an MLP on the 64 digit pixels that returns (logits, embeddings)
V2 = dict(in_dim=64, classes=10, hidden=32, embedding_dim=16, return_embeddings=True)


def _cosine_head(model, num_classes):
    model.head = CosineClassifier(model.embedding_dim, num_classes, scale=10.0)
    return model


@pytest.fixture(scope="module")
def v1(digits, make_model):
    model = make_model(0, **{**V2, "hidden": 16})
    fit(model, (digits.x_train[:600], digits.y_train[:600]), epochs=8, batch_size=64,
        optimizer=_adam, seed=0, progress=False)
    return model


def _old_head_accuracy(head, embeddings, labels):
    with torch.no_grad():
        return float((head(torch.as_tensor(embeddings)).argmax(1).numpy() == labels).mean())


def test_old_head_is_untouched_by_training_and_bct_makes_v2_readable_by_it(digits, v1,
                                                                           make_model):
    before = {name: p.detach().clone() for name, p in v1.head.named_parameters()}
    bct = BackwardCompatibleLoss(v1.head, weight=1.0)
    v2 = make_model(1, **V2)
    v2_before = [p.detach().clone() for p in v2.parameters()]
    history = fit(v2, (digits.x_train, digits.y_train), loss_terms=[bct], epochs=4,
                  batch_size=64, optimizer=_adam, seed=1, progress=False)

    for name, p in bct.old_head.named_parameters():
        torch.testing.assert_close(p, before[name], rtol=0, atol=0)
        assert p.grad is None and not p.requires_grad
    for name, p in v1.head.named_parameters():  # v1 itself is left trainable and unchanged
        torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=0)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(v2_before, v2.parameters()))
    assert len(history.epochs) == 4 and "bct" in history.epochs[-1].terms
    assert history.epochs[-1].terms["bct"] < history.epochs[0].terms["bct"]

    independent = make_model(1, **V2)
    fit(independent, (digits.x_train, digits.y_train), epochs=4, batch_size=64,
        optimizer=_adam, seed=1, progress=False)
    compatible = _old_head_accuracy(v1.head, embed(v2, digits.x_test), digits.y_test)
    unrelated = _old_head_accuracy(v1.head, embed(independent, digits.x_test), digits.y_test)
    assert compatible > 0.85 and unrelated < 0.4

    report = compatibility_report(digits.x_test, digits.x_train,
                                  {"v1": embedder(v1), "v2": embedder(v2)},
                                  digits.y_test, digits.y_train)
    independent_report = compatibility_report(
        digits.x_test, digits.x_train, {"v1": embedder(v1), "v2": embedder(independent)},
        digits.y_test, digits.y_train)
    assert report.value("v2", "v1") > independent_report.value("v2", "v1") + 0.3


def test_projection_in_the_loss_is_optimised_by_the_trainer(digits, v1, make_model):
    projection = nn.Linear(24, 16)
    start = projection.weight.detach().clone()
    bct = BackwardCompatibleLoss(v1.head, weight=1.0, projection=projection)
    v2 = make_model(2, **{**V2, "embedding_dim": 24})
    fit(v2, (digits.x_train, digits.y_train), loss_terms=[bct], epochs=4, batch_size=64,
        optimizer=_adam, seed=2, progress=False)
    assert not torch.equal(projection.weight.detach(), start)
    served = ProjectedModel(v2, bct.projection)
    native = embed(served, digits.x_test)
    projected = embed(served, digits.x_test, space="compatible")
    assert native.shape == (len(digits.y_test), 24) and projected.shape == (len(digits.y_test), 16)
    assert _old_head_accuracy(v1.head, projected, digits.y_test) > 0.85
    report = compatibility_report(
        digits.x_test, digits.x_train,
        {"v1": embedder(v1), "v2": {"v2": embedder(served),
                                    "v1": embedder(served, space="compatible")}},
        digits.y_test, digits.y_train)
    assert report.value("v2", "v1") > 0.5 and report.value("v2", "v2") > 0.8


def test_projected_model_trains_its_projection_with_bct_on_the_projected_output(
        digits, v1, make_model):
    wrapped = ProjectedModel(make_model(3, **{**V2, "embedding_dim": 24}), projection=16)
    start = wrapped.projection.weight.detach().clone()
    fit(wrapped, (digits.x_train, digits.y_train), epochs=4, batch_size=64, optimizer=_adam,
        loss_terms=[BackwardCompatibleLoss(v1.head)], seed=3, progress=False)
    assert not torch.equal(wrapped.projection.weight.detach(), start)
    projected = embed(wrapped, digits.x_test, space="compatible")
    assert _old_head_accuracy(v1.head, projected, digits.y_test) > 0.85


def test_l2_regression_pulls_v2_onto_v1_embeddings(digits, v1, make_model):
    cache = embed(v1, digits.x_train)
    v2 = make_model(4, **V2)
    history = fit(v2, (digits.x_train, digits.y_train), epochs=4, batch_size=64,
                  loss_terms=[EmbeddingRegressionLoss(cache, weight=1.0)], optimizer=_adam,
                  seed=4, progress=False)
    assert history.epochs[-1].terms["l2"] < history.epochs[0].terms["l2"]
    independent = make_model(4, **V2)
    fit(independent, (digits.x_train, digits.y_train), epochs=4, batch_size=64,
        optimizer=_adam, seed=4, progress=False)
    old = embed(v1, digits.x_test)
    distance = np.square(embed(v2, digits.x_test) - old).sum(1).mean()
    unrelated = np.square(embed(independent, digits.x_test) - old).sum(1).mean()
    assert distance < 0.25 * unrelated


def test_extended_head_lets_v2_place_unseen_classes_in_v1_space(digits, make_model):
    seen = digits.y_train < 8
    v1 = _cosine_head(make_model(5, **{**V2, "hidden": 16, "classes": 8}), 8)
    fit(v1, (digits.x_train[seen], digits.y_train[seen]), epochs=8, batch_size=64,
        optimizer=_adam, seed=5, progress=False)
    extended = extend_head(v1.head, embed(v1, digits.x_train), digits.y_train, num_classes=10)
    unseen = digits.y_test >= 8
    accuracy = {}
    for name, terms in (("independent", []), ("bct", [BackwardCompatibleLoss(extended)])):
        v2 = _cosine_head(make_model(6, **V2), 10)
        fit(v2, (digits.x_train, digits.y_train), epochs=4, batch_size=64, optimizer=_adam,
            loss_terms=terms, seed=6, progress=False)
        accuracy[name] = _old_head_accuracy(extended, embed(v2, digits.x_test[unseen]),
                                            digits.y_test[unseen])
    # the synthesised rows give the unseen classes a target in v1's space that v2 learns to hit
    assert accuracy["bct"] > 0.7 and accuracy["independent"] < 0.3
