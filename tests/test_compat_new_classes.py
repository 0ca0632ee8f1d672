"""Classes the old model never saw (fitted head rows, a margin on their logits) and the fixed
d-simplex head."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from regfree.compat import (
    BackwardCompatibleLoss,
    CosineClassifier,
    NewClassMargin,
    extend_head,
    fit_new_rows,
    simplex_head,
)
from regfree.training import fit


def _crowded_new_class(seed: int = 0):
    """Old classes 0 and 1 along +x and +y; new class 2 sits between +x and -y, so its mean
    direction (x - y) is still nearer class 0's samples than a separating row would be."""
    rng = np.random.default_rng(seed)
    centres = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, -0.7]])
    y = np.repeat([0, 1, 2], 200)
    x = centres[y] + rng.normal(scale=0.15, size=(600, 2))
    # class 0 spreads towards class 2: its lower half reaches the new class's mean direction
    x[:200, 1] -= np.abs(rng.normal(scale=0.35, size=200))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def _old_head() -> CosineClassifier:
    head = CosineClassifier(2, 2, scale=8.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    return head


def _accuracy(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((head(x).argmax(1) == y).float().mean())


def test_fitted_rows_separate_a_new_class_that_its_mean_row_does_not():
    x, y = _crowded_new_class()
    old = _old_head()
    mean = extend_head(old, x, y, num_classes=3)
    fitted = extend_head(old, x, y, num_classes=3, rows="fit")
    assert _accuracy(fitted, x, y) > _accuracy(mean, x, y) + 0.03
    assert _accuracy(fitted, x, y) > 0.9
    # the old rows are the old head's, exactly; the copy is frozen; the old head is untouched
    torch.testing.assert_close(fitted.weight[:2], old.weight.detach(), rtol=0, atol=0)
    assert not fitted.weight.requires_grad and old.weight.requires_grad
    assert fitted.weight.shape == (3, 2)


def test_fitted_rows_of_a_linear_head_keep_their_norm_and_fit_a_bias():
    x, y = _crowded_new_class(seed=1)
    old = nn.Linear(2, 2)
    with torch.no_grad():
        old.weight.copy_(4 * torch.eye(2))
        old.bias.zero_()
    mean = extend_head(old, x, y, num_classes=3)
    fitted = extend_head(old, x, y, num_classes=3, rows="fit")
    torch.testing.assert_close(fitted.weight[2].norm(), mean.weight[2].norm())
    torch.testing.assert_close(fitted.bias[:2], old.bias.detach())
    assert _accuracy(fitted, x, y) >= _accuracy(mean, x, y)
    assert _accuracy(fitted, x, y) > 0.9


def test_fit_new_rows_and_extend_head_reject_bad_arguments():
    x, y = _crowded_new_class()
    with pytest.raises(ValueError, match=r"rows must be one of \('mean', 'fit'\), got 'best'"):
        extend_head(_old_head(), x, y, num_classes=3, rows="best")
    with pytest.raises(ValueError, match=r"old_classes must be in \[1, 1\]"):
        fit_new_rows(_old_head(), x, y, old_classes=2)


def test_new_class_margin_offsets_only_new_logits_and_moves_the_influence_loss():
    torch.manual_seed(0)
    head = extend_head(_old_head(), *_crowded_new_class(), num_classes=3)
    margin = NewClassMargin(head, old_classes=2, margin=1.5)
    z = torch.randn(5, 2)
    torch.testing.assert_close(margin(z) - head(z),
                               torch.tensor([0.0, 0.0, 1.5]).expand(5, 3))
    x, y = _crowded_new_class(seed=2)
    old_part, new_part = y < 2, y == 2

    def influence(h, part):
        return float(BackwardCompatibleLoss(h)(x[part], y[part]))

    # MPT's sign: old classes must beat the new ones by more, new-class samples win more easily
    assert influence(margin, old_part) > influence(head, old_part)
    assert influence(margin, new_part) < influence(head, new_part)
    pull = NewClassMargin(head, old_classes=2, margin=-1.5)
    assert influence(pull, new_part) > influence(head, new_part)
    with pytest.raises(ValueError, match="no new class beyond old_classes=3"):
        NewClassMargin(head, old_classes=3, margin=1.0)(z)
    with pytest.raises(ValueError, match="old_classes must be an integer >= 1"):
        NewClassMargin(head, old_classes=0, margin=1.0)


def test_simplex_head_rows_are_equiangular_unit_vectors_and_stay_fixed_in_training(make_data,
                                                                                 make_model):
    head = simplex_head(12, 10, scale=8.0)
    rows = F.normalize(head.weight, dim=1)
    cosines = rows @ rows.T
    off_diagonal = cosines[~torch.eye(10, dtype=torch.bool)]
    torch.testing.assert_close(off_diagonal, torch.full_like(off_diagonal, -1 / 9))
    torch.testing.assert_close(head.weight.norm(dim=1), torch.ones(10))
    assert head.weight[:, 9:].abs().max() == 0  # ten vertices need nine dimensions

    x, y = make_data(n=96, classes=3)
    model = make_model(0, classes=3)
    model.head = simplex_head(8, 3, scale=8.0)
    before = model.head.weight.clone()
    first_layer = model.features[0].weight.clone()
    fit(model, (x, y), epochs=2, batch_size=32, progress=False,
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    torch.testing.assert_close(model.head.weight, before, rtol=0, atol=0)
    assert not torch.equal(model.features[0].weight, first_layer)  # the rest did train
    with pytest.raises(ValueError, match=r"in_features must be an integer >= num_classes - 1 = 9"):
        simplex_head(8, 10)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        simplex_head(8, 1)
