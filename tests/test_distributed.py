"""DistributedDataParallel on CPU (gloo, 2 processes) gives the same parameters as one process."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from febm.nets import ResNetEnergy
from febm.objectives import Objective
from training.step import febm_step

REPO = Path(__file__).resolve().parents[1]
STEPS, BATCH = 3, 8


def _nets():
    torch.manual_seed(0)
    net = dict(in_channels=1, width=4, stages=2, spectral_norm=False)
    return ResNetEnergy(**net).double(), ResNetEnergy(**net).double()


def _batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(BATCH, 1, 6, 6, generator=g, dtype=torch.float64),
             torch.rand(BATCH, 1, 6, 6, generator=g, dtype=torch.float64)) for _ in range(STEPS)]


def _train(energy, critic, rank=0, world=1):
    objective = Objective("js", l2=0.1)
    opt_e = torch.optim.Adam(energy.parameters(), lr=1e-2, betas=(0.0, 0.999))
    opt_h = torch.optim.Adam(critic.parameters(), lr=1e-2, betas=(0.0, 0.999))
    half = BATCH // world
    for x_pos, x_neg in _batches():
        sl = slice(rank * half, (rank + 1) * half)
        febm_step(energy, critic, objective, x_pos[sl], x_neg[sl], opt_e, opt_h)


def _worker(rank, world, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from torch.nn.parallel import DistributedDataParallel as DDP

    energy, critic = _nets()
    _train(DDP(energy), DDP(critic), rank, world)
    if rank == 0:
        torch.save({"energy": energy.state_dict(), "critic": critic.state_dict()}, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_on_the_global_batch(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    energy, critic = _nets()
    _train(energy, critic)
    ddp = torch.load(out)  # our own file, written above
    for name, state in (("energy", energy.state_dict()), ("critic", critic.state_dict())):
        for k, v in state.items():
            torch.testing.assert_close(ddp[name][k], v, rtol=1e-9, atol=1e-11, msg=f"{name}.{k}")


@pytest.mark.slow
def test_torchrun_trains_and_rank0_writes(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    for i in range(16):
        Image.new("L", (10, 10), color=10 * i).save(folder / f"{i}.png")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free loopback port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
           f"--master-port={port}",
           "-m", "training.run", "--preset", "tiny", "--dataset", f"folder:{folder}", "--run-dir", str(run),
           "--max-steps", "2", "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from febm.model import load_model

    model = load_model(run / "model")
    assert model.config["training"]["processes"] == 2
    assert len((run / "stats.jsonl").read_text().splitlines()) == 2
