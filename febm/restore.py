"""The public restoration API: generate, denoise and inpaint with a trained EBM.

    images = generate(model, n=16, seed=0)                    # (n, C, H, W) in [0, 1]
    clean  = denoise(model, noisy, sigma=0.2, seed=0)         # sigma=None estimates it from the image
    filled = inpaint(model, image, known_mask, seed=0)        # known_mask: 1 = observed, 0 = fill

All three run Langevin chains on an energy: the model's E(x) for ``generate``, the posterior energy
E(x) + T ||x - y||^2 / (2 sigma^2) for ``denoise`` (see ``temperature``), and E(x) with the observed
pixels held fixed for ``inpaint``. Their defaults (sampler, steps, number of chains) come from the model's
config. ``details=True`` returns a :class:`Restoration` (images, the chain for display, the sigma used,
the rejection-sampling acceptance rate) instead of the images alone.

Inputs are float tensors (C, H, W) or (B, C, H, W) in [0, 1] of the model's image shape; ``febm.imageio``
converts other images (PIL, numpy, any size or mode) at the edges.

Fully convolutional (photo) models take images of any size (at least ``MIN_SIDE`` px a side), grey or colour,
and return the same shape: their energy is evaluated in tiles whose halo covers its reach (febm.tiling, so the
result does not depend on the tiling and memory stays bounded), restoration chains start from a classical
estimate (febm.classical: the local Wiener filter for denoising, a smooth fill for inpainting), several chains
run one after another under one progress bar, and ``details=True`` adds their per-pixel standard deviation.
Grey images go through a colour model as three equal channels and come back as their mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .classical import local_wiener, smooth_fill
from .model import EBM
from .rejection import ratio_bound, rejection_sample
from .sampling import METHODS, LangevinSampler
from .tiling import DEFAULT_TILE, TiledEnergy

MIN_SIDE = 32  # fully convolutional models: smallest image side they restore


@dataclass
class Restoration:
    images: Tensor  # (B, C, H, W) in [0, 1]
    chain: Tensor | None = None  # (steps + 1, B, C, H, W): the first chain of each image, for display
    sigma: Tensor | None = None  # denoise: the noise level used per image, (B,)
    acceptance_rate: float | None = None  # generate(rejection=True): accepted / proposed
    sample: Tensor | None = None  # denoise/inpaint: the first chain's sample (== images when mean=False)
    std: Tensor | None = None  # fully convolutional models, chains > 1: per-pixel std over the chains


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


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device)
    gen.manual_seed(seed if seed is not None else torch.seed())
    return gen


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
    channels = sorted({1, model.channels})
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
    planar image content and turns noise of std sigma into responses of std 6 sigma. sigma is read from the
    mean of the smallest 90 % of the absolute responses (edges, a minority, bias the plain mean up) over
    the windows that hold no pixel clipped at 0 or 1 (clipping shrinks the noise: with the mean over all
    windows, sigma = 50/255 on scikit-image's astronaut read as 41.8). When
    fewer than a tenth of the windows are unclipped (dark backgrounds, as in Fashion-MNIST), all are used.
    Channels are averaged.
    """
    if images.dim() == 3:
        images = images[None]
    b, c, h, w = images.shape
    if h < 3 or w < 3:
        raise ValueError(f"estimating sigma needs images of at least 3x3 pixels, got {h}x{w}")
    kernel = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], device=images.device)
    flat = images.float().reshape(b * c, 1, h, w)
    response = nn.functional.conv2d(flat, kernel[None, None]).abs().flatten(1)
    clipped = ((flat == 0) | (flat == 1)).float()  # stored images clip at exactly 0 and 1
    unclipped = (nn.functional.max_pool2d(clipped, 3, stride=1) == 0).flatten(1)
    use = torch.where(unclipped.sum(1, keepdim=True) >= 0.1 * unclipped.shape[1], unclipped, torch.ones_like(unclipped))
    trimmed = torch.stack([_trimmed_mean(r[u]) for r, u in zip(response, use)])
    return (trimmed / (6.0 * _HALF_NORMAL_TRIMMED_MEAN)).reshape(b, c).mean(dim=1)


TRIM = 0.9  # estimate_sigma keeps the smallest 90 % of the absolute responses: edges are in the rest
_Z = math.sqrt(2.0) * torch.special.erfinv(torch.tensor(TRIM)).item()  # the half-normal's TRIM quantile
_HALF_NORMAL_TRIMMED_MEAN = math.sqrt(2.0 / math.pi) * (1.0 - math.exp(-_Z * _Z / 2.0)) / TRIM  # E[|z| | |z| < q]


def _trimmed_mean(values: Tensor) -> Tensor:
    k = max(1, int(TRIM * values.numel()))
    return values.sort().values[:k].mean()


# --- the chains ---------------------------------------------------------------------------------------------
class PosteriorEnergy(nn.Module):
    """E(x) + weight * ||x - y||^2 / 2 per image: Langevin on it samples p(x | y) for Gaussian noise."""

    def __init__(self, energy: nn.Module, observed: Tensor, weight: Tensor):
        super().__init__()
        self.energy, self.observed, self.weight = energy, observed, weight

    def forward(self, x: Tensor) -> Tensor:
        data = (x - self.observed).pow(2).flatten(1).sum(dim=1)
        return self.energy(x) + 0.5 * self.weight * data


def _run(sampler: LangevinSampler, energy: nn.Module, x0: Tensor, chains: int, *, known: Tensor | None,
         gen: torch.Generator, mean: bool, return_chain: bool, progress: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Run ``chains`` chains per image (one batch): (their mean or the first, the first, the first's chain)."""
    b = x0.shape[0]
    out = sampler.run(energy, x0, known_mask=known, generator=gen, return_chain=return_chain, progress=progress)
    x = out.x.reshape(chains, b // chains, *x0.shape[1:])
    chain = out.chain[:, : b // chains] if out.chain is not None else None
    return (x.mean(dim=0) if mean else x[0]), x[0], chain


def _repeat(t: Tensor | None, chains: int) -> Tensor | None:
    return None if t is None else t.repeat(chains, *([1] * (t.dim() - 1)))


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
    the ``details=True`` result. ``seed=None`` draws a fresh seed.
    """
    _check_count("n", n)
    _check_count("batch_size", batch_size)
    model.eval()
    sampler = generation_sampler(model, steps=steps, method=method, noise=noise)
    gen = _generator(seed, _device(model))
    residual = start_residual_of(model, start_residual)
    energy, size = _energy_for(model, sampler, tile), _check_size(model, size)

    def propose(m: int, with_chain: bool) -> tuple[Tensor, Tensor | None]:
        x0 = model.initial_samples(m, gen, residual, **({"size": size} if size else {}))
        images, _, chain = _run(sampler, energy, x0, 1, known=None, gen=gen, mean=False,
                                return_chain=with_chain, progress=progress)
        return images, chain

    if not rejection:
        parts = [propose(min(batch_size, n - s), return_chain) for s in range(0, n, batch_size)]
        images = torch.cat([p[0] for p in parts])
        chain = torch.cat([p[1] for p in parts], dim=1) if return_chain else None
        return Restoration(images, chain) if details else images
    return _generate_with_rejection(model, n, propose, gen, batch_size, rejection_quantile,
                                    max_proposals or 100 * n, return_chain, details)


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
    """The energy the chains run on: tiled for fully convolutional models (which MALA cannot serve)."""
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
    kept, kept_chains, proposed, bound = [], [], 0, None
    while sum(len(k) for k in kept) < n:
        if proposed >= max_proposals:
            raise RuntimeError(f"rejection sampling accepted {sum(len(k) for k in kept)} of {proposed} proposals, "
                               f"short of n = {n}: raise max_proposals or use a rejection_quantile below 1")
        m = max(batch_size, 64) if bound is None else batch_size
        x, chain = propose(m, return_chain)
        r = model.log_ratio(x)
        if bound is None:  # M from the first (largest) batch, then fixed so that every batch is filtered alike
            bound = ratio_bound(r, quantile)
        result = rejection_sample(x, r, bound=bound, generator=gen)
        kept.append(result.samples)
        if return_chain:
            kept_chains.append(chain[:, result.accepted])
        proposed += m
    accepted = sum(len(k) for k in kept)
    images = torch.cat(kept)[:n]
    chain = torch.cat(kept_chains, dim=1)[:, :n] if return_chain else None
    rate = accepted / proposed
    return Restoration(images, chain, acceptance_rate=rate) if details else images


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
    mean: bool = True,
    temperature_scale: float | None = None,
    tile: int = DEFAULT_TILE,
    return_chain: bool = False,
    progress: bool = True,
    details: bool = False,
) -> Tensor | Restoration:
    """Sample p(x | y) ∝ exp(-E(x)/T - ||y - x||^2 / (2 sigma^2)) for y = x + N(0, sigma^2).

    Chains start from the model's start distribution conditioned on y (exact for the Gaussian "pca" start:
    its posterior mean when ``mean=True``, a posterior sample otherwise), or at y for other models.

    ``sigma``: the noise std in [0, 1] units, a fraction of the pixel range (noise quoted in 0-255 levels of an
    8-bit image is ``sigma_255 / 255``: 25 -> 0.098) — a number, a (B,) tensor, or None to estimate it per image
    (:func:`estimate_sigma`). ``chains`` chains per image (default from the model's config, else 1);
    ``mean=True`` returns their average (the posterior-mean estimate, best in PSNR), ``False`` the first
    chain's sample. T is the sampler's temperature (:func:`temperature`), times ``temperature_scale``.
    Defaults for steps, chains and temperature_scale come from ``config["restoration"]["denoise"]`` (set by
    ``python -m training.tune`` on validation data), else the sampler's steps, 1 chain and 1.0.
    Fully convolutional models: any size, chains from the local Wiener filter of y (module docstring).
    """
    y = check_images(model, noisy, "noisy image")
    b = y.shape[0]
    if sigma is None:
        sigma_t = estimate_sigma(y).clamp(min=1e-3)
    else:
        sigma_t = torch.as_tensor(sigma, dtype=torch.float32, device=y.device).flatten()
        if sigma_t.numel() not in (1, b):
            raise ValueError(f"sigma must be a number or one value per image ({b}), got {sigma_t.numel()} values")
        if not torch.isfinite(sigma_t).all() or (sigma_t <= 0).any():
            raise ValueError(f"sigma must be > 0 (the noise std in [0, 1] units), got {sigma}")
        sigma_t = sigma_t.expand(b).clone()
    sampler, chains = _settings(model, "denoise", steps, method, chains)
    if temperature_scale is None:
        temperature_scale = float(_task_defaults(model, "denoise").get("temperature_scale", 1.0))
    if not temperature_scale > 0:
        raise ValueError(f"temperature_scale must be > 0, got {temperature_scale}")
    gen = _generator(seed, y.device)
    weight = temperature(model, sampler) * temperature_scale / sigma_t.pow(2)
    model.eval()  # spectral norm: no power iterations (they would change the weights from tile to tile)
    if model.fully_convolutional:
        x, grey = _model_channels(model, y)
        # a grey observation is one value per pixel: three equal channels would count its likelihood thrice
        energy = PosteriorEnergy(_energy_for(model, sampler, tile), x, weight / x.shape[1] if grey else weight)
        start = local_wiener(x, sigma_t).clamp(*_range(model))
        result = _field_chains(sampler, energy, start, chains, known=None, gen=gen, mean=mean,
                               return_chain=return_chain, progress=progress, grey=grey)
        result.sigma = sigma_t
        return result if details else result.images
    y = _repeat(y, chains)
    energy = PosteriorEnergy(model.energy, y, _repeat(weight, chains))
    x0 = _conditioned_start(model, y, _repeat(sigma_t, chains), None, gen if not mean else None, fallback=lambda: y)
    model.eval()
    images, sample, chain = _run(sampler, energy, x0, chains, known=None, gen=gen, mean=mean,
                                 return_chain=return_chain, progress=progress)
    return Restoration(images, chain, sigma=sigma_t, sample=sample) if details else images


def _conditioned_start(model: EBM, observed: Tensor, sigma: Tensor, known: Tensor | None,
                       gen: torch.Generator | None, *, fallback: Callable[[], Tensor]) -> Tensor:
    """Where restoration chains start: the model's start distribution conditioned on the observation.

    With a Gaussian start (``start: pca``) the conditional is exact and cheap (PCAGaussian.posterior): its
    mean when ``gen`` is None (the posterior-mean output), else a sample. Chains then only add what the
    energy knows beyond that Gaussian, as in generation. Other models start at ``fallback()``, called only
    then so that it draws nothing from ``gen`` otherwise.
    """
    if model.start is None:
        return fallback()
    return model.start.posterior(observed, sigma, known, generator=gen)


def _task_defaults(model: EBM, task: str) -> dict:
    """Tuned defaults of one restoration task, from ``config["restoration"][task]`` (may be empty)."""
    return (model.config.get("restoration") or {}).get(task) or {}


def _settings(model: EBM, task: str, steps, method, chains) -> tuple[LangevinSampler, int]:
    tuned = _task_defaults(model, task)
    sampler = model_sampler(model, steps=steps if steps is not None else tuned.get("steps"), method=method)
    chains = chains if chains is not None else int(tuned.get("chains", 1))
    _check_count("chains", chains)
    return sampler, chains


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
    chain one sample); defaults from ``config["restoration"]["inpaint"]``.
    Fully convolutional models: any size, chains from a smooth fill of the holes (module docstring).
    """
    x = check_images(model, image, "image")
    known = check_mask(known_mask, x)
    sampler, chains = _settings(model, "inpaint", steps, method, chains)
    gen = _generator(seed, x.device)
    model.eval()
    if model.fully_convolutional:
        x3, grey = _model_channels(model, x)
        known3 = known[:, :1].expand_as(x3) if grey else known
        start = smooth_fill(x3, known3)
        result = _field_chains(sampler, _energy_for(model, sampler, tile), start, chains, known=known3, gen=gen,
                               mean=mean, return_chain=return_chain, progress=progress, grey=grey)
        result.images = torch.where(known, x, result.images)  # exact, also after averaging
        result.sample = torch.where(known, x, result.sample)
        return result if details else result.images
    x = _repeat(x, chains)
    known = _repeat(known, chains)
    x0 = _conditioned_start(model, x, torch.zeros(x.shape[0], device=x.device), known, gen if not mean else None,
                            fallback=lambda: torch.where(known, x, model.initial_samples(x.shape[0], gen)))
    model.eval()
    images, sample, chain = _run(sampler, model.energy, x0, chains, known=known, gen=gen, mean=mean,
                                 return_chain=return_chain, progress=progress)
    b = images.shape[0]
    images = torch.where(known[:b], x[:b], images)  # exact, also after averaging
    return Restoration(images, chain, sample=sample) if details else images


# --- fully convolutional models -------------------------------------------------------------------------------
def _model_channels(model: EBM, x: Tensor) -> tuple[Tensor, bool]:
    """A grey image for a colour model becomes three equal channels (True: convert back with the mean)."""
    if x.shape[1] == 1 and model.channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous(), True
    return x, False


def _field_chains(sampler: LangevinSampler, energy: nn.Module, start: Tensor, chains: int, *, known: Tensor | None,
                  gen: torch.Generator, mean: bool, return_chain: bool, progress: bool, grey: bool) -> Restoration:
    """``chains`` chains from ``start``, one after another (memory of one batch): their mean (or the first
    chain's sample), the first chain's sample, and the per-pixel std over the chains (Welford's update)."""
    bar = None
    if progress and sampler.steps > 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=chains * sampler.steps, desc=f"Restoring ({chains} chain{'s' * (chains > 1)})", leave=False)
    back = (lambda t: t.mean(dim=-3, keepdim=True)) if grey else (lambda t: t)
    total = m2 = first = chain = None
    try:
        for c in range(chains):
            out = sampler.run(energy, start, known_mask=known, generator=gen, return_chain=return_chain and c == 0,
                              progress=bar.update if bar is not None else False)
            x = back(out.x)
            if c == 0:
                first, total, m2 = x, x.clone(), torch.zeros_like(x)
                chain = None if out.chain is None else back(out.chain)
            else:
                delta = x - total
                total += delta / (c + 1)
                m2 += delta * (x - total)
    finally:
        if bar is not None:
            bar.close()
    std = (m2 / (chains - 1)).sqrt() if chains > 1 else None
    return Restoration(total if mean else first, chain, sample=first, std=std)
