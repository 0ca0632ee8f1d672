"""BCT through the shared trainer under torchrun (2 CPU processes) equals one process.

Run as a script by torchrun (``python -m torch.distributed.run --nproc_per_node 2 THIS OUT``):
each rank trains v2 with the BCT term (learned projection) and the L2 term, and writes its
history and what it saw of the frozen old head; rank 0 also writes the weights.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import blobs, launch_ranks, mlp  # tests/ is on sys.path, also under torchrun
from torch import nn

from regfree.compat import BackwardCompatibleLoss, EmbeddingRegressionLoss
from regfree.training import fit

# 45 samples in global batches of 8: the last batch (5 samples) splits 3/2 across the ranks
N_TRAIN, BATCH, EPOCHS = 45, 8, 3


def old_model_and_data():
    x, y = blobs(N_TRAIN, seed=1)
    v1 = mlp(0, hidden=8, embedding_dim=4, return_embeddings=True)
    return v1, x, y


def train():
    v1, x, y = old_model_and_data()
    # an embedding cache indexed by dataset position (5-d, the size of v2's native embedding)
    cache = np.random.default_rng(2).normal(size=(N_TRAIN, 5)).astype(np.float32)
    v2 = mlp(1, embedding_dim=5, return_embeddings=True)
    bct = BackwardCompatibleLoss(v1.head, weight=0.5, projection=nn.Linear(5, 4))
    start = bct.projection.weight.detach().clone()
    l2 = EmbeddingRegressionLoss(cache, weight=0.1)
    history = fit(v2, (x, y), loss_terms=[bct, l2], epochs=EPOCHS, batch_size=BATCH,
                  optimizer=lambda p: torch.optim.Adam(p, lr=2e-2), seed=5, progress=False)
    assert not torch.equal(bct.projection.weight.detach(), start)  # the trainer optimised it
    return v1, v2, bct, history


def test_bct_under_two_processes_equals_one_process(tmp_path):
    out = tmp_path / "ddp"
    done = launch_ranks(__file__, str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    v1, v2, bct, history = train()
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for rank in ranks:
        assert rank["old_head_unchanged"] and rank["old_head_grads"] == [None, None]
        for epoch in rank["history"]["epochs"]:
            epoch.pop("seconds")
    assert ranks[0]["history"] == ranks[1]["history"]  # all-reduced: the same bits on every rank
    for one, two in zip(history.to_dict()["epochs"], ranks[0]["history"]["epochs"]):
        assert one["train_loss"] == pytest.approx(two["train_loss"], rel=1e-5)
        assert one["terms"] == pytest.approx(two["terms"], rel=1e-5)
    weights = torch.load(out / "weights.pt", weights_only=True)
    for name, value in v2.state_dict().items():
        torch.testing.assert_close(weights["model"][name], value, rtol=1e-5, atol=1e-6)
    for name, value in bct.projection.state_dict().items():
        torch.testing.assert_close(weights["projection"][name], value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights["old_head"], v1.head.state_dict(), rtol=0, atol=0)


if __name__ == "__main__":
    torch.set_num_threads(1)
    target = Path(sys.argv[1])
    v1, v2, bct, history = train()
    rank = int(os.environ["RANK"])
    unchanged = all(torch.equal(a, b) for a, b in zip(bct.old_head.state_dict().values(),
                                                      v1.head.state_dict().values()))
    report = {"history": history.to_dict(), "old_head_unchanged": unchanged,
              "old_head_grads": [None if p.grad is None else p.grad.tolist()
                                 for p in bct.old_head.parameters()]}
    target.mkdir(parents=True, exist_ok=True)
    (target / f"rank{rank}.json").write_text(json.dumps(report))
    if rank == 0:
        torch.save({"model": v2.state_dict(), "projection": bct.projection.state_dict(),
                    "old_head": bct.old_head.state_dict()}, target / "weights.pt")
