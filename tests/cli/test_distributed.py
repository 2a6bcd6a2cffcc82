"""DistributedDataParallel as `zoomin train` uses it: two gloo processes on the CPU take the same step as one process
on the combined batch; slides are sharded in equal shares; torchrun runs `zoomin train` and `zoomin predict`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from zoomin_lib import builders
from zoomin_lib.cli.distributed import World, shard, wrap

ROOT = Path(__file__).resolve().parents[2]


def small_net() -> torch.nn.Module:
    """A small Zoom-In network on 64 x 64 images, always with the same initial weights."""
    torch.manual_seed(0)
    return builders.zoomin(in_channels=3, n_classes=2, scale1=0.25, scale2=0.5, tile_size=32, patch_size=8, n_patches=4)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Four images [4, 3, 64, 64] and their labels [4]."""
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 3, 64, 64, generator=g), torch.tensor([0, 1, 1, 0])


def one_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """One SGD step on the cross-entropy of the deterministic top-k prediction.

    (Adam's first step is lr * sign(gradient) for every entry, which turns float rounding in a gradient
    near zero into a full step: SGD shows the gradients themselves.)
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = F.cross_entropy(model(x, mode="topk").logits, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def worker(rank: int, size: int, init: str, out: str) -> None:
    """One rank: DDP (gloo) over its share of the batch, one step; rank 0 saves the parameters."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    try:
        model = wrap(small_net(), World(rank, size, torch.device("cpu"), started=True))
        x, y = batch()
        mine = shard(len(y), rank, size)
        one_step(model, x[mine], y[mine])
        if rank == 0:
            torch.save(model.module.state_dict(), out)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_take_the_step_of_one_process_on_the_combined_batch(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=2, join=True)
    single = small_net()
    one_step(single, *batch())
    ddp = torch.load(out, weights_only=True)
    start = small_net().state_dict()
    moved = 0
    for key, value in single.state_dict().items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-4, atol=1e-5, msg=key)
        moved += int(not torch.equal(value, start[key]))
    assert moved > 0  # the step changed the parameters


def test_shards_are_equal_and_cover_every_item():
    parts = [shard(5, r, 2) for r in range(2)]
    assert parts == [[0, 2, 4], [1, 3, 0]]
    assert sorted(set(parts[0] + parts[1])) == [0, 1, 2, 3, 4]
    assert shard(1, 1, 3) == [0]
    with pytest.raises(ValueError):
        shard(0, 0, 2)


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_trains_and_predicts_on_two_cpu_ranks(tmp_path):
    from data_prep.synthetic_slides import generate

    # rank 1 gets the only tumour slide: its extra contrastive forward must not desynchronise the ranks
    data = generate(tmp_path / "tiny", n_train_normal=3, n_train_tumor=1, n_test_normal=1, n_test_tumor=1, side=1024,
                    tile=256, metastases=(1, 2), metastasis_radius=(8.0, 16.0), spacing=200.0)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    train = subprocess.run([*run, str(free_port()), "-m", "zoomin_lib", "train", "--data-dir", str(data), "--out",
                            str(tmp_path / "run"), "--device", "cpu", "--no-progress"],
                           env=env, capture_output=True, text=True, timeout=240)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["settings"]["world_size"] == 2 and ckpt["epoch"] == 1
    pred = subprocess.run([*run, str(free_port()), "-m", "zoomin_lib", "predict", "--checkpoint",
                           str(tmp_path / "run" / "checkpoint.pt"), "--out", str(tmp_path / "pred"), "--device", "cpu",
                           str(data / "testing"), str(data / "training")],
                          env=env, capture_output=True, text=True, timeout=240)
    assert pred.returncode == 0, pred.stdout[-3000:] + pred.stderr[-3000:]
    report = json.loads((tmp_path / "pred" / "report.json").read_text())
    assert report["counts"]["ok"] == 6 and report["world"]["world_size"] == 2
    assert {s["rank"] for s in report["slides"]} == {0, 1}
