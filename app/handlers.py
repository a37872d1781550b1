"""The app's handlers: the values of the UI's inputs -> febm's public API -> PIL images (served as PNG).

No layout here (see ui.py). Images enter as file paths and leave as PIL images, converted at the edges by
febm.imageio; every restoration goes through febm.restore. Bad input raises gr.Error with a message the
user can act on; the server carries on.
"""

from __future__ import annotations

import functools
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import torch
from PIL import Image

from febm.imageio import (
    MAX_PIXELS,
    PRESET_MASKS,
    ResolutionWarning,
    add_noise,
    from_model_tensor,
    load_image,
    mask_to_known,
    preset_mask,
    to_model_tensor,
)
from febm.metrics import psnr
from febm.model import ModelNotFoundError
from febm import restore

from .models import ModelRegistry

NOISE_MODES = ("add", "noisy")  # add synthetic noise of sigma | the image is already noisy
PAINTED = "painted"  # the inpaint mask choice that reads the painted layer; the others are PRESET_MASKS
MASK_CHOICES = (PAINTED, *PRESET_MASKS)
CHAIN_FRAMES = 10  # frames of the Langevin chain shown
CHAIN_ROWS = 8  # images whose chain is shown
UNKNOWN_GRAY = 0.5  # how pixels to be filled are shown


@dataclass(frozen=True)
class Limits:
    max_pixels: int = MAX_PIXELS
    max_steps: int = 1000
    max_images: int = 64
    max_chains: int = 16


class UserError(gr.Error):
    """Bad input: shown to the user, and not logged with a traceback (the server is fine)."""

    def __init__(self, message: str):
        super().__init__(message, print_exception=False)


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


def check_sigma(value, *, allow_zero: bool) -> float | None:
    try:
        sigma = 0.0 if value is None else float(value)
    except (TypeError, ValueError):
        sigma = float("nan")
    if allow_zero and sigma == 0:
        return None
    if not 0 < sigma <= 1:
        raise UserError(f"σ must be in (0, 1] (the noise std, in units of the [0, 1] pixel range), got {value}"
                       + (" (0 = estimate it from the image)" if allow_zero else ""))
    return sigma


def read_image(path: str | None, limits: Limits, what: str = "image") -> Image.Image:
    """Decode an uploaded file (size checked before decoding), naming it by its file name in errors."""
    if not path:
        raise UserError(f"No {what}: upload one or pick an example.")
    try:
        return load_image(path, max_pixels=limits.max_pixels)
    except (ValueError, FileNotFoundError) as e:  # the message names the path first, and PIL's part may too
        message = str(e).replace(str(path), f"the {what} {Path(path).name!r}", 1)
        raise UserError(message.replace(str(path), Path(path).name)) from None


def model_tensor(image: Image.Image, model) -> torch.Tensor:
    """Any mode and size -> the model's (1, C, H, W); a large resize is reported as a warning, not an error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResolutionWarning)
        x, _ = to_model_tensor(image, model)
    for w in caught:
        if issubclass(w.category, ResolutionWarning):
            gr.Warning(str(w.message))
    return x


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
    """One method per endpoint; their parameters are the UI's inputs in order."""

    def __init__(self, registry: ModelRegistry, limits: Limits = Limits()):
        self.registry, self.limits = registry, limits

    @user_errors
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
    def denoise(self, model, image, noise_mode, sigma, steps, chains, seed, progress=gr.Progress(track_tqdm=True)):
        """-> (the noisy input at the model's size, the denoised image, a summary with σ and PSNR)."""
        ebm = self.registry.get(model)
        if noise_mode not in NOISE_MODES:
            raise UserError(f"noise mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        sigma = check_sigma(sigma, allow_zero=noise_mode == "noisy")
        steps, seed = check_steps(steps, self.limits), pick_seed(seed)
        chains = check_int("chains", chains, 0, self.limits.max_chains) or None  # 0: the model's
        x = model_tensor(read_image(image, self.limits), ebm)
        clean, noisy = (x, add_noise(x, sigma, seed=seed)) if noise_mode == "add" else (None, x)
        result = restore.denoise(ebm, noisy, sigma, seed=seed, steps=steps, chains=chains, progress=True, details=True)
        info = f"σ = {result.sigma[0].item():.3f} ({'estimated' if sigma is None else 'given'}) · seed {seed}"
        if clean is not None:
            info += (f" · PSNR {psnr(result.images, clean).item():.2f} dB "
                     f"(noisy input: {psnr(noisy, clean).item():.2f} dB)")
        return from_model_tensor(noisy), from_model_tensor(result.images), info

    @user_errors
    def inpaint(self, model, image, mask, steps, chains, seed, progress=gr.Progress(track_tqdm=True)):
        """-> (the input with the pixels to fill in gray, the inpainted image, a summary)."""
        ebm = self.registry.get(model)
        if mask not in MASK_CHOICES:
            raise UserError(f"mask must be one of {', '.join(MASK_CHOICES)}, got {mask!r}")
        steps, seed = check_steps(steps, self.limits), pick_seed(seed)
        chains = check_int("chains", chains, 0, self.limits.max_chains) or None  # 0: the model's
        image = image or {}  # the editor's value: {"background": path, "layers": [paths], "composite": path}
        x = model_tensor(read_image(image.get("background"), self.limits), ebm)
        known = (self.painted_mask(image.get("layers") or [], ebm) if mask == PAINTED
                 else preset_mask(mask, ebm, seed=seed))
        filled = restore.inpaint(ebm, x, known, seed=seed, steps=steps, chains=chains, progress=True)
        shown = torch.where(known.bool(), x, torch.full_like(x, UNKNOWN_GRAY))
        info = f"filled {1 - known.mean().item():.0%} of the pixels · seed {seed}"
        return from_model_tensor(shown), from_model_tensor(filled), info

    def painted_mask(self, layers: list[str], ebm) -> torch.Tensor:
        """known_mask from the paint layers: a pixel painted in any layer is filled."""
        known = torch.ones(1, 1, *ebm.config["image_shape"][-2:])
        for path in layers:
            known = known * mask_to_known(read_image(path, self.limits, "mask layer"), ebm, painted_is_fill=True)
        if known.all():
            raise UserError("Nothing is painted: paint over the pixels to fill, or pick a preset mask.")
        if not known.any():
            raise UserError("The mask covers the whole image: leave some pixels unpainted to condition on "
                           "(or use the Generate tab).")
        return known
