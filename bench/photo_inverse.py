"""Deblurring and upscaling benchmark: classical methods and the photo models on the TEST photos (issue 28).

    python -m bench.photo_inverse --tune                  # once: classical parameters on the VALIDATION crops
    python -m bench.photo_inverse --out docs/photo_inverse.json --markdown docs/photo_inverse.md
    python -m bench.photo_inverse --photos camera chelsea --max-side 192 --out /tmp/pi.json   # a quick check
    python -m bench.photo_inverse --tune-model runs/photo-dsm/model --task deblur --write       # a model's settings
    python -m bench.photo_inverse --figure docs/inverse_full.png --cases colour-gaussian colour-x4  # crops

Test photos: those of ``bench.photos`` (never used for tuning); grey cases use all ten (luma), colour cases the
eight colour photos; ``--max-side N`` downscales them first (Lanczos, uint8), for quick runs.

Cases (every method in one run, one degradation per (case, photo), seeded):

- deblurring: a Gaussian blur of sigma_b = 1.6 px (``febm.operators.gaussian_kernel``) and a 9-px motion blur at 30
  degrees (``motion_kernel(9, 30)``), by ``febm.operators.Blur`` (reflect borders), plus Gaussian noise of 2/255,
  clipped to [0, 1]; grey and colour;
- upscaling by 2 and 4: the photo (cropped to a multiple of the factor) made smaller by ``febm.operators.Downsample``
  (antialiased bicubic: PIL's arithmetic) and rounded to 8 bits, as a small photo is stored; grey and colour.

Methods: ``input`` (the blurred photo; for upscaling nearest-neighbour enlargement); deblurring: ``wiener``
(scikit-image's ``restoration.wiener``, Laplacian regulariser, balance tuned), ``rl`` (scikit-image's
Richardson-Lucy, iterations tuned), ``tv`` (TV deconvolution: proximal gradient steps whose proximal step is
scikit-image's Chambolle TV denoiser; weight tuned), all three on a reflect-padded copy, cropped back, and ``start``
(``febm.operators.wiener_deconvolution``: the photo models' start); upscaling: ``bicubic`` and ``lanczos`` (PIL,
per channel in float: no 8-bit rounding); and ``model:NAME`` for every shipped photo model and ``--model PATH``,
through ``febm.inverse.deblur`` (true sigma) / ``upscale`` (sigma None: the model's tuned data_sigma), seed 0, the
model's own settings, the whole photo as one tensor.

Metrics as in ``bench.photos``: PSNR and SSIM over the whole photo (outputs clipped to [0, 1]), means over photos;
seconds per megapixel of the output (wall clock and the process's CPU time) after an untimed warm-up per method.

``--tune`` grid-searches the classical parameters per deblurring case on ``training.photos.validation_crops(
"photos", 96, 16)`` and writes bench/photo_inverse_params.json. ``--tune-model`` tunes a model's deblur or upscale
settings on the same crops by coordinate search (both kernels, or both factors, colour, mean PSNR), prints them, and
with ``--write`` stores them in the model folder's config (``febm.inverse.write_task_settings``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from skimage.restoration import denoise_tv_chambolle, richardson_lucy, wiener
from torch import Tensor
from tqdm.auto import tqdm

from bench.photos import (GREY_ONLY, PHOTOS, as_array, as_tensor, load_models, load_test_photo, machine, photo_models,
                          score, to_grey)
from bench.reports import save
from febm.files import write_atomic
from febm.inverse import DEFAULTS, NOISE_CONDITIONAL, energy_kind, restore, task_settings, write_task_settings
from febm.operators import Blur, Downsample, crop_to_multiple, gaussian_kernel, motion_kernel, wiener_deconvolution
from febm.restore import prior_curvature

PARAMS_FILE = Path(__file__).with_name("photo_inverse_params.json")
NOISE_255 = 2  # deblurring: the noise std in 0-255 levels
TUNE_CROPS = {"name": "photos", "size": 96, "n": 16}
UPSCALE_CROP = 128  # px: upscaling x4 leaves 32 px, the smallest observation a photo model takes


# --- cases --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    task: str  # "deblur" | "upscale"
    colour: bool
    kernel: str | None = None  # deblur: "gaussian" | "motion"
    factor: int | None = None  # upscale: 2 | 4

    @property
    def title(self) -> str:
        what = (f"deblurring, {KERNEL_TITLES[self.kernel]}, noise {NOISE_255}/255" if self.task == "deblur"
                else f"upscaling ×{self.factor}")
        return f"{'colour' if self.colour else 'grey'} {what}"

    def operator(self):
        return Blur(KERNELS[self.kernel]()) if self.task == "deblur" else Downsample(self.factor)


KERNELS: dict[str, Callable[[], Tensor]] = {"gaussian": lambda: gaussian_kernel(1.6),
                                            "motion": lambda: motion_kernel(9, 30)}
KERNEL_TITLES = {"gaussian": "Gaussian blur σ_b = 1.6 px", "motion": "motion blur 9 px at 30°"}
CASES = {c.name: c for c in [
    *(Case(f"{'colour' if col else 'grey'}-{k}", "deblur", col, kernel=k) for k in KERNELS for col in (False, True)),
    *(Case(f"{'colour' if col else 'grey'}-x{f}", "upscale", col, factor=f) for f in (2, 4) for col in (False, True)),
]}


def case_seed(seed: int, case: str, photo: str) -> int:
    return zlib.crc32(f"{seed}/{case}/{photo}".encode())


@dataclass
class Observation:
    clean: np.ndarray  # float64 (H, W[, 3]) in [0, 1]
    observed: np.ndarray  # float64 (h, w[, 3])
    tensor: Tensor  # (1, C, h, w) float32: the observation as the models take it
    case: Case
    sigma: float | None  # deblurring: the noise std; upscaling: None

    @property
    def megapixels(self) -> float:
        return self.clean.shape[0] * self.clean.shape[1] / 1e6


def degrade(case: Case, clean_uint8: np.ndarray, seed: int) -> Observation:
    """The case's degradation of one clean uint8 photo (cropped to a multiple of the factor for upscaling)."""
    x = as_tensor(clean_uint8.astype(np.float32) / 255)
    if case.task == "deblur":
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        y = (case.operator().forward(x) + NOISE_255 / 255 * noise).clamp(0, 1)
        sigma = NOISE_255 / 255
    else:
        x = crop_to_multiple(x, case.factor)
        y = (case.operator().forward(x) * 255).round().clamp(0, 255) / 255
        sigma = None
    return Observation(as_array(x), as_array(y), y, case, sigma)


def case_photos(case: Case, photos: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if case.colour:
        return {n: p for n, p in photos.items() if p.ndim == 3}
    return {n: to_grey(p) for n, p in photos.items()}


# --- classical methods ----------------------------------------------------------------------------------------
def _channels(image: np.ndarray) -> list[np.ndarray]:
    return [image] if image.ndim == 2 else [image[..., c] for c in range(image.shape[-1])]


def _stack(channels: list[np.ndarray]) -> np.ndarray:
    return channels[0] if len(channels) == 1 else np.stack(channels, axis=-1)


def _padded(fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, pad: int) -> np.ndarray:
    """fn on a reflect-padded copy of each channel, cropped back: the methods' periodic or zero borders then fall
    in the padding, not on the photo."""
    out = []
    for ch in _channels(image):
        p = min(pad, ch.shape[0] - 1, ch.shape[1] - 1)
        res = fn(np.pad(ch, p, mode="reflect"))
        out.append(res[p:p + ch.shape[0], p:p + ch.shape[1]])
    return _stack(out)


def _kernel(obs: Observation) -> np.ndarray:
    return obs.case.operator().kernel.double().numpy()


def _pad_of(k: np.ndarray) -> int:
    return 2 * max(k.shape)


def run_wiener(obs: Observation, p: dict) -> np.ndarray:
    k = _kernel(obs)
    return _padded(lambda ch: wiener(ch, k, balance=p["balance"], clip=False), obs.observed, _pad_of(k))


def run_rl(obs: Observation, p: dict) -> np.ndarray:
    k = _kernel(obs)
    return _padded(lambda ch: richardson_lucy(ch, k, num_iter=p["iterations"], clip=False), obs.observed, _pad_of(k))


TV_ITERATIONS = 30


def tv_deconvolution(image: np.ndarray, k: np.ndarray, weight: float, iterations: int = TV_ITERATIONS) -> np.ndarray:
    """min ||k * x - y||^2 / 2 + weight TV(x) by proximal gradient steps (step 1: ||k||_1 = 1 bounds the blur's
    norm): x <- TV-denoise(x - k^T * (k * x - y), weight) with scikit-image's Chambolle denoiser as the proximal
    step, from x = y. Borders: ``image`` comes reflect-padded; the blur here is a periodic FFT convolution."""
    h, w = image.shape
    psf = np.zeros((h, w))
    psf[:k.shape[0], :k.shape[1]] = k
    psf = np.roll(psf, (-((k.shape[0] - 1) // 2), -((k.shape[1] - 1) // 2)), axis=(0, 1))
    k_hat = np.fft.rfft2(psf)
    blur = lambda a, kh: np.fft.irfft2(np.fft.rfft2(a) * kh, s=(h, w))  # noqa: E731
    x = image.copy()
    for _ in range(iterations):
        x = denoise_tv_chambolle(x - blur(blur(x, k_hat) - image, k_hat.conj()), weight=weight)
    return x


def run_tv(obs: Observation, p: dict) -> np.ndarray:
    k = _kernel(obs)
    return _padded(lambda ch: tv_deconvolution(ch, k, p["weight"]), obs.observed, _pad_of(k))


def run_start(obs: Observation, p: dict) -> Tensor:
    return wiener_deconvolution(obs.tensor, obs.case.operator().kernel, obs.sigma, p["weight"]).clamp(0, 1)


def _pil_resize(obs: Observation, method) -> np.ndarray:
    h, w = obs.clean.shape[:2]
    out = [np.asarray(Image.fromarray(ch.astype(np.float32), "F").resize((w, h), method), dtype=np.float64)
           for ch in _channels(obs.observed)]
    return _stack(out)


def run_bicubic(obs: Observation, p: dict) -> np.ndarray:
    return _pil_resize(obs, Image.Resampling.BICUBIC)


def run_lanczos(obs: Observation, p: dict) -> np.ndarray:
    return _pil_resize(obs, Image.Resampling.LANCZOS)


def run_input(obs: Observation, p: dict) -> np.ndarray:
    if obs.case.task == "deblur":
        return obs.observed
    f = obs.case.factor
    return _stack([np.kron(ch, np.ones((f, f))) for ch in _channels(obs.observed)])


@dataclass(frozen=True)
class Method:
    fn: Callable[[Observation, dict], np.ndarray | Tensor]
    task: str | None  # None: every task
    label: str


METHODS: dict[str, Method] = {
    "input": Method(run_input, None, "input (blurred / nearest-neighbour enlargement)"),
    "wiener": Method(run_wiener, "deblur", "Wiener (scikit-image, Laplacian regulariser)"),
    "rl": Method(run_rl, "deblur", "Richardson-Lucy (scikit-image)"),
    "tv": Method(run_tv, "deblur", "TV deconvolution (proximal gradient, scikit-image's Chambolle prox)"),
    "start": Method(run_start, "deblur", "Wiener, Fourier, 1/f² spectrum (febm's start)"),
    "bicubic": Method(run_bicubic, "upscale", "bicubic (PIL; febm's start)"),
    "lanczos": Method(run_lanczos, "upscale", "Lanczos (PIL)"),
}
CLASSICAL = ("wiener", "rl", "tv", "start", "bicubic", "lanczos")
SHORT = {"wiener": "Wiener", "rl": "Richardson-Lucy", "tv": "TV", "start": "Fourier Wiener", "bicubic": "bicubic",
         "lanczos": "Lanczos"}
TUNE_GRIDS = {
    "wiener": {"balance": [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]},
    "rl": {"iterations": [3, 5, 8, 12, 20, 30, 50]},
    "tv": {"weight": [0.001, 0.002, 0.004, 0.007, 0.01, 0.015, 0.02, 0.03]},
    "start": {"weight": [100, 200, 300, 500, 700, 1000, 1500, 2000, 3000]},
}
DEFAULT_PARAMS = {"wiener": {"balance": 0.01}, "rl": {"iterations": 10}, "tv": {"weight": 0.005},
                  "start": {"weight": 1000.0}}


def method_label(name: str) -> str:
    return f"**{name[6:]}** (photo model)" if name.startswith("model:") else METHODS[name].label


def model_restore(model, obs: Observation, device: str = "cpu") -> Tensor:
    """``febm.inverse`` on the whole photo: deblur at the true sigma, upscale at the model's data_sigma."""
    task = obs.case.task
    return restore(model, obs.tensor.to(device), obs.case.operator(), obs.sigma, seed=0, task=task,
                   progress=False).cpu()


# --- the benchmark --------------------------------------------------------------------------------------------
def params_for(params: dict, case: Case, method: str) -> dict:
    return {**DEFAULT_PARAMS.get(method, {}), **params.get(case.name, {}).get(method, {})}


def run_benchmark(photos: dict[str, np.ndarray], cases: list[Case], methods: list[str], params: dict, *,
                  models: list[tuple[str, object]] = (), device: str = "cpu", seed: int = 0, progress: bool = True,
                  notes: list[str] | None = None) -> dict:
    notes = [] if notes is None else notes
    loaded = dict(models)
    results = {}
    bar = tqdm(total=sum(len(case_photos(c, photos)) for c in cases), desc="photos", disable=not progress)
    for case in cases:
        clean_photos = case_photos(case, photos)
        names = [m for m in methods if METHODS[m].task in (None, case.task)] + list(loaded)
        per_photo: dict[str, dict] = {m: {} for m in names}
        warm_up(case, clean_photos, names, params, loaded, device)
        for photo, clean_uint8 in clean_photos.items():
            bar.set_postfix_str(f"{case.name} {photo}")
            obs = degrade(case, clean_uint8, case_seed(seed, case.name, photo))
            for m in names:
                try:
                    t0, c0 = time.perf_counter(), time.process_time()
                    out = (model_restore(loaded[m], obs, device) if m in loaded
                           else METHODS[m].fn(obs, params_for(params, case, m)))
                    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                except Exception as e:  # noqa: BLE001 - a model that fails is reported in the notes
                    if m not in loaded:
                        raise
                    notes.append(f"{m} failed on {case.name}/{photo}: {type(e).__name__}: {e}")
                    continue
                estimate = _image(out)
                per_photo[m][photo] = {**score(estimate, obs.clean), "seconds": seconds, "cpu_seconds": cpu,
                                       "megapixels": obs.megapixels}
            bar.update(1)
        results[case.name] = {"title": case.title, "task": case.task, "colour": case.colour, "kernel": case.kernel,
                              "factor": case.factor, "photos": list(clean_photos),
                              "methods": {m: summarize(v) for m, v in per_photo.items() if v}}
    bar.close()
    return results


WARM_UP = 128  # px


def warm_up(case: Case, clean_photos: dict, names: list[str], params: dict, models: dict, device: str) -> None:
    """Every method once on a central crop of the case's first photo, untimed (first-call costs)."""
    if not clean_photos:
        return
    first = next(iter(clean_photos.values()))
    h, w = first.shape[:2]
    top, left = max(0, (h - WARM_UP) // 2), max(0, (w - WARM_UP) // 2)
    obs = degrade(case, first[top:top + WARM_UP, left:left + WARM_UP], 0)
    for m in names:
        try:
            model_restore(models[m], obs, device) if m in models else METHODS[m].fn(obs, params_for(params, case, m))
        except Exception:  # noqa: BLE001 - the timed call reports any real failure
            pass


def summarize(per_photo: dict[str, dict]) -> dict:
    rows = list(per_photo.values())
    seconds, mpx, cpu = (sum(r[k] for r in rows) for k in ("seconds", "megapixels", "cpu_seconds"))
    return {"psnr": float(np.mean([r["psnr"] for r in rows])), "ssim": float(np.mean([r["ssim"] for r in rows])),
            "s_per_mpx": seconds / mpx, "cpu_s_per_mpx": cpu / mpx, "megapixels": mpx, "n": len(rows),
            "per_photo": {p: {"psnr": round(r["psnr"], 3), "ssim": round(r["ssim"], 4)} for p, r in per_photo.items()}}


# --- report ---------------------------------------------------------------------------------------------------
def _speed(v: float) -> str:
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def markdown(report: dict) -> str:
    cases, mach = report["cases"], report["machine"]
    sizes = [p["shape"] for p in report["photos"].values()]
    lines = ["# Deblurring and upscaling the test photos", "",
             f"Written by `bench/photo_inverse.py`: `{report['command']}`, on {report['date'][:10]} "
             f"({mach['processor']}, {mach['cpu_count']} logical CPUs shared with other jobs, torch "
             f"{mach['torch_threads']} threads), {report['seconds'] / 60:.1f} minutes. Photos: "
             + ", ".join(f"{n} {'x'.join(map(str, s['shape'][:2]))}" for n, s in report["photos"].items())
             + (f" (downscaled to a long side of at most {report['max_side']} px)" if report.get("max_side") else "")
             + f"; {len(sizes)} photos.", "",
             "**Protocol.** Deblurring: `febm.operators.Blur` (reflect borders) with a Gaussian kernel of σ_b = 1.6 "
             f"px or a 9-px motion blur at 30°, plus noise of {NOISE_255}/255 clipped to [0, 1], the true σ given "
             "to the models. Upscaling: the photo cropped to a multiple of the factor, made smaller by "
             "`febm.operators.Downsample` (antialiased bicubic, PIL's arithmetic) and rounded to 8 bits; the models "
             "get σ = None (their tuned data σ). Classical parameters tuned on 16 validation crops "
             "(`python -m bench.photo_inverse --tune`); the photo models run their own settings "
             "(`config[\"restoration\"]`, or febm.inverse.DEFAULTS where they have none). PSNR (dB) and SSIM over "
             "the whole photo, means over photos; s/Mpx: wall-clock seconds per output megapixel (CPU s/Mpx: the "
             "process's CPU time over all threads).", ""]
    if report["notes"]:
        lines += ["Notes:", "", *[f"- {n}" for n in report["notes"]], ""]
    lines += ["## Best per case (PSNR, dB)", "", "| case | best photo model | PSNR | best classical | PSNR | margin |",
              "| --- | --- | --- | --- | --- | --- |"]
    for c in cases.values():
        rows = c["methods"]
        best = lambda names: max(names, key=lambda m: rows[m]["psnr"]) if names else None  # noqa: E731
        model, classical = best([m for m in rows if m.startswith("model:")]), best([m for m in rows if m in CLASSICAL])
        cell = lambda m: (m.removeprefix("model:"), f"{rows[m]['psnr']:.2f}") if m else ("—", "—")  # noqa: E731
        margin = f"{rows[model]['psnr'] - rows[classical]['psnr']:+.2f}" if model and classical else "—"
        lines.append(f"| {c['title']} | {' | '.join(cell(model))} | {' | '.join(cell(classical))} | {margin} |")
    lines.append("")
    methods = []
    for c in cases.values():
        methods += [m for m in c["methods"] if m not in methods]
    lines += ["## PSNR / SSIM in every case", "", "| method | " + " | ".join(cases) + " |",
              "| --- |" + " --- |" * len(cases)]
    for m in methods:
        cells = [f"{c['methods'][m]['psnr']:.2f} / {c['methods'][m]['ssim']:.3f}" if m in c["methods"] else ""
                 for c in cases.values()]
        lines.append(f"| {method_label(m)} | " + " | ".join(cells) + " |")
    lines += ["", "## Seconds per output megapixel (wall clock / CPU)", "", "| method | " + " | ".join(cases) + " |",
              "| --- |" + " --- |" * len(cases)]
    for m in methods:
        cells = [f"{_speed(c['methods'][m]['s_per_mpx'])} / {_speed(c['methods'][m]['cpu_s_per_mpx'])}"
                 if m in c["methods"] else "" for c in cases.values()]
        lines.append(f"| {method_label(m)} | " + " | ".join(cells) + " |")
    lines.append("")
    if report.get("params"):
        lines += ["## Tuned classical parameters (validation crops)", "", "```json",
                  json.dumps(report["params"], indent=1), "```", ""]
    if report.get("model_settings"):
        lines += ["## Photo models' settings", "", "```json", json.dumps(report["model_settings"], indent=1), "```", ""]
    return "\n".join(lines)


def merge_reports(reports: list[dict]) -> dict:
    """One report from runs split by case or by method: their cases (and a case's methods) together; the first
    run's header, its command replaced by all the commands, seconds summed, notes and settings joined."""
    merged = json.loads(json.dumps(reports[0]))
    for r in reports[1:]:
        for name, case in r["cases"].items():
            if name in merged["cases"]:
                merged["cases"][name]["methods"].update(case["methods"])
            else:
                merged["cases"][name] = case
        merged["photos"].update(r["photos"])
        merged["notes"] += [n for n in r["notes"] if n not in merged["notes"]]
        merged["seconds"] += r["seconds"]
        merged.setdefault("params", {}).update(r.get("params") or {})
        for name, tasks in (r.get("model_settings") or {}).items():
            merged.setdefault("model_settings", {}).setdefault(name, {}).update(tasks)
    if len(reports) > 1:
        merged["command"] = "; ".join(r["command"] for r in reports)
    merged["cases"] = {name: merged["cases"][name] for name in CASES if name in merged["cases"]}
    return merged


# --- figure ---------------------------------------------------------------------------------------------------
FIGURE_CROP = 96  # px of the photo, shown enlarged (nearest neighbour)


def _image(out: np.ndarray | Tensor) -> np.ndarray:
    return as_array(out) if isinstance(out, Tensor) else np.asarray(out, dtype=np.float64)


def figure_panels(photo: str, cases: list[Case], params: dict, models: list[tuple[str, object]], *, seed: int = 0,
                  max_side: int | None = None, device: str = "cpu") -> list[tuple[str, np.ndarray, list]]:
    """Per case, one test photo degraded as the benchmark does (same seed): (title, clean, [(label, image, PSNR over
    the whole photo)]) for the input, the classical method that does best on this photo, and each model."""
    rows, clean = [], {photo: load_test_photo(photo, max_side)}
    for case in cases:
        clean_uint8 = case_photos(case, clean).get(photo)
        if clean_uint8 is None:  # a grey-only photo in a colour case
            continue
        obs = degrade(case, clean_uint8, case_seed(seed, case.name, photo))
        classical = {m: np.clip(_image(METHODS[m].fn(obs, params_for(params, case, m))), 0, 1)
                     for m in CLASSICAL if METHODS[m].task == case.task}
        best = max(classical, key=lambda m: score(classical[m], obs.clean)["psnr"])
        panels = [("input", np.clip(run_input(obs, {}), 0, 1)), (f"best classical: {SHORT[best]}", classical[best])]
        panels += [(name.removeprefix("model:") + " (ours)", np.clip(as_array(model_restore(m, obs, device)), 0, 1))
                   for name, m in models]
        rows.append((case.title, obs.clean, [(label, im, score(im, obs.clean)["psnr"]) for label, im in panels]))
    return rows


def figure(rows: list[tuple[str, np.ndarray, list]], photo: str) -> bytes:
    """PNG: a row of zoomed crops per case (the window with the most detail): clean, then each panel."""
    import io
    import textwrap

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.photos import _crop_box

    ncols = 1 + max(len(panels) for _, _, panels in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.6 * ncols, 2.95 * len(rows)), squeeze=False)
    for r, (title, clean, panels) in enumerate(rows):
        top, left, side = _crop_box(clean, FIGURE_CROP)
        cells = [(f"{textwrap.fill(title, 34)}\n{photo}: clean", clean)] + [(f"{label}\n{p:.2f} dB (whole photo)", im)
                                                         for label, im, p in panels]
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c < len(cells):
                crop = cells[c][1][top:top + side, left:left + side]
                ax.imshow(crop, cmap="gray" if crop.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(cells[c][0], fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


# --- tuning ---------------------------------------------------------------------------------------------------
def _crop_observations(crops: np.ndarray, case: Case, seed: int) -> list[Observation]:
    """The case's degradation of each validation crop (uint8 (n, 3, h, w)); grey cases use the luma."""
    out = []
    for i, crop in enumerate(crops):
        image = crop.transpose(1, 2, 0)
        out.append(degrade(case, image if case.colour else to_grey(image), case_seed(seed, case.name, f"val{i}")))
    return out


def _mean_psnr(observations: list[Observation], run: Callable[[Observation], np.ndarray | Tensor]) -> float:
    values = []
    for obs in observations:
        out = run(obs)
        values.append(score(as_array(out) if isinstance(out, Tensor) else out, obs.clean)["psnr"])
    return float(np.mean(values))


def tune_classical(crops: np.ndarray, seed: int = 0, progress: bool = True) -> dict:
    """Per deblurring case, each classical method's grid point with the best mean PSNR on the crops."""
    params, psnrs = {}, {}
    cases = [c for c in CASES.values() if c.task == "deblur"]
    bar = tqdm(total=sum(len(v) for g in TUNE_GRIDS.values() for v in g.values()) * len(cases), disable=not progress)
    for case in cases:
        observations = _crop_observations(crops, case, seed)
        params[case.name], psnrs[case.name] = {}, {}
        for method, grid in TUNE_GRIDS.items():
            (name, values), = grid.items()
            scores = {}
            for v in values:
                scores[v] = _mean_psnr(observations, lambda o: METHODS[method].fn(o, {name: v}))
                bar.update(1)
            best = max(scores, key=scores.get)
            params[case.name][method] = {name: best}
            psnrs[case.name][method] = {"best": round(scores[best], 3), "grid": {str(k): round(s, 3)
                                                                                for k, s in scores.items()}}
    bar.close()
    return {"params": params, "validation_psnr": psnrs}


MODEL_GRIDS = {
    "plain": {"temperature_scale": [0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0], "steps": [2, 5, 10, 20],
              "step_fraction": [0.5, 1.0, 1.5]},
    NOISE_CONDITIONAL: {"sigma_start": [5 / 255, 10 / 255, 20 / 255, 40 / 255],
                        "sigma_floor": [1 / 255, 2 / 255, 4 / 255],
                        "temperature_scale": [0.5, 1.0, 2.0], "steps": [5, 10, 20, 40],
                        "step_fraction": [0.25, 0.5, 1.0], "final_denoise": [True, False]},
}
DATA_SIGMAS = [0.5 / 255, 1 / 255, 2 / 255, 4 / 255]  # upscaling: the data sigma the model assumes


def tune_model(model, task: str, crops: np.ndarray, *, seed: int = 0, rounds: int = 2, log=print) -> dict:
    """Coordinate search of a model's ``task`` settings on the crops: from the model's current settings, each
    parameter in turn takes the grid value with the best mean PSNR over the task's colour cases (both kernels, or
    both factors), ``rounds`` times; a model whose best steps score below its start alone is tuned to steps 0.
    Returns the settings with the record (val_psnr, start_psnr, grid)."""
    cases = [c for c in CASES.values() if c.task == task and c.colour]
    observations = [o for c in cases for o in _crop_observations(crops, c, seed)]
    grids = dict(MODEL_GRIDS[energy_kind(model)])
    if task == "upscale":
        grids = {"data_sigma": DATA_SIGMAS, **grids}
    current = task_settings(model, task)
    if current["steps"] == 0:  # tuned to the start alone before: search from the default steps again
        current["steps"] = DEFAULTS[energy_kind(model)]["steps"]
    if task == "upscale":
        current.setdefault("data_sigma", DATA_SIGMAS[1])
    if energy_kind(model) != NOISE_CONDITIONAL and not current.get("prior_curvature"):
        current["prior_curvature"] = round(measured_curvature(model, observations), 4)
    history, seen = [], {}

    def evaluate(settings: dict) -> float:
        key = json.dumps(settings, sort_keys=True)
        if key not in seen:
            t0 = time.perf_counter()
            seen[key] = _mean_psnr(observations, lambda o: restore(model, o.tensor, o.case.operator(), o.sigma,
                                                                   task=task, seed=0, progress=False, **settings))
            history.append({**settings, "psnr": round(seen[key], 3)})
            log(f"{task} {settings}: {seen[key]:.3f} dB ({time.perf_counter() - t0:.0f} s)")
        return seen[key]

    start_psnr = evaluate({**current, "steps": 0})
    best = evaluate(current)
    for _ in range(rounds):
        for name, values in grids.items():
            for v in values:
                trial = {**current, name: v}
                if "sigma_floor" in trial and trial["sigma_floor"] > trial["sigma_start"]:
                    continue
                score_ = evaluate(trial)
                if score_ > best + 1e-4:
                    best, current = score_, trial
    if start_psnr > best:  # the steps only hurt: the start alone
        current, best = {**current, "steps": 0}, start_psnr
    return {**current, "val_psnr": round(best, 3), "start_psnr": round(start_psnr, 3),
            "tuned_on": f"{len(crops)} fixed {crops.shape[-1]}-px validation crops, colour, "
                        + ", ".join(c.name for c in cases) + f", coordinate search ({rounds} rounds)",
            "grid": history}


def measured_curvature(model, observations: list[Observation], n: int = 4) -> float:
    """A plain energy's largest curvature at the starts of the first ``n`` observations (the mean over them):
    stored with the settings, it spares every call its measurement."""
    values = []
    for obs in observations[:n]:
        start = obs.case.operator().start(obs.tensor, obs.sigma or 1 / 255)
        values.append(prior_curvature(model, {}, start))
    return float(np.mean(values))


# --- command line ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.photo_inverse", description=__doc__.split("\n\n")[0])
    p.add_argument("--tune", action="store_true", help="tune the classical parameters on the validation crops")
    p.add_argument("--tune-model", metavar="MODEL", help="tune a photo model's settings for --task")
    p.add_argument("--task", choices=("deblur", "upscale"), help="with --tune-model")
    p.add_argument("--write", action="store_true", help="with --tune-model: store the settings in the model folder")
    p.add_argument("--params", default=str(PARAMS_FILE), help="classical parameters file")
    p.add_argument("--out", help="JSON report")
    p.add_argument("--markdown", help="Markdown report")
    p.add_argument("--from-json", nargs="+", metavar="JSON",
                   help="re-render the Markdown of JSON reports (several: merged, e.g. runs split by case)")
    p.add_argument("--figure", metavar="PNG", help="only a figure of zoomed crops of --figure-photo in each case: "
                   "clean, input, the best classical method on it, each model")
    p.add_argument("--figure-photo", default="chelsea", choices=list(PHOTOS), help="(default chelsea)")
    p.add_argument("--photos", nargs="+", choices=list(PHOTOS))
    p.add_argument("--cases", nargs="+", choices=list(CASES))
    p.add_argument("--methods", nargs="+", choices=list(METHODS))
    p.add_argument("--model", action="append", default=[], help="a photo model folder (repeatable)")
    p.add_argument("--no-shipped-models", action="store_true")
    p.add_argument("--max-side", type=int)
    p.add_argument("--n-crops", type=int, default=TUNE_CROPS["n"], help="validation crops for tuning")
    p.add_argument("--rounds", type=int, default=2, help="--tune-model: rounds of the coordinate search")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.tune_model and not args.task:
        p.error("--tune-model needs --task deblur or --task upscale")
    if args.max_side is not None and args.max_side < 64:
        p.error("--max-side must be at least 64")
    return args


def _crops(n: int, size: int = TUNE_CROPS["size"]) -> np.ndarray:
    from training.photos import validation_crops

    return validation_crops(TUNE_CROPS["name"], size=size, n=n).numpy()


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = " ".join(["python -m bench.photo_inverse", *argv])
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    if args.tune:
        t0 = time.perf_counter()
        record = {"command": command, "date": date, **tune_classical(_crops(args.n_crops), args.seed,
                                                                     not args.no_progress),
                  "grids": TUNE_GRIDS, "seconds": round(time.perf_counter() - t0, 1)}
        write_atomic(args.params, json.dumps(record, indent=1) + "\n")
        print(json.dumps(record["params"], indent=1))
        return record
    if args.tune_model:
        from febm import load_model

        model = load_model(args.tune_model)
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        size = UPSCALE_CROP if args.task == "upscale" else TUNE_CROPS["size"]
        result = tune_model(model, args.task, _crops(args.n_crops, size), seed=args.seed, rounds=args.rounds, log=log)
        if args.write:
            write_task_settings(args.tune_model, args.task, result)
        print(json.dumps({k: v for k, v in result.items() if k != "grid"}, indent=1))
        return result
    if args.from_json:
        report = merge_reports([json.loads(Path(f).read_text("utf-8")) for f in args.from_json])
        text = markdown(report)
        save(report, args.out, args.markdown, text)
        print(text)
        return report
    if args.figure:
        params = json.loads(Path(args.params).read_text("utf-8"))["params"]
        loaded = load_models(photo_models(args.model, shipped=not args.no_shipped_models), args.device, [])
        rows = figure_panels(args.figure_photo, [CASES[c] for c in (args.cases or CASES)], params, loaded,
                             seed=args.seed, max_side=args.max_side, device=args.device)
        Path(args.figure).write_bytes(figure(rows, args.figure_photo))
        for title, _, panels in rows:
            print(title, "|", ", ".join(f"{label} {p:.2f} dB" for label, _, p in panels))
        return {"figure": args.figure}
    started = time.perf_counter()
    notes: list[str] = []
    params = {}
    if Path(args.params).exists():
        params = json.loads(Path(args.params).read_text("utf-8"))["params"]
    else:
        notes.append(f"{args.params} is missing: classical methods ran with untuned defaults {DEFAULT_PARAMS}")
    photos = {n: load_test_photo(n, args.max_side) for n in (args.photos or PHOTOS)}
    cases = [CASES[c] for c in (args.cases or CASES)]
    methods = list(args.methods or METHODS)
    models = photo_models(args.model, shipped=not args.no_shipped_models)
    loaded = load_models(models, args.device, notes)
    results = run_benchmark(photos, cases, methods, params, models=loaded, device=args.device, seed=args.seed,
                            progress=not args.no_progress, notes=notes)
    report = {
        "command": command, "date": date, "machine": machine(), "max_side": args.max_side, "seed": args.seed,
        "photos": {n: {"package": PHOTOS[n][0], "shape": list(p.shape), "grey_only": n in GREY_ONLY}
                   for n, p in photos.items()},
        "models": [{"name": n, "location": loc} for n, loc in models],
        "model_settings": {name: {c.task: task_settings(m, c.task) for c in cases} for name, m in loaded},
        "params": {c.name: {m: params_for(params, c, m) for m in TUNE_GRIDS if m in methods}
                   for c in cases if c.task == "deblur"},
        "cases": results, "notes": notes, "seconds": round(time.perf_counter() - started, 1),
    }
    text = markdown(report)
    save(report, args.out, args.markdown, text)
    print(text)
    return report


if __name__ == "__main__":
    main()
