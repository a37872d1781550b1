"""How rough an energy's input gradient is where generation starts: the share of its power at high frequency.

    python -m bench.gradient_spectrum checkpoints/fmnist-js runs/pilots/mix64-js/snapshots/step_001000 \
        --start pca-mixture:64:16

Draws --n starts (seed 0, the smooth part) from the first model's start distribution, refitted by ``--start``
(as bench.generation_start), and prints, per model, the mean gradient norm per image and the share of the
gradient's spatial power spectrum outside the central band |f| <= Nyquist/2 in both axes. The starts' own
share (mean removed) is printed as a yardstick. A large share is the pixel speckle that Langevin steps
paint onto the samples (docs/recipe.md). Not run by the tests.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import Tensor

from bench.generation_start import parse_start, refit_start
from febm.model import load_model


def high_frequency_share(images: Tensor) -> float:
    """Share of the power of (B, C, H, W) images at spatial frequencies above half the Nyquist frequency
    (in either axis), pooled over the batch and channels."""
    power = torch.fft.fft2(images.double()).abs().pow(2)
    h, w = images.shape[-2:]
    fy, fx = torch.fft.fftfreq(h).abs(), torch.fft.fftfreq(w).abs()  # cycles per pixel, Nyquist = 0.5
    high = (fy.view(-1, 1) > 0.25) | (fx.view(1, -1) > 0.25)
    return (power[..., high].sum() / power.sum()).item()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gradient_spectrum", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--start", type=parse_start, help="refit the start distribution: pca:K or pca-mixture:C:K")
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args(argv)
    first = load_model(args.models[0])
    if args.start:
        first = refit_start(first, args.start)
    x = first.initial_samples(args.n, generator=torch.Generator().manual_seed(0), residual_scale=0.0)
    print(json.dumps({"starts": first.config["start"], "high_frequency_share": round(
        high_frequency_share(x - x.mean(dim=(-2, -1), keepdim=True)), 4)}))
    for name in args.models:
        model = load_model(name).eval()
        x_in = x.clone().requires_grad_(True)
        grad, = torch.autograd.grad(model.energy(x_in).sum(), x_in)
        print(json.dumps({"model": name, "grad_norm": round(grad.flatten(1).norm(dim=1).mean().item(), 5),
                          "high_frequency_share": round(high_frequency_share(grad), 4)}))


if __name__ == "__main__":
    main()
