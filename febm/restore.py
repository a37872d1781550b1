"""The public restoration API: generate, denoise and inpaint with a trained EBM.

    images = generate(model, n=16, seed=0)                    # (n, C, H, W) in [0, 1]
    clean  = denoise(model, noisy, sigma=0.2, seed=0)         # sigma=None estimates it from the image
    filled = inpaint(model, image, known_mask, seed=0)        # known_mask: 1 = observed, 0 = fill
    task_settings(model, "denoise", sigma=25 / 255)           # the tuned settings a call runs with

All three run Langevin chains on an energy: the model's E(x) for ``generate``, the posterior energy
E(x) + T s ||x - y||^2 / (2 sigma^2) for ``denoise`` (T the sampler's temperature, s the tuned
``temperature_scale``), and E(x) with the observed pixels held fixed for ``inpaint``. Their defaults (steps, chains,
temperature scale...) come from the model's config (:func:`task_settings`). ``details=True`` returns a
:class:`Restoration` (images, the chain for display, the sigma used, acceptance rates, the settings each image ran
with) instead of the images alone. Every image of a batch is restored as if it were alone: its chains draw their
own noise stream from ``seed`` (``seed=None``: a fresh seed, the global torch stream untouched).

Inputs are float tensors (C, H, W) or (B, C, H, W) in [0, 1] of the model's image shape; ``febm.imageio``
converts other images (PIL, numpy, any size or mode) at the edges.

Fully convolutional (photo) models take images of any size (at least ``MIN_SIDE`` px a side), grey or colour,
and return the same shape, one image at a time: their energy is evaluated in tiles whose halo covers its reach
(febm.tiling, so the result does not depend on the tiling and memory stays bounded), and restoration starts from a
classical estimate (febm.classical: the local Wiener filter for denoising, a smooth fill for inpainting).
Photo denoising samples the posterior exp(-E/(T s) - ||x - y||^2 / (2 sigma^2)) itself: unadjusted Langevin
without gradient clipping, its step fitted to the posterior's stiffest curvature (:func:`posterior_sampler`), then
``descent`` noise-free steps (``descent=1``: one Newton-sized step, which on a Gaussian posterior lands on its
mean). The tuned defaults depend on sigma (``config["restoration"]["denoise"]["per_sigma"]``): each image runs
the settings of the tuned noise level nearest its own. Several chains give their mean and, with
``details=True``, the per-pixel standard deviation. Channels, in one place (:func:`_photo_channels`): a grey image
(one channel, or three equal channels) goes through a colour model as three equal channels whose likelihood
counts once, not thrice, and comes back as their mean in the shape it came; a colour image for a grey model is
restored channel by channel.

Noise-conditional photo energies E(x, sigma) (score matching, ``--div dsm``; posterior f-EBMs, ``--posterior``) need
no classical start: denoising starts at their gradient step y - sigma^2 grad E(y, sigma) (Tweedie; blended with the
local Wiener filter by the tuned ``wiener_weight`` where that won on validation) and continues
with the chain posterior training runs (:mod:`febm.posterior`); inpainting is :func:`febm.inverse.restore` with
the mask as the operator. They do not generate.

At small noise (up to ``SURE_MAX_SIGMA``) every photo model's denoised result is weighed against its input by
Stein's unbiased risk estimate (:mod:`febm.sure`): the result keeps the share of its change that is estimated to
lower the error, so that a learned step that would cost more than it gains is held back.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .classical import local_wiener, smooth_fill
from .model import EBM
from .nets import AtNoiseLevel
from .posterior import PRIOR_FRACTION, STEP_FRACTION
from .rejection import ratio_bound, rejection_sample
from .sampling import METHODS, Generators, LangevinSampler, energy_and_grad
from .sure import step_weight
from .tiling import DEFAULT_TILE, TiledEnergy

MIN_SIDE = 32  # fully convolutional models: smallest image side they restore


@dataclass
class Restoration:
    images: Tensor  # (B, C, H, W) in [0, 1]
    chain: Tensor | None = None  # (steps + descent + 1, B, C, H, W): the first chain of each image, for display
    sigma: Tensor | None = None  # denoise: the noise level used per image, (B,)
    acceptance_rate: float | None = None  # generate(rejection=True): accepted / proposed
    sample: Tensor | None = None  # denoise/inpaint: the first chain's sample (== images when mean=False)
    std: Tensor | None = None  # fully convolutional models, chains > 1: per-pixel std over the chains
    mala_acceptance: float | None = None  # method="mala": the mean Metropolis-Hastings acceptance of its steps
    settings: list[dict] | None = None  # denoise/inpaint: the settings each image ran with (see task_settings)
    step_weight: Tensor | None = None  # photo denoise, (B,): the result's weight against its input (febm.sure)


# --- settings ------------------------------------------------------------------------------------------------
# What a method brings when the config has no settings for it: the config's step size, noise and clip are
# tuned for its own method (ULA with the authors' step 10 pins 88 % of fmnist-js's pixels at 0 or 1, MALA
# never accepts). Step sizes for [0, 1] images, measured on fmnist-js and fmnist-kl (16 chains, 50-100 steps
# from the start distribution, at the authors' temperature): ULA eps = 2.5e-5 is a per-step noise of 0.005,
# the authors' (it is then their sampler without the gradient clip); MALA eps = 3e-6 accepts ~50 %.
METHOD_DEFAULTS = {"authors": {}, "ula": {"step_size": 2.5e-5}, "mala": {"step_size": 3e-6}}
PER_METHOD = ("step_size", "noise", "grad_clip", "temperature")  # steps and clamp are shared by all methods
NOT_LANGEVIN = ("chains", "start_residual", "generation_noise")


def model_sampler(model: EBM, **overrides) -> LangevinSampler:
    """The model's Langevin settings (from its config), with ``overrides`` (None = keep).

    ``config["sampler"]`` holds the settings of the model's own method and, optionally, an entry per method,
    e.g. ``"mala": {"step_size": 3e-6, "temperature": 1e-6}``. Another method than the model's own keeps
    steps and clamp and takes its entry, else :data:`METHOD_DEFAULTS`; ula/mala then sample at the
    temperature of the model's own sampler, so that every method targets the same exp(-E/T).
    """
    config = model.config.get("sampler") or {}
    own = {k: v for k, v in config.items() if k not in NOT_LANGEVIN and k not in METHODS}
    own.setdefault("clamp", model.config.get("data_range", (0.0, 1.0)))
    method = overrides.get("method") or own.get("method", "authors")
    settings = own
    if method != own.get("method", "authors"):
        settings = {k: v for k, v in own.items() if k not in PER_METHOD}
        settings.update(METHOD_DEFAULTS.get(method, {}), method=method)
        if method != "authors":
            settings["temperature"] = LangevinSampler(**own).target_temperature
    settings.update(config.get(method) or {})
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return LangevinSampler(**settings)


# Generation starts from the smooth part of a Gaussian ("pca") start: the residual per-pixel noise that
# training restarts carry survives 200 test-time steps as speckle (fmnist-js, 500 val samples: FID 156
# with it, 126 without; docs/recipe.md). ``config["sampler"]["start_residual"]`` overrides it per model.
START_RESIDUAL = 0.0


def generation_sampler(model: EBM, *, steps: int | None = None, method: str | None = None,
                       noise: float | None = None) -> LangevinSampler:
    """The sampler generation runs: the model's, with the authors' per-step noise set to ``noise`` (default
    ``config["sampler"]["generation_noise"]``, if any). Generation may run colder chains than restoration,
    whose likelihood weight is the sampler's temperature: from a mixture start, chains at half the noise score a
    better FID (docs/recipe.md, M8). ULA and MALA take their noise from their step size and temperature."""
    config = model.config.get("sampler") or {}
    method = method or config.get("method", "authors")
    if noise is None and method == config.get("method", "authors"):
        noise = config.get("generation_noise")
    if noise is not None:
        if method != "authors":
            raise ValueError(f"noise sets the authors' sampler's per-step noise; {method} takes its noise from "
                             "its step size and temperature")
        if not 0.0 <= float(noise) < float("inf"):  # also rejects NaN
            raise ValueError(f"generation noise must be a finite number >= 0, got {noise}")
        noise = float(noise)
    return model_sampler(model, steps=steps, method=method, noise=noise)


def start_residual_of(model: EBM, override: float | None = None) -> float:
    """The scale of the start's residual noise used for generation (override, the model's, the default)."""
    value = override if override is not None else model.config.get("sampler", {}).get("start_residual", START_RESIDUAL)
    if not 0.0 <= float(value) <= 1.0:  # also rejects NaN
        raise ValueError(f"start_residual must be in [0, 1], got {value}")
    return float(value)


def temperature(model: EBM, sampler: LangevinSampler | None = None) -> float:
    """T such that ``sampler`` (default: the model's) draws from exp(-E/T): the scale that puts E and a
    likelihood in one unit, so it must be the T of the sampler that runs.

    The authors' sampler x <- x - s grad E + n z has T = n^2 / (2 s): for s = 10, n = 0.005 that is
    T = 1.25e-6 — the learned density is very sharp, and a likelihood term must be scaled by T to keep its
    weight. ULA and MALA sample at their ``temperature`` setting (see :func:`model_sampler`).
    """
    return (sampler or model_sampler(model)).target_temperature


# --- the settings of a restoration task ----------------------------------------------------------------------
TASKS = ("denoise", "inpaint")
DEFAULT_DESCENT = 1  # photo denoising ends with one noise-free step unless tuned otherwise: no sampler noise is left
NOT_SETTINGS = ("grid", "per_sigma")  # the tuning's record, not settings a call runs with


def task_settings(model: EBM, task: str, sigma: float | None = None) -> dict:
    """The settings ``denoise`` or ``inpaint`` runs with when a call does not say: the model's tuned
    ``config["restoration"][task]`` (what ``python -m training.tune MODEL --write`` stores, its grid left out),
    with the defaults for what it lacks (steps: the sampler's; chains: 1; denoising's temperature_scale: 1 and
    descent: ``DEFAULT_DESCENT`` for photo models, 0 for the others).

    Denoising settings may depend on the noise level: ``per_sigma`` holds one entry per tuned sigma, and with
    ``sigma`` ([0, 1] units) the entry nearest in log sigma overrides the rest (the result then says which, as
    ``sigma``); ``wiener_weight``, continuous, is interpolated in log sigma between the entries around ``sigma``.
    Without ``sigma`` the top-level entry answers (photo models: the settings at 25/255).
    """
    if task not in TASKS:
        raise ValueError(f"task must be denoise or inpaint, got {task!r}")
    if task == "inpaint" and model.noise_conditional:  # it inpaints through febm.inverse
        from .inverse import task_settings as linear_task_settings

        return linear_task_settings(model, "inpaint")
    tuned = (model.config.get("restoration") or {}).get(task) or {}
    steps = 0 if model.noise_conditional else model_sampler(model).steps  # a noise-conditional model: its step
    settings = {"steps": steps, "chains": 1}
    if task == "denoise":
        settings.update(temperature_scale=1.0, descent=DEFAULT_DESCENT if model.fully_convolutional else 0)
        if model.noise_conditional:
            settings["wiener_weight"] = 0.0
    settings.update({k: v for k, v in tuned.items() if k not in NOT_SETTINGS})
    ladder = tuned.get("per_sigma") or []
    if sigma is not None and ladder:
        settings.update(min(ladder, key=lambda entry: abs(math.log(entry["sigma"] / float(sigma)))))
        if "wiener_weight" in settings:  # a continuous setting: interpolated in log sigma between its neighbours
            settings["wiener_weight"] = _interpolate(ladder, "wiener_weight", float(sigma), settings["wiener_weight"])
    return settings


def _interpolate(ladder: list[dict], key: str, sigma: float, default: float) -> float:
    """``key`` at ``sigma``, linear in log sigma between the two ladder entries around it (the end entry's value
    outside the ladder; ``default`` for entries that lack it)."""
    points = sorted((math.log(e["sigma"]), e.get(key, default)) for e in ladder)
    t = math.log(sigma)
    if t <= points[0][0]:
        return points[0][1]
    if t >= points[-1][0]:
        return points[-1][1]
    (t0, v0), (t1, v1) = next((a, b) for a, b in itertools.pairwise(points) if a[0] <= t <= b[0])
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def _run_settings(model: EBM, task: str, sigma: float | None, **overrides) -> dict:
    """task_settings with a call's own values (None = the default), checked."""
    settings = {**task_settings(model, task, sigma), **{k: v for k, v in overrides.items() if v is not None}}
    _check_count("steps", settings["steps"], 0)
    _check_count("chains", settings["chains"])
    if task == "denoise":
        _check_count("descent", settings["descent"], 0)
        if not settings["temperature_scale"] > 0:
            raise ValueError(f"temperature_scale must be > 0, got {settings['temperature_scale']}")
        if "wiener_weight" in settings and not model.noise_conditional:
            raise ValueError("wiener_weight is for noise-conditional models (their start blends their gradient step "
                             "with the local Wiener filter); this model's photo chains start at the Wiener filter")
        if not 0 <= settings.get("wiener_weight", 0) <= 1:
            raise ValueError(f"wiener_weight must be in [0, 1], got {settings['wiener_weight']}")
        if settings["descent"] and not model.fully_convolutional:
            raise ValueError("descent (noise-free steps after the chains) is for photo models, whose chains sample "
                             "the posterior with a step fitted to its curvature")
    return settings


# --- seeds -------------------------------------------------------------------------------------------------------
def _seed_of(seed: int | None) -> int:
    """``seed``, or a fresh one from the operating system's entropy (the global torch stream is left alone)."""
    return torch.Generator().seed() if seed is None else int(seed)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


def _per_image_generators(seed: int, n: int, device: torch.device) -> list[torch.Generator]:
    """One generator per image, all seeded alike: an image's chains then draw the same noise in any batch."""
    return [_generator(seed, device) for _ in range(n)]


def _device(model: EBM) -> torch.device:
    return next(model.parameters()).device


def _range(model: EBM) -> tuple[float, float]:
    lo, hi = model.config.get("data_range", (0.0, 1.0))
    return float(lo), float(hi)


# --- input checks ------------------------------------------------------------------------------------------
def check_images(model: EBM, images: Tensor, what: str = "image") -> Tensor:
    """(C, H, W) or (B, C, H, W) float in the data range, of the model's shape -> (B, C, H, W) on its device."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor (use febm.imageio.to_model_tensor for PIL/numpy), "
                        f"got {type(images).__name__}")
    if images.numel() == 0:
        raise ValueError(f"{what} is empty: shape {tuple(images.shape)}")
    if images.dim() == 3:
        images = images[None]
    if model.fully_convolutional:
        _check_any_size(model, images, what)
    else:
        shape = tuple(model.config["image_shape"])
        if images.dim() != 4 or tuple(images.shape[1:]) != shape:
            raise ValueError(f"{what} must have shape (C, H, W) or (B, C, H, W) = (..., {', '.join(map(str, shape))}) "
                             f"for this model, got {tuple(images.shape)} (febm.imageio resizes other sizes)")
    if not images.is_floating_point():
        raise TypeError(f"{what} must be a float tensor in [0, 1], got {images.dtype} "
                        "(divide 8-bit images by 255, or use febm.imageio)")
    if not torch.isfinite(images).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    lo, hi = _range(model)
    if images.min() < lo or images.max() > hi:
        raise ValueError(f"{what} values must lie in [{lo:g}, {hi:g}], got [{images.min().item():.4g}, "
                         f"{images.max().item():.4g}]")
    return images.to(_device(model), torch.float32)


def _check_any_size(model: EBM, images: Tensor, what: str) -> None:
    channels = [1, 3]  # grey or colour, for a grey or a colour model (see _through_channels)
    if images.dim() != 4 or images.shape[1] not in channels:
        raise ValueError(f"{what} must have shape (C, H, W) or (B, C, H, W) with C in {channels} for this model, "
                         f"got {tuple(images.shape)}")
    if min(images.shape[-2:]) < MIN_SIDE:
        raise ValueError(f"{what} must be at least {MIN_SIDE} px a side, got {images.shape[-2]}x{images.shape[-1]}")


def check_mask(known_mask: Tensor, images: Tensor) -> Tensor:
    """A 0/1 mask of shape (H, W), (1|C, H, W) or (B, 1|C, H, W) -> bool (B, C, H, W); 1 = observed."""
    if not isinstance(known_mask, Tensor):
        raise TypeError(f"known_mask must be a torch.Tensor, got {type(known_mask).__name__}")
    b, c, h, w = images.shape
    mask = known_mask
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() == 3:
        mask = mask[None]
    ok = mask.dim() == 4 and mask.shape[0] in (1, b) and mask.shape[1] in (1, c) and tuple(mask.shape[2:]) == (h, w)
    if not ok:
        raise ValueError(f"known_mask shape {tuple(known_mask.shape)} does not match the image {(b, c, h, w)}: "
                         "use (H, W), (1 or C, H, W) or (B, 1 or C, H, W)")
    if mask.is_floating_point() and not torch.isfinite(mask).all():
        raise ValueError("known_mask contains NaN or infinite values")
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("known_mask must contain only 0 (fill) and 1 (observed)")
    mask = mask.to(images.device).bool().expand(b, c, h, w)
    per_image = mask.flatten(1)
    if per_image.all(dim=1).any():
        raise ValueError("known_mask marks every pixel of an image as observed: there is nothing to inpaint")
    if not per_image.any(dim=1).all():
        raise ValueError("known_mask marks no pixel of an image as observed: there is nothing to condition on "
                         "(use generate for unconditional samples)")
    return mask


def _check_count(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


# --- noise level ---------------------------------------------------------------------------------------------
def estimate_sigma(images: Tensor) -> Tensor:
    """Std of additive Gaussian noise per image, (B,): Immerkaer's filter (CVIU 1996), read robustly.

    Convolves with the Laplacian-difference kernel [[1,-2,1],[-2,4,-2],[1,-2,1]], which annihilates locally
    planar image content and turns noise of std sigma into responses of std 6 sigma, and takes the smallest of
    readings that are each unbiased for noise alone and biased up by image content, differently:

    - every channel, the mean of the smallest 90 % of the absolute responses (edges, a minority, bias the plain
      mean up), channels averaged;
    - images of at least 16 blocks of 8 x 8 responses: the 5 % quantile of the blocks' mean squared response,
      calibrated on noise; texture covers the whole image less often than edges do (on 32 validation crops
      with sigma = 1/255 added, the first reads up to 3.7, this one up to 2.4);
    - colour images: the first reading of the chroma differences (R - G)/sqrt 2 and (G - B)/sqrt 2, which hold
      noise independent in each channel at full strength but far less texture, and less JPEG grain, than the
      channels (on the eight colour test photos, clean, the channels read 1.0-6.0/255, chroma 0.2-1.2).

    Responses are read over the windows that hold no pixel clipped at 0 or 1 (clipping shrinks the noise: with
    the mean over all windows, sigma = 50/255 on scikit-image's astronaut read as 41.8), and blocks whose mean
    lies within twice the first reading of 0 or 1 are left out for the same reason, as are, for chroma, windows
    around a pixel whose 3 x 3 neighbourhood's mean lies there in any channel. When fewer than a tenth of the
    windows qualify, the channels read all (dark backgrounds, as in Fashion-MNIST) and chroma is left out.
    """
    if images.dim() == 3:
        images = images[None]
    b, c, h, w = images.shape
    if h < 3 or w < 3:
        raise ValueError(f"estimating sigma needs images of at least 3x3 pixels, got {h}x{w}")
    x = images.float()
    response, use = _laplacian(x)
    channels = _trimmed_reading(response, use).reshape(b, c)
    readings = [channels.mean(dim=1), _block_reading(x, response, use, channels).reshape(b, c).mean(dim=1)]
    if c == 3:
        chroma = torch.stack([x[:, 0] - x[:, 1], x[:, 1] - x[:, 2]], dim=1) / math.sqrt(2.0)
        guard = 2.0 * readings[0].view(b, 1, 1, 1)  # near 0 or 1, clipping has shrunk the noise
        level = nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        near = (level <= guard) | (level >= 1 - guard) | (x == 0) | (x == 1)
        clipped = near.any(dim=1, keepdim=True).expand(-1, 2, -1, -1)
        chroma_response, chroma_use = _laplacian(chroma, clipped, fallback=False)
        readings.append(_trimmed_reading(chroma_response, chroma_use).reshape(b, 2).mean(dim=1))
    return torch.stack(readings).nan_to_num(nan=float("inf")).min(dim=0).values


def _laplacian(x: Tensor, clipped: Tensor | None = None, fallback: bool = True) -> tuple[Tensor, Tensor]:
    """Absolute responses (B*C, h-2, w-2) and the windows to read: those without a clipped pixel. When under a
    tenth qualify: all windows (``fallback``), else none (the reading is then NaN: left out)."""
    b, c, h, w = x.shape
    kernel = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], device=x.device)
    flat = x.reshape(b * c, 1, h, w)
    response = nn.functional.conv2d(flat, kernel[None, None]).abs()[:, 0]
    clipped = ((flat == 0) | (flat == 1)) if clipped is None else clipped.reshape(b * c, 1, h, w)
    unclipped = nn.functional.max_pool2d(clipped.float(), 3, stride=1)[:, 0] == 0  # stored images clip at 0, 1
    enough = (unclipped.flatten(1).sum(1) >= 0.1 * unclipped[0].numel()).view(-1, 1, 1)
    return response, torch.where(enough, unclipped, torch.full_like(unclipped, fallback))


def _trimmed_reading(response: Tensor, use: Tensor) -> Tensor:
    """Per row, sigma from the trimmed mean of the responses it reads (NaN when it reads none)."""
    trimmed = torch.stack([_trimmed_mean(r[u]) if u.any() else r.new_tensor(float("nan"))
                           for r, u in zip(response, use)])
    return trimmed / (6.0 * _HALF_NORMAL_TRIMMED_MEAN)


TRIM = 0.9  # estimate_sigma keeps the smallest 90 % of the absolute responses: edges are in the rest
_Z = math.sqrt(2.0) * torch.special.erfinv(torch.tensor(TRIM)).item()  # the half-normal's TRIM quantile
_HALF_NORMAL_TRIMMED_MEAN = math.sqrt(2.0 / math.pi) * (1.0 - math.exp(-_Z * _Z / 2.0)) / TRIM  # E[|z| | |z| < q]
BLOCK, BLOCK_QUANTILE, MIN_BLOCKS = 8, 0.05, 16
# the 5 % quantile of the 8 x 8 blocks' mean squared response to unit noise (the mean is 36): measured on 32
# images of 256^2 noise (tests/test_restore.py checks the reading on noise)
_BLOCK_CALIBRATION = 20.0


def _trimmed_mean(values: Tensor) -> Tensor:
    k = max(1, int(TRIM * values.numel()))
    return values.sort().values[:k].mean()


def _block_reading(x: Tensor, response: Tensor, use: Tensor, first: Tensor) -> Tensor:
    """The 5 % quantile reading of 8 x 8 blocks per channel (NaN where too few blocks qualify)."""
    b, c = x.shape[:2]
    if min(response.shape[-2:]) < BLOCK:
        return x.new_full((b * c,), float("nan"))
    squares = nn.functional.avg_pool2d((response.pow(2) * use)[:, None], BLOCK)[:, 0].flatten(1)
    read = nn.functional.avg_pool2d(use[:, None].float(), BLOCK)[:, 0].flatten(1)
    level = nn.functional.avg_pool2d(x.reshape(b * c, 1, *x.shape[-2:])[..., 1:-1, 1:-1], BLOCK)[:, 0].flatten(1)
    guard = 2.0 * first.reshape(b * c, 1)
    ok = (read == 1) & (level > guard) & (level < 1 - guard)
    out = []
    for sq, keep in zip(squares, ok):
        out.append((torch.quantile(sq[keep], BLOCK_QUANTILE) / _BLOCK_CALIBRATION).sqrt() if keep.sum() >= MIN_BLOCKS
                   else sq.new_tensor(float("nan")))
    return torch.stack(out)


SIGMA_FLOOR = 1e-3  # an estimated sigma of 0 (a flat or clean image) is read as this
SURE_MAX_SIGMA = 10 / 255  # photo denoising weighs its result against the input (febm.sure) up to this noise
PROBE_SEED = 0x5_0BE5_EED  # the SURE probe's stream: the seed xor this, apart from the chains' own


def _noise_levels(images: Tensor, sigma: float | Tensor | None) -> Tensor:
    """(B,) noise levels: the given ones, checked, or estimated per image."""
    b = images.shape[0]
    if sigma is None:
        return estimate_sigma(images).clamp(min=SIGMA_FLOOR)
    levels = torch.as_tensor(sigma, dtype=torch.float32, device=images.device).flatten()
    if levels.numel() not in (1, b):
        raise ValueError(f"sigma must be a number or one value per image ({b}), got {levels.numel()} values")
    if not torch.isfinite(levels).all() or (levels <= 0).any():
        raise ValueError(f"sigma must be > 0 (the noise std in [0, 1] units), got {sigma}")
    if (levels > 1).any():
        big = levels.max().item()
        raise ValueError(f"sigma is the noise std in [0, 1] units, a fraction of the pixel range; got {big:g}: "
                         f"noise of {big:g} levels of an 8-bit image is sigma = {big:g}/255 = {big / 255:.4g}")
    return levels.expand(b).clone()


# --- the chains ---------------------------------------------------------------------------------------------
class PosteriorEnergy(nn.Module):
    """E(x) + weight * ||x - y||^2 / 2 per image: Langevin on it samples p(x | y) for Gaussian noise."""

    def __init__(self, energy: nn.Module, observed: Tensor, weight: Tensor):
        super().__init__()
        self.energy, self.observed, self.weight = energy, observed, weight

    def forward(self, x: Tensor) -> Tensor:
        data = (x - self.observed).pow(2).flatten(1).sum(dim=1)
        return self.energy(x) + 0.5 * self.weight * data


def _posterior_energy(model: EBM, observed: Tensor, sigma: Tensor, *, prior_temperature: float, tile: int,
                      share: float = 1.0) -> PosteriorEnergy:
    """The energy every denoising chain runs on, for observations y with noise sigma (B,), one per image:
    E(x) + prior_temperature * share / sigma^2 * ||x - y||^2 / 2, i.e. prior_temperature times
    E / prior_temperature + share ||x - y||^2 / (2 sigma^2). ``share``: the likelihood's weight per channel (1/3
    for a grey observation seen as three equal channels). Photo models' energies are tiled. The one place that
    builds it, and it knows each image's sigma: an energy that depends on the noise level would be asked here."""
    energy = TiledEnergy(model.energy, tile) if model.fully_convolutional else model.energy
    weight = prior_temperature * share / sigma.to(observed.device).pow(2)
    return PosteriorEnergy(energy, observed, weight)


ULA_FIT = 0.5  # photo chains: eps x the posterior's stiffest curvature. ULA's stationary variance along that
# direction is then 1 / (1 - ULA_FIT / 4) of the target's (std +7 %), the others' less; a larger step mixes
# faster and is biased more (1.0: +15 %), and above 4 it diverges.
CURVATURE_CROP = 64  # px: the prior's curvature, when the config does not hold it, is measured on a crop this big


def energy_curvature(energy: Callable[[Tensor], Tensor], x: Tensor, iterations: int = 12) -> float:
    """The largest eigenvalue of the Hessian of E at x (summed over the batch): power iteration on finite
    differences of grad E (any energy, tiled ones too), from a fixed direction. A fully convolutional energy's
    curvature hardly changes from image to image (the shipped photo models: 0.25 and ~50, within 10 %)."""
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype).to(x.device)
    h = 1e-3  # per pixel, for a direction of unit root-mean-square: a small move for softplus nets
    _, g0 = energy_and_grad(energy, x)
    value = 0.0
    for _ in range(iterations):
        v = v / v.pow(2).mean().sqrt().clamp(min=1e-30)
        _, g = energy_and_grad(energy, x + h * v)
        hv = (g - g0) / h
        value = float((hv * v).sum() / (v * v).sum())
        v = hv
    return abs(value)


def prior_curvature(model: EBM, settings: dict, start: Tensor) -> float:
    """The energy's stiffest curvature: the tuned one in ``settings`` (``training.tune`` measures it on validation
    crops), else measured on a central crop of ``start``."""
    if settings.get("prior_curvature"):
        return float(settings["prior_curvature"])
    h, w = start.shape[-2:]
    top, left = max(0, (h - CURVATURE_CROP) // 2), max(0, (w - CURVATURE_CROP) // 2)
    crop = start[..., top:top + CURVATURE_CROP, left:left + CURVATURE_CROP]
    with torch.enable_grad():
        return energy_curvature(model.energy, crop.contiguous())


def posterior_sampler(model: EBM, sigma: float, *, temperature_scale: float, steps: int, curvature: float,
                      share: float = 1.0) -> LangevinSampler:
    """The chains of photo denoising: ULA on U(x) = E(x)/(T s) + share ||x - y||^2 / (2 sigma^2), run as ULA at
    temperature T s on :func:`_posterior_energy` (T the model's sampler's temperature, s ``temperature_scale``).
    No gradient clipping, so the temperature is what the chains sample at; the step fits U's stiffest curvature
    curvature / (T s) + share / sigma^2 (eps = ULA_FIT over it): stable from sigma = 1e-3 to 1, for any energy's
    scale, where the authors' clipped step of the training sampler clipped 97 % of photo-cd's gradient entries."""
    t = temperature(model) * temperature_scale
    return LangevinSampler("ula", steps=steps, step_size=ULA_FIT / _stiffest(curvature, t, sigma, share),
                           grad_clip=None, clamp=_range(model), temperature=t)


def _stiffest(curvature: float, t: float, sigma: float, share: float) -> float:
    return curvature / t + share / sigma ** 2


def _run_chains(sampler: LangevinSampler, energy: nn.Module, start: Callable[[int], Tensor], chains: int, *,
                generator: Generators, known: Tensor | None = None, mean: bool = True, descent: int = 0,
                descent_step: float = 0.0, return_chain: bool = False, progress=None,
                view: Callable[[Tensor], Tensor] | None = None) -> Restoration:
    """The one chain driver: ``chains`` chains, one after another (the memory of one batch), chain c from
    ``start(c)``: ``sampler.steps`` Langevin steps, then ``descent`` noise-free steps x <- x - descent_step grad E.
    Returns their mean (``mean=True``) or the first chain's state, the first chain's sample and path, the
    per-pixel std over the chains (Welford's update; chains > 1) and MALA's acceptance, all seen through ``view``
    (e.g. three equal channels back to grey). ``generator``: one, or one per row (each image its own stream).
    ``progress``: called after every step."""
    tick = progress or (lambda *_: None)
    view = view or (lambda t: t)
    fixed = None if known is None else known.bool()
    total = m2 = first = path = None
    accepted = []
    for c in range(chains):
        x0 = start(c)
        out = sampler.run(energy, x0, known_mask=fixed, generator=generator, return_chain=return_chain and c == 0,
                          progress=tick)
        states = list(out.chain) if out.chain is not None else None
        x = out.x
        for _ in range(descent):
            _, g = energy_and_grad(energy, x)
            x = x - descent_step * g
            if sampler.clamp is not None:
                x = x.clamp(*sampler.clamp)
            if fixed is not None:
                x = torch.where(fixed.expand_as(x), x0, x)
            if states is not None:
                states.append(x)
            tick()
        if out.acceptance is not None:
            accepted.append(out.acceptance)
        x = view(x)
        if c == 0:
            first, total, m2 = x, x.clone(), torch.zeros_like(x)
            path = view(torch.stack(states)) if states is not None else None
        else:
            delta = x - total
            total += delta / (c + 1)
            m2 += delta * (x - total)
    std = (m2 / (chains - 1)).sqrt() if chains > 1 else None
    acceptance = sum(accepted) / len(accepted) if accepted else None
    return Restoration(total if mean else first, path, sample=first, std=std, mala_acceptance=acceptance)
# --- generate -----------------------------------------------------------------------------------------------
@torch.no_grad()
def generate(
    model: EBM,
    n: int = 16,
    *,
    seed: int | None = 0,
    steps: int | None = None,
    method: str | None = None,
    rejection: bool = False,
    rejection_quantile: float | None = None,
    max_proposals: int | None = None,
    start_residual: float | None = None,
    noise: float | None = None,
    size: tuple[int, int] | None = None,
    tile: int = DEFAULT_TILE,
    batch_size: int = 256,
    return_chain: bool = False,
    progress: bool = True,
    details: bool = False,
) -> Tensor | Restoration:
    """n samples (n, C, H, W) in the data range: Langevin chains on the model's energy, started from its
    start distribution (``model.initial_samples``: uniform noise, or a data-fitted Gaussian whose residual
    per-pixel noise is scaled by ``start_residual``, default the model's or ``START_RESIDUAL``). ``noise``:
    the chains' per-step noise (default the model's ``generation_noise``, else its sampler's; 0: descent).
    ``size`` (H, W): fully convolutional models only (default their training crop); ``tile``: their tile side.

    ``rejection=True`` keeps each sample with probability min(1, exp(r - M)), r = H + E the learned
    log-ratio log p/q and M its maximum (or ``rejection_quantile``) over the first batch of proposals,
    proposing until n are accepted (at most ``max_proposals``, default 100 n); the acceptance rate is in
    the ``details=True`` result, and so is MALA's (``method="mala"``). ``seed=None`` draws a fresh seed.
    """
    _check_count("n", n)
    _check_count("batch_size", batch_size)
    if model.noise_conditional:
        raise ValueError("this model's energy E(x, sigma) is conditioned on the noise level (score matching or a "
                         "posterior f-EBM): it restores (denoise, inpaint, deblur, upscale) but does not generate")
    model.eval()
    sampler = generation_sampler(model, steps=steps, method=method, noise=noise)
    gen = _generator(_seed_of(seed), _device(model))
    residual = start_residual_of(model, start_residual)
    energy, size = _energy_for(model, sampler, tile), _check_size(model, size)

    def propose(m: int, with_chain: bool) -> Restoration:
        x0 = model.initial_samples(m, gen, residual, **({"size": size} if size else {}))
        with _bar(sampler.steps, 1, progress, f"Langevin ({sampler.method})") as tick:
            return _run_chains(sampler, energy, lambda c: x0, 1, generator=gen, mean=False, return_chain=with_chain,
                               progress=tick)

    if not rejection:
        parts = [propose(min(batch_size, n - s), return_chain) for s in range(0, n, batch_size)]
        images = torch.cat([p.images for p in parts])
        chain = torch.cat([p.chain for p in parts], dim=1) if return_chain else None
        return Restoration(images, chain, mala_acceptance=_mean_acceptance(parts)) if details else images
    return _generate_with_rejection(model, n, propose, gen, batch_size, rejection_quantile,
                                    max_proposals or 100 * n, return_chain, details)


def _mean_acceptance(parts: list[Restoration]) -> float | None:
    """MALA's acceptance over batches of proposals, weighted by their sizes (None for other samplers)."""
    rated = [(p.mala_acceptance, len(p.images)) for p in parts if p.mala_acceptance is not None]
    return sum(a * k for a, k in rated) / sum(k for _, k in rated) if rated else None


def _check_size(model: EBM, size) -> tuple[int, int] | None:
    if size is None:
        return None
    if not model.fully_convolutional:
        raise ValueError("size applies to fully convolutional models; this model makes "
                         f"{'x'.join(map(str, model.config['image_shape'][1:]))} images")
    size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) < MIN_SIDE:
        raise ValueError(f"size must be (height, width), each at least {MIN_SIDE} px, got {size}")
    return size


def _energy_for(model: EBM, sampler: LangevinSampler, tile: int) -> nn.Module:
    """The energy generation and inpainting chains run on: tiled for fully convolutional models (which MALA
    cannot serve)."""
    if not model.fully_convolutional:
        return model.energy
    if sampler.method == "mala":
        raise ValueError("MALA accepts or rejects whole images, and on a photo its acceptance collapses: use the "
                         "'authors' or 'ula' sampler with photo models")
    _check_count("tile", tile, MIN_SIDE)
    return TiledEnergy(model.energy, tile)


def _generate_with_rejection(model, n, propose, gen, batch_size, quantile, max_proposals, return_chain, details):
    if not model.has_critic:
        raise ValueError(f"rejection sampling needs the learned density ratio, but this model (divergence "
                         f"{model.divergence!r}) has no critic")
    kept, kept_chains, parts, proposed, bound = [], [], [], 0, None
    while sum(len(k) for k in kept) < n:
        if proposed >= max_proposals:
            raise RuntimeError(f"rejection sampling accepted {sum(len(k) for k in kept)} of {proposed} proposals, "
                               f"short of n = {n}: raise max_proposals or use a rejection_quantile below 1")
        m = max(batch_size, 64) if bound is None else batch_size
        part = propose(m, return_chain)
        parts.append(part)
        r = model.log_ratio(part.images)
        if bound is None:  # M from the first (largest) batch, then fixed so that every batch is filtered alike
            bound = ratio_bound(r, quantile)
        result = rejection_sample(part.images, r, bound=bound, generator=gen)
        kept.append(result.samples)
        if return_chain:
            kept_chains.append(part.chain[:, result.accepted])
        proposed += m
    accepted = sum(len(k) for k in kept)
    images = torch.cat(kept)[:n]
    chain = torch.cat(kept_chains, dim=1)[:, :n] if return_chain else None
    if not details:
        return images
    return Restoration(images, chain, acceptance_rate=accepted / proposed, mala_acceptance=_mean_acceptance(parts))


# --- denoise ------------------------------------------------------------------------------------------------
@torch.no_grad()
def denoise(
    model: EBM,
    noisy: Tensor,
    sigma: float | Tensor | None = None,
    *,
    seed: int | None = 0,
    steps: int | None = None,
    method: str | None = None,
    chains: int | None = None,
    descent: int | None = None,
    mean: bool = True,
    temperature_scale: float | None = None,
    wiener_weight: float | None = None,
    sure: bool | None = None,
    tile: int = DEFAULT_TILE,
    return_chain: bool = False,
    progress: bool = True,
    details: bool = False,
) -> Tensor | Restoration:
    """Restore y = x + N(0, sigma^2) by chains on the posterior energy E(x) + T s ||x - y||^2 / (2 sigma^2).

    ``sigma``: the noise std in [0, 1] units, a fraction of the pixel range (noise quoted in 0-255 levels of an
    8-bit image is ``sigma_255 / 255``: 25 -> 0.098; values above 1 are refused) — a number, a (B,) tensor, or
    None to estimate it per image (:func:`estimate_sigma`). ``chains`` chains per image; ``mean=True`` returns
    their average (the posterior-mean estimate, best in PSNR), ``False`` the first chain's state. T is the
    sampler's temperature (:func:`temperature`), s ``temperature_scale``. Defaults for steps, chains, descent
    and temperature_scale: :func:`task_settings` (tuned by ``python -m training.tune`` on validation data).

    Photo (fully convolutional) models, any size, one image at a time: chains from the local Wiener filter of y
    sample exp(-E/(T s) - ||x - y||^2 / (2 sigma^2)) with ULA (:func:`posterior_sampler`; ``method`` may only be
    None or "ula"), then take ``descent`` noise-free steps; each image runs the tuned settings of its own sigma.
    Noise-conditional photo models start at their gradient step instead, blended with the local Wiener filter by
    ``wiener_weight`` (tuned per sigma: at the smallest noise the two estimators' errors partly cancel).
    At small noise (sigma <= ``SURE_MAX_SIGMA``; ``sure=True``: always, ``False``: never) a photo's result is
    moved toward its input by the weight that minimises Stein's unbiased risk estimate (:mod:`febm.sure`; it
    costs a second restoration), so that it is not worse than the input; ``details=True`` reports the weight.
    Whole-image (Fashion-MNIST) models, the batch at once: their own sampler (``method``: another one) at its
    temperature T from the model's start distribution conditioned on y (its posterior mean when ``mean=True``, a
    sample otherwise); with the authors' sampler the likelihood weight s then sharpens the likelihood, sampling
    exp(-E/T - s ||x - y||^2 / (2 sigma^2)).
    """
    y = check_images(model, noisy, "noisy image")
    levels = _noise_levels(y, sigma)
    model.eval()  # spectral norm: no power iterations (they would change the weights from tile to tile)
    overrides = {"steps": steps, "chains": chains, "descent": descent, "temperature_scale": temperature_scale,
                 "wiener_weight": wiener_weight}
    run = _denoise_photos if model.fully_convolutional else _denoise_images
    result = run(model, y, levels, overrides, method=method, seed=_seed_of(seed), mean=mean, tile=tile,
                 return_chain=return_chain, progress=progress, sure=sure)
    result.sigma = levels
    return result if details else result.images


def _denoise_images(model: EBM, y: Tensor, sigma: Tensor, overrides: dict, *, method, seed, mean, tile, return_chain,
                    progress, sure) -> Restoration:
    """Whole-image models: the batch at once, one noise stream per image."""
    if sure:
        raise ValueError("sure (weighing the result against its input) is for photo models; whole-image models "
                         "restore from their start distribution, not from the input")
    settings = _run_settings(model, "denoise", None, **overrides)
    sampler = model_sampler(model, steps=settings["steps"], method=method)
    gens = _per_image_generators(seed, len(y), y.device)
    prior_t = temperature(model, sampler) * settings["temperature_scale"]
    energy = _posterior_energy(model, y, sigma, prior_temperature=prior_t, tile=tile)

    def start(c: int) -> Tensor:
        return _conditioned_start(model, y, sigma, None, None if mean else gens, fallback=lambda: y)

    with _bar(settings["chains"] * sampler.steps, settings["chains"], progress) as tick:
        result = _run_chains(sampler, energy, start, settings["chains"], generator=gens, mean=mean,
                             return_chain=return_chain, progress=tick)
    result.settings = [settings] * len(y)
    return result


def _denoise_photos(model: EBM, y: Tensor, sigma: Tensor, overrides: dict, *, method, seed, mean, tile, return_chain,
                    progress, sure) -> Restoration:
    """Photo models: each image alone, with the settings of its own noise level."""
    if method not in (None, "ula"):
        raise ValueError(f"photo denoising samples the posterior with ULA, its step fitted to the posterior's "
                         f"curvature (method None or 'ula'); {method!r} cannot serve it"
                         + (": MALA accepts or rejects whole images, and on a photo its acceptance collapses"
                            if method == "mala" else ""))
    settings = [_run_settings(model, "denoise", float(s), **overrides) for s in sigma]
    run = _denoise_at_noise_levels if model.noise_conditional else _denoise_photo
    weigh = [bool(sure) if sure is not None else float(s) <= SURE_MAX_SIGMA for s in sigma]
    total = sum((1 + w) * _runs(s) * (s["steps"] + s["descent"]) for s, w in zip(settings, weigh))
    parts = []
    with _bar(total, max(s["chains"] for s in settings), progress) as tick:
        for i, s in enumerate(settings):
            def restore(x, known, share, view, i=i, s=s):
                result = run(model, x, float(sigma[i]), s, share=share, view=view, seed=seed, mean=mean, tile=tile,
                             return_chain=return_chain, tick=tick)
                if s["chains"] > 1 and result.std is None:  # identical chains: no spread
                    result.std = torch.zeros_like(result.images)
                return result

            def restored(noisy: Tensor, restore=restore) -> Restoration:
                return _through_channels(model, noisy, None, restore)

            part = restored(y[i:i + 1])
            part.step_weight = 1.0
            if weigh[i]:
                part = _weigh_against_input(part, y[i:i + 1], float(sigma[i]), restored, seed)
            parts.append(part)
    return _stack(parts, settings)


def _weigh_against_input(result: Restoration, noisy: Tensor, sigma: float, restored, seed: int) -> Restoration:
    """The restoration moved toward its input by the weight that minimises Stein's unbiased risk estimate
    (febm.sure): at small noise it is then not worse than the input, whatever the model."""
    probe = torch.Generator(noisy.device).manual_seed(seed ^ PROBE_SEED)  # not the chains' stream
    grey = noisy.shape[1] == 3 and _equal_channels(noisy, None)
    w = step_weight(lambda z: restored(z).images, noisy, sigma, result.images, generator=probe, grey=grey)
    result.images = torch.lerp(noisy, result.images, w)
    result.sample = torch.lerp(noisy, result.sample, w)
    result.std = None if result.std is None else w * result.std
    result.step_weight = w
    return result


def _runs(settings: dict) -> int:
    """Chains that differ: without Langevin steps every chain is the start's path, computed once."""
    return settings["chains"] if settings["steps"] > 0 else 1


def _denoise_photo(model: EBM, x: Tensor, sigma: float, settings: dict, *, share: float, view, seed: int, mean: bool,
                   tile: int, return_chain: bool, tick) -> Restoration:
    """One photo (1, C, H, W) in the model's channels: Wiener start, posterior chains, noise-free descent."""
    start = local_wiener(x, sigma).clamp(*_range(model))
    steps, descent, scale = settings["steps"], settings["descent"], settings["temperature_scale"]
    curvature = prior_curvature(model, settings, start) if steps + descent > 0 else 1.0
    sampler = posterior_sampler(model, sigma, temperature_scale=scale, steps=steps, curvature=curvature, share=share)
    t = sampler.target_temperature
    energy = _posterior_energy(model, x, torch.tensor([sigma]), prior_temperature=t, tile=tile, share=share)
    return _run_chains(sampler, energy, lambda c: start, _runs(settings), generator=_generator(seed, x.device),
                       mean=mean, descent=descent, descent_step=1.0 / (t * _stiffest(curvature, t, sigma, share)),
                       return_chain=return_chain, progress=tick, view=view)


def _at_level(model: EBM, level: float, tile: int) -> TiledEnergy:
    """A noise-conditional energy asked at one noise level, tiled: E(x) = E(x, level)."""
    return TiledEnergy(AtNoiseLevel(model.energy, level), tile)


def _denoise_at_noise_levels(model: EBM, x: Tensor, sigma: float, settings: dict, *, share: float, view, seed: int,
                             mean: bool, tile: int, return_chain: bool, tick) -> Restoration:
    """One photo through a noise-conditional energy E(x, s) (febm.posterior): start at its gradient step
    y - sigma^2 grad E(y, sigma) (Tweedie's posterior mean when E was trained by score matching), then ``steps``
    ULA steps of eps = STEP_FRACTION sigma^2 on U(x) = E(x, rho sigma) + share ||x - y||^2 / (2 sigma^2), the chain
    posterior training runs, and ``descent`` noise-free steps of eps / 2. The start is blended with the local Wiener
    filter by ``wiener_weight``."""
    lo, hi = _range(model)
    start = x - sigma**2 * energy_and_grad(_at_level(model, sigma, tile), x)[1]
    if settings["wiener_weight"]:
        start = torch.lerp(start, local_wiener(x, sigma), settings["wiener_weight"])
    start = start.clamp(lo, hi)
    eps = STEP_FRACTION * sigma**2
    sampler = LangevinSampler("ula", steps=settings["steps"], step_size=eps, grad_clip=None, clamp=None,
                              temperature=1.0)
    energy = PosteriorEnergy(_at_level(model, PRIOR_FRACTION * sigma, tile), x,
                             torch.tensor([share / sigma**2], device=x.device))
    result = _run_chains(sampler, energy, lambda c: start, _runs(settings), generator=_generator(seed, x.device),
                         mean=mean, descent=settings["descent"], descent_step=0.5 * eps, return_chain=return_chain,
                         progress=tick, view=view)
    result.images, result.sample = result.images.clamp(lo, hi), result.sample.clamp(lo, hi)
    return result


def _conditioned_start(model: EBM, observed: Tensor, sigma: Tensor, known: Tensor | None,
                       gens: list[torch.Generator] | None, *, fallback: Callable[[], Tensor]) -> Tensor:
    """Where whole-image restoration chains start: the model's start distribution conditioned on the observation.

    With a Gaussian start (``start: pca``) the conditional is exact and cheap (PCAGaussian.posterior): its
    mean when ``gens`` is None (the posterior-mean output), else a sample per image from its own generator.
    Chains then only add what the energy knows beyond that Gaussian, as in generation. Other models start at
    ``fallback()``, called only then so that it draws nothing otherwise.
    """
    if model.start is None:
        return fallback()
    if gens is None:
        return model.start.posterior(observed, sigma, known)
    return torch.cat([model.start.posterior(observed[i:i + 1], sigma[i:i + 1],
                                            None if known is None else known[i:i + 1], generator=g)
                      for i, g in enumerate(gens)])


# --- inpaint ------------------------------------------------------------------------------------------------
@torch.no_grad()
def inpaint(
    model: EBM,
    image: Tensor,
    known_mask: Tensor,
    *,
    seed: int | None = 0,
    steps: int | None = None,
    method: str | None = None,
    chains: int | None = None,
    mean: bool = True,
    tile: int = DEFAULT_TILE,
    return_chain: bool = False,
    progress: bool = True,
    details: bool = False,
) -> Tensor | Restoration:
    """Fill the pixels where ``known_mask`` is 0 by Langevin on E(x) with the observed pixels held fixed.

    The fill starts from the model's start distribution conditioned on the observed pixels (exact for the
    Gaussian "pca" start: its mean when ``mean=True``, a sample otherwise), else unconditioned start samples;
    observed pixels are returned bit-identical.
    ``chains``/``mean`` as in :func:`denoise` (the mean of several fills is the posterior mean, the first
    chain one sample); defaults from :func:`task_settings`.
    Fully convolutional models: any size, one image at a time, chains from a smooth fill of the holes.
    """
    x = check_images(model, image, "image")
    known = check_mask(known_mask, x)
    if model.noise_conditional:
        return _inpaint_at_noise_levels(model, x, known, seed=seed, steps=steps, method=method, chains=chains,
                                        mean=mean, tile=tile, return_chain=return_chain, progress=progress,
                                        details=details)
    settings = _run_settings(model, "inpaint", None, steps=steps, chains=chains)
    sampler = model_sampler(model, steps=settings["steps"], method=method)
    model.eval()
    seed = _seed_of(seed)
    if model.fully_convolutional:
        result = _inpaint_photos(model, x, known, sampler, settings, seed=seed, mean=mean, tile=tile,
                                 return_chain=return_chain, progress=progress)
    else:
        result = _inpaint_images(model, x, known, sampler, settings, seed=seed, mean=mean,
                                 return_chain=return_chain, progress=progress)
    result.images = torch.where(known, x, result.images)  # exact, also after averaging
    result.sample = torch.where(known, x, result.sample)
    result.settings = [settings] * len(x)
    return result if details else result.images


def _inpaint_images(model: EBM, x: Tensor, known: Tensor, sampler: LangevinSampler, settings: dict, *, seed, mean,
                    return_chain, progress) -> Restoration:
    """Whole-image models: the batch at once, one noise stream per image."""
    gens = _per_image_generators(seed, len(x), x.device)
    exact = torch.zeros(len(x), device=x.device)

    def start(c: int) -> Tensor:
        unconditioned = lambda: torch.cat([model.initial_samples(1, g) for g in gens])  # noqa: E731
        return _conditioned_start(model, x, exact, known, None if mean else gens,
                                  fallback=lambda: torch.where(known, x, unconditioned()))

    with _bar(settings["chains"] * sampler.steps, settings["chains"], progress) as tick:
        return _run_chains(sampler, model.energy, start, settings["chains"], generator=gens, known=known, mean=mean,
                           return_chain=return_chain, progress=tick)


def _inpaint_photos(model: EBM, x: Tensor, known: Tensor, sampler: LangevinSampler, settings: dict, *, seed, mean,
                    tile, return_chain, progress) -> Restoration:
    """Photo models: each image alone, chains from the smooth fill of its holes."""
    energy = _energy_for(model, sampler, tile)
    runs = settings["chains"] if sampler.steps > 0 else 1
    parts = []
    with _bar(len(x) * runs * sampler.steps, settings["chains"], progress) as tick:
        for i in range(len(x)):
            def restore(image, mask, share, view):
                start = smooth_fill(image, mask)
                return _run_chains(sampler, energy, lambda c: start, runs, generator=_generator(seed, image.device),
                                   known=mask, mean=mean, return_chain=return_chain, progress=tick, view=view)

            parts.append(_through_channels(model, x[i:i + 1], known[i:i + 1], restore))
    return _stack(parts, [settings] * len(x))


def _inpaint_at_noise_levels(model: EBM, x: Tensor, known: Tensor, *, seed, steps, method, chains, mean, tile,
                             return_chain, progress, details) -> Tensor | Restoration:
    """A noise-conditional energy fills holes as it deblurs: febm.inverse.restore with the mask as the operator
    (from the smooth fill, annealed denoising steps whose data step holds the observed pixels), its settings
    ``config["restoration"]["inpaint"]`` (febm.inverse.task_settings). One estimate per image: no chains."""
    from .inverse import restore as restore_linear
    from .operators import SIGMA_QUANTISATION, Mask

    if method is not None or (chains or 1) > 1 or return_chain or not mean:
        raise ValueError("a noise-conditional model inpaints by annealed denoising steps, one estimate per image: "
                         "method, chains > 1, mean=False and return_chain do not apply")
    seed = _seed_of(seed)
    filled = torch.cat([restore_linear(model, x[i:i + 1], Mask(known[i:i + 1]), SIGMA_QUANTISATION, seed=seed,
                                       steps=steps, task="inpaint", tile=tile, progress=progress)
                        for i in range(len(x))])
    images = torch.where(known.expand_as(x), x, filled)
    settings = task_settings(model, "inpaint")
    return Restoration(images, sample=images, settings=[settings] * len(x)) if details else images


# --- photo models: channels and batches ---------------------------------------------------------------------
def _through_channels(model: EBM, image: Tensor, known: Tensor | None, restore) -> Restoration:
    """Restore one image (1, C, H, W) through the model's channels, the one place grey meets colour.

    A grey image for a colour model — one channel, or three equal channels (with a mask equal across them) —
    runs as three equal channels whose likelihood counts a third each (it is one observation per pixel) and comes
    back as their mean, in as many channels as it came: a grey photo saved as RGB restores exactly as the same
    photo saved as L. A colour image for a grey model is restored channel by channel. ``restore(x, known, share,
    view)`` runs the chains on x in the model's channels; ``view`` maps its states back.
    """
    c = image.shape[1]
    if model.channels == 3 and (c == 1 or _equal_channels(image, known)):
        def grey(t: Tensor) -> Tensor:
            return t.mean(dim=-3, keepdim=True).expand(*t.shape[:-3], c, *t.shape[-2:])

        mask = None if known is None else known[:, :1].expand(-1, 3, -1, -1)
        return restore(image[:, :1].expand(-1, 3, -1, -1).contiguous(), mask, 1 / 3, grey)
    if model.channels == 1 and c == 3:
        parts = [restore(image[:, k:k + 1], None if known is None else known[:, k:k + 1], 1.0, _same)
                 for k in range(3)]
        return _join(parts, dim=-3)
    return restore(image, known, 1.0, _same)


def _same(t: Tensor) -> Tensor:
    return t


def _equal_channels(image: Tensor, known: Tensor | None) -> bool:
    def equal(t: Tensor) -> bool:
        return t.shape[1] == 1 or bool((t[:, 1:] == t[:, :1]).all())

    return image.shape[1] == 3 and equal(image) and (known is None or equal(known))


def _join(parts: list[Restoration], dim: int) -> Restoration:
    """Restorations of the same images, concatenated along ``dim`` (channels)."""
    def cat(name):
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else torch.cat(values, dim=dim)

    return Restoration(cat("images"), cat("chain"), sample=cat("sample"), std=cat("std"),
                       mala_acceptance=parts[0].mala_acceptance)


def _stack(parts: list[Restoration], settings: list[dict]) -> Restoration:
    """Restorations of one image each, as one batch; shorter chains hold their last state."""
    chain = None
    if all(p.chain is not None for p in parts):
        length = max(len(p.chain) for p in parts)
        chain = torch.cat([torch.cat([p.chain, p.chain[-1:].expand(length - len(p.chain), *p.chain.shape[1:])])
                           for p in parts], dim=1)
    stds, weights = [p.std for p in parts], [p.step_weight for p in parts]
    return Restoration(torch.cat([p.images for p in parts]).contiguous(), chain,
                       sample=torch.cat([p.sample for p in parts]).contiguous(),
                       std=None if any(s is None for s in stds) else torch.cat(stds).contiguous(), settings=settings,
                       step_weight=None if None in weights else torch.tensor(weights))


@contextlib.contextmanager
def _bar(total: int, chains: int, progress: bool, what: str | None = None):
    """One progress bar over a call's steps; yields the function the chains call after each step (or None)."""
    if not progress or total <= 0:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=what or f"Restoring ({chains} chain{'s' * (chains > 1)})", leave=False)
    try:
        yield bar.update
    finally:
        bar.close()
