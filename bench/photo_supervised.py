"""The direct residual denoiser: the ceiling for the photo energies' size, data and CPU time (issue 29, item 2).

    python -m bench.photo_supervised --run-dir runs/photo-supervised --cpu-minutes 150   # resumable: run it again
    python -m bench.photo_supervised --run-dir runs/photo-supervised --evaluate          # validation PSNR per sigma

The same network as the photo energies (``febm.nets.FieldEnergy``'s body: stem, dilated residual convolutions,
noise-level biases; ``--net`` takes the energy's spec) with a 1x1 head to C channels, used directly:
D(y) = y - sigma N(y, sigma), no energy and no gradient through the input. Trained like ``--div dsm`` (the same
crops, noise ladder, grey fraction, batch and learning rate, the loss ||D(y) - x||^2 / sigma^2), so the distance
between the two is what the energy's form costs. Training stops after ``--cpu-minutes`` of this process's CPU
time (one thread by default), checkpointing atomically every ``--checkpoint-every`` steps; the weights and a JSON
sidecar (steps, CPU minutes, validation PSNR) go to RUN_DIR/denoiser.safetensors and .json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor, nn

from febm.files import atomic_path, write_atomic
from febm.nets import FieldEnergy
from training import data as datasets
from training import photos
from training.checkpoint import load_state, save_state
from training.run import PHOTO_NET_NC

STATE, WEIGHTS, SIDECAR = "state.safetensors", "denoiser.safetensors", "denoiser.json"


class ResidualDenoiser(nn.Module):
    """D(y, sigma) = y - sigma N(y, sigma): a FieldEnergy's body with a C-channel head, used directly."""

    def __init__(self, spec: dict):
        super().__init__()
        spec = {k: v for k, v in spec.items() if k != "kind"}
        self.body = FieldEnergy(**spec)
        self.out = nn.Conv2d(spec.get("width", 32), spec.get("in_channels", 3), 1)
        self.spec = spec

    def forward(self, noisy: Tensor, sigma: Tensor) -> Tensor:
        residual = self.out(self.body.features(noisy, sigma))
        return noisy - sigma.view(-1, 1, 1, 1).to(residual.dtype) * residual


def validation_psnr(net: nn.Module, crops: Tensor, sigmas_255=(2, 5, 15, 25, 50)) -> dict:
    """Mean PSNR on fixed validation crops, with the noise draws of training.photos.validation_psnr."""
    with torch.no_grad():
        return photos.validation_psnr(None, crops, sigmas_255, denoiser=lambda y, s: net(y, s).clamp(0, 1))


def train(args) -> dict:
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    spec = {**json.loads(args.net), "in_channels": 3}
    torch.manual_seed(args.seed)
    net = ResidualDenoiser(spec)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.0, 0.999))
    gen = torch.Generator().manual_seed(args.seed)
    crops = photos.PhotoCrops(photos.load_photos(args.dataset, "train"), args.crop_size, args.batch_size,
                              torch.Generator().manual_seed(args.seed + 1))
    step, cpu = 0, 0.0
    if (run / STATE).exists():
        state = load_state(run / STATE)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        crops.load_state_dict(state["crops"])
        step, cpu = int(state["step"]), float(state["cpu_seconds"])
        print(f"resumed at step {step}, {cpu / 60:.1f} CPU minutes")

    def checkpoint():
        save_state(run / STATE, {"net": net.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                                 "crops": crops.state_dict(), "step": step, "cpu_seconds": cpu})

    while cpu < 60 * args.cpu_minutes:
        t0 = time.process_time()
        clean = datasets.dequantize(next(crops), gen)
        sigma = photos.noise_levels(len(clean), args.sigma_min_255 / 255, args.sigma_max_255 / 255, gen)
        clean, noisy = photos.noisy_observations(clean, sigma, args.grey_fraction, gen)
        loss = ((net(noisy, sigma) - clean).pow(2) / sigma.view(-1, 1, 1, 1) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step, cpu = step + 1, cpu + time.process_time() - t0
        if step % args.checkpoint_every == 0:
            checkpoint()
            print(json.dumps({"step": step, "cpu_minutes": round(cpu / 60, 2), "loss": round(loss.item(), 5)}),
                  flush=True)
    checkpoint()
    return export(run, net, spec, step, cpu, args)


def export(run: Path, net: ResidualDenoiser, spec: dict, step: int, cpu: float, args) -> dict:
    crops = datasets.to_float(photos.validation_crops(args.dataset, args.val_crop, 16))
    record = {"command": args.command, "net": spec, "steps": step, "cpu_minutes": round(cpu / 60, 1),
              "threads": torch.get_num_threads(), "validation": validation_psnr(net.eval(), crops),
              "validation_protocol": f"training.photos.validation_crops({args.dataset!r}, {args.val_crop}, 16), noise "
                                     "seeds per sigma as training.photos.validation_psnr"}
    with atomic_path(run / WEIGHTS) as tmp:
        safetensors.torch.save_file(net.state_dict(), tmp)
    write_atomic(run / SIDECAR, json.dumps(record, indent=2) + "\n")
    return record


def load(run: str | Path) -> ResidualDenoiser:
    """The exported reference of a run folder (for bench.photos)."""
    run = Path(run)
    record = json.loads((run / SIDECAR).read_text())
    net = ResidualDenoiser(record["net"])
    net.load_state_dict(safetensors.torch.load_file(run / WEIGHTS))
    return net.eval()


def main(argv: list[str] | None = None) -> None:
    import sys

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True)
    p.add_argument("--cpu-minutes", type=float, default=30.0)
    p.add_argument("--net", default=PHOTO_NET_NC, help="the energy's spec (a FieldEnergy JSON)")
    p.add_argument("--dataset", default="photos", help="photos (Debian's) or folder:PATH")
    p.add_argument("--crop-size", type=int, default=96)
    p.add_argument("--val-crop", type=int, default=96, help="side of the 16 validation crops")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--sigma-min-255", type=float, default=1.0)
    p.add_argument("--sigma-max-255", type=float, default=60.0)
    p.add_argument("--grey-fraction", type=float, default=0.25)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--evaluate", action="store_true", help="only score the exported weights on validation crops")
    args = p.parse_args(argv)
    args.command = "python -m bench.photo_supervised " + " ".join(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    if args.evaluate:
        crops = datasets.to_float(photos.validation_crops(args.dataset, args.val_crop, 16))
        print(json.dumps(validation_psnr(load(args.run_dir), crops)))
        return
    print(json.dumps(train(args), indent=2))


if __name__ == "__main__":
    main()
