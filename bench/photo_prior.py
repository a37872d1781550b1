"""Does a photo prior know the way from a noisy photo to the clean one? Cheap checks on validation crops.

    python -m bench.photo_prior MODEL_FOLDER [--state RUN/state.safetensors] [--sigma-check]

- cosine: mean cosine between -grad_x E(y) and x - y over 16 fixed validation crops of 64 px, y = x + noise of
  sigma 0.05 / 0.1 / 0.2 (clipped). A denoising prior points its descent towards x.
- descent: gradient descent on lam E(x) + ||x - y||^2 / (2 sigma^2) from the noisy crops (or ``--from wiener``),
  12 crops of 80 px at sigma = 25/255, lam scaled so the prior moves pixels by rel * sigma (rel swept), best
  PSNR over the first 40 steps (step 0 is the start).
- ``--state``: score the raw weights of a training state (short pilots: EMA weights are still the initial ones).
- ``--sigma-check``: febm.restore.estimate_sigma on four scikit-image photos at sigma = 15, 25, 50 (/255).
Needs Debian's photographs for the validation crops (training only; see training/photos.py).
"""

from __future__ import annotations

import argparse
import json

import torch

from febm.classical import local_wiener
from febm.degradations import add_gaussian_noise
from febm.metrics import psnr
from febm.model import load_model
from training.photos import validation_crops


def cosine(model, sigmas=(0.05, 0.1, 0.2)) -> dict:
    x = validation_crops("photos", 64, 16).float() / 255
    out = {}
    for s in sigmas:
        y = add_gaussian_noise(x, s, 0).requires_grad_(True)
        (g,) = torch.autograd.grad(model.energy(y).sum(), y)
        cos = torch.nn.functional.cosine_similarity((-g).flatten(1), (x - y.detach()).flatten(1))
        out[str(s)] = round(cos.mean().item(), 4)
    return out


def descent(model, start: str = "noisy", sigma: float = 25 / 255, steps: int = 40,
            rels=(0.03, 0.1, 0.3, 1.0, 3.0)) -> dict:
    clean = validation_crops("photos", 80, 12).float() / 255
    y = add_gaussian_noise(clean, sigma, 1)
    x0 = local_wiener(y, sigma).clamp(0, 1) if start == "wiener" else y
    start_grad = x0.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(model.energy(start_grad).sum(), start_grad)
    out = {"input": round(psnr(y, clean).mean().item(), 2), "start": round(psnr(x0, clean).mean().item(), 2)}
    for rel in rels:
        lam = rel / (sigma * g0.abs().mean().item())  # lam sigma^2 |grad| ~ rel sigma per step
        x, best = x0.clone(), (out["start"], 0)
        for k in range(1, steps + 1):
            x.requires_grad_(True)
            (g,) = torch.autograd.grad(model.energy(x).sum(), x)
            with torch.no_grad():
                x = (x - 0.3 * (lam * sigma**2 * g + (x - y))).clamp(0, 1)
            score = round(psnr(x, clean).mean().item(), 2)
            best = max(best, (score, k))
        out[f"rel {rel}"] = {"psnr": best[0], "step": best[1]}
    return out


def sigma_check() -> dict:
    from skimage import data

    from febm.restore import estimate_sigma

    photos = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee(), "rocket": data.rocket()}
    out = {}
    for s in (15, 25, 50):
        for i, (name, im) in enumerate(photos.items()):
            x = torch.from_numpy(im).permute(2, 0, 1).float().div(255)[None]
            out[f"{name} {s}"] = round(estimate_sigma(add_gaussian_noise(x, s / 255, i)).item() * 255, 1)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.photo_prior", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="a photo model (name or folder)")
    parser.add_argument("--state", help="load the raw weights of this training state instead of the folder's")
    parser.add_argument("--from", dest="start", choices=["noisy", "wiener"], default="noisy")
    parser.add_argument("--sigma-check", action="store_true")
    args = parser.parse_args(argv)
    report = {}
    if args.model:
        model = load_model(args.model).eval()
        if args.state:
            from training.checkpoint import load_state

            model.load_state_dict(load_state(args.state)["model"])
        model.requires_grad_(False)
        report.update(cosine=cosine(model), descent=descent(model, args.start))
    if args.sigma_check:
        report["estimate_sigma_255"] = sigma_check()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
