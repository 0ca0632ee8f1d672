"""Backward compatibility down a version chain: one influence term per earlier head."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from regfree.compat import BackwardCompatibleLoss, compatibility_report, embedder
from regfree.training import fit

V = dict(in_dim=64, classes=10, hidden=32, embedding_dim=16, return_embeddings=True)


def _train(model, digits, terms, seed, n=None, epochs=4):
    x, y = digits.x_train[:n], digits.y_train[:n]
    fit(model, (x, y), loss_terms=terms, epochs=epochs, batch_size=64, seed=seed,
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2), progress=False)
    return model


def test_heads_of_every_earlier_version_keep_v3_compatible_with_v1(digits, make_model):
    v1 = _train(make_model(0, **{**V, "hidden": 16}), digits, [], 0, n=600, epochs=8)
    v2 = _train(make_model(1, **V), digits, [BackwardCompatibleLoss(v1.head)], 1)
    wide = {**V, "hidden": 48}
    last_only = _train(make_model(2, **wide), digits, [BackwardCompatibleLoss(v2.head)], 2)
    every = _train(make_model(2, **wide), digits,
                   [BackwardCompatibleLoss([v1.head, v2.head])], 2)

    def v3_on_v1(v3):
        report = compatibility_report(
            digits.x_test, digits.x_train,
            {"v1": embedder(v1), "v2": embedder(v2), "v3": embedder(v3)},
            digits.y_test, digits.y_train, ks=(1,))
        return report.value("v3", "v1"), report.value("v3", "v2"), report.value("v3", "v3")

    single, multi = v3_on_v1(last_only), v3_on_v1(every)
    # through v2's head only, v3 drifts from v1's space; through both heads it stays close
    assert multi[0] > single[0] + 0.1
    assert multi[0] > 0.85
    assert multi[1] > single[1] - 0.03 and multi[2] > single[2] - 0.03  # at little cost


def test_head_weights_mix_the_heads_terms():
    torch.manual_seed(0)
    heads = [nn.Linear(4, 3), nn.Linear(4, 3)]
    embeddings, targets = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    each = [F.cross_entropy(h(embeddings), targets) for h in heads]
    mixed = BackwardCompatibleLoss(heads, weight=2.0, head_weights=[3.0, 1.0])
    expected = 2.0 * (3.0 * each[0] + 1.0 * each[1]) / 4.0
    torch.testing.assert_close(mixed(embeddings, targets), expected)
    equal = BackwardCompatibleLoss(heads)(embeddings, targets)
    torch.testing.assert_close(equal, (each[0] + each[1]) / 2)
    only_first = BackwardCompatibleLoss(heads, head_weights=[1, 0])(embeddings, targets)
    torch.testing.assert_close(only_first, BackwardCompatibleLoss(heads[0])(embeddings,
                                                                                 targets))
    assert mixed.old_head is mixed.old_heads[-1] and len(mixed.old_heads) == 2
    assert all(not p.requires_grad for p in mixed.old_heads.parameters())
    with pytest.raises(ValueError, match=r"head_weights must be 2 finite numbers >= 0, not all 0"):
        BackwardCompatibleLoss(heads, head_weights=[0, 0])
    with pytest.raises(ValueError, match=r"head_weights must be 2 finite numbers"):
        BackwardCompatibleLoss(heads, head_weights=[1.0])
    with pytest.raises(ValueError, match="old_head must be an nn.Module or a non-empty sequence"):
        BackwardCompatibleLoss([])
