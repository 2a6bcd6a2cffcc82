"""torch.distributed for the command line: one process per device under torchrun, or a single process.

`setup(device)` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK; MASTER_ADDR and
MASTER_PORT for the rendezvous, so a multi-node run is the same command with torchrun's `--nnodes`,
`--node_rank` and `--rdzv_*` options) and joins the process group: NCCL when the processes run on
CUDA devices (rank r on `cuda:LOCAL_RANK`), gloo on CPUs. Without torchrun it is a world of one.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from torch import nn

from zoomin_lib.cli.settings import pick_device

__all__ = ["World", "setup", "shard", "wrap"]


@dataclass
class World:
    """This process's place: rank, world size, its device, and whether a process group was started."""

    rank: int
    size: int
    device: torch.device
    started: bool = False

    def barrier(self) -> None:
        """Wait for every rank (nothing to do in a world of one)."""
        if self.started:
            dist.barrier()

    def all_sum(self, value: float) -> float:
        """The sum of `value` over the ranks."""
        if not self.started:
            return value
        t = torch.tensor([float(value)], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return float(t.item())

    def close(self) -> None:
        """Leave the process group."""
        if self.started and dist.is_initialized():
            dist.destroy_process_group()
            self.started = False

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (for reports)."""
        return {"rank": self.rank, "world_size": self.size, "device": str(self.device),
                "backend": dist.get_backend() if self.started else None}


def setup(device: str | None = None) -> World:
    """Join torchrun's process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU); else a world of one on `device`."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(0, 1, pick_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local)
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return World(rank, size, chosen, started=True)


def shard(n: int, rank: int, size: int) -> list[int]:
    """Rank `rank`'s indices of n items, every rank the same count: [rank::size] of 0..n-1, padded from the start.

    Training needs equal shares (a rank with one more batch would wait for the others in all-reduce),
    as torch's DistributedSampler pads; n < size repeats items.
    """
    if n < 1:
        raise ValueError("nothing to shard: no items")
    per = -(-n // size)
    padded = [i % n for i in range(per * size)]
    return padded[rank::size]


def wrap(model: nn.Module, world: World) -> nn.Module:
    """`model` itself in a world of one, else in DistributedDataParallel (rank 0's parameters broadcast to all).

    The gradients of each backward are averaged over the ranks: with equal per-rank batches that is
    the gradient of the loss averaged over the combined batch.
    """
    if not world.started:
        return model
    model.to(world.device)
    ids = [world.device.index] if world.device.type == "cuda" else None
    # broadcast_buffers=False: a broadcast in every forward would hang when ranks run different numbers of
    # forwards (the contrastive pass runs for tumour slides only); the buffers (training statistics) never change
    ddp = nn.parallel.DistributedDataParallel
    quiet = "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters  # newer torch renames the option
    return ddp(model, device_ids=ids, **({"forward_sync_buffers": False} if quiet else {"broadcast_buffers": False}))
