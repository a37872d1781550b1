"""Tune a model's restoration defaults on the validation split: ``python -m training.tune MODEL --write``.

    python -m training.tune runs/.../model --n 64 --write     # grid search, then store the best settings

Whole-image (Fashion-MNIST) models. Denoising: Langevin steps x temperature_scale (the weight of the likelihood
term, see febm.restore.denoise), scored by mean PSNR over the noise levels 0.1, 0.2, 0.3, 0.5 (one setting for
every sigma, as users get it); ``--chains`` chains (posterior mean). Inpainting: Langevin steps, scored over the
centre-box and 50 % random-pixel masks. Steps 0 is in the grids: the start alone (for models with a Gaussian
start, its exact posterior mean), so the table shows what the energy's chains add to it.

Photo (fully convolutional) models are tuned per noise level, on fixed 80-px crops of the validation photos
(training.photos.validation_crops), over a ladder of sigma = 1, 2, 5, 10, 15, 25, 50 (/255): first the
temperature scale s of the posterior exp(-E/(T s) - ||x - y||^2 / (2 sigma^2)) (half decades over five decades)
with 0-10 noise-free descent steps from the Wiener start, then four Langevin chains at the best scale. Per sigma
the best mean PSNR wins (up to 10/255: among the settings that lose to the start alone on at most a tenth of the
crops); within 0.02 dB of it, the cheapest setting (fewest gradient evaluations). The energy's stiffest curvature
(``prior_curvature``, which sizes the chains' step) is measured on the same crops first. Noise-conditional
energies start at their gradient step and try 1-3 noise-free posterior steps from each blend of it with the Wiener
filter, and four 5-step chains (NOISE_CONDITIONAL_GRID). Inpainting: Langevin steps (noise-conditional energies:
annealed denoising steps) on scribble masks.

Only validation images are used, never the test split; ``--write`` stores the winners in ``config["restoration"]``
of the model folder, where denoise/inpaint read their defaults (febm.restore.task_settings), together with the full
grid: for photo models ``denoise.per_sigma`` holds one entry per noise level of the ladder, and the top-level entry
is the one at 25/255.

    python -m training.tune MODEL --generation-steps 0 5 10 25 --no-restoration --write

``--generation-steps`` also picks the Langevin steps of generation by the FID of ``--generation-samples`` samples
against the validation split (pixel-PCA FD with ``--generation-metric pca_fd``); ``--generation-noise 0 0.005``
also picks the chains' per-step noise. ``--write`` stores the winner as the model's ``sampler.steps`` (and
``sampler.generation_noise``), what generation, the app and ``training.evaluate`` run, with the grid in
``config["generation"]``. Restoration keeps the sampler's own noise: its temperature weighs the likelihood.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

import torch

from febm.degradations import add_gaussian_noise, scribble_mask
from febm.imageio import preset_mask
from febm.metrics import psnr
from febm.model import load_model, resolve_model
from febm.restore import SURE_MAX_SIGMA, denoise, inpaint
from training import data as datasets

SIGMAS = (0.1, 0.2, 0.3, 0.5)
MASKS = ("center", "random-50")


PHOTO_SIGMAS = tuple(v / 255 for v in (1, 2, 5, 10, 15, 25, 50))  # the ladder of per-sigma settings
PHOTO_DEFAULT_SIGMA = 25 / 255  # the top-level denoising entry of a photo model: its settings at this sigma
# The energy's scale differs between models by decades (photo-js's curvature 0.25, photo-cd's ~50): half decades
# over five decades of the temperature scale. In the estimator bench (docs/photos.md, "The estimator") the start
# alone won at sigma <= 2/255, one to three noise-free descent steps from it at 5-25, ten and more at 50, and
# chains (posterior samples, or their means) nowhere: four of them, with and without a final descent step, are
# tried at the best scale and its neighbours.
PHOTO_GRID = {"temperature_scales": (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4),
              "descent": (0, 1, 2, 3, 5, 10),
              "chains": ((10, 0, 4),),  # (steps, descent, chains), at the best scale
              "inpaint_steps": (0, 10, 30, 60)}
# Noise-conditional energies (score matching, posterior f-EBMs) start at their gradient step (Tweedie) and take
# noise-free or Langevin steps on E(x, sigma / 2) + ||x - y||^2 / (2 sigma^2), sized by sigma: no scale to tune.
# Their start may blend in the local Wiener filter: at 1-2/255 the mean of the two beat either alone on validation
# crops (photo-dsm, 16 crops at 1/255: step 49.24, Wiener 49.15, their mean 49.64 dB).
NOISE_CONDITIONAL_GRID = {"temperature_scales": (1.0,), "wiener_weights": (0.25, 0.5),
                          "descent": (1, 2, 3), "chains": ((5, 0, 4), (5, 1, 4)),
                          "inpaint_steps": (0, 10, 20, 40), "inpaint_levels": (20 / 255, 40 / 255, 80 / 255)}
PHOTO_CROP = 80  # validation crops of 80 px: busy enough to score, cheap enough for a grid on 2 cores
PHOTO_TIE = 0.02  # dB: settings this close to the best count as a tie, and the cheapest wins
# At small noise a setting replaces the start alone only if it loses to it on at most this fraction of the crops
# (rounded down): photo-js's best at 5/255 on 8 crops, one descent step (+0.96 dB on 32 crops), lost to the start on
# 8 of those 32, and on the test photos fell up to 2.4 dB below the noisy input (china). Above SURE_MAX_SIGMA no
# result comes near its input and the best mean wins: at 50/255 the rule kept photo-dsm's start, 0.22 dB below one
# posterior step on the tuning crops (0.32 on 16 others)
PHOTO_MAX_LOSSES = 0.1


def max_losses(sigma: float, n: int) -> int:
    """Crops of n a setting may lose to the start on and still replace it, at noise level sigma."""
    return int(PHOTO_MAX_LOSSES * n) if sigma <= SURE_MAX_SIGMA else n


def noisy_versions(model, clean: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
    """(sigma, noisy copy of ``clean``) for each noise level of the protocol, with its fixed noise seed."""
    photo = model.fully_convolutional
    return [(sigma, add_gaussian_noise(clean, sigma, 100 + i))
            for i, sigma in enumerate(PHOTO_SIGMAS if photo else SIGMAS)]


def known_masks(model, clean: torch.Tensor) -> list[torch.Tensor]:
    """The protocol's inpainting masks for ``clean``, with their fixed seeds (scribbles for photo models)."""
    if model.fully_convolutional:
        return [scribble_mask(*clean.shape[-2:], 200)]
    return [preset_mask(kind, tuple(clean.shape[1:]), seed=200 + i) for i, kind in enumerate(MASKS)]


def denoise_score(model, clean: torch.Tensor, *, steps: int, temperature_scale: float, chains: int) -> float:
    """Mean PSNR over the protocol's noise levels of one setting (whole-image models)."""
    scores = []
    for i, (sigma, noisy) in enumerate(noisy_versions(model, clean)):
        out = denoise(model, noisy, sigma, steps=steps, chains=chains, temperature_scale=temperature_scale,
                      seed=i, progress=False)
        scores.append(psnr(out, clean).mean().item())
    return sum(scores) / len(scores)


def inpaint_score(model, clean: torch.Tensor, *, steps: int, chains: int) -> float:
    scores = []
    for i, known in enumerate(known_masks(model, clean)):
        out = inpaint(model, clean, known, steps=steps, chains=chains, seed=i, progress=False)
        scores.append(psnr(out, clean).mean().item())
    return sum(scores) / len(scores)


IMAGE_GRID = {"denoise_steps": (0, 10, 30, 60, 100), "temperature_scales": (1.0, 10.0, 30.0, 100.0),
              "inpaint_steps": (0, 10, 30, 100)}


def tune(model_name: str, *, n: int = 128, chains: int = 1, denoise_steps=None, temperature_scales=None,
         inpaint_steps=None, data_root: str | None = None, log=print, photo_grid: dict | None = None) -> dict:
    """Grid search on the validation split; returns the config entry ``restoration``. Whole-image models:
    IMAGE_GRID (or the grids given); photo models: :func:`tune_photo_denoising` over PHOTO_GRID (``photo_grid``
    overrides entries of it; ``temperature_scales`` too)."""
    model = load_model(model_name)
    if model.fully_convolutional:
        from training.photos import validation_crops

        clean = datasets.to_float(validation_crops(model.config["dataset"], PHOTO_CROP, n))
        grid = {**PHOTO_GRID, **(NOISE_CONDITIONAL_GRID if model.noise_conditional else {}), **(photo_grid or {})}
        if temperature_scales:
            grid["temperature_scales"] = tuple(temperature_scales)
        protocol = f"{len(clean)} fixed {PHOTO_CROP}-px crops of the validation photos"
        denoising = {**tune_photo_denoising(model, clean, grid, log=log), "tuned_on": protocol}
        steps = inpaint_steps or grid["inpaint_steps"]
        if model.noise_conditional:
            inpainting = _tune_annealed_inpaint(model, clean, steps, grid["inpaint_levels"], protocol, log)
        else:
            inpainting = _tune_inpaint(model, clean, steps, 1, ["scribbles"], protocol, log)
        return {"denoise": denoising, "inpaint": inpainting}
    clean = datasets.to_float(datasets.load_dataset(model.config["dataset"], "val", data_root).images[:n])
    denoise_steps = denoise_steps or IMAGE_GRID["denoise_steps"]
    temperature_scales = temperature_scales or IMAGE_GRID["temperature_scales"]
    grid_d = []
    for steps, scale in itertools.product(denoise_steps, temperature_scales):
        if steps == 0 and scale != temperature_scales[0]:
            continue  # no Langevin step: the scale plays no part
        score = denoise_score(model, clean, steps=steps, temperature_scale=scale, chains=chains)
        grid_d.append({"steps": steps, "temperature_scale": scale, "psnr": round(score, 3)})
        log(json.dumps({"denoise": grid_d[-1]}))
    best_d = max(grid_d, key=lambda r: r["psnr"])
    protocol = f"val split, first {len(clean)} images, chains {chains}"
    return {
        "denoise": {"steps": best_d["steps"], "temperature_scale": best_d["temperature_scale"], "chains": chains,
                    "val_psnr": best_d["psnr"], "sigmas": list(SIGMAS), "tuned_on": protocol, "grid": grid_d},
        "inpaint": _tune_inpaint(model, clean, inpaint_steps or IMAGE_GRID["inpaint_steps"], chains, list(MASKS),
                                 protocol, log),
    }


def _tune_inpaint(model, clean, steps_grid, chains, masks, protocol, log) -> dict:
    grid = []
    for steps in steps_grid:
        grid.append({"steps": steps, "psnr": round(inpaint_score(model, clean, steps=steps, chains=chains), 3)})
        log(json.dumps({"inpaint": grid[-1]}))
    best = max(grid, key=lambda r: r["psnr"])
    return {"steps": best["steps"], "chains": chains, "val_psnr": best["psnr"], "masks": masks,
            "tuned_on": protocol, "grid": grid}


def _tune_annealed_inpaint(model, clean, steps_grid, levels, protocol, log) -> dict:
    """A noise-conditional model's inpainting (febm.inverse with a Mask: annealed denoising steps from the smooth
    fill): its steps x the top noise level ``sigma_start``, on the protocol's scribbles."""
    from febm.inverse import restore as restore_linear
    from febm.operators import SIGMA_QUANTISATION, Mask

    (known,) = known_masks(model, clean)
    grid = []
    for steps, top in itertools.product(steps_grid, levels):
        if steps == 0 and top != levels[0]:
            continue  # the smooth fill alone: no level plays a part
        out = restore_linear(model, clean, Mask(known), SIGMA_QUANTISATION, steps=steps, sigma_start=top,
                             task="inpaint", seed=0, progress=False)
        score = psnr(torch.where(known, clean, out), clean).mean().item()
        grid.append({"steps": steps, "sigma_start": top, "psnr": round(score, 3)})
        log(json.dumps({"inpaint": grid[-1]}))
    best = max(grid, key=lambda r: r["psnr"])
    return {"steps": best["steps"], "sigma_start": best["sigma_start"], "val_psnr": best["psnr"],
            "masks": ["scribbles"], "tuned_on": protocol, "grid": grid}


def tune_photo_denoising(model, clean: torch.Tensor, grid: dict = PHOTO_GRID, *, log=print) -> dict:
    """Per noise level of PHOTO_SIGMAS: the temperature scale and descent steps from the Wiener start (noise-
    conditional models: from the best blend of their gradient step and the Wiener filter, by mean PSNR), then
    chains at the best scale; the winner per sigma (:func:`_pick`: at most :func:`max_losses` crops lost to the
    start, ties within PHOTO_TIE dB: the cheapest). Returns the ``denoise`` entry: the one at
    PHOTO_DEFAULT_SIGMA, ``per_sigma`` and the grid."""
    if model.noise_conditional:  # no temperature: the chain of febm.posterior, which training ran, at scale 1
        curvature = None
    else:
        curvature = measure_prior_curvature(model, clean)
        model.config.setdefault("restoration", {}).setdefault("denoise", {})["prior_curvature"] = curvature
        log(json.dumps({"prior_curvature": curvature}))
    ladder, rows = [], []
    for i, (sigma, noisy) in enumerate(noisy_versions(model, clean)):
        here = []

        start_psnr = None

        def score(steps, descent, chains, scale, blend=None):
            out = denoise(model, noisy, sigma, steps=steps, descent=descent, chains=chains, temperature_scale=scale,
                          wiener_weight=blend, seed=i, progress=False)
            per_crop = psnr(out, clean)
            row = {"sigma_255": round(sigma * 255, 3), "steps": steps, "descent": descent, "chains": chains,
                   "temperature_scale": scale, **({} if blend is None else {"wiener_weight": blend}),
                   "psnr": round(per_crop.mean().item(), 3),
                   "losses": 0 if start_psnr is None else int((per_crop < start_psnr).sum())}  # crops it lost
            here.append(row)
            log(json.dumps({"denoise": row}))
            return row, per_crop

        blend = 0.0 if model.noise_conditional else None
        start, start_psnr = score(0, 0, 1, 1.0, blend)
        allowed = max_losses(sigma, len(clean))
        if model.noise_conditional:  # the start: the best blend of the gradient step and the Wiener filter
            blends = [score(0, 0, 1, 1.0, w) for w in grid["wiener_weights"]]
            start, start_psnr = max([(start, start_psnr), *blends], key=lambda b: b[0]["psnr"])
            blend = start["wiener_weight"]
            rows += [r for r in here if r is not start]  # the other blends, judged against the gradient step
            start = {**start, "losses": 0}
            here[:] = [start]  # the steps below run from it, and are judged against it
        # noise-conditional: descent from every blend, not only the best start's (at 50/255 the search that fixed
        # the blend first kept w = 0.25 and missed one descent step from w = 0, +0.3 dB on 16 validation crops)
        step_blends = [blend] if blend is None else [0.0, *grid["wiener_weights"]]
        for w in step_blends:
            for scale in grid["temperature_scales"]:
                for descent in (d for d in grid["descent"] if d > 0):
                    score(0, descent, 1, scale, w)
        best_scale = _pick(here[1:], len(clean))["temperature_scale"]  # the best descent's (the start has none)
        for steps, descent, chains in grid["chains"]:
            score(steps, descent, chains, best_scale, blend)
        best = _pick(here, allowed)
        keys = ("steps", "descent", "chains", "temperature_scale") + (("wiener_weight",) if blend is not None else ())
        ladder.append({"sigma": round(sigma, 6), **{k: best[k] for k in keys},
                       "val_psnr": best["psnr"], "start_psnr": start["psnr"],
                       "input_psnr": round(psnr(noisy, clean).mean().item(), 3)})
        rows += here
    default = min(ladder, key=lambda e: abs(e["sigma"] - PHOTO_DEFAULT_SIGMA))
    measured = {} if curvature is None else {"prior_curvature": curvature}
    return {**{k: v for k, v in default.items() if k != "sigma"}, **measured,
            "sigmas": [default["sigma"]],  # what the top-level val_psnr was measured at; per_sigma has the rest
            "per_sigma": ladder, "grid": rows}


def _cost(row: dict) -> int:
    """Gradient evaluations per image of a setting (chains without Langevin steps are one)."""
    return (row["chains"] if row["steps"] else 1) * (row["steps"] + row["descent"])


def _pick(rows: list[dict], allowed_losses: int = 0) -> dict:
    """Among the settings that lose to the start on at most ``allowed_losses`` crops (the start is one), the best
    mean PSNR; among those within PHOTO_TIE dB of it, the cheapest."""
    safe = [r for r in rows if r.get("losses", 0) <= allowed_losses]
    top = max(r["psnr"] for r in safe)
    return min((r for r in safe if r["psnr"] >= top - PHOTO_TIE), key=lambda r: (_cost(r), -r["psnr"]))


def measure_prior_curvature(model, clean: torch.Tensor, n: int = 8) -> float:
    """The energy's stiffest curvature (febm.restore.energy_curvature), the median over the first n crops."""
    from febm.restore import energy_curvature

    values = sorted(energy_curvature(model.energy, x[None]) for x in clean[:n])
    return round(float(values[len(values) // 2]), 4)


def tune_generation(model_name: str, steps_grid, *, noise_grid=(None,), n: int = 1000, metric: str = "fid",
                    data_root: str | None = None, log=print) -> dict:
    """Langevin steps (and, with ``noise_grid``, per-step noise; None: the model's) of generation chosen by the
    Fréchet distance (``metric``: fid or pca_fd) of n samples (seed 0) to the validation split; returns the
    config entry (the grid and the winner)."""
    from febm.restore import generate, generation_sampler
    from training.evaluate import Protocol

    model = load_model(model_name)
    if model.fully_convolutional:
        raise ValueError("generation tuning is for whole-image models (photo models restore, they do not generate)")
    protocol = Protocol(model.config["dataset"], "val", data_root, fid=metric == "fid", progress=False)
    grid = []
    for noise, steps in itertools.product(noise_grid, steps_grid):
        samples = generate(model, n, seed=0, steps=steps, noise=noise, progress=False)
        quality = protocol.quality(protocol.features(samples))
        grid.append({"steps": steps, "noise": generation_sampler(model, noise=noise).noise,
                     **{k: round(v, 3) for k, v in quality.items()}})
        log(json.dumps({"generate": grid[-1]}))
    best = min(grid, key=lambda row: row[metric])
    return {"steps": best["steps"], "noise": best["noise"], "metric": metric, f"val_{metric}": best[metric],
            "tuned_on": f"val split, {n} samples (seed 0)", "grid": grid}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a name under checkpoints/ or a model folder")
    parser.add_argument("--n", type=int, default=128, help="validation images per setting (default 128)")
    parser.add_argument("--chains", type=int, default=1, help="chains per image, averaged (default 1)")
    parser.add_argument("--data-root", help="folder holding the data set (default: system / cache)")
    parser.add_argument("--write", action="store_true", help="store the best settings in the model folder")
    parser.add_argument("--generation-steps", type=int, nargs="+", metavar="K",
                        help="also choose generation's Langevin steps among these, by FID on the val split")
    parser.add_argument("--generation-noise", type=float, nargs="+", metavar="NOISE",
                        help="with --generation-steps: also choose the chains' per-step noise among these "
                             "(0: noise-free descent; stored as the sampler's generation_noise)")
    parser.add_argument("--generation-samples", type=int, default=1000, help="samples per setting (default 1000)")
    parser.add_argument("--generation-metric", choices=["fid", "pca_fd"], default="fid")
    parser.add_argument("--no-restoration", action="store_true", help="skip the restoration grids")
    args = parser.parse_args(argv)
    if args.n < 1 or args.chains < 1 or args.generation_samples < 2:
        parser.error("--n and --chains must be >= 1, --generation-samples >= 2")
    if args.generation_steps and min(args.generation_steps) < 0:
        parser.error("--generation-steps must be >= 0")
    if args.generation_noise and not args.generation_steps:
        parser.error("--generation-noise needs --generation-steps")
    if args.generation_noise and not all(0 <= v < float("inf") for v in args.generation_noise):
        parser.error("--generation-noise values must be finite and >= 0")
    if args.no_restoration and not args.generation_steps:
        parser.error("--no-restoration leaves nothing to tune without --generation-steps")
    kind, location = resolve_model(args.model)
    if args.write and kind == "hub":
        parser.error("--write needs a local model folder, not a Hub repo")
    if args.generation_steps and load_model(args.model).fully_convolutional:
        parser.error(f"--generation-steps: {args.model} is a photo model; photo models restore, they do not generate")
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    result = {}
    if not args.no_restoration:
        result["restoration"] = tune(args.model, n=args.n, chains=args.chains, data_root=args.data_root, log=log)
    if args.generation_steps:
        result["generation"] = tune_generation(args.model, args.generation_steps, n=args.generation_samples,
                                               noise_grid=args.generation_noise or (None,),
                                               metric=args.generation_metric, data_root=args.data_root, log=log)
    if args.write:
        model = load_model(location)
        update = dict(result)
        if "restoration" in result:  # keep the settings of tasks tuned elsewhere (deblur, upscale)
            update["restoration"] = {**(model.config.get("restoration") or {}), **result["restoration"]}
        if "generation" in result:
            update["sampler"] = {**model.config["sampler"], "steps": result["generation"]["steps"]}
            if args.generation_noise:  # restoration keeps the sampler's own noise (its temperature)
                update["sampler"]["generation_noise"] = result["generation"]["noise"]
        model.update_config(update)
        model.save_pretrained(location)
    summary = {**result.get("restoration", {}), **({"generation": result["generation"]} if "generation" in result else {})}
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "grid"} for k, v in summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
