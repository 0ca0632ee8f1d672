"""One loss shape: every loss is called on tensors like a torch loss, in a user's own loop and,
through the one adapter (StepTerm), inside fit, with the same values."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from regfree.compat import BackwardCompatibleLoss, EmbeddingRegressionLoss
from regfree.pctraining import (
    DistillationLoss,
    DistillationTerm,
    FocalDistillationLoss,
    KnowledgeDistillationLoss,
    NoisyDistillationTerm,
    OldLogitCache,
    margin_logit_distance,
    uniform_weights,
)
from regfree.training import StepTerm, TrainStep, fit


def _elodi(weight=0.5):
    return DistillationLoss(uniform_weights,
                            lambda new, old: margin_logit_distance(new, old, margin=0.1, power=2),
                            weight=weight, name="elodi")


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _loss_on_tensors(kind, v1):
    """``(v2, logits, embeddings, old_logits, old_embeddings, x, y) -> scalar`` for one loss,
    called as a user's own loop would call it."""
    if kind in ("fd", "kd", "elodi"):
        loss = {"fd": lambda: FocalDistillationLoss(weight=1.0),
                "kd": lambda: KnowledgeDistillationLoss(temperature=2.0), "elodi": _elodi}[kind]()
        return lambda v2, logits, emb, old_logits, old_emb, x, y: loss(logits, old_logits, y)
    if kind == "bct":
        bct = BackwardCompatibleLoss(v1.head, weight=1.0)
        return lambda v2, logits, emb, old_logits, old_emb, x, y: bct(emb, y)
    if kind == "l2":
        l2 = EmbeddingRegressionLoss(weight=1.0)
        return lambda v2, logits, emb, old_logits, old_emb, x, y: l2(emb, old_emb)
    noisy = NoisyDistillationTerm(FocalDistillationLoss(weight=1.0), v1, noise_std=0.3)
    return lambda v2, logits, emb, old_logits, old_emb, x, y: noisy(v2, x, y)


@pytest.mark.parametrize("kind", ["fd", "kd", "elodi", "bct", "l2", "noisy"])
def test_each_loss_on_tensors_in_a_hand_written_loop(kind, make_data, make_model):
    x, y = make_data(32)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    v1 = make_model(1, return_embeddings=True)
    v2 = make_model(2, return_embeddings=True)
    v1_before, v2_before = _params(v1), _params(v2)
    extra = _loss_on_tensors(kind, v1)
    opt = torch.optim.SGD(v2.parameters(), lr=0.1)
    values = []
    for start in range(0, 32, 8):
        xb, yb = x[start:start + 8], y[start:start + 8]
        logits, embeddings = v2(xb)
        with torch.no_grad():
            old_logits, old_embeddings = v1(xb)
        value = extra(v2, logits, embeddings, old_logits, old_embeddings, xb, yb)
        if start == 0:  # the loss alone sends gradient into the new model
            grads = torch.autograd.grad(value, list(v2.parameters()), retain_graph=True,
                                        allow_unused=True)
            assert any(g is not None and g.abs().sum() > 0 for g in grads)
        opt.zero_grad()
        (F.cross_entropy(logits, yb) + value).backward()
        opt.step()
        values.append(value.item())
    assert all(np.isfinite(values)) and max(values) > 0
    for name, value in _params(v1).items():  # the old model (and its head) never moves
        assert torch.equal(value, v1_before[name]), name
    assert all(p.grad is None for p in v1.parameters())
    moved = [name for name, value in _params(v2).items() if not torch.equal(value, v2_before[name])]
    assert len(moved) == len(v2_before)  # every parameter of the new model was trained


def test_bct_in_a_loop_keeps_the_old_head_while_a_projection_learns(make_data, make_model):
    x, y = make_data(16)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    v1 = make_model(1, return_embeddings=True)
    v2 = make_model(2, embedding_dim=5, return_embeddings=True)
    head_before = copy.deepcopy(v1.head.state_dict())
    bct = BackwardCompatibleLoss(v1.head, projection=torch.nn.Linear(5, 8))
    projection_before = bct.projection.weight.detach().clone()
    opt = torch.optim.Adam([*v2.parameters(), *(p for p in bct.parameters() if p.requires_grad)],
                           lr=1e-2)
    for _ in range(3):
        logits, embeddings = v2(x)
        loss = F.cross_entropy(logits, y) + bct(embeddings, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, value in v1.head.state_dict().items():
        assert torch.equal(value, head_before[name])
    assert not torch.equal(bct.projection.weight, projection_before)


def _fit_unchanged(model, data, terms):
    """One epoch of fit with lr 0, in dataset order: each term's mean over the epoch."""
    history = fit(model, data, loss_terms=terms, epochs=1, batch_size=16, shuffle=False,
                  optimizer=lambda p: torch.optim.SGD(p, lr=0.0), progress=False)
    return {name: history.term(name)[0] for name in history.epochs[0].terms}


def test_the_adapter_inside_fit_gives_the_direct_call_values(tmp_path, make_data, make_model):
    x, y = make_data(48)
    v1 = make_model(1, return_embeddings=True)
    v2 = make_model(2, return_embeddings=True)
    cache = OldLogitCache.build(v1, (x, y), tmp_path / "v1")
    with torch.no_grad():
        old_embeddings = v1(torch.from_numpy(x))[1]
    fd, kd = FocalDistillationLoss(weight=1.0), KnowledgeDistillationLoss(name="kd")
    bct, l2 = BackwardCompatibleLoss(v1.head), EmbeddingRegressionLoss(old_embeddings)
    elodi = _elodi()
    noisy = NoisyDistillationTerm(KnowledgeDistillationLoss(name="kd_live"), v1, noise_std=0.0)
    in_fit = _fit_unchanged(v2, (x, y), [DistillationTerm(fd, cache), DistillationTerm(kd, v1),
                                         bct, l2, DistillationTerm(elodi, v1), noisy])
    direct = {name: [] for name in in_fit}
    v2.eval()  # fit leaves it in eval mode; the MLP has no dropout or batch norm
    with torch.no_grad():
        for start in range(0, 48, 16):
            xb, yb = torch.from_numpy(x[start:start + 16]), torch.from_numpy(y[start:start + 16])
            logits, embeddings = v2(xb)
            old_logits = v1(xb)[0]
            direct["fd_kl"].append(fd(logits, old_logits, yb))
            direct["kd"].append(kd(logits, old_logits, yb))
            direct["bct"].append(bct(embeddings, yb))
            direct["l2"].append(l2(embeddings, old_embeddings[start:start + 16]))
            direct["elodi"].append(elodi(logits, old_logits, yb))
            direct["kd_live_noisy"].append(noisy(v2, xb, yb))
    for name, values in direct.items():
        np.testing.assert_allclose(in_fit[name], float(torch.stack(values).mean()), rtol=1e-5,
                                   err_msg=name)


def test_missing_embeddings_indices_teacher_or_model_are_named(make_data, make_model, tmp_path):
    x, y = make_data(32)
    v1 = make_model(1)
    fit_args = dict(epochs=1, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), progress=False)
    with pytest.raises(ValueError, match="BackwardCompatibleLoss needs the model's embeddings, "
                                         "but the model returned logits only"):
        fit(make_model(2), (x, y), loss_terms=[BackwardCompatibleLoss(v1.head)], **fit_args)
    with pytest.raises(ValueError, match=r"FocalDistillationLoss 'fd_kl' needs the old model's "
                                         r"logits in fit: pass DistillationTerm\(loss, teacher="):
        fit(make_model(2), (x, y), loss_terms=[FocalDistillationLoss()], **fit_args)
    with pytest.raises(ValueError, match=r"loss_terms must be a list of losses, got one "
                                         r"BackwardCompatibleLoss: pass loss_terms=\[loss\]"):
        fit(make_model(2), (x, y), loss_terms=BackwardCompatibleLoss(v1.head), **fit_args)
    with pytest.raises(ValueError, match="EmbeddingRegressionLoss in fit needs old_embeddings"):
        fit(make_model(2, return_embeddings=True), (x, y),
            loss_terms=[EmbeddingRegressionLoss()], **fit_args)

    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    logits, embeddings = make_model(2, return_embeddings=True)(inputs)
    no_positions = TrainStep(inputs, targets, None, logits, embeddings)  # an IterableDataset
    cache = OldLogitCache.build(v1, (x, y), tmp_path / "v1")
    with pytest.raises(ValueError, match=r"loss term 'fd_kl' \(its OldLogitCache\) looks up a "
                                         r"cache keyed by sample index.*map-style Dataset"):
        StepTerm(DistillationTerm(FocalDistillationLoss(), cache))(no_positions)
    with pytest.raises(ValueError, match="EmbeddingRegressionLoss looks up a cache keyed by "
                                         "sample index"):
        StepTerm(EmbeddingRegressionLoss(embeddings.detach()))(no_positions)
    # a live teacher needs no positions
    live = StepTerm(DistillationTerm(FocalDistillationLoss(), v1))(no_positions)
    assert live.dim() == 0 and torch.isfinite(live)
    with pytest.raises(TypeError, match="loss must have a step_arguments"):
        StepTerm(torch.nn.MSELoss())


def test_a_trainable_loss_resumes_from_a_checkpoint_to_the_uninterrupted_run(tmp_path, make_data,
                                                                             make_model):
    x, y = make_data(48)
    v1 = make_model(1, return_embeddings=True)

    def run(epochs, **checkpoints):
        bct = BackwardCompatibleLoss(v1.head, projection=torch.nn.Linear(5, 8))
        torch.manual_seed(0)
        bct.projection.reset_parameters()
        fit(make_model(2, embedding_dim=5, return_embeddings=True), (x, y), loss_terms=[bct],
            epochs=epochs, batch_size=16, progress=False,
            optimizer=lambda p: torch.optim.Adam(p, lr=1e-2), **checkpoints)
        return bct.projection.weight.detach()

    whole = run(3)
    run(2, checkpoint_dir=tmp_path)
    resumed = run(3, checkpoint_dir=tmp_path, resume=True)
    torch.testing.assert_close(resumed, whole)
    assert not torch.equal(whole, run(2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_adapter_moves_caches_to_the_training_device(tmp_path, make_data, make_model):
    x, y = make_data(48)
    v1 = make_model(1, return_embeddings=True)
    with torch.no_grad():
        old_embeddings = v1(torch.from_numpy(x))[1]
    cache = OldLogitCache.build(v1, (x, y), tmp_path / "v1")

    def terms():
        return [DistillationTerm(FocalDistillationLoss(weight=1.0), cache),
                BackwardCompatibleLoss(v1.head), EmbeddingRegressionLoss(old_embeddings)]

    on_cpu = _fit_unchanged(make_model(2, return_embeddings=True), (x, y), terms())
    history = fit(make_model(2, return_embeddings=True), (x, y), loss_terms=terms(), epochs=1,
                  batch_size=16, shuffle=False, device="cuda", progress=False,
                  optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    for name, value in on_cpu.items():
        np.testing.assert_allclose(history.term(name)[0], value, rtol=1e-4, err_msg=name)
