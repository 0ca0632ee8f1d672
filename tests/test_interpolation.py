"""BCWI: weight interpolation between v1 and a v2 fine-tuned from it."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from regfree.metrics import flip_report
from regfree.models import MLP
from regfree.pctraining.interpolation import interpolate_weights, interpolation_sweep
from regfree.training.predict import predict_logits


def pair(seed=0):
    torch.manual_seed(seed)
    old = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    old(torch.randn(16, 4))  # moves BatchNorm's running stats and counter
    new = copy.deepcopy(old)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return old, new


def test_alpha_zero_and_one_give_the_two_models_and_inputs_stay_unchanged():
    old, new = pair()
    before = {k: v.clone() for k, v in new.state_dict().items()}
    for alpha, source in ((0.0, new), (1.0, old)):
        mixed = interpolate_weights(old, new, alpha).state_dict()
        for name, value in source.state_dict().items():
            if torch.is_floating_point(value):
                torch.testing.assert_close(mixed[name], value)
    half = interpolate_weights(old, new, 0.5).state_dict()
    torch.testing.assert_close(half["0.weight"], (old[0].weight + new[0].weight) / 2)
    assert half["1.num_batches_tracked"] == new.state_dict()["1.num_batches_tracked"]
    for name, value in new.state_dict().items():
        assert torch.equal(value, before[name])


def test_sweep_matches_direct_computation_and_respects_the_budget():
    old, new = pair(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = predict_logits(old.eval(), x).argmax(1)
    y[::4] = (y[::4] + 1) % 3  # v1 wrong on a quarter
    choice = interpolation_sweep(old, new, (x, y), alphas=[0.25, 0.5, 0.75])
    assert [p.knob for p in choice.points] == [0.0, 0.25, 0.5, 0.75]
    for point in choice.points:
        mixed = interpolate_weights(old, new, point.knob).eval()
        report = flip_report(y, predict_logits(old.eval(), x), predict_logits(mixed, x))
        assert point.error_rate == pytest.approx(report.error_rate_new)
        assert point.nfr == pytest.approx(report.nfr)
    chosen = next(p for p in choice.points if p.knob == choice.alpha)
    assert chosen.error_rate <= choice.points[0].error_rate + 1e-12
    assert chosen.nfr == min(p.nfr for p in choice.points if p.error_rate <= chosen.error_rate)


def test_refusals_name_the_argument():
    old, new = pair()
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
        interpolate_weights(old, new, 1.5)
    with pytest.raises(ValueError, match="parameter names differ"):
        interpolate_weights(old, nn.Linear(4, 3), 0.5)
    with pytest.raises(ValueError, match=r"'0.weight' is \(8, 4\) in old_model, \(9, 4\)"):
        interpolate_weights(nn.Sequential(nn.Linear(4, 8)), nn.Sequential(nn.Linear(4, 9)), 0.5)
    with pytest.raises(ValueError, match="max_error_increase must be a finite number >= 0"):
        interpolation_sweep(MLP(4, 2), MLP(4, 2), (np.zeros((2, 4), "float32"), [0, 1]),
                            max_error_increase=-1)
