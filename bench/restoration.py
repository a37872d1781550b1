"""Restoration benchmark: the EBM against tuned classical restorers and a supervised network, PSNR and SSIM.

    python -m bench.restoration --model fmnist-js --out docs/restoration.json --markdown docs/restoration.md
    python -m bench.restoration --model runs/pilot-conv16-js/model --quick --out /tmp/r.json   # smoke check

On the first --n images of the TEST split (fixed seed): Gaussian noise sigma in {0.1, 0.2, 0.3, 0.5} (clipped
to [0, 1], what a PNG holds) and four masks (centre box, left half, 50% and 80% random pixels unknown).
Classical denoisers get their parameters by grid search on the first --val-n images of the VALIDATION split
(per sigma, best mean PSNR), so the test split is never used for tuning. The EBM runs once per corruption with
--chains chains per image (default: the model's tuned setting): their mean is `ebm-mean`; `gaussian-posterior`
is where those chains start (the model's start, a Gaussian or a mixture of them, conditioned on the input,
steps=0), so the difference is what the energy adds; `ebm-sample` is one chain run as a posterior sample
(mean=False); `ebm-blind` is the mean with sigma estimated from the image. PSNR and SSIM are over whole images
(observed pixels included).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
import time
import zlib
from itertools import product
from pathlib import Path

import numpy as np
import torch
from skimage.filters import gaussian
from skimage.metrics import structural_similarity
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, denoise_wavelet, inpaint_biharmonic
from torch import Tensor
from torchvision.utils import make_grid, save_image as save_grid
from tqdm.auto import tqdm

from bench.supervised import load as load_supervised, restore as restore_supervised
from febm.degradations import add_gaussian_noise
from febm.files import write_atomic
from febm.imageio import preset_mask
from febm.metrics import psnr
from febm.model import load_model
from febm.restore import denoise, inpaint, model_sampler, temperature
from training.data import load_dataset, to_float

NOISE_LEVELS = (0.1, 0.2, 0.3, 0.5)
MASK_KINDS = ("center", "left-half", "random-50", "random-80")
FIGURE_CORRUPTIONS = ("sigma=0.2", "sigma=0.5", "center", "random-80")  # --figure: before/after rows
FIGURE_IMAGES = 8
FIGURE_ZOOM = 3  # nearest-neighbour: 28 px images are too small to judge on a screen
QUICK = {"n": 16, "val_n": 8, "chains": 2, "steps": 20}


# --- corruptions ----------------------------------------------------------------------------------------------
def corruption_seed(seed: int, split: str, name: str) -> int:
    """A distinct, reproducible seed per (seed, split, corruption), independent of the order they run in."""
    return zlib.crc32(f"{seed}/{split}/{name}".encode())


def masks(kind: str, n: int, shape: tuple[int, int], seed: int) -> Tensor:
    """(n, 1, H, W): random kinds draw a different mask per image (seed + i), so no one pattern decides."""
    return torch.cat([preset_mask(kind, shape, seed=seed + i) for i in range(n)])


# --- metrics ------------------------------------------------------------------------------------------------
def scores(estimate: Tensor, clean: Tensor) -> dict[str, np.ndarray]:
    """Per-image PSNR (dB) and SSIM (data range 1, skimage's default 7x7 window), channels averaged."""
    est, ref = estimate.double().clamp(0, 1).numpy(), clean.double().numpy()
    ssim = [np.mean([structural_similarity(e[c], r[c], data_range=1.0) for c in range(e.shape[0])])
            for e, r in zip(est, ref)]
    return {"psnr": psnr(estimate.clamp(0, 1), clean).numpy(), "ssim": np.asarray(ssim)}


def summary(values: dict[str, np.ndarray], seconds: float) -> dict:
    """Mean and standard error (std / sqrt n) of each metric over images."""
    out = {}
    for key, v in values.items():
        out[key] = float(v.mean())
        out[f"{key}_se"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
    return {**out, "seconds": round(seconds, 2)}


# --- classical restorers ------------------------------------------------------------------------------------
def _wavelet(method):
    """sigma given, times a tuned scale: VisuShrink's universal threshold over-smooths at the true sigma."""
    return lambda y, s, scale, wavelet: denoise_wavelet(y, sigma=scale * s, wavelet=wavelet, method=method,
                                                        mode="soft", rescale_sigma=True)


def _nl_means(y, s, h, patch_size, patch_distance):
    """h as a multiple of sigma; fast_mode subtracts 2 sigma^2 from patch distances, so h -> 0 stays a filter."""
    return denoise_nl_means(y, h=h * s, sigma=s, patch_size=patch_size, patch_distance=patch_distance,
                            fast_mode=True)


WAVELETS = ["db1", "db2", "sym4"]
# name -> (function(image (H, W), sigma, **params), grid of params). Grids are small: 28x28 images.
DENOISERS = {
    "gaussian": (lambda y, s, width: gaussian(y, sigma=width), {"width": [0.3, 0.5, 0.7, 0.9, 1.1, 1.4, 1.8, 2.3]}),
    "tv-chambolle": (lambda y, s, weight: denoise_tv_chambolle(y, weight=weight),
                     {"weight": [0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7, 1.0]}),
    "nl-means": (_nl_means, {"h": [0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0], "patch_size": [3, 5],
                             "patch_distance": [3, 6]}),
    "wavelet-bayes": (_wavelet("BayesShrink"), {"scale": [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0],
                                                "wavelet": WAVELETS}),
    "wavelet-visu": (_wavelet("VisuShrink"), {"scale": [0.05, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0], "wavelet": WAVELETS}),
}


def grid(params: dict[str, list]) -> list[dict]:
    return [dict(zip(params, values)) for values in product(*params.values())]


def at_edge(params: dict[str, list], best: dict) -> list[str]:
    """Numeric parameters whose tuned value is the end of its grid: the optimum may lie outside it."""
    return [k for k, v in params.items() if isinstance(v[0], (int, float)) and len(v) > 2
            and best[k] in (min(v), max(v))]


def apply(fn, noisy: Tensor, sigma: float, params: dict) -> Tensor:
    """Run a per-image 2-D restorer over a batch (B, C, H, W), channel by channel."""
    out = [[fn(img[c].numpy().astype(np.float64), sigma, **params) for c in range(img.shape[0])] for img in noisy]
    return torch.as_tensor(np.asarray(out), dtype=torch.float32).clamp(0, 1)


def tune(fn, candidates: list[dict], clean: Tensor, noisy: Tensor, sigma: float) -> tuple[dict, float]:
    """The candidate with the best mean PSNR on (clean, noisy) validation images, and that PSNR."""
    results = [(float(psnr(apply(fn, noisy, sigma, p), clean).mean()), i) for i, p in enumerate(candidates)]
    best, i = max(results)
    return candidates[i], best


def diffusion_fill(image: Tensor, known: Tensor, iters: int = 1000) -> Tensor:
    """Harmonic fill: unknown pixels repeatedly replaced by their 4 neighbours' mean (Jacobi on Laplace's eq.)."""
    kernel = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]]).view(1, 1, 3, 3)
    b, c, h, w = image.shape
    x = image.clone().reshape(b * c, 1, h, w)
    k = known.expand_as(image).reshape(b * c, 1, h, w).bool()
    x[~k] = x[k].mean()
    for _ in range(iters):
        smooth = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)
        x = torch.where(k, x, smooth)
    return x.reshape(b, c, h, w)


def mean_fill(image: Tensor, known: Tensor) -> Tensor:
    """Unknown pixels set to the mean of each image's observed ones: the least a fill should beat."""
    k = known.expand_as(image)
    means = (image * k).flatten(1).sum(1) / k.flatten(1).sum(1)
    return torch.where(k.bool(), image, means.view(-1, 1, 1, 1).expand_as(image))


def biharmonic(image: Tensor, known: Tensor) -> Tensor:
    unknown = (known[:, 0] == 0).numpy()
    out = [inpaint_biharmonic(img.permute(1, 2, 0).numpy().astype(np.float64), m, channel_axis=-1)
           for img, m in zip(image, unknown)]
    return torch.as_tensor(np.asarray(out), dtype=torch.float32).permute(0, 3, 1, 2).clamp(0, 1)


# --- learned restorers --------------------------------------------------------------------------------------
def ebm_restore(model, y: Tensor, *, sigma=None, known=None, args, seed: int, desc: str) -> dict[str, Tensor]:
    """{'mean': the posterior-mean estimate, 'sample': one posterior sample (its own chain, mean=False),
    'sigma': sigma used}, in batches."""
    device = next(model.parameters()).device
    parts = []
    for i in tqdm(range(0, len(y), args.batch_size), desc=desc, leave=False):
        yb = y[i:i + args.batch_size].to(device)
        runs = []
        for mean, chains in ((True, args.chains), (False, 1)):
            common = dict(seed=seed + i, steps=args.steps, chains=chains, mean=mean, progress=False, details=True)
            if known is None:
                runs.append(denoise(model, yb, sigma, **common))
            else:
                runs.append(inpaint(model, yb, known[i:i + args.batch_size].to(device), **common))
        r, one = runs
        parts.append((r.images.cpu(), one.images.cpu(), None if r.sigma is None else r.sigma.cpu()))
    out = {"mean": torch.cat([p[0] for p in parts]), "sample": torch.cat([p[1] for p in parts])}
    if parts[0][2] is not None:
        out["sigma"] = torch.cat([p[2] for p in parts])
    return out


# --- report -------------------------------------------------------------------------------------------------
ROW_ORDER = ("input", "mean-fill", *DENOISERS, "diffusion", "biharmonic", "supervised", "gaussian-posterior",
             "ebm-mean", "ebm-sample", "ebm-blind")


def column_name(corruption: str) -> str:
    return corruption.replace("sigma=", "σ=")


def sampler_text(sampler: dict, steps: bool = True) -> str:
    """'authors, 200 steps, step_size 10, ...' from the sampler's settings that restoration runs (its steps
    only with ``steps``: tuned restoration steps replace them; generation's own noise left out)."""
    rest = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in sampler.items()
                     if k not in ("method", "steps", "clamp", "generation_noise"))
    return f"{sampler['method']}, " + (f"{sampler['steps']} steps, " if steps else "") + rest


def restoration_text(tuned: dict | None) -> str:
    """' (denoise: 30 steps, likelihood x30; inpaint: 10 steps)' from the model's tuned defaults."""
    if not tuned:
        return ""
    d, i = tuned.get("denoise", {}), tuned.get("inpaint", {})
    return (f" (tuned on val: denoise {d.get('steps')} steps, likelihood weight x{d.get('temperature_scale', 1):g}; "
            f"inpaint {i.get('steps')} steps)")


def markdown(report: dict) -> str:
    """A header (what was measured, how) and one table: a row per method, 'PSNR / SSIM' per corruption."""
    results, s = report["results"], report["settings"]
    columns = report["corruptions"]
    rows = [m for m in ROW_ORDER if m in results] + [m for m in results if m not in ROW_ORDER]
    sampler = sampler_text(s["sampler"], steps=not s.get("restoration"))  # tuned restoration steps say their own
    lines = [
        f"# Restoration benchmark: {s['model']}",
        "",
        f"{s['n']} images of the {s['dataset']} **{s['split']}** split (the first ones), seed {s['seed']}; classical "
        f"parameters tuned per corruption on the first {s['val_n']} images of the **{s['tuning_split']}** split. "
        f"Cells: mean PSNR (dB) / SSIM over images, whole image. EBM: {s['model']} "
        f"({s['model_training_steps']} training steps), sampler {sampler}"
        f"{restoration_text(s.get('restoration'))}, {s['chains']} chains per image "
        f"(`ebm-mean` = their mean; `ebm-sample` = one chain run as a posterior sample; `ebm-blind` = the mean with "
        f"sigma estimated from the image; `gaussian-posterior` = where the chains start, the model's start (a "
        f"Gaussian or a mixture of them) conditioned on the input, so the gap to `ebm-mean` is what the energy adds).",
        "",
        f"Command: `{report['command']}`",
    ]
    if report.get("supervised"):
        lines.append(f"Supervised reference: `{report['supervised'].get('command', report['supervised'])}`")
    lines += [f"Note: {note}" for note in report.get("notes", [])]
    lines += ["", "| method | " + " | ".join(map(column_name, columns)) + " |",
              "| --- |" + " --- |" * len(columns)]
    for m in rows:
        cells = [f"{results[m][c]['psnr']:.2f} / {results[m][c]['ssim']:.3f}" if c in results[m] else "—"
                 for c in columns]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)


# --- the run ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="fmnist-js", help="checkpoints name, model folder or Hub repo id")
    p.add_argument("--n", type=int, default=500, help="test images (the first n)")
    p.add_argument("--val-n", type=int, default=100, help="validation images for tuning the classical methods")
    p.add_argument("--chains", type=int, help="EBM chains per image for the mean (default: the model's tuned setting)")
    p.add_argument("--steps", type=int, help="EBM Langevin steps (default: the model's config)")
    p.add_argument("--batch-size", type=int, default=100, help="images per EBM call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--supervised", default="bench/weights/supervised.safetensors")
    p.add_argument("--out", default="docs/restoration.json")
    p.add_argument("--markdown", help="also write the Markdown table here")
    p.add_argument("--figure", help="also write a PNG: the first 8 test images, then input and EBM mean for "
                                    + ", ".join(FIGURE_CORRUPTIONS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true",
                   help="smoke check: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    args = p.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    return args


def load_split(dataset: str, split: str, n: int) -> Tensor:
    return to_float(load_dataset(dataset, split).images[:n])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    model = load_model(args.model, device=args.device)
    dataset = model.config.get("dataset") or "fashion-mnist"
    clean, val = load_split(dataset, "test", args.n), load_split(dataset, "val", args.val_n)
    shape = tuple(clean.shape[2:])
    sampler = model_sampler(model, steps=args.steps)
    results: dict[str, dict] = {}
    tuned: dict[str, dict] = {}
    notes: list[str] = []
    sigma_estimates: dict[str, float] = {}
    figure_rows: list[Tensor] = [clean[:FIGURE_IMAGES]]  # clean, then (input, EBM) per figure corruption

    def record(method: str, corruption: str, estimate: Tensor, t0: float) -> None:
        results.setdefault(method, {})[corruption] = summary(scores(estimate, clean), time.perf_counter() - t0)

    sup = None
    if Path(args.supervised).exists():
        sup, sup_meta = load_supervised(args.supervised, args.device)
    else:
        sup_meta = None
        notes.append(f"supervised row skipped: no weights at {args.supervised} (train them with bench.supervised)")

    denoisers = dict(DENOISERS)
    if importlib.util.find_spec("pywt") is None:  # skimage's wavelet denoiser needs PyWavelets
        denoisers = {k: v for k, v in denoisers.items() if not k.startswith("wavelet")}
        notes.append("wavelet rows skipped: PyWavelets is not installed (pip install pywavelets)")
    corruptions = [f"sigma={s}" for s in NOISE_LEVELS] + list(MASK_KINDS)
    for corruption in tqdm(corruptions, desc="corruptions"):
        seed = corruption_seed(args.seed, "test", corruption)
        t0 = time.perf_counter()
        if corruption.startswith("sigma="):
            sigma = float(corruption[6:])
            y, known = add_gaussian_noise(clean, sigma, seed), torch.ones(len(clean), 1, *shape)
            val_y = add_gaussian_noise(val, sigma, corruption_seed(args.seed, "val", corruption))
            record("input", corruption, y, t0)
            for name, (fn, params) in tqdm(denoisers.items(), desc="classical", leave=False):
                t0 = time.perf_counter()
                best, val_psnr = tune(fn, grid(params), val, val_y, sigma)
                tuned.setdefault(name, {})[corruption] = {"params": best, "val_psnr": round(val_psnr, 3)}
                if edge := at_edge(params, best):
                    notes.append(f"{name} at {corruption}: tuned {', '.join(edge)} at the end of its grid")
                record(name, corruption, apply(fn, y, sigma, best), t0)
            if model.start is not None:  # the chains' start alone: what the energy adds is the difference
                t0 = time.perf_counter()
                record("gaussian-posterior", corruption, denoise(model, y, sigma, steps=0, progress=False), t0)
            t0 = time.perf_counter()
            out = ebm_restore(model, y, sigma=sigma, args=args, seed=seed, desc="ebm")
            record("ebm-mean", corruption, out["mean"], t0)
            record("ebm-sample", corruption, out["sample"], t0)
            if corruption in FIGURE_CORRUPTIONS:
                figure_rows += [y[:FIGURE_IMAGES], out["mean"][:FIGURE_IMAGES]]
            t0 = time.perf_counter()
            blind = ebm_restore(model, y, sigma=None, args=args, seed=seed, desc="ebm-blind")
            record("ebm-blind", corruption, blind["mean"], t0)
            sigma_estimates[corruption] = round(float(blind["sigma"].mean()), 4)
        else:
            sigma, known = 0.0, masks(corruption, len(clean), shape, seed)
            y = clean * known
            record("input", corruption, y, t0)
            for name, fill in (("mean-fill", mean_fill), ("diffusion", diffusion_fill), ("biharmonic", biharmonic)):
                t0 = time.perf_counter()
                record(name, corruption, fill(y, known), t0)
            if model.start is not None:
                t0 = time.perf_counter()
                record("gaussian-posterior", corruption, inpaint(model, y, known, steps=0, progress=False), t0)
            t0 = time.perf_counter()
            out = ebm_restore(model, y, known=known, args=args, seed=seed, desc="ebm")
            record("ebm-mean", corruption, out["mean"], t0)
            record("ebm-sample", corruption, out["sample"], t0)
            if corruption in FIGURE_CORRUPTIONS:
                figure_rows += [y[:FIGURE_IMAGES], out["mean"][:FIGURE_IMAGES]]
        if sup is not None:
            t0 = time.perf_counter()
            record("supervised", corruption, restore_supervised(sup, y.to(args.device), known.to(args.device),
                                                                sigma).cpu(), t0)

    report = {
        "command": " ".join(["python -m bench.restoration", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "device": str(args.device), "torch": torch.__version__},
        "settings": {"model": args.model, "model_training_steps": model.config.get("training", {}).get("steps"),
                     "model_divergence": model.divergence, "dataset": dataset, "split": "test", "n": len(clean),
                     "tuning_split": "val", "val_n": len(val), "seed": args.seed,
                     "chains": args.chains or "the model's default",
                     "restoration": None if args.steps is not None else {
                         task: {k: v for k, v in cfg.items() if k != "grid"}
                         for task, cfg in (model.config.get("restoration") or {}).items()},
                     "batch_size": args.batch_size, "quick": args.quick,
                     "sampler": {**sampler.to_dict(), "temperature": temperature(model, sampler)},
                     "noise": "clip(x + sigma z, 0, 1)", "masks": "unknown pixels set to 0 in the input"},
        "corruptions": corruptions,
        "results": results,
        "tuned": tuned,
        "blind_sigma_estimate_mean": sigma_estimates,
        "supervised": sup_meta,
        "notes": notes,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write(args.out, json.dumps(report, indent=2) + "\n")
    if args.figure:
        grid_image = make_grid(torch.cat(figure_rows).clamp(0, 1), nrow=FIGURE_IMAGES, padding=1, pad_value=0.5)
        save_grid(torch.nn.functional.interpolate(grid_image[None], scale_factor=FIGURE_ZOOM)[0], args.figure)
    if args.markdown:
        write(args.markdown, markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
