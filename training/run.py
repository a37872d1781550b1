"""Train an f-EBM on images: ``python -m training.run --div rkl``.

    python -m training.run --div js --preset fmnist-cpu            # the CPU recipe (3000 steps)
    python -m training.run --resume runs/fashion-mnist-js-...      # continue a run exactly
    torchrun --nproc-per-node=4 -m training.run --preset cifar10-gpu --div js --dataset cifar10
    python -m training.run --div js --push-to-hub you/fmnist-js    # upload the final model folder

Every field of training.loop.TrainConfig is a flag (``--langevin-steps 40``); a preset sets defaults
and explicit flags override it. Objectives: cd (contrastive divergence), kl, rkl, js, sh, chi2, neyman,
alpha:<a>.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import types
import typing
from dataclasses import fields
from pathlib import Path

from febm.objectives import OBJECTIVE_NAMES, REGRESSIONS
from training.loop import TrainConfig, train

# Photo energies (febm.nets.FieldEnergy): the CPU one reaches 10 px (a 21 px receptive field) for ~21 k
# multiply-adds per pixel; the GPU one 23 px at 64 channels. Zero-mean stems: see FieldEnergy.
PHOTO_NET_CPU = json.dumps({"kind": "field", "width": 24, "kernel_size": 3, "dilations": [1, 2, 4, 2],
                            "activation": "softplus", "output_gain": 0.1, "zero_mean_stem": True})
# The score-matching / posterior photo energy: SiLU (softplus at these pre-activation scales is nearly linear and
# its energy's gradient stays a linear filter: DESIGN section 7, calibration 2), no spectral norm, a 47 px
# receptive field, conditioned on the noise level (FieldEnergy noise_conditional).
PHOTO_NET_NC = json.dumps({"kind": "field", "width": 32, "kernel_size": 3, "dilations": [1, 2, 4, 8, 4, 2, 1],
                           "activation": "silu", "spectral_norm": False, "output_gain": 1.0, "zero_mean_stem": True,
                           "noise_conditional": True})
PHOTO_NET_GPU = json.dumps({"kind": "field", "width": 64, "kernel_size": 3, "dilations": [1, 2, 4, 8, 4, 2, 1],
                            "activation": "softplus", "output_gain": 0.1, "zero_mean_stem": True})

# the CPU recipe for Fashion-MNIST (one core: about 1.5 s per step). A small full-resolution conv energy;
# chains start from a Gaussian fitted to the data (blurry garments, not uniform noise) and live in the
# buffer for about 5 draws (restart 0.2, 40 steps each), so the 200-step chains of generation are the
# ones the model was trained against.
# denoising score matching on photo crops (a Fisher divergence, no chains, no critic): the energy's gradient step
# y - sigma^2 grad E(y, sigma) regressed on the clean crop, sigma log-uniform over 1-60 (/255), a quarter of the crops
# grey; Adam with momentum (a regression: the authors' beta1 = 0 is for the f-EBM game). Also the warm start of the
# posterior-trained f-EBMs and of the unrolled restorer.
PHOTO_DSM = dict(div="dsm", dataset="photos", crop_size=96, batch_size=8, net=PHOTO_NET_NC, lr=1e-3, beta1=0.9,
                 l2=0.0, ema=0.999, sigma_min_255=1.0, sigma_max_255=60.0, grey_fraction=0.25, buffer_size=1,
                 max_steps=20000, sample_every=10**9, checkpoint_every=100, log_every=10)
FMNIST_CPU = dict(arch="conv", width=16, stages=3, activation="silu", batch_size=64, langevin_steps=40,
                  step_size=10.0, noise=0.005, grad_clip=0.01, start="pca", start_components=32,
                  restart_prob=0.2, sample_steps=200, max_steps=3000, sample_every=500,
                  checkpoint_every=250)

PRESETS: dict[str, dict] = {
    # a few steps in seconds, for tests and smoke checks
    "tiny": dict(width=8, stages=2, batch_size=8, langevin_steps=5, sample_steps=10, buffer_size=64,
                 max_steps=6, log_every=1, sample_every=3, checkpoint_every=3),
    "fmnist-cpu": FMNIST_CPU,
    # the second stage of the shipped Fashion-MNIST models (issue 17, docs/recipe.md M6, M7): continue an fmnist-cpu
    # model (--warm-start) for 500 steps with chains started from a 64-cluster PCA mixture (max_steps counts on from
    # the model's steps: 3500 after 3000; the shipped models continue the 10 000-step one, --max-steps 10500).
    # The mixture's starts are sharp garments; trained against it from scratch the energy is rough noise that the
    # chains paint on; continued from a smooth energy it learns to keep them (generation then runs short chains,
    # 50 steps at half the noise for the shipped ones, set by tune).
    "fmnist-cpu-mixture": {**FMNIST_CPU, "start": "pca-mixture", "start_clusters": 64, "start_components": 16,
                           "max_steps": 3500},
    # photo priors (DESIGN section 7): a fully convolutional energy and critic (sum of local energies), trained on
    # random crops of Debian's photographs; chains restart from noisy crops every step (short-run from data) and
    # descend the energy for 10 steps. No L2 on the summed energies (it capped the clean/noisy contrast at a few
    # nats); a per-position penalty bounds each local output; the energy's constant is left to the critic.
    # The pilots that chose this are in docs/photos.md.
    "photo-cpu": dict(dataset="photos", crop_size=40, batch_size=32, net=PHOTO_NET_CPU, lr=1e-3, l2=0.0,
                      map_l2=0.01, free_offset=True, ema=0.995, langevin_steps=10, step_size=1.0, noise=0.005,
                      grad_clip=0.01, buffer_size=256, restart_prob=1.0, data_restarts=1.0,
                      data_restart_sigma=0.2, sample_steps=200, max_steps=2000, sample_every=500,
                      checkpoint_every=100, log_every=10),
    "photo-gpu": dict(dataset="photos", crop_size=96, batch_size=128, net=PHOTO_NET_GPU, lr=3e-4, l2=0.0,
                      map_l2=0.01, free_offset=True, ema=0.995, langevin_steps=20, step_size=1.0, noise=0.005,
                      grad_clip=0.01,
                      buffer_size=1024, restart_prob=1.0, data_restarts=1.0, data_restart_sigma=0.2,
                      sample_steps=200, max_steps=30000, sample_every=1000, checkpoint_every=500, bf16=True),
    "photo-dsm": PHOTO_DSM,
    # the unrolled restorer (issue 29, item 5; the TNRD / TDV route): score matching through the gradient step and
    # one noise-free posterior step, the estimator restoration runs at sigma >= 15/255; warm-started from photo-dsm
    # (hence its lower lr), slower steps (hence the closer checkpoints). A regression on the restorer's output, not a
    # divergence: a separately named model, never an f-EBM.
    "photo-unrolled": {**PHOTO_DSM, "div": "unrolled", "unroll_steps": 1, "lr": 3e-4, "checkpoint_every": 50},
    # f-EBMs on the posterior they restore with (training/posterior.py), warm-started from a photo-dsm model
    # (--warm-start): two chains of 5 ULA steps per observation, the chain restoration runs; map_l2 bounds each
    # local energy's contrast to the observation's (without it the pilots' CD energies ran off in 70 steps)
    "photo-posterior": dict(dataset="photos", crop_size=96, batch_size=4, net=PHOTO_NET_NC, critic_width=16,
                            lr=1e-4, l2=0.0, map_l2=0.01, free_offset=True, ema=0.99, sigma_min_255=1.0,
                            sigma_max_255=60.0, grey_fraction=0.25, posterior=True, posterior_chains=2, posterior_steps=5,
                            step_fraction=0.2, buffer_size=1, max_steps=20000, sample_every=10**9,
                            checkpoint_every=50, log_every=5),
    # the authors' CIFAR-10 settings: 128 filters, leaky ReLU, batch 128 per GPU x 4, 60 Langevin steps
    "cifar10-gpu": dict(dataset="cifar10", width=128, stages=3, blocks_per_stage=2, activation="lrelu",
                        batch_size=512, lr=3e-4, langevin_steps=60, step_size=10.0, noise=0.005, grad_clip=0.01,
                        buffer_size=10000, restart_prob=0.05, max_steps=100000, sample_every=1000,
                        checkpoint_every=1000, sample_steps=200),
}

HELP = {
    "arch": "energy/critic network: resnet (ResNetEnergy) or conv (the small, fast ConvEnergy)",
    "stages": "resnet: resolution stages; conv: stride-2 downsamplings",
    "div": f"training objective: {', '.join(OBJECTIVE_NAMES)}",
    "dataset": "fashion-mnist, mnist, cifar10, celeba, or folder:PATH",
    "run_dir": "run folder (default runs/<dataset>-<div>-<time>)",
    "critic_width": "critic width (default: the energy's)",
    "critic_lr": "critic learning rate (default: --lr)",
    "l2": "weight of the squared-output penalty on both networks",
    "max_grad_norm": "clip each network's gradient norm (default: off)",
    "sample_steps": "Langevin steps stored as the model's default for generation",
    "time_budget": "stop after this many minutes (this invocation)",
    "device": "auto (cuda, then mps, then cpu), or a torch device",
    "bf16": "bf16 autocast for the parameter updates (default: on for CUDA)",
    "inject_nan_at": "testing only: poison the energy at this step to exercise the stability guard",
    "push_to_hub": "upload the final model folder to this Hub repo id",
    "data_restarts": "fraction of chain restarts from training images with noise or holes (teaches restoration)",
    "start": "where Langevin chains start: uniform noise, pca (a Gaussian fitted to the training data) or "
             "pca-mixture (one such Gaussian per cluster of the training data)",
    "start_clusters": "clusters of the pca-mixture start",
    "restart_residual": "pca starts: scale of their residual per-pixel noise in training restarts (also stored as "
                        "the model's generation start_residual when not 1)",
    "net": 'network spec as JSON, e.g. \'{"kind": "field", "width": 32, "dilations": [1, 2, 1]}\' (replaces --arch, '
           "--width, --stages; the critic gets the same spec)",
    "crop_size": "train on random square crops of this side (photo sources: photos, folder:PATH)",
    "map_l2": "fully convolutional energies: weight of the penalty on squared per-position energies",
    "warm_start": "continue from this trained model folder or shipped model name (its weights, step count and "
                  "training time; fresh optimiser and replay buffer)",
    "snapshot_every": "also export the model folder to RUN_DIR/snapshots/step_NNNNNN every so many steps",
    "instance_noise": "std of Gaussian noise added to the data and the chains' samples where the energy and "
                      "critic see them (instance noise; the chains themselves stay clean)",
    "free_offset": "f-EBM: leave the energy's additive constant to the critic (else E and H can drift apart)",
    "dsm_weight": "posterior training: weight of denoising score matching added to the energy's loss (keeps the "
                  "gradient step restoration starts from trained)",
    "unroll_steps": "--div unrolled: noise-free posterior steps after the gradient step that the loss is taken "
                    "through (0 is score matching)",
    "frozen_start": "posterior training: start the chains from the warm start's gradient step, held fixed (a test "
                    "of why the posterior game collapses; restoring the result needs that start too)",
}
_INTERNAL = {"command", "preset"}


def _parser_type(annotation):
    """int | None -> int, etc.; 'none' on the command line gives None for optional fields."""
    hint = typing.get_type_hints(TrainConfig)[annotation]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    base = args[0]
    if base is bool:
        return bool
    optional = isinstance(hint, types.UnionType)

    def convert(text: str):
        return None if optional and text.lower() == "none" else base(text)

    convert.__name__ = base.__name__
    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="named defaults (flags override them)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue this run exactly from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name in _INTERNAL:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _parser_type(f.name)
        default = getattr(defaults, f.name)
        text = HELP.get(f.name, "")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"{text} (default {default})")
        else:
            parser.add_argument(flag, type=kind, default=None, help=f"{text} (default {default})".strip())
    return parser


def config_from_args(args: argparse.Namespace, argv: list[str]) -> tuple[TrainConfig, bool]:
    """Resolve preset < explicit flags; with --resume, the run's options.json < explicit flags."""
    explicit = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                if f.name not in _INTERNAL and getattr(args, f.name) is not None}
    command = "python -m training.run " + shlex.join(argv)
    if args.resume:
        options = Path(args.resume) / "options.json"
        if not options.exists():
            raise SystemExit(f"error: {options} not found: --resume needs a run folder written by training.run")
        base = json.loads(options.read_text())
        # the model card lists every invocation: the first command, then each resume
        history = [base["command"]] if base.get("command") else []
        base.update(explicit, run_dir=str(Path(args.resume)), command="\n".join(history + [command]))
        return TrainConfig.from_dict(base), True
    base = dict(PRESETS.get(args.preset, {}))
    base.update(explicit, command=command, preset=args.preset)
    return TrainConfig.from_dict(base), False


def validate(cfg: TrainConfig) -> None:
    from febm.objectives import Objective

    if cfg.div != "cd":
        Objective(cfg.div)  # raises with the list of valid names
    for name in ("batch_size", "max_steps", "log_every", "sample_every", "checkpoint_every", "buffer_size", "width",
                 "snapshot_every"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if not 0.0 <= cfg.ema < 1.0:
        raise ValueError("--ema must be in [0, 1)")
    if not 0.0 <= cfg.restart_residual <= 1.0:
        raise ValueError("--restart-residual must be in [0, 1]")
    if not 0.0 <= cfg.data_restarts <= 1.0:
        raise ValueError("--data-restarts must be in [0, 1]")
    if not cfg.data_restart_sigma > 0:
        raise ValueError("--data-restart-sigma must be > 0")
    if cfg.start not in ("uniform", "pca", "pca-mixture"):
        raise ValueError(f"--start must be uniform, pca or pca-mixture, got {cfg.start!r}")
    if cfg.net is not None:
        try:
            spec = json.loads(cfg.net)
        except ValueError as err:
            raise ValueError(f"--net must be a JSON object, e.g. '{{\"kind\": \"field\"}}': {err}") from None
        if not isinstance(spec, dict) or "kind" not in spec:
            raise ValueError("--net must be a JSON object with a \"kind\"")
    if cfg.div in REGRESSIONS and not cfg.crop_size:
        raise ValueError(f"--div {cfg.div} trains photo energies: give a field --net and --crop-size (or use "
                         f"--preset photo-{cfg.div})")
    if cfg.div == "unrolled" and not json.loads(cfg.net).get("noise_conditional"):
        raise ValueError("--div unrolled trains a noise-conditional energy (--net with \"noise_conditional\": true)")
    if cfg.unroll_steps < 0:
        raise ValueError("--unroll-steps must be >= 0")
    if cfg.posterior:
        if cfg.div in REGRESSIONS or not cfg.crop_size:
            raise ValueError("--posterior trains a photo f-EBM (or cd) on its denoising posterior: give a field --net "
                             "with noise_conditional, --crop-size, and an f-divergence or cd")
        if cfg.posterior_chains < 1 + (cfg.div != "cd") or cfg.posterior_steps < 0 or not 0 < cfg.step_fraction < 4 \
                or not 0 < cfg.prior_fraction <= 1:
            raise ValueError("--posterior needs --posterior-chains >= 2 (1 for cd), --posterior-steps >= 0, "
                             "--step-fraction in (0, 4) and --prior-fraction in (0, 1]")
        if not json.loads(cfg.net).get("noise_conditional"):
            raise ValueError("--posterior needs a noise-conditional energy (--net with \"noise_conditional\": true)")
    if cfg.dsm_weight < 0 or (cfg.dsm_weight and not cfg.posterior):
        raise ValueError("--dsm-weight must be >= 0 and needs --posterior")
    if cfg.frozen_start and not (cfg.posterior and cfg.warm_start):
        raise ValueError("--frozen-start needs --posterior and --warm-start (the start is the warm start's energy)")
    if not 0 < cfg.sigma_min_255 <= cfg.sigma_max_255 or not 0 <= cfg.grey_fraction <= 1:
        raise ValueError("need 0 < --sigma-min-255 <= --sigma-max-255 and --grey-fraction in [0, 1]")
    if cfg.dataset == "photos" and not cfg.crop_size:
        raise ValueError("--dataset photos trains on random crops: set --crop-size (or use --preset photo-cpu)")
    field = cfg.net is not None and json.loads(cfg.net).get("kind") == "field"
    if field != (cfg.crop_size is not None):
        raise ValueError("a fully convolutional --net (kind field) trains on crops: give --crop-size with it, "
                         "and only with it")
    if cfg.map_l2 < 0 or (cfg.map_l2 > 0 and not field):
        raise ValueError("--map-l2 must be >= 0, and applies to fully convolutional networks (--net kind field)")
    if cfg.crop_size is not None:
        from febm.nets import build_net

        radius = build_net({**json.loads(cfg.net), "in_channels": 3}).receptive_radius
        if cfg.crop_size <= 2 * radius:
            raise ValueError(f"--crop-size must exceed twice the network's receptive radius ({radius} px), "
                             f"got {cfg.crop_size}")
        if cfg.start != "uniform":
            raise ValueError(f"--start {cfg.start} needs a fixed image size; crops of photos start from uniform noise")
        if not (cfg.dataset == "photos" or cfg.dataset.startswith("folder:")):
            raise ValueError("--crop-size applies to photo sources: photos or folder:PATH")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg, resume = config_from_args(args, argv)
    try:
        validate(cfg)
    except ValueError as err:
        parser.error(str(err))
    folder = train(cfg, resume=resume, progress=not args.no_progress)
    if folder is not None:
        print(f"model written to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
