"""The app's handlers: the values of the UI's inputs -> febm's public API -> images (served as PNG).

No layout here (see ui.py). Images enter as file paths and leave as PIL images (Fashion-MNIST models, at the
model's resolution) or as PNG files at the photo's own resolution (photo models: written once, alpha re-attached,
shown and downloaded as they are), converted at the edges by febm.imageio; every restoration goes through
febm.restore (denoise, inpaint) or febm.inverse (deblur, upscale: photo models only). Bad input raises gr.Error with a message the user can act on; the server carries on. A photo above
the pixel limit is not an error: the summary says so and the UI offers "Downscale to fit".
"""

from __future__ import annotations

import functools
import math
import random
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

from febm import inverse, restore
from febm.degradations import add_synthetic_noise
from febm.imageio import (
    MAX_PIXELS,
    PRESET_MASKS,
    Photo,
    ResolutionWarning,
    fitted_size,
    from_model_tensor,
    load_image,
    load_photo,
    mask_to_known,
    photo_mask,
    photo_to_restore,
    preset_mask,
    save_photo,
    sigma_from_unit,
    to_model_tensor,
)
from febm.metrics import psnr
from febm.model import ModelNotFoundError
from febm.operators import FACTORS, Blur, Downsample, crop_to_multiple, kernel_from_image, parse_kernel

from .models import ModelRegistry

NOISE_MODES = ("add", "noisy")  # add synthetic noise of sigma | the image is already noisy
PAINTED = "painted"  # the inpaint mask choice that reads the painted layer; the others are PRESET_MASKS
MASK_CHOICES = (PAINTED, *PRESET_MASKS)
CHAIN_FRAMES = 10  # frames of the Langevin chain shown
CHAIN_ROWS = 8  # images whose chain is shown
UNKNOWN_GRAY = 0.5  # how pixels to be filled are shown
KERNEL_KINDS = ("gaussian", "box", "motion")  # the deblur presets (febm.operators.parse_kernel); or an image
KERNEL_IMAGE = "image"

# What a photo model's restoration costs on this project's CPU (2 cores, torch's default 2 threads), per pixel and
# Langevin step: STEP_SECONDS + STEP_SECONDS_PER_MAC x the energy network's multiply-adds per pixel. A straight
# line through the median time of one tiled energy gradient on a 512x512 colour image of three fully convolutional
# energies on the idle machine (1,952 / 11,968 / 46,976 multiply-adds per pixel: 0.47 / 1.05 / 2.38 us per pixel),
# times 1.47, what a whole app request costs per step beyond one gradient (photo-js and photo-cd requests: 1.97 us
# per pixel and step; docs/performance.md). A loaded machine is slower: the limit is then optimistic.
STEP_SECONDS = 0.68e-6
STEP_SECONDS_PER_MAC = 6.1e-11
RESTORE_SECONDS = 30.0  # the automatic pixel limit: what the CPU restores in about this many seconds
MIN_AUTO_PIXELS = 128 * 128  # ... but never less than this


@dataclass(frozen=True)
class Limits:
    max_pixels: int = MAX_PIXELS  # largest upload decoded (checked before decoding)
    max_steps: int = 1000
    max_images: int = 64
    max_chains: int = 16
    # photo models: the largest image restored at native resolution; None = automatic (see pixel_limit)
    max_restore_pixels: int | None = None
    restore_seconds: float = RESTORE_SECONDS


class UserError(gr.Error):
    """Bad input: shown to the user, and not logged with a traceback (the server is fine)."""

    def __init__(self, message: str):
        super().__init__(message, print_exception=False)


class Cancelled(Exception):
    """The request was cancelled (Stop): raised from the progress updates to end the computation."""


def user_errors(handler):
    """Turn the errors that describe bad input (febm's ValueError/TypeError...) into gr.Error messages."""

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, TypeError, LookupError, ModelNotFoundError, RuntimeError) as e:
            raise UserError(e.args[0] if isinstance(e, KeyError) and e.args else str(e)) from None

    return wrapped


# --- cancellation --------------------------------------------------------------------------------------------
def request_running() -> bool:
    """False once the request this thread serves has been cancelled. Gradio cancels the request's task and frees
    its place in the queue, but cannot stop the worker thread: the restoration checks this on every progress
    update and stops (outside a gradio request, e.g. a direct call, it is always True)."""
    from gradio.context import LocalContext

    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    jobs = getattr(getattr(blocks, "_queue", None), "active_jobs", None)
    if jobs is None or event_id is None:  # not in a queued request (or a gradio without these internals)
        return True
    return any(job is not None and any(getattr(event, "_id", None) == event_id for event in job) for job in jobs)


def cancellable(progress) -> None:
    """Make ``progress`` (the request's gr.Progress, which tracks febm's tqdm bars) raise Cancelled on the next
    update after the request was cancelled."""
    update = getattr(progress, "update", None)
    if update is None or getattr(update, "cancellable", False):
        return

    def checked(n=1):
        if not request_running():
            raise Cancelled()
        return update(n)

    checked.cancellable = True
    progress.update = checked


def stops_on_cancel(handler):
    """Run ``handler`` with a cancellable progress; a cancelled request ends quietly (nobody reads its result)."""

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        for value in (*args, *kwargs.values()):
            if isinstance(value, gr.Progress):
                cancellable(value)
        try:
            return handler(*args, **kwargs)
        except Cancelled:
            raise UserError("Cancelled.") from None

    return wrapped


# --- input checks -------------------------------------------------------------------------------------------
def check_int(name: str, value, low: int, high: int) -> int:
    try:
        ok = not isinstance(value, bool) and float(value) == int(value) and low <= int(value) <= high
    except (TypeError, ValueError, OverflowError):  # None, text, NaN, infinity
        ok = False
    if not ok:
        raise UserError(f"{name} must be a whole number from {low} to {high}, got {value}")
    return int(value)


def check_steps(value, limits: Limits) -> int | None:
    """0 or empty = the model's default."""
    steps = check_int("steps", 0 if value is None else value, 0, limits.max_steps)
    return steps or None


def pick_seed(value) -> int:
    """-1 (or empty) = a fresh random seed, reported to the user so the result can be reproduced."""
    seed = check_int("seed", -1 if value is None else value, -1, 2**63 - 1)
    return random.SystemRandom().randrange(2**31) if seed == -1 else seed


def check_sigma(value, *, allow_zero: bool, unit: str = "0-1") -> float | None:
    """The noise std in [0, 1] units from the σ field, given in ``unit``: "0-1" (a fraction of the pixel range,
    the library's unit) or "0-255" (levels of an 8-bit image); the CLI's bounds (febm.imageio.sigma_from_unit).
    ``allow_zero``: 0 (or empty) means "estimate it" and gives None."""
    value = 0 if value is None else value
    if allow_zero and _is_zero(value):
        return None
    try:
        return sigma_from_unit(value, unit, name="σ", switch="set the unit to 0-255")
    except ValueError as e:
        raise UserError(f"{e}{' (0 = estimate it from the image)' if allow_zero else ''}") from None


def _is_zero(value) -> bool:
    try:
        return float(value) == 0
    except (TypeError, ValueError):
        return False


def describe_sigma(sigma: float, source: str) -> str:
    """σ in both units, e.g. "σ = 0.098 (given) = 25.0/255"."""
    return f"σ = {sigma:.3f} ({source}) = {sigma * 255:.1f}/255"


def read_image(path: str | None, limits: Limits, what: str = "image", *, load=load_image):
    """Decode an uploaded file with ``load`` (load_image, or load_photo for photo models; size checked before
    decoding), naming it by its file name in errors."""
    if not path:
        raise UserError(f"No {what}: upload one or pick an example.")
    try:
        return load(path, max_pixels=limits.max_pixels)
    except (ValueError, FileNotFoundError) as e:  # the message names the path first, and PIL's part may too
        message = str(e).replace(str(path), f"the {what} {Path(path).name!r}", 1)
        raise UserError(message.replace(str(path), Path(path).name)) from None


def is_colour(image: Image.Image, tolerance: float = 2.0) -> bool:
    """True when the image has colour: channels that differ by more than ``tolerance`` 8-bit levels on average
    (a grey photo saved as RGB or JPEG is not colour)."""
    if image.mode in ("1", "L", "LA", "La", "F") or image.mode.startswith("I"):
        return False
    a = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BOX), dtype=np.float32)
    return float(np.abs(a - a.mean(axis=2, keepdims=True)).mean()) > tolerance


def model_tensor(image: Image.Image, model) -> tuple[torch.Tensor, str]:
    """Any mode and size -> (the model's (1, C, H, W), a note for the summary when the upload does not look like the
    model's data: far larger or smaller, or colour for a grey model; "" otherwise). A large resize is also shown as a
    warning, not an error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResolutionWarning)
        x, _ = to_model_tensor(image, model)
    mismatch = []
    for w in caught:
        if issubclass(w.category, ResolutionWarning):
            gr.Warning(str(w.message))
            mismatch.append(f"{image.width}×{image.height} pixels")
    channels, height, width = model.config["image_shape"]
    if channels == 1 and is_colour(image):
        mismatch.append("in colour")
    if not mismatch:
        return x, ""
    dataset = model.config.get("dataset") or "its training data"
    grey = " grey" if channels == 1 else ""
    converted = "converted to grey and " if "in colour" in mismatch else ""
    size = f"{width}×{height}"
    note = (f"**Note:** the upload is {' and '.join(mismatch)}, unlike this model's data ({dataset}: {size}{grey} "
            f"images): it was {converted}resized to {size}, so the result is a {size}{grey} thumbnail. To restore a "
            "photo at its own size, pick a photo model.")
    return x, note


# --- photo models: the pixel limit ----------------------------------------------------------------------------
def macs_per_pixel(model) -> int:
    """Multiply-adds per pixel of one pass of a fully convolutional energy (its convolutions are all stride 1)."""
    return sum(m.in_channels // m.groups * m.out_channels * math.prod(m.kernel_size)
               for m in model.energy.modules() if isinstance(m, torch.nn.Conv2d))


def step_seconds_per_pixel(model) -> float:
    """Estimated seconds per pixel and Langevin step on this project's CPU (the constants above)."""
    return STEP_SECONDS + STEP_SECONDS_PER_MAC * macs_per_pixel(model)


def restore_settings(model, task: str, steps: int | None, chains: int | None) -> tuple[int, int]:
    """(steps, chains) a request runs: the ones asked for, else the model's tuned defaults, else its sampler's
    (deblur and upscale: febm.inverse's defaults; one chain, each step about a Langevin step's cost)."""
    if task not in restore.TASKS:  # deblur, upscale
        return int(inverse.task_settings(model, task, steps=steps)["steps"]), 1
    tuned = restore.task_settings(model, task)  # a noise-conditional model's inpainting: febm.inverse's
    return (int(steps if steps is not None else tuned["steps"]),
            int(chains if chains is not None else tuned.get("chains", 1)))


def pixel_limit(model, steps: int, chains: int, limits: Limits) -> int:
    """The largest photo restored at native resolution: ``limits.max_restore_pixels`` when set, else what this
    CPU restores in about ``limits.restore_seconds`` with these steps and chains (at least MIN_AUTO_PIXELS, at
    most the upload limit)."""
    if limits.max_restore_pixels is not None:
        return int(limits.max_restore_pixels)
    per_pixel = max(1, steps) * max(1, chains) * step_seconds_per_pixel(model)
    return int(min(limits.max_pixels, max(MIN_AUTO_PIXELS, limits.restore_seconds / per_pixel)))


def over_limit_message(photo: Photo, limit: int, model, steps: int, chains: int, limits: Limits,
                       factor: int = 1) -> str:
    """Why nothing was restored; ``factor``: upscaling, whose result (factor² times the photo) counts."""
    width, height = photo.size
    pixels = photo.pixel_count * factor**2
    fit = fitted_size(photo.size, limit // factor**2)
    seconds = pixels * max(1, steps) * max(1, chains) * step_seconds_per_pixel(model)
    why = ("this server's limit, `--max-restore-pixels`" if limits.max_restore_pixels is not None else
           f"what this server's CPU restores in about {limits.restore_seconds:.0f} s with {steps} Langevin "
           f"step{'s' * (steps != 1)} × {chains} chain{'s' * (chains != 1)}")
    size = (f"{width}×{height} = {pixels:,} pixels" if factor == 1 else
            f"{width}×{height}: upscaled ×{factor} it would be {factor * width}×{factor * height} = {pixels:,} pixels")
    fitted = (f"restore it at {fit[0]}×{fit[1]}" if factor == 1 else
              f"upscale it from {fit[0]}×{fit[1]} to {factor * fit[0]}×{factor * fit[1]}")
    return (f"**This photo is {size}**, more than the {limit:,} pixels restored at native resolution ({why}; this "
            f"photo would take about {_duration(seconds)}). Nothing was restored: click **Downscale to fit** to "
            f"{fitted}, or ask for fewer steps or chains.")


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under a second"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def output_folder(limits: Limits) -> Path:
    """A fresh folder for one request's PNGs, in gradio's cache (which it serves from)."""
    from gradio.utils import get_upload_folder

    root = Path(get_upload_folder())
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="febm-", dir=root))


def stem(path: str | None) -> str:
    name = Path(path).stem if path else "image"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60] or "image"


# --- outputs -------------------------------------------------------------------------------------------------
def to_pil(images: torch.Tensor) -> list[Image.Image]:
    return [from_model_tensor(x) for x in images]


def chain_strip(chain: torch.Tensor, frames: int = CHAIN_FRAMES, rows: int = CHAIN_ROWS) -> Image.Image:
    """A grid of the chain: one row per image (at most ``rows``), ``frames`` steps from start to end."""
    steps = chain.shape[0] - 1
    index = torch.linspace(0, steps, min(frames, steps + 1)).round().long()
    tiles = chain[index, :rows].transpose(0, 1)  # (rows, frames, C, H, W)
    r, f, c, h, w = tiles.shape
    pad = 2
    grid = torch.ones(c, r * (h + pad) + pad, f * (w + pad) + pad)
    for i in range(r):
        for j in range(f):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            grid[:, top:top + h, left:left + w] = tiles[i, j]
    return from_model_tensor(grid)


# --- the handlers ----------------------------------------------------------------------------------------------
class Handlers:
    """One method per endpoint; their parameters are the UI's inputs in order.

    /denoise and /inpaint return (before, after, summary, view): before/after are PIL images at the model's size
    for Fashion-MNIST models and PNG files at the photo's own size for photo models; ``view`` is a gr.State for the
    UI (the comparison slider, the download, whether the photo was above the pixel limit), not part of the API.
    """

    def __init__(self, registry: ModelRegistry, limits: Limits = Limits()):
        self.registry, self.limits = registry, limits

    @user_errors
    @stops_on_cancel
    def generate(self, model, n, steps, seed, rejection, progress=gr.Progress(track_tqdm=True)):
        """-> (samples, the Langevin chain as a strip of frames, a summary)."""
        ebm = self.registry.get(model)
        n = check_int("number of images", n, 1, self.limits.max_images)
        steps, seed = check_steps(steps, self.limits), pick_seed(seed)
        if rejection and not ebm.has_critic:
            raise UserError(f"Rejection sampling needs the learned density ratio, but this model "
                           f"({ebm.divergence}) has no critic: untick rejection sampling.")
        result = restore.generate(ebm, n, seed=seed, steps=steps, rejection=bool(rejection), return_chain=True,
                                  progress=True, details=True)
        info = f"{n} samples · {result.chain.shape[0] - 1} Langevin steps · seed {seed}"
        if result.acceptance_rate is not None:
            info += f" · rejection sampling acceptance rate {result.acceptance_rate:.1%}"
        return to_pil(result.images), chain_strip(result.chain), info

    @user_errors
    @stops_on_cancel
    def denoise(self, model, image, noise_mode, sigma, steps, chains, seed, sigma_unit="0-1", downscale=False,
                progress=gr.Progress(track_tqdm=True)):
        """-> (the noisy input, the denoised image, a summary with σ in both units and PSNR, the view state).

        ``sigma`` is in ``sigma_unit``: "0-1" (a fraction of the [0, 1] pixel range; the default, as before this
        parameter existed) or "0-255" (levels of an 8-bit image). ``downscale``: photo models, restore a photo
        above the pixel limit downscaled to fit instead of answering with the limit.
        """
        ebm = self.registry.get(model)
        if noise_mode not in NOISE_MODES:
            raise UserError(f"noise mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        sigma = check_sigma(sigma, allow_zero=noise_mode == "noisy", unit=sigma_unit or "0-1")
        steps, seed = check_steps(steps, self.limits), pick_seed(seed)
        chains = check_int("chains", chains, 0, self.limits.max_chains) or None  # 0: the model's
        if ebm.fully_convolutional:
            return self.denoise_photo(ebm, image, noise_mode, sigma, steps, chains, seed, bool(downscale))
        x, note = model_tensor(read_image(image, self.limits), ebm)
        clean, noisy = (x, add_synthetic_noise(x, sigma, seed)) if noise_mode == "add" else (None, x)
        result = restore.denoise(ebm, noisy, sigma, seed=seed, steps=steps, chains=chains, progress=True, details=True)
        info = self.denoise_summary(result, sigma, clean, noisy, seed) + (f"\n\n{note}" if note else "")
        return from_model_tensor(noisy), from_model_tensor(result.images), info, {"photo": False}

    @staticmethod
    def denoise_summary(result, sigma, clean, noisy, seed) -> str:
        info = f"{describe_sigma(result.sigma[0].item(), 'estimated' if sigma is None else 'given')} · seed {seed}"
        if clean is not None:
            info += (f" · PSNR {psnr(result.images, clean).item():.2f} dB "
                     f"(noisy input: {psnr(noisy, clean).item():.2f} dB)")
        return info

    def denoise_photo(self, ebm, image, noise_mode, sigma, steps, chains, seed, downscale):
        photo, note, over, _ = self.photo_input(ebm, image, "denoise", steps, chains, downscale)
        if over:
            return None, None, over, {"photo": True, "over_limit": True}
        x = photo.pixels
        clean, noisy = (x, add_synthetic_noise(x, sigma, seed)) if noise_mode == "add" else (None, x)
        result = restore.denoise(ebm, noisy, sigma, seed=seed, steps=steps, chains=chains, progress=True, details=True)
        folder, name = output_folder(self.limits), stem(image)
        before = save_photo(noisy, folder / f"{name}-noisy.png", photo)
        after = save_photo(result.images, folder / f"{name}-denoised.png", photo)
        info = f"{photo.size[0]}×{photo.size[1]} · {self.denoise_summary(result, sigma, clean, noisy, seed)}{note}"
        return str(before), str(after), info, {"photo": True, "before": str(before), "after": str(after)}

    def photo_input(self, ebm, path, task, steps, chains, downscale, factor: int = 1
                    ) -> tuple[Photo | None, str, str, tuple]:
        """(the photo to restore, a note for the summary, the over-limit message or "", the upload's size).
        ``factor``: the result is factor times the photo's width and height (upscaling): the limit counts it."""
        original = self.read_photo(path)
        steps, chains = restore_settings(ebm, task, steps, chains)
        limit = pixel_limit(ebm, steps, chains, self.limits)
        photo = photo_to_restore(original, limit // factor**2, downscale=downscale, min_side=restore.MIN_SIDE)
        if photo is None:
            message = over_limit_message(original, limit, ebm, steps, chains, self.limits, factor)
            return None, "", message, original.size
        note = "" if photo is original else (f" · downscaled from {original.size[0]}×{original.size[1]} to fit the "
                                             f"pixel limit ({limit:,} pixels)")
        return photo, note, "", original.size

    def read_photo(self, path: str | None, what: str = "image") -> Photo:
        """The upload as a Photo, from the file itself (16-bit colour PNGs keep their 16 bits)."""
        return read_image(path, self.limits, what, load=load_photo)

    @user_errors
    @stops_on_cancel
    def inpaint(self, model, image, mask, steps, chains, seed, downscale=False, progress=gr.Progress(track_tqdm=True)):
        """-> (the input with the pixels to fill in gray, the inpainted image, a summary, the view state)."""
        ebm = self.registry.get(model)
        if mask not in MASK_CHOICES:
            raise UserError(f"mask must be one of {', '.join(MASK_CHOICES)}, got {mask!r}")
        steps, seed = check_steps(steps, self.limits), pick_seed(seed)
        chains = check_int("chains", chains, 0, self.limits.max_chains) or None  # 0: the model's
        image = image or {}  # the editor's value: {"background": path, "layers": [paths], "composite": path}
        if ebm.fully_convolutional:
            return self.inpaint_photo(ebm, image, mask, steps, chains, seed, bool(downscale))
        x, note = model_tensor(read_image(image.get("background"), self.limits), ebm)
        known = (self.painted_mask(image.get("layers") or [], ebm.config["image_shape"][-2:],
                                   lambda layer: mask_to_known(layer, ebm, painted_is_fill=True))
                 if mask == PAINTED else preset_mask(mask, ebm, seed=seed))
        filled = restore.inpaint(ebm, x, known, seed=seed, steps=steps, chains=chains, progress=True)
        shown = torch.where(known.bool(), x, torch.full_like(x, UNKNOWN_GRAY))
        info = f"filled {1 - known.mean().item():.0%} of the pixels · seed {seed}" + (f"\n\n{note}" if note else "")
        return from_model_tensor(shown), from_model_tensor(filled), info, {"photo": False}

    def inpaint_photo(self, ebm, image, mask, steps, chains, seed, downscale):
        background = image.get("background")
        photo, note, over, shown_size = self.photo_input(ebm, background, "inpaint", steps, chains, downscale)
        if over:
            return None, None, over, {"photo": True, "over_limit": True}
        x = photo.pixels
        width, height = photo.size
        known = (self.painted_mask(image.get("layers") or [], (height, width),
                                   lambda layer: photo_layer(layer, photo.size, shown_size))
                 if mask == PAINTED else preset_mask(mask, (height, width), seed=seed))
        filled = restore.inpaint(ebm, x, known, seed=seed, steps=steps, chains=chains, progress=True)
        shown = torch.where(known.bool(), x, torch.full_like(x, UNKNOWN_GRAY))
        folder, name = output_folder(self.limits), stem(background)
        before = save_photo(shown, folder / f"{name}-masked.png", photo)
        after = save_photo(filled, folder / f"{name}-inpainted.png", photo)
        info = f"{width}×{height} · filled {1 - known.mean().item():.0%} of the pixels · seed {seed}{note}"
        return str(before), str(after), info, {"photo": True, "before": str(before), "after": str(after)}

    @user_errors
    @stops_on_cancel
    def deblur(self, model, image, kernel, kernel_size, kernel_angle, kernel_image, blur_first, sigma, steps, seed,
               downscale=False, progress=gr.Progress(track_tqdm=True)):
        """-> (the blurred input, the deblurred image, a summary with σ and, after "blur first", PSNR, the view state).

        ``kernel``: "gaussian" (``kernel_size`` = its σ in px), "box" (the side), "motion" (the length, at
        ``kernel_angle`` degrees) or "image" (``kernel_image``, a file: grey values normalised to sum 1). ``sigma``:
        the noise std in 0-255 levels; 0 = estimate it. ``blur_first``: blur the upload and add noise of σ first.
        """
        ebm = self.photo_model(model, "Deblurring")
        blur = Blur(self.kernel(kernel, kernel_size, kernel_angle, kernel_image))
        sigma = check_sigma(sigma, allow_zero=not blur_first, unit="0-255")
        steps, seed = check_steps(steps, self.limits), pick_seed(seed)
        photo, note, over, _ = self.photo_input(ebm, image, "deblur", steps, None, bool(downscale))
        if over:
            return None, None, over, {"photo": True, "over_limit": True}
        clean, blurred = (photo.pixels, add_synthetic_noise(blur(photo.pixels), sigma, seed)) if blur_first else (
            None, photo.pixels)
        result = inverse.restore(ebm, blurred, blur, sigma, seed=seed, steps=steps, task="deblur", details=True)
        folder, name = output_folder(self.limits), stem(image)
        before = save_photo(blurred, folder / f"{name}-blurred.png", photo)
        after = save_photo(result.images, folder / f"{name}-deblurred.png", photo)
        kh, kw = blur.kernel.shape
        source = "estimated" if sigma is None else "added" if blur_first else "given"
        info = (f"{photo.size[0]}×{photo.size[1]} · kernel {kw}×{kh} · "
                f"{self.inverse_summary(result, source, clean, 'Wiener', blurred if blur_first else None, seed)}{note}")
        return str(before), str(after), info, {"photo": True, "before": str(before), "after": str(after)}

    @user_errors
    @stops_on_cancel
    def upscale(self, model, image, factor, shrink_first, sigma, steps, seed, downscale=False,
                progress=gr.Progress(track_tqdm=True)):
        """-> (the small input, the upscaled image, a summary with σ and, after "shrink first", PSNR, the view state).

        ``factor``: 2, 3 or 4. ``sigma``: the noise std in 0-255 levels; 0 = the model's tuned value, else estimated.
        ``shrink_first``: shrink the upload by the factor first (antialiased bicubic, as PIL does; noise of σ added
        when σ > 0); the pixel limit then counts the upload, else the result (factor² times the upload).
        """
        ebm = self.photo_model(model, "Upscaling")
        factor = check_int("factor", factor, min(FACTORS), max(FACTORS))
        sigma = check_sigma(sigma, allow_zero=True, unit="0-255")
        steps, seed = check_steps(steps, self.limits), pick_seed(seed)
        photo, note, over, _ = self.photo_input(ebm, image, "upscale", steps, None, bool(downscale),
                                                1 if shrink_first else factor)
        if over:
            return None, None, over, {"photo": True, "over_limit": True}
        clean, small, big = None, photo.pixels, None
        if shrink_first:
            big = cropped_photo(photo, factor)
            clean, small = big.pixels, Downsample(factor)(big.pixels).clamp(0.0, 1.0)
            small = small if sigma is None else add_synthetic_noise(small, sigma, seed)
        result = inverse.restore(ebm, small, Downsample(factor), sigma, seed=seed, steps=steps, task="upscale",
                                 details=True)
        if big is None:
            big = enlarged_photo(photo, result.images, factor)
        folder, name = output_folder(self.limits), stem(image)
        before = save_photo(small, folder / f"{name}-small.png", None if shrink_first else photo)
        after = save_photo(result.images, folder / f"{name}-x{factor}.png", big)
        (height, width), (big_h, big_w) = small.shape[-2:], result.images.shape[-2:]
        tuned = sigma is None and inverse.task_settings(ebm, "upscale").get("data_sigma") is not None
        source = "given" if sigma is not None else "the model's" if tuned else "estimated"
        info = (f"{width}×{height} → {big_w}×{big_h} (×{factor}) · "
                f"{self.inverse_summary(result, source, clean, 'bicubic', None, seed)}{note}")
        return str(before), str(after), info, {"photo": True, "before": str(before), "after": str(after)}

    def photo_model(self, key, task: str):
        ebm = self.registry.get(key)
        if not ebm.fully_convolutional:
            raise UserError(f"{task} needs a photo model ({' or '.join(self.registry.photo_keys()) or 'none here'}): "
                            f"this model restores only "
                            f"{'×'.join(map(str, ebm.config['image_shape'][1:]))} images.")
        return ebm

    def kernel(self, kind, size, angle, image) -> torch.Tensor:
        """The blur kernel: a preset of ``size`` (and ``angle``, motion), or the kernel image's file."""
        if kind == KERNEL_IMAGE:
            return kernel_from_image(read_image(image, self.limits, "kernel image"))
        if kind not in KERNEL_KINDS:
            raise UserError(f"kernel must be one of {', '.join((*KERNEL_KINDS, KERNEL_IMAGE))}, got {kind!r}")
        return parse_kernel(f"{kind}:{size},{angle}" if kind == "motion" else f"{kind}:{size}")

    @staticmethod
    def inverse_summary(result, source: str, clean, start: str, degraded, seed) -> str:
        """σ and where it came from, the seed and, when the original is known, PSNR of the result, the classical
        start and the degraded input (same size only)."""
        info = f"{describe_sigma(result.sigma[0].item(), source)} · seed {seed}"
        if clean is not None:
            info += (f" · PSNR {psnr(result.images, clean).item():.2f} dB ({start} start: "
                     f"{psnr(result.start, clean).item():.2f} dB")
            info += f", blurred input: {psnr(degraded, clean).item():.2f} dB)" if degraded is not None else ")"
        return info

    def painted_mask(self, layers: list[str], shape, to_known) -> torch.Tensor:
        """known_mask (1, 1, H, W) of ``shape`` (H, W) from the paint layers, each read by ``to_known(layer)``:
        a pixel painted in any layer is filled."""
        known = torch.ones(1, 1, *(int(v) for v in shape))
        for path in layers:
            known = known * to_known(read_image(path, self.limits, "mask layer"))
        if known.all():
            raise UserError("Nothing is painted: paint over the pixels to fill, or pick a preset mask.")
        if not known.any():
            raise UserError("The mask covers the whole image: leave some pixels unpainted to condition on "
                           "(or use the Generate tab).")
        return known


def cropped_photo(photo: Photo, factor: int) -> Photo:
    """``photo`` without its last rows and columns beyond a multiple of ``factor`` (alpha too)."""
    pixels = crop_to_multiple(photo.pixels, factor)
    alpha = None if photo.alpha is None else photo.alpha[:pixels.shape[-2], :pixels.shape[-1]]
    return Photo(pixels, alpha, photo.mode, photo.bits)


def enlarged_photo(photo: Photo, pixels: torch.Tensor, factor: int) -> Photo:
    """``photo`` upscaled to ``pixels``: its alpha with each value repeated factor × factor."""
    alpha = None if photo.alpha is None else photo.alpha.repeat(factor, axis=0).repeat(factor, axis=1)
    return Photo(pixels, alpha, photo.mode, photo.bits)


def photo_layer(layer: Image.Image, size: tuple[int, int], shown: tuple[int, int]) -> torch.Tensor:
    """A paint layer -> known_mask at the photo's ``size``; the layer must have the shape of the image ``shown`` in
    the editor (the upload; it is resized when the photo was downscaled, or when the canvas was scaled)."""
    if abs(layer.width * shown[1] - layer.height * shown[0]) > 0.02 * layer.height * shown[0]:
        raise UserError(f"the mask layer is {layer.width}×{layer.height} pixels, not the shape of the image "
                        f"({shown[0]}×{shown[1]}): paint on the image as it is shown")
    return photo_mask(layer, size, painted_is_fill=True, input_size=layer.size)
