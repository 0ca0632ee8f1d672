"""fit under torchrun with a user's DataLoader split by a DistributedSampler equals fit in one
process over the same global batches, and validation through a sharded loader is gathered back
into dataset order.

Run as a script by torchrun (``python -m torch.distributed.run --nproc_per_node 2 THIS OUT``):
each rank trains and writes its history and weights.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import blobs, launch_ranks, mlp  # tests/ is on sys.path, also under torchrun
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from regfree.training import fit

# 40 training samples: each of 2 processes holds 20, in local batches of 4 (global batches of
# 8); 23 validation samples, which a 2-way DistributedSampler pads to 24 with one repeat.
N_TRAIN, N_VAL, LOCAL_BATCH, EPOCHS = 40, 23, 4, 3


def train(num_replicas, rank):
    x, y = blobs(N_TRAIN + N_VAL, seed=1)
    train_set = TensorDataset(torch.from_numpy(x[:N_TRAIN]), torch.from_numpy(y[:N_TRAIN]))
    val_set = TensorDataset(torch.from_numpy(x[N_TRAIN:]), torch.from_numpy(y[N_TRAIN:]))
    sampler = DistributedSampler(train_set, num_replicas=num_replicas, rank=rank, shuffle=True,
                                 seed=7)
    # one process reads global batches of 8 from the same permutation as the two together
    loader = DataLoader(train_set, batch_size=LOCAL_BATCH * (2 // num_replicas), sampler=sampler)
    val_loader = DataLoader(val_set, batch_size=5, sampler=DistributedSampler(
        val_set, num_replicas=num_replicas, rank=rank, shuffle=True, seed=2))
    v1 = mlp(5, hidden=4)
    old_val_preds = v1(val_set.tensors[0]).argmax(1).numpy()
    model = mlp(1)
    history = fit(model, loader, epochs=EPOCHS, optimizer=lambda p: torch.optim.Adam(p, lr=2e-2),
                  val_data=val_loader, old_val_preds=old_val_preds, progress=False)
    assert sampler.epoch == EPOCHS - 1  # fit moved the sampler on each epoch
    return model, history


def test_two_processes_with_a_distributed_sampler_equal_one_process(tmp_path):
    out = tmp_path / "ddp"
    done = launch_ranks(__file__, str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    model, history = train(num_replicas=1, rank=0)
    ranks = [json.loads((out / f"history_rank{r}.json").read_text()) for r in range(2)]
    for epochs in ranks:
        for epoch in epochs["epochs"]:
            epoch.pop("seconds")
    assert ranks[0] == ranks[1]  # every rank returns the same, all-reduced history
    for one, two in zip(history.to_dict()["epochs"], ranks[0]["epochs"]):
        # argmax counts of nearly equal weights on well-separated blobs: allow one sample
        np.testing.assert_allclose([two["val_error"], two["val_nfr"], two["val_pfr"]],
                                   [one["val_error"], one["val_nfr"], one["val_pfr"]],
                                   atol=1.01 / N_VAL)
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    assert 0 < history.val_pfr[-1] < 1  # v1 differs from v2: the flips had to be lined up
    weights = torch.load(out / "weights.pt", weights_only=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    torch.set_num_threads(1)
    target = Path(sys.argv[1])
    rank = int(os.environ["RANK"])
    model, history = train(num_replicas=int(os.environ["WORLD_SIZE"]), rank=rank)
    target.mkdir(parents=True, exist_ok=True)
    (target / f"history_rank{rank}.json").write_text(json.dumps(history.to_dict()))
    if rank == 0:
        torch.save(model.state_dict(), target / "weights.pt")
