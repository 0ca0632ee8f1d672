"""Backward-compatible training pieces that need no trainer: heads, losses, projection, report."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
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
from regfree.models import ConvNet1D
from regfree.training import StepTerm, TrainStep


def _identity_head() -> nn.Linear:
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
        head.bias.zero_()
    return head


def test_bct_loss_matches_hand_computed_cross_entropy():
    bct = BackwardCompatibleLoss(_identity_head(), weight=2.0)
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 3.0]], requires_grad=True)
    value = bct(embeddings, torch.tensor([0, 0]))
    # logits [1, 0] -> log(1 + e^-1); logits [0, 3] with target 0 -> log(1 + e^3)
    expected = 2.0 * (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(3))) / 2
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert bct.last_old_head_accuracy == 0.5 and bct.last_used == 2
    value.backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in bct.old_head.parameters())


def test_bct_as_a_step_term_reads_the_train_step_and_keeps_the_original_head_trainable():
    head = _identity_head()
    bct = BackwardCompatibleLoss(head, weight=1.0)
    step = TrainStep(inputs=torch.zeros(1, 2), targets=torch.tensor([1]),
                     indices=torch.tensor([0]), logits=torch.zeros(1, 2),
                     embeddings=torch.tensor([[0.0, 1.0]]))
    term = StepTerm(bct)
    assert term(step).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    assert all(p.requires_grad for p in head.parameters())  # the old model is left as it was
    term.train()
    assert not bct.old_head.training
    with pytest.raises(ValueError, match="BackwardCompatibleLoss needs the model's embeddings"):
        term(TrainStep(step.inputs, step.targets, step.indices, step.logits, None))


def test_bct_projection_maps_new_size_to_old_before_the_head():
    projection = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        projection.weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]]))
    bct = BackwardCompatibleLoss(_identity_head(), weight=1.0, projection=projection)
    # [1, 0, 1] -> [2, 0]: logits [2, 0], target 1 -> log(1 + e^2)
    value = bct(torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([1]))
    assert value.item() == pytest.approx(math.log(1 + math.exp(2)), rel=1e-6)
    value.backward()
    assert projection.weight.grad is not None  # trainable, unlike the old head
    assert [p.requires_grad for p in bct.parameters()] == [False, False, True]
    with pytest.raises(ValueError, match="projection must be an nn.Module or None"):
        BackwardCompatibleLoss(_identity_head(), projection=lambda e: e)


def test_bct_cosine_head_uses_only_directions():
    head = CosineClassifier(2, 2, scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.5]]))
    bct = BackwardCompatibleLoss(head, weight=1.0)
    short = bct(torch.tensor([[0.2, 0.0]]), torch.tensor([1]))
    long = bct(torch.tensor([[7.0, 0.0]]), torch.tensor([1]))
    # cosines [1, 0] * 10 -> CE for class 1 = log(1 + e^10), whatever the lengths
    assert short.item() == pytest.approx(math.log(1 + math.exp(10)), rel=1e-5)
    assert long.item() == pytest.approx(short.item(), rel=1e-6)


def test_bct_unseen_classes_raise_or_are_left_out():
    embeddings = torch.tensor([[1.0, 0.0], [5.0, 5.0]])
    targets = torch.tensor([0, 2])
    with pytest.raises(ValueError, match=r"classes \[2\].*extend_head"):
        BackwardCompatibleLoss(_identity_head())(embeddings, targets)
    ignoring = BackwardCompatibleLoss(_identity_head(), unseen="ignore")
    assert ignoring(embeddings, targets).item() == pytest.approx(
        math.log(1 + math.exp(-1)), rel=1e-6)
    assert ignoring.last_used == 1
    assert ignoring(embeddings[1:], targets[1:]).item() == 0.0
    for bad, message in ((dict(weight=-1.0), "weight must be a finite number >= 0, got -1.0"),
                         (dict(weight=float("nan")), "weight must be a finite number >= 0, got nan"),
                         (dict(unseen="drop"), "unseen must be one of .* got 'drop'")):
        with pytest.raises(ValueError, match=message):
            BackwardCompatibleLoss(_identity_head(), **bad)


def test_embedding_regression_looks_up_the_cache_by_index():
    cache = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    l2 = EmbeddingRegressionLoss(cache, weight=0.5)
    new = torch.tensor([[4.0, 5.0], [0.0, 0.0]])
    step = TrainStep(inputs=torch.zeros(2, 1), targets=torch.tensor([0, 0]),
                     indices=torch.tensor([2, 5]), logits=torch.zeros(2, 3), embeddings=new)
    # row 2 = [4, 5] (distance 0), row 5 = [10, 11] (distance 100 + 121)
    term = StepTerm(l2)
    assert term(step).item() == pytest.approx(0.5 * (0 + 221) / 2)
    unit = EmbeddingRegressionLoss(cache, normalize=True)
    assert unit(torch.tensor([[0.0, 8.0]]), torch.tensor([[0.0, 1.0]])).item() == 0.0
    with pytest.raises(ValueError, match=r"step\.indices reach 6 but old_embeddings has 6 rows"):
        term(TrainStep(step.inputs, step.targets, torch.tensor([0, 6]), step.logits, new))
    with pytest.raises(ValueError, match=r"old_embeddings must be a float \(N, D\) array"):
        EmbeddingRegressionLoss(np.zeros(5))


@pytest.mark.parametrize("head_type", ["linear", "cosine"])
def test_extend_head_keeps_old_rows_and_new_class_means_classify_to_their_class(head_type):
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 8, generator=generator) * 4
    labels = torch.arange(5).repeat_interleave(20)
    embeddings = centres[labels] + 0.3 * torch.randn(100, 8, generator=generator)
    if head_type == "linear":
        old = nn.Linear(8, 3)
        with torch.no_grad():
            old.weight.copy_(centres[:3] / 2)
            old.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    else:
        old = CosineClassifier(8, 3, scale=16.0)
        with torch.no_grad():
            old.weight.copy_(centres[:3])
    before = {name: p.detach().clone() for name, p in old.named_parameters()}

    extended = extend_head(old, embeddings, labels, num_classes=5)

    assert type(extended) is type(old) and extended.weight.shape == (5, 8)
    torch.testing.assert_close(extended.weight[:3], before["weight"], rtol=0, atol=0)
    new_norms = extended.weight[3:].norm(dim=1)
    torch.testing.assert_close(new_norms, before["weight"].norm(dim=1).mean().expand(2))
    if head_type == "linear":
        torch.testing.assert_close(extended.bias[:3], before["bias"], rtol=0, atol=0)
        torch.testing.assert_close(extended.bias[3:], before["bias"].mean().expand(2))
    assert not any(p.requires_grad for p in extended.parameters())
    for name, p in old.named_parameters():  # the old head itself is not modified
        torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=0)
        assert p.requires_grad
    with torch.no_grad():
        means = torch.stack([embeddings[labels == c].mean(0) for c in range(5)])
        assert extended(means).argmax(1).tolist() == [0, 1, 2, 3, 4]
        assert (extended(embeddings).argmax(1) == labels).float().mean() > 0.95


def test_extend_head_rejects_bad_arguments():
    old = nn.Linear(4, 2)
    embeddings, labels = torch.zeros(6, 4), torch.tensor([0, 1, 2, 2, 3, 3])
    with pytest.raises(ValueError, match="num_classes must be an integer > the old head's 2 classes"):
        extend_head(old, embeddings, labels, num_classes=2)
    with pytest.raises(ValueError, match=r"new classes \[4\]"):
        extend_head(old, embeddings, labels, num_classes=5)
    with pytest.raises(ValueError, match=r"old_embeddings must have shape \(N, 4\), got \(6, 3\)"):
        extend_head(old, torch.zeros(6, 3), labels, num_classes=4)
    with pytest.raises(ValueError, match=r"labels must have shape \(6,\), got \(5,\)"):
        extend_head(old, embeddings, labels[:5], num_classes=4)
    with pytest.raises(ValueError, match="old_head must be an nn.Linear or CosineClassifier"):
        extend_head(nn.Sequential(old), embeddings, labels, num_classes=4)


def test_projected_model_shapes_and_spaces():
    torch.manual_seed(0)
    wrapped = ProjectedModel(ConvNet1D(width=8, embedding_dim=24), projection=6)
    x = torch.randn(5, 40)
    logits, projected = wrapped(x)
    assert logits.shape == (5, 10) and projected.shape == (5, 6)
    native = wrapped.native_embeddings(x)
    assert native.shape == (5, 24)
    torch.testing.assert_close(wrapped.compatible_embeddings(x), wrapped.projection(native))
    torch.testing.assert_close(logits, wrapped.model.head(native))
    assert {id(p) for p in wrapped.projection.parameters()} <= {id(p) for p in wrapped.parameters()}
    assert embedder(wrapped)(x.numpy()).shape == (5, 24)
    np.testing.assert_allclose(embedder(wrapped, space="compatible", batch_size=2)(x),
                               projected.detach().numpy(), rtol=1e-5, atol=1e-6)
    custom = ProjectedModel(ConvNet1D(width=8, embedding_dim=24),
                            nn.Sequential(nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 3)))
    assert custom(x)[1].shape == (5, 3)
    with pytest.raises(ValueError, match="projection size must be >= 1"):
        ProjectedModel(ConvNet1D(width=8), projection=0)
    with pytest.raises(ValueError, match=r"model must have forward_features\(x\) and a head module"):
        ProjectedModel(nn.Linear(3, 3), projection=2)
    with pytest.raises(ValueError, match=r"space must be one of \('native', 'compatible'\)"):
        embedder(wrapped, space="old")


def _lookup(query_rows, gallery_rows):
    """An embedder over inputs 0..3 (queries) and 4..7 (gallery) reading a fixed table."""
    table = np.asarray(query_rows + gallery_rows, dtype=np.float32)
    return lambda ids: table[np.asarray(ids)]


def test_report_on_a_tiny_fixed_example():
    labels = np.array([0, 0, 1, 1])
    gallery_v1 = [[1, 0], [1, 0.1], [0, 1], [0.1, 1]]
    gallery_v2 = [[0, 1], [0.1, 1], [1, 0], [1, 0.1]]
    gallery_v3 = [[1, 1], [1, 1], [1, -1], [1, -1]]
    # v1: queries 0 and 2 land next to their class, 1 and 3 next to the other one -> top-1 0.5
    v1 = _lookup([[1, 0.05], [0.05, 1], [0, 1], [1, 0]], gallery_v1)
    # v2 against v1's gallery: only query 3 is wrong -> 0.75; against its own gallery: 1.0
    v2_old = _lookup([[1, 0], [0.9, 0.1], [0.1, 0.9], [1, 0.05]], gallery_v1)
    v2_own = _lookup([[0, 1], [0, 1], [1, 0], [1, 0]], gallery_v2)
    # v3 against v2's gallery: every query wrong; v3 names no embedder for v1's gallery
    v3_v2 = _lookup([[1, 0], [1, 0], [0, 1], [0, 1]], gallery_v2)
    v3_own = _lookup([[1, 1], [1, 1], [1, -1], [1, -1]], gallery_v3)

    report = compatibility_report(
        np.arange(4), np.arange(4, 8),
        {"v1": v1, "v2": {"v2": v2_own, "v1": v2_old}, "v3": {"v3": v3_own, "v2": v3_v2}},
        labels, labels, ks=(1, 4))
    top1 = report.matrix("top1")
    np.testing.assert_allclose(top1, [[0.5, np.nan, np.nan], [0.75, 1.0, np.nan],
                                      [np.nan, 0.0, 1.0]])
    assert report.criterion("v2", "v1") and not report.criterion("v3", "v2")
    assert report.update_gain("v2", "v1") == pytest.approx(0.5)
    assert math.isnan(report.update_gain("v3", "v2"))  # v3 is no better than v2 on its own
    assert report.average_compatibility() == pytest.approx(0.5)
    assert report.average_multimodel_accuracy() == pytest.approx((0.5 + 0.75 + 1 + 0 + 1) / 5)
    assert report.matrix("top4")[0, 0] == 1.0
    as_dict = report.to_dict()
    assert as_dict["matrices"]["top1"][0] == [0.5, None, None]
    assert as_dict["pairs"]["v2/v1"]["top1"] == {"criterion": True, "update_gain": 0.5}
    assert "v3/v1" not in as_dict["pairs"] and as_dict["AC"]["top1"] == 0.5
    markdown = report.to_markdown()
    assert "| v2 | 75.0 | 100.0 |  |" in markdown and "| v2/v1 | yes | 0.50 |" in markdown
    with pytest.raises(ValueError, match=r"new \('v1'\) must be a later version than old \('v2'\)"):
        report.criterion("v1", "v2")
    with pytest.raises(ValueError, match=r"metric must be one of \['top1', 'top4', 'mAP'\], got 'top2'"):
        report.matrix("top2")


def test_report_mean_average_precision_matches_sklearn():
    rng = np.random.default_rng(0)
    query, gallery = rng.normal(size=(7, 5)), rng.normal(size=(30, 5))
    query_labels, gallery_labels = rng.integers(0, 3, 7), rng.integers(0, 3, 30)
    report = compatibility_report(query, gallery, {"v1": lambda a: a}, query_labels,
                                  gallery_labels, similarity="l2")
    distances = ((query[:, None] - gallery[None]) ** 2).sum(-1)
    expected = np.mean([average_precision_score(gallery_labels == query_labels[i], -distances[i])
                        for i in range(7)])
    assert report.value("v1", "v1", "mAP") == pytest.approx(expected)
    nearest = gallery_labels[distances.argmin(1)]
    assert report.value("v1", "v1") == pytest.approx(np.mean(nearest == query_labels))


def test_report_leave_one_out_when_queries_are_the_gallery():
    rng = np.random.default_rng(1)
    items, labels = rng.normal(size=(25, 4)), rng.integers(0, 3, 25)
    with_self = compatibility_report(items, items, {"v1": lambda a: a}, labels, labels)
    left_out = compatibility_report(items, items, {"v1": lambda a: a}, labels, labels,
                                    leave_one_out=True)
    assert with_self.value("v1", "v1") == 1.0  # each query finds itself
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -np.inf)
    nearest = labels[cosine.argmax(1)]
    assert left_out.value("v1", "v1") == pytest.approx(np.mean(nearest == labels))
    assert left_out.protocol["leave_one_out"] is True


def test_report_rejects_bad_embedders():
    x, labels = np.eye(3, dtype=np.float32) + 0.1, np.array([0, 1, 1])
    with pytest.raises(ValueError, match="embedders must be a non-empty mapping"):
        compatibility_report(x, x, {}, labels, labels)
    with pytest.raises(ValueError, match=r"embedders\['v2'\] must map 'v2'"):
        compatibility_report(x, x, {"v1": lambda a: a, "v2": {"v1": lambda a: a}}, labels, labels)
    with pytest.raises(ValueError, match=r"embedders\['v2'\] gives 3-d queries for the 2-d 'v1' gallery"):
        compatibility_report(x, x, {"v1": lambda a: a[:, :2], "v2": lambda a: a}, labels, labels)
    with pytest.raises(ValueError, match=r"embedders\['v1'\] on gallery must return an array of shape \(3, D\)"):
        compatibility_report(x, x, {"v1": lambda a: a[:2]}, labels, labels)
