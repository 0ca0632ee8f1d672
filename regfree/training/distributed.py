"""Process-group handling for :func:`regfree.training.fit` under ``torchrun``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist


@dataclass
class ProcessContext:
    """Who this process is and whether :func:`fit` owns the process group."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes (float64)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every process, in rank order."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            # Every rank finishes its collectives before any rank tears its connections down: a
            # gloo peer that closes its sockets while the other still reads can abort it
            # ("terminate called without an active exception").
            self.barrier()
            dist.destroy_process_group()


def setup_process(device: str | torch.device) -> ProcessContext:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Uses an already initialised group as it is; otherwise initialises one (gloo for CPU, nccl for
    CUDA) when ``WORLD_SIZE > 1``. Under several processes a CUDA device becomes
    ``cuda:LOCAL_RANK``.
    """
    device = torch.device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    owns = False
    if dist.is_available() and not dist.is_initialized() and world_size > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    else:
        rank, world_size = 0, 1
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count()))))
        torch.cuda.set_device(device)
    return ProcessContext(rank, world_size, device, owns)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a local rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_local(script: str | os.PathLike, *args: str, nproc_per_node: int = 2,
                 timeout: Optional[float] = 600, threads_per_process: int = 1
                 ) -> subprocess.CompletedProcess:
    """Run ``script`` under ``torchrun --nproc_per_node N`` on this machine and wait for it.

    Uses this interpreter (``python -m torch.distributed.run``), a free local port and
    ``OMP_NUM_THREADS=threads_per_process``; stdout and stderr are captured as text.

    Args:
        script: the Python file each process runs (it calls :func:`regfree.training.fit`).
        *args: command-line arguments passed to the script.
        nproc_per_node: number of processes.
        timeout: seconds before the launch is killed (``subprocess.TimeoutExpired``).
        threads_per_process: torch/OpenMP threads of each process.

    Returns:
        The finished process (check ``returncode``).

    Example (not run here: it starts processes):
        >>> done = launch_local("train.py", "--epochs", "3")  # doctest: +SKIP
        >>> done.returncode  # doctest: +SKIP
        0
    """
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be >= 1, got {nproc_per_node}")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_process)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", str(nproc_per_node), "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
