"""Does a photo prior know the way from a noisy photo to the clean one? Cheap checks on validation crops.

    python -m bench.photo_prior MODEL_FOLDER [--state RUN/state.safetensors] [--tv] [--restoration] [--sigma-check]

- cosine: mean cosine between -grad_x E(y) and x - y over 16 fixed validation crops of 64 px, y = x + noise of
  sigma 0.05 / 0.1 / 0.2 (clipped). A denoising prior points its descent towards x.
- map: MAP denoising by 100 Adam steps on lam E(x) + ||x - y||^2 / (2 sigma^2) from the noisy crops (or
  ``--from wiener``), 12 crops of 80 px at sigma = 25/255, the prior weight swept (see map_estimate). For scale:
  total variation as E (``--tv``) scores 29.0 dB there, the local Wiener filter 28.47, the noisy crops 20.56.
- ``--restoration``: the model's tuned denoising and inpainting defaults against their classical start alone, per
  sigma of the tuning's ladder (1-50/255), on 32 validation crops with training.tune's protocol (restoration,
  below).
- ``--state``: score the raw weights of a training state (short pilots: EMA weights are still the initial ones).
- ``--sigma-check``: febm.restore.estimate_sigma on four scikit-image photos, clean and at sigma = 1, 2, 5, 15, 25, 50
  (/255).
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


def map_estimate(model, start: str = "noisy", sigma: float = 25 / 255, steps: int = 100, lr: float = 0.005,
                 rels=(0.3, 1.0, 3.0, 10.0)) -> dict:
    """MAP denoising by Adam on lam E(x) + ||x - y||^2 / (2 sigma^2): PSNR after ``steps`` (and the best seen every
    10 steps) for each prior weight, lam = rel / (sigma * mean|grad E(y)|) so that rel is comparable across models.
    Adam's per-pixel step normalisation makes this insensitive to the energy's scale, unlike plain descent."""
    clean = validation_crops("photos", 80, 12).float() / 255
    y = add_gaussian_noise(clean, sigma, 1)
    x0 = local_wiener(y, sigma).clamp(0, 1) if start == "wiener" else y
    probe = y.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(model.energy(probe).sum(), probe)
    out = {"input": round(psnr(y, clean).mean().item(), 2), "start": round(psnr(x0, clean).mean().item(), 2)}
    for rel in rels:
        lam = rel / (sigma * g0.abs().mean().item())
        x = x0.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        best = out["start"]
        for k in range(1, steps + 1):
            loss = lam * model.energy(x).sum() + (x - y).pow(2).sum() / (2 * sigma**2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            if k % 10 == 0:
                best = max(best, round(psnr(x.detach(), clean).mean().item(), 2))
        out[f"rel {rel}"] = {"final": round(psnr(x.detach(), clean).mean().item(), 2), "best": best}
    return out


def restoration(model, n: int = 32) -> dict:
    """PSNR of the model's tuned restoration defaults and of their classical start alone, per noise level, on n
    validation crops of training.tune's protocol (its crop size, noise seeds and restoration seeds; tuning used
    the first 8 of these crops), and for scribble inpainting."""
    from febm.restore import denoise, inpaint
    from training.tune import PHOTO_CROP, known_masks, noisy_versions

    clean = validation_crops(model.config["dataset"], PHOTO_CROP, n).float() / 255
    out = {}
    for i, (sigma, noisy) in enumerate(noisy_versions(model, clean)):
        start = denoise(model, noisy, sigma, steps=0, descent=0, seed=i, progress=False)
        restored = denoise(model, noisy, sigma, seed=i, progress=False)
        out[f"denoise {sigma * 255:.0f}/255"] = {name: round(psnr(x, clean).mean().item(), 2) for name, x in
                                                 (("input", noisy), ("start", start), ("model", restored))}
    (known,) = known_masks(model, clean)
    start = inpaint(model, clean, known, steps=0, seed=0, progress=False)
    restored = inpaint(model, clean, known, seed=0, progress=False)
    out["inpaint scribbles"] = {name: round(psnr(x, clean).mean().item(), 2) for name, x in
                                (("start", start), ("model", restored))}
    return out


class TotalVariation(torch.nn.Module):
    """A hand-made reference prior for the checks: E(x) = sum of smoothed gradient magnitudes."""

    def energy(self, x):
        dx = x[..., :-1, 1:] - x[..., :-1, :-1]
        dy = x[..., 1:, :-1] - x[..., :-1, :-1]
        return (dx.pow(2) + dy.pow(2) + 1e-4).sqrt().sum(dim=(1, 2, 3))


def sigma_check() -> dict:
    from skimage import data

    from febm.restore import estimate_sigma

    photos = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee(), "rocket": data.rocket()}
    out = {}
    for s in (0, 1, 2, 5, 15, 25, 50):
        for i, (name, im) in enumerate(photos.items()):
            x = torch.from_numpy(im).permute(2, 0, 1).float().div(255)[None]
            noisy = add_gaussian_noise(x, s / 255, i) if s else x
            out[f"{name} {s}"] = round(estimate_sigma(noisy).item() * 255, 1)
    return out


def _load(name: str, state: str | None):
    """A model and the training step of its weights (None for a model folder's own weights)."""
    from pathlib import Path

    from training.checkpoint import load_state
    from training.loop import STATE_FILE

    run = Path(name)
    if (run / "options.json").exists() and not (run / "config.json").exists():  # a run folder
        from dataclasses import fields

        from training.loop import TrainConfig, build_model

        options = json.loads((run / "options.json").read_text())
        cfg = TrainConfig(**{f.name: options[f.name] for f in fields(TrainConfig) if f.name in options})
        model = build_model(cfg, {"channels": 3, "image_size": cfg.crop_size})  # photo sources are RGB
        state = state or run / STATE_FILE
    else:
        model = load_model(name)
    step = None
    if state:
        saved = load_state(state)
        model.load_state_dict(saved["model"])
        step = int(saved["step"])
    return model.eval().requires_grad_(False), step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.photo_prior", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="a photo model (name or folder), or a training run's folder: "
                        "its latest state's raw (not EMA) weights, while it trains")
    parser.add_argument("--state", help="load the raw weights of this training state instead of the folder's")
    parser.add_argument("--from", dest="start", choices=["noisy", "wiener"], default="noisy")
    parser.add_argument("--sigma-check", action="store_true")
    parser.add_argument("--tv", action="store_true", help="also score total variation as the prior, for scale")
    parser.add_argument("--restoration", action="store_true",
                        help="also score the model's tuned restoration defaults against their start, per sigma")
    args = parser.parse_args(argv)
    report = {}
    if args.model:
        model, step = _load(args.model, args.state)
        if step is not None:
            report["step"] = step
        report.update(cosine=cosine(model), map=map_estimate(model, args.start))
        if args.restoration:
            report["restoration"] = restoration(model)
    if args.tv:
        report["total_variation"] = dict(cosine=cosine(TotalVariation()), map=map_estimate(TotalVariation(), args.start))
    if args.sigma_check:
        report["estimate_sigma_255"] = sigma_check()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
