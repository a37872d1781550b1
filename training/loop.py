"""Algorithm 1 on images: the training loop, its run folder, checkpoints, resume, stability guard, DDP.

A run folder holds everything a run writes:

    options.json       the TrainConfig (resume reads it back)
    stats.jsonl        one JSON line every ``log_every`` steps (+ events such as roll-backs)
    samples/*.png      replay-buffer grids every ``sample_every`` steps
    state.safetensors  the full training state (atomic; see training/checkpoint.py)
    model/             the exported model (EMA energy + critic), a Hub-style folder

The same code runs under ``python`` and under ``torchrun``: each rank samples its own negatives with its
own replay buffer on the unwrapped networks; DistributedDataParallel averages parameter gradients; rank 0
writes.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import platform
import socket
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from febm.model import EBM
from febm.objectives import NO_CRITIC, REGRESSIONS, Objective, score_matching_loss, unrolled_loss
from febm.posterior import gradient_step, posterior_mean
from febm.sampling import LangevinSampler, ReplayBuffer, corrupted_data_start, mixed_start, uniform_start
from training import data as datasets
from training import photos, posterior
from training.checkpoint import all_finite, load_state, save_state
from training.step import febm_step

STATE_FILE = "state.safetensors"
WARM_START_FILE = "warm_start.json"  # where a --warm-start run's weights came from
VAL_CROP, VAL_CROPS = 96, 16  # photo runs: the fixed validation crops scored at every checkpoint


@dataclass
class TrainConfig:
    """Every hyper-parameter of a run; ``python -m training.run --help`` documents them."""

    div: str = "js"
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    run_dir: str | None = None
    # networks (febm.nets: "resnet" = ResNetEnergy, "conv" = the small ConvEnergy, where stages = downsamples);
    # the critic defaults to the energy's architecture
    arch: str = "resnet"
    width: int = 32
    stages: int = 3
    blocks_per_stage: int = 1
    activation: str = "silu"
    spectral_norm: bool = True
    first_stride: int = 1
    critic_width: int | None = None
    net: str | None = None  # JSON network spec {"kind": ..., ...}: replaces arch/width/stages (in_channels is set)
    # optimisation (authors: Adam 3e-4, betas (0, 0.999), L2 on outputs 1.0)
    batch_size: int = 64
    lr: float = 3e-4
    critic_lr: float | None = None
    beta1: float = 0.0
    beta2: float = 0.999
    l2: float = 1.0
    max_grad_norm: float | None = None
    map_l2: float = 0.0  # fully convolutional networks: weight of the summed squared per-position outputs
    free_offset: bool = False  # leave the energy's additive constant to the critic (training.step.febm_step)
    ema: float = 0.999
    dequantize: bool = True
    instance_noise: float = 0.0  # std of Gaussian noise added to positives and negatives where E and H see them
    crop_size: int | None = None  # photo sources: train on random square crops of this side
    # training sampler (authors: 60 steps, step 10, noise 0.005, clip 0.01, buffer 10k, 5% restarts)
    sampler: str = "authors"
    langevin_steps: int = 60
    step_size: float = 10.0
    noise: float = 0.005
    grad_clip: float | None = 0.01
    buffer_size: int = 10000
    restart_prob: float = 0.05
    start: str = "uniform"  # where chains start (buffer fill, restarts, generation): uniform | pca | pca-mixture
    start_components: int = 32  # principal components of the "pca" start (of each cluster for "pca-mixture")
    start_clusters: int = 32  # clusters of the "pca-mixture" start
    restart_residual: float = 1.0  # Gaussian starts: scale of their residual per-pixel noise in training restarts
    data_restarts: float = 0.0  # fraction of restarts from corrupted training images (noise or holes)
    data_restart_sigma: float = 0.5  # their largest noise std
    # photo noise (score matching, posterior training): levels log-uniform in 0-255 levels, some crops grey
    sigma_min_255: float = 1.0
    sigma_max_255: float = 60.0
    grey_fraction: float = 0.25
    # photo f-EBMs on the posterior they restore with (training/posterior.py): chains per observation, ULA steps,
    # step = step_fraction * sigma^2
    posterior: bool = False
    posterior_chains: int = 2
    posterior_steps: int = 5
    step_fraction: float = 0.2
    prior_fraction: float = 0.5  # the prior's noise level in q(x | y), a fraction of the observation's
    frozen_start: bool = False  # posterior chains start from the warm start's gradient step, never trained
    dsm_weight: float = 0.0  # posterior training: weight of score matching added to the energy's loss
    unroll_steps: int = 1  # --div unrolled: noise-free posterior steps after the gradient step, trained through
    # sampler defaults stored in the model for generation (chains from noise need more steps)
    sample_steps: int = 200
    # length and bookkeeping
    max_steps: int = 1000
    time_budget: float | None = None  # minutes for this invocation
    seed: int = 0
    device: str = "auto"
    channels_last: bool = True  # NHWC convolutions: about 1.3x faster Langevin steps on CPU
    bf16: bool | None = None  # default: on for CUDA
    compile: bool = False
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 200
    snapshot_every: int | None = None  # also export the model folder to snapshots/step_NNNNNN every so many steps
    warm_start: str | None = None  # a trained model folder to continue from (fresh optimiser and replay buffer)
    push_to_hub: str | None = None
    # stability guard
    energy_limit: float = 1e4  # per position for crops of photos
    max_rollbacks: int = 5
    rollback_lr_factor: float = 0.5
    inject_nan_at: int | None = None  # tests only: poison the energy at this step
    command: str = ""
    preset: str | None = None

    def sampler_settings(self) -> LangevinSampler:
        return LangevinSampler(self.sampler, self.langevin_steps, self.step_size, self.noise, self.grad_clip, (0.0, 1.0))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# --- set-up -----------------------------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world_size, device) — torchrun sets WORLD_SIZE; plain python is a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    rank, local = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    return rank, world, device


def build_model(cfg: TrainConfig, info: dict) -> EBM:
    common = {"in_channels": info["channels"], "width": cfg.width, "activation": cfg.activation,
              "spectral_norm": cfg.spectral_norm}
    if cfg.net:
        net = {**json.loads(cfg.net), "in_channels": info["channels"]}
    elif cfg.arch == "conv":
        net = {"kind": "conv", **common, "downsamples": cfg.stages}
    elif cfg.arch == "resnet":
        net = {"kind": "resnet", **common, "stages": cfg.stages, "blocks_per_stage": cfg.blocks_per_stage,
               "first_stride": cfg.first_stride}
    else:
        raise ValueError(f"unknown --arch {cfg.arch!r}; choose resnet or conv")
    critic = None if cfg.div in NO_CRITIC else {**net, "width": cfg.critic_width or net.get("width", cfg.width)}
    extra = {}
    if cfg.posterior:  # the critic sees the observation too: x and y stacked
        critic = critic and {**critic, "in_channels": 2 * info["channels"]}
        extra["posterior"] = {"chains": cfg.posterior_chains, "steps": cfg.posterior_steps,
                              "step_fraction": cfg.step_fraction, "prior_fraction": cfg.prior_fraction}
    size = info["image_size"]
    sampler = {**cfg.sampler_settings().to_dict(), "steps": cfg.sample_steps}
    if cfg.restart_residual != 1.0:  # generate from the starts trained against
        sampler["start_residual"] = cfg.restart_residual
    start = {"kind": cfg.start}
    if cfg.start in ("pca", "pca-mixture"):
        start["components"] = cfg.start_components
    if cfg.start == "pca-mixture":
        start["clusters"] = cfg.start_clusters
    if cfg.crop_size:  # a fully convolutional model: any image size; record what it was trained on
        return EBM(cfg.div, net, critic, dataset=cfg.dataset, image_channels=info["channels"],
                   crop_size=cfg.crop_size, data_range=[0.0, 1.0], sampler=sampler, start=start, **extra)
    return EBM(cfg.div, net, critic, dataset=cfg.dataset, image_shape=[info["channels"], size, size],
               data_range=[0.0, 1.0], sampler=sampler, start=start)


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.dataset.replace(':', '_').replace('/', '_')}-{cfg.div.replace(':', '')}-{stamp}"


# --- the trainer ------------------------------------------------------------------------------------------
class Trainer:
    """Holds the run's state; ``state_dict`` is exactly what a resume needs."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, *, progress: bool = True):
        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress
        self.device = pick_device(cfg.device)
        self.rank, self.world, self.device = init_distributed(self.device)
        self.bf16 = cfg.bf16 if cfg.bf16 is not None else self.device.type == "cuda"
        if cfg.batch_size % self.world:
            raise ValueError(f"batch size {cfg.batch_size} is not divisible by {self.world} processes")
        self.local_batch = cfg.batch_size // self.world
        torch.manual_seed(cfg.seed + self.rank)

        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.rank)
        self.noise_gen = torch.Generator(self.device).manual_seed(cfg.seed * 1000 + self.rank + 2)  # Langevin noise
        data_gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.rank + 1)
        if cfg.crop_size:  # photos: random crops, chains restart from noisy crops (training/photos.py)
            self.data = None
            train_photos = photos.load_photos(cfg.dataset, "train")
            shape = (train_photos.channels, cfg.crop_size, cfg.crop_size)
            self.model = build_model(cfg, {"channels": shape[0], "image_size": cfg.crop_size})
            self.batches = photos.PhotoCrops(train_photos, cfg.crop_size, self.local_batch, data_gen)
            start = uniform_start(shape)
            if cfg.data_restarts > 0:
                noisy = photos.noisy_crop_start(train_photos, cfg.crop_size, cfg.data_restart_sigma)
                start = mixed_start(start, noisy, cfg.data_restarts)
        else:
            info = datasets.dataset_info(cfg.dataset)
            self.data = datasets.load_dataset(cfg.dataset, "train", cfg.data_root).images
            info = {**info, "channels": self.data.shape[1], "image_size": self.data.shape[-1]}
            shape = tuple(self.data.shape[1:])
            self.model = build_model(cfg, info)
            if self.model.start is not None:  # fitted on the training split, the same on every rank
                self.model.start.fit(datasets.to_float(self.data))
            self.batches = datasets.batches(self.data, self.local_batch, data_gen)
            # each rank: its own data order, Langevin noise and buffer (seeded by rank)
            start = uniform_start(shape)
            if self.model.start is not None:
                start = functools.partial(copy.deepcopy(self.model.start).sample, residual_scale=cfg.restart_residual)
            if cfg.data_restarts > 0:
                corrupted = corrupted_data_start(self.data, start, cfg.data_restart_sigma)
                start = mixed_start(start, corrupted, cfg.data_restarts)
        self.model.to(self.device)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.ema = copy.deepcopy(self.model.energy).requires_grad_(False)
        self.start_energy = None  # --frozen-start: set by freeze_start
        self.objective = Objective(cfg.div, l2=cfg.l2)
        self.sampler = cfg.sampler_settings()
        betas = (cfg.beta1, cfg.beta2)
        self.opt_energy = torch.optim.Adam(self.model.energy.parameters(), lr=cfg.lr, betas=betas)
        self.opt_critic = None
        if self.model.critic is not None:
            self.opt_critic = torch.optim.Adam(self.model.critic.parameters(), lr=cfg.critic_lr or cfg.lr, betas=betas)
        self.buffer = ReplayBuffer(cfg.buffer_size, shape, cfg.restart_prob, generator=self.gen, start=start)
        self.step, self.lr_scale, self.rollbacks, self.elapsed = 0, 1.0, 0, 0.0
        self._val_crops = None

        energy, critic = self.model.energy, self.model.critic
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            energy = DDP(energy, device_ids=ids)
            critic = DDP(critic, device_ids=ids) if critic is not None else None
        if cfg.compile:
            energy = torch.compile(energy)
            critic = torch.compile(critic) if critic is not None else None
        self.train_energy, self.train_critic = energy, critic

    # --- state ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self.step, "lr_scale": self.lr_scale, "rollbacks": self.rollbacks, "elapsed": self.elapsed,
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "opt_energy": self.opt_energy.state_dict(),
            "opt_critic": self.opt_critic.state_dict() if self.opt_critic is not None else None,
            "buffer": self.buffer.state_dict(), "batches": self.batches.state_dict(),
            "gen": self.gen.get_state(), "noise_gen": self.noise_gen.get_state(), "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, s: dict) -> None:
        self.step, self.lr_scale, self.rollbacks, self.elapsed = s["step"], s["lr_scale"], s["rollbacks"], s["elapsed"]
        self.model.load_state_dict(s["model"])
        self.ema.load_state_dict(s["ema"])
        self.opt_energy.load_state_dict(s["opt_energy"])
        if self.opt_critic is not None:
            self.opt_critic.load_state_dict(s["opt_critic"])
        self.buffer.load_state_dict(s["buffer"])
        self.batches.load_state_dict(s["batches"])
        self.gen.set_state(s["gen"])
        self.noise_gen.set_state(s["noise_gen"].to("cpu"))
        torch.set_rng_state(s["torch_rng"])
        self._apply_lr()

    def warm_start(self, folder: str) -> dict:
        """Continue from a trained model folder: its energy (the EMA weights, which become both the training and
        the EMA energy), critic, step count and training time, and its start distribution unless this run asks
        for another. The optimiser moments and the replay buffer start fresh: a model folder does not hold them
        (``--resume`` continues a run exactly). Returns where the weights came from (its training command and
        its own origin), which every model folder of this run records."""
        from febm.model import load_model

        source = load_model(folder, device="cpu")
        fresh_critic = source.critic is None and self.model.critic is not None  # e.g. from a score-matching energy
        if source.config.get("energy") != self.model.config.get("energy") or \
                (source.config.get("critic") != self.model.config.get("critic") and not fresh_critic):
            raise ValueError(f"--warm-start {folder}: its networks differ from this run's "
                             f"(energy {source.config.get('energy')}, critic {source.config.get('critic')})")
        weights = source.state_dict()
        if fresh_critic:  # the energy from the source, this run's newly initialised critic
            weights.update({f"critic.{k}": v for k, v in self.model.critic.state_dict().items()})
        if source.config.get("start") != self.model.config.get("start"):  # keep this run's own, fitted start
            weights = {k: v for k, v in weights.items() if not k.startswith("start.")}
            weights.update({f"start.{k}": v for k, v in self.model.start.state_dict().items()}
                           if self.model.start is not None else {})
        self.model.load_state_dict(weights)
        self.ema.load_state_dict(source.energy.state_dict())
        record = source.config.get("training", {})
        self.step = int(record.get("steps", 0))
        self.elapsed = 60.0 * float(record.get("wall_time_minutes", 0.0))
        return {"model": str(folder), "divergence": source.config.get("divergence"),
                **{k: record[k] for k in ("command", "steps", "wall_time_minutes", "warm_started_from") if k in record}}

    def freeze_start(self, folder: str) -> None:
        """``--frozen-start``: a copy of the warm start's energy, never trained, takes the gradient step that
        starts the posterior chains (one network is then no longer both the start at level s and the prior at
        level s / rho; issue 29's collapse test). A resumed run reloads it from the same folder."""
        from febm.model import load_model

        self.start_energy = load_model(folder, device=self.device).energy.eval().requires_grad_(False)

    def _apply_lr(self) -> None:
        for opt, base in ((self.opt_energy, self.cfg.lr), (self.opt_critic, self.cfg.critic_lr or self.cfg.lr)):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = base * self.lr_scale

    def save_checkpoint(self) -> None:
        """Atomic, rank 0 only, and never a non-finite state."""
        if self.rank != 0:
            return
        state = self.state_dict()
        if not all_finite(state["model"]) or not all_finite(state["ema"]):
            raise RuntimeError("refusing to write a non-finite checkpoint")
        save_state(self.run_dir / STATE_FILE, state)

    # --- one iteration ----------------------------------------------------------------------------------
    def train_step(self) -> dict:
        if self.objective.name in REGRESSIONS:
            return self.score_matching_step()
        if self.cfg.posterior:
            return self.posterior_step()
        cfg, dev = self.cfg, self.device
        x_pos = next(self.batches).to(dev, memory_format=self.memory_format)
        x_pos = datasets.dequantize(x_pos, self.gen) if cfg.dequantize else datasets.to_float(x_pos)
        x_init, idx = self.buffer.sample(self.local_batch, self.gen)
        self.model.energy.eval()  # spectral norm: no power iterations inside the chain
        x_init = x_init.to(dev, memory_format=self.memory_format)
        out = self.sampler.run(self.model.energy, x_init, generator=self.noise_gen)
        self.model.energy.train()
        self.buffer.update(idx, out.x)
        x_neg = out.x
        if cfg.instance_noise > 0:  # both sides blurred alike: fine texture no longer tells data from chains
            x_pos, x_neg = (x + cfg.instance_noise * torch.randn(x.shape, generator=self.gen).to(dev)
                            for x in (x_pos, x_neg))  # drawn on the CPU generator: the same on any device
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            stats = febm_step(self.train_energy, self.train_critic, self.objective, x_pos, x_neg,
                              self.opt_energy, self.opt_critic, max_grad_norm=cfg.max_grad_norm,
                              map_l2=cfg.map_l2, free_offset=cfg.free_offset)
        if cfg.inject_nan_at is not None and self.step + 1 == cfg.inject_nan_at and self.rollbacks == 0:
            with torch.no_grad():
                next(self.model.energy.parameters()).fill_(float("nan"))
        self._update_ema()
        stats["langevin_grad_norm"] = out.grad_norm
        return stats

    def noisy_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Photo crops (clean, noisy, sigma) on the device: noise levels from the run's ladder, some crops grey."""
        cfg, dev = self.cfg, self.device
        batch = next(self.batches)
        clean = datasets.dequantize(batch, self.gen) if cfg.dequantize else datasets.to_float(batch)
        sigma = photos.noise_levels(len(clean), cfg.sigma_min_255 / 255, cfg.sigma_max_255 / 255, self.gen)
        clean, noisy = photos.noisy_observations(clean, sigma, cfg.grey_fraction, self.gen)
        return (*(t.to(dev, memory_format=self.memory_format) for t in (clean, noisy)), sigma.to(dev))

    def posterior_step(self) -> dict:
        """One iteration of f-EBM (or CD) between q(x | y) and p(x | y) (training/posterior.py)."""
        cfg = self.cfg
        clean, noisy, sigma = self.noisy_batch()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            stats = posterior.posterior_step(
                self.train_energy, self.train_critic, self.model.energy, self.objective, clean, noisy, sigma,
                self.opt_energy, self.opt_critic, chains=cfg.posterior_chains, steps=cfg.posterior_steps,
                step_fraction=cfg.step_fraction, prior_fraction=cfg.prior_fraction, generator=self.noise_gen,
                max_grad_norm=cfg.max_grad_norm, free_offset=cfg.free_offset, map_l2=cfg.map_l2,
                start_energy=self.start_energy, dsm_weight=cfg.dsm_weight)
        self._update_ema()
        return stats

    def score_matching_step(self) -> dict:
        """One Adam step of denoising score matching on a batch of noisy crops (no chains, no critic); with
        ``--div unrolled`` through the gradient step and ``unroll_steps`` posterior descent steps."""
        cfg = self.cfg
        clean, noisy, sigma = self.noisy_batch()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.objective.name == "unrolled":
                loss = unrolled_loss(self.train_energy, clean, noisy, sigma, cfg.unroll_steps,
                                     step_fraction=cfg.step_fraction, prior_fraction=cfg.prior_fraction)
            else:
                loss = score_matching_loss(self.train_energy, clean, noisy, sigma)
        self.opt_energy.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.energy.parameters(), cfg.max_grad_norm)
        self.opt_energy.step()
        self._update_ema()
        return {f"loss_{self.objective.name}": loss.item()}

    def validation(self) -> dict:
        """Photo runs: the EMA energy's denoising PSNR on fixed validation crops: its gradient step, and for
        posterior runs that step (the frozen start's with --frozen-start) and one noise-free posterior step; for
        unrolled runs the estimator they train (the gradient step and ``unroll_steps`` descent steps)."""
        if not self.cfg.crop_size or self.rank != 0:
            return {}
        if self._val_crops is None:
            self._val_crops = datasets.to_float(photos.validation_crops(self.cfg.dataset, VAL_CROP, VAL_CROPS))
        denoiser = None
        if self.cfg.posterior or self.objective.name == "unrolled":
            descent = self.cfg.unroll_steps if self.objective.name == "unrolled" else 1

            def denoiser(y, s):
                start = None if self.start_energy is None else gradient_step(self.start_energy, y, s)
                return posterior_mean(self.ema, y, s, prior_fraction=self.cfg.prior_fraction, chains=1, steps=0,
                                      final_steps=descent, step_fraction=self.cfg.step_fraction, start=start)
        return photos.validation_psnr(self.ema, self._val_crops.to(self.device), denoiser=denoiser)

    def _update_ema(self) -> None:
        with torch.no_grad():
            for p_ema, p in zip(self.ema.parameters(), self.model.energy.parameters()):
                p_ema.lerp_(p, 1.0 - self.cfg.ema)
            for b_ema, b in zip(self.ema.buffers(), self.model.energy.buffers()):
                b_ema.copy_(b)

    def diverged(self, stats: dict) -> str | None:
        if not all(math.isfinite(v) for v in stats.values()):
            return "non-finite loss or energy"
        positions = self.cfg.crop_size ** 2 if self.cfg.crop_size else 1  # crops: the limit is per position
        energies = [abs(stats[k]) for k in ("energy_pos", "energy_neg") if k in stats]
        if energies and max(energies) > self.cfg.energy_limit * positions:
            return f"energies beyond {self.cfg.energy_limit:g}" + (" per position" if positions > 1 else "")
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            return "non-finite parameters"
        return None

    def roll_back(self, reason: str) -> None:
        """Return to the last good checkpoint with a lower learning rate, and log it."""
        self.rollbacks += 1
        if self.rollbacks > self.cfg.max_rollbacks:
            raise RuntimeError(f"training diverged {self.rollbacks} times ({reason}); giving up")
        if self.world > 1:
            dist.barrier()
        rollbacks, lr_scale = self.rollbacks, self.lr_scale * self.cfg.rollback_lr_factor
        at = self.step
        self.load_state_dict(load_state(self.run_dir / STATE_FILE))
        self.rollbacks, self.lr_scale = rollbacks, lr_scale
        self._apply_lr()
        self.log({"event": "rollback", "reason": reason, "at_step": at, "to_step": self.step, "lr_scale": lr_scale})

    # --- outputs ----------------------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        if self.rank == 0:
            with open(self.run_dir / "stats.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def save_samples(self) -> None:
        if self.rank != 0:
            return
        from torchvision.utils import save_image

        (self.run_dir / "samples").mkdir(exist_ok=True)
        save_image(self.buffer.samples[:64], self.run_dir / "samples" / f"buffer_{self.step:06d}.png", nrow=8)

    def export(self, folder: Path | None = None) -> Path:
        """Write the model folder (default run_dir/model): EMA energy, critic, config with the training record."""
        model = EBM(**self.model.config).to("cpu")
        model.load_state_dict({k: v.cpu() for k, v in self.model.state_dict().items()})
        model.energy.load_state_dict({k: v.cpu() for k, v in self.ema.state_dict().items()})
        model.update_config({"training": {
            "command": self.cfg.command, "preset": self.cfg.preset, "steps": self.step,
            "wall_time_minutes": round(self.elapsed / 60, 1), "batch_size": self.cfg.batch_size,
            "processes": self.world, "device": str(self.device),
            "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} logical CPUs, "
                       f"{torch.get_num_threads()} torch threads"
                       + (f", {torch.cuda.get_device_name()}" if self.device.type == "cuda" else ""),
            "ema": self.cfg.ema, "options": asdict(self.cfg),
        }})
        origin = self.run_dir / WARM_START_FILE
        if origin.exists():  # the commands that trained the weights this run continued
            model.config["training"]["warm_started_from"] = json.loads(origin.read_text())
        if self.cfg.crop_size:
            model.update_config({"data_card": photos.data_card(self.cfg.dataset)})
        folder = folder or self.run_dir / "model"
        model.save_pretrained(folder)
        return folder


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory on CUDA, else the process's peak resident memory (Linux: ru_maxrss in KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _truncate_stats(path: Path, step: int) -> None:
    """On resume, drop log lines written after the checkpoint (they will be written again)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in keep))


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Run (or continue) training; returns the exported model folder."""
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    cfg.run_dir = str(run_dir)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    trainer = Trainer(cfg, run_dir, progress=progress)  # loads data first: a bad start writes nothing
    if cfg.frozen_start:
        trainer.freeze_start(cfg.warm_start)
    resuming = resume and (run_dir / STATE_FILE).exists()
    origin = trainer.warm_start(cfg.warm_start) if cfg.warm_start and not resuming else None
    if rank0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "options.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        if origin is not None:
            (run_dir / WARM_START_FILE).write_text(json.dumps(origin, indent=2) + "\n")
    if resuming:
        trainer.load_state_dict(load_state(run_dir / STATE_FILE))
        if rank0:
            _truncate_stats(run_dir / "stats.jsonl", trainer.step)
    else:
        trainer.save_checkpoint()  # the first state: the guard always has one to roll back to
    if trainer.world > 1:
        dist.barrier()

    bar = None
    if progress and rank0:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=trainer.step, desc=f"f-EBM {cfg.div}", dynamic_ncols=True)
    started = time.time()
    budget = cfg.time_budget * 60 if cfg.time_budget else math.inf
    while trainer.step < cfg.max_steps and time.time() - started < budget:
        t0 = time.time()
        stats = trainer.train_step()
        reason = trainer.diverged(stats)
        if reason is not None:
            trainer.roll_back(reason)
            if bar is not None:
                bar.n = trainer.step
            continue
        trainer.step += 1
        trainer.elapsed += time.time() - t0
        if trainer.step % cfg.log_every == 0 or trainer.step == cfg.max_steps:
            trainer.log({"step": trainer.step, **{k: round(v, 6) for k, v in stats.items()},
                         "step_time": round(time.time() - t0, 4), "lr_scale": trainer.lr_scale,
                         "peak_memory_mb": round(peak_memory_mb(trainer.device), 1)})
        if trainer.step % cfg.sample_every == 0:
            trainer.save_samples()
        if trainer.step % cfg.checkpoint_every == 0:
            trainer.save_checkpoint()
            if cfg.crop_size and (trainer.objective.name in REGRESSIONS or cfg.posterior):
                trainer.log({"step": trainer.step, **trainer.validation()})
        if cfg.snapshot_every and trainer.step % cfg.snapshot_every == 0 and rank0:
            trainer.export(run_dir / "snapshots" / f"step_{trainer.step:06d}")
        if bar is not None:
            bar.update(1)
            shown = ("energy_pos", "energy_neg", *(f"loss_{name}" for name in REGRESSIONS))
            bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items() if k in shown})
    if bar is not None:
        bar.close()
    trainer.save_checkpoint()
    trainer.save_samples()
    folder = None
    if rank0:
        folder = trainer.export()
        if cfg.push_to_hub:
            EBM.from_pretrained(folder).push_to_hub(cfg.push_to_hub)
    if trainer.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return folder
