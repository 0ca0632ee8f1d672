"""fit under torchrun with 2 CPU processes equals fit in one process at the same global batch.

Run as a script by torchrun (``python -m torch.distributed.run --nproc_per_node 2 THIS OUT``),
each rank trains and writes its history; rank 0 also writes the weights.
"""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from conftest import blobs, launch_ranks, mlp  # tests/ is on sys.path, also under torchrun
from test_training import Projection

from regfree.pctraining import DistillationTerm, FocalDistillationLoss, NoisyDistillationTerm
from regfree.training import fit, latest_checkpoint, load_checkpoint

# 41 training samples in global batches of 8: the last batch has 1 sample, so rank 1 gets a
# weight-0 placeholder; 23 validation samples split 12/11 across ranks.
N_TRAIN, N_VAL, BATCH, EPOCHS = 41, 23, 8, 3


def tiny_data():
    x, y = blobs(N_TRAIN + N_VAL, seed=0)
    return (x[:N_TRAIN], y[:N_TRAIN]), (x[N_TRAIN:], y[N_TRAIN:])


def train(checkpoint_dir):
    teacher = mlp(0, hidden=8, embedding_dim=4)
    model = mlp(1)
    scale = Projection()  # a trainable loss-term parameter: its gradient is averaged too
    # zero noise keeps the noisy term deterministic: it checks that a term calling step.model
    # inside the DDP-wrapped step gets its gradients averaged like the model's own loss
    noisy = NoisyDistillationTerm(FocalDistillationLoss(alpha=0.0, beta=1.0, weight=0.5),
                                  teacher, noise_std=0.0)
    terms = [DistillationTerm(FocalDistillationLoss(alpha=1.0, beta=2.0), teacher), scale, noisy]
    train_data, val_data = tiny_data()
    old_val_preds = teacher(torch.from_numpy(val_data[0])).argmax(1).numpy()
    history = fit(model, train_data, loss_terms=terms, epochs=EPOCHS, batch_size=BATCH,
                  optimizer=lambda p: torch.optim.Adam(p, lr=2e-2), val_data=val_data,
                  old_val_preds=old_val_preds, seed=11, checkpoint_dir=checkpoint_dir,
                  progress=False)
    return model, scale, history


def test_two_processes_equal_one_process(tmp_path):
    out = tmp_path / "ddp"
    done = launch_ranks(__file__, str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    model, scale, history = train(tmp_path / "single")
    ranks = [json.loads((out / f"history_rank{r}.json").read_text()) for r in range(2)]
    for epochs in ranks:
        for epoch in epochs["epochs"]:
            epoch.pop("seconds")
    # every rank returns the same history: its numbers are all-reduced, so every rank holds the
    # same bits
    assert ranks[0] == ranks[1]
    two = ranks[0]["epochs"]
    one = history.to_dict()["epochs"]
    for a, b in zip(one, two):
        # rates of argmax counts: exact, since on these blobs every top-1/top-2 logit margin is
        # far wider than the float rounding that separates the two runs' weights
        assert (a["val_error"], a["val_nfr"], a["val_pfr"]) == (b["val_error"], b["val_nfr"],
                                                                b["val_pfr"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["terms"] == pytest.approx(b["terms"], rel=1e-5)
    weights = torch.load(out / "weights.pt", weights_only=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(weights["model"][name], value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights["scale"], scale.scale.detach(), rtol=1e-5, atol=1e-6)
    assert scale.scale.item() != 1.0
    # rank 0 wrote every epoch's checkpoint, nobody left a temporary file
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == [
        f"epoch_{e:04d}.pt" for e in range(1, EPOCHS + 1)]
    state = load_checkpoint(latest_checkpoint(out / "ckpt"))
    torch.testing.assert_close(state["model"], weights["model"])


if __name__ == "__main__":
    torch.set_num_threads(1)
    target = Path(sys.argv[1])
    model, scale, history = train(target / "ckpt")
    rank = int(os.environ["RANK"])
    target.mkdir(parents=True, exist_ok=True)
    (target / f"history_rank{rank}.json").write_text(json.dumps(history.to_dict()))
    if rank == 0:
        torch.save({"model": model.state_dict(), "scale": scale.scale.detach()},
                   target / "weights.pt")


def test_launch_ranks_relaunches_only_after_a_teardown_abort(monkeypatch):
    import subprocess

    import conftest

    results = iter([
        subprocess.CompletedProcess([], -6, "", "terminate called without an active exception"),
        subprocess.CompletedProcess([], 0, "second launch", ""),
        subprocess.CompletedProcess([], 1, "", "AssertionError: weights differ"),
        subprocess.CompletedProcess([], 0, "never reached", ""),
    ])
    calls = []
    monkeypatch.setattr(conftest, "launch_local",
                        lambda *args, **kwargs: calls.append(args) or next(results))
    assert conftest.launch_ranks("script.py", "out").stdout == "second launch"
    assert len(calls) == 2
    failed = conftest.launch_ranks("script.py", "out")  # a real failure is not retried
    assert failed.returncode == 1 and len(calls) == 3
