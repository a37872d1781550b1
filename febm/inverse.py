"""Restoration through a known linear degradation: deblurring and upscaling with the same photo prior.

    sharp = deblur(model, blurred, gaussian_kernel(1.6), sigma=2 / 255, seed=0)   # (C, H, W) or (B, C, H, W)
    big   = upscale(model, small, factor=2, seed=0)                               # (.., C, 2H, 2W)
    x     = restore(model, y, Blur(kernel), sigma=None)                           # any febm.operators operator

The observation is y = A x + N(0, sigma^2), A a :mod:`febm.operators` operator; restoration starts from the
operator's classical estimate (Wiener deconvolution; bicubic upsampling) and runs on the posterior energy

    U(x) = E(x) / (T s) + ||A x - y||^2 / (2 sigma^2)

with T the energy's temperature (:func:`febm.restore.temperature` of the model's sampler for plain energies, 1 for
noise-conditional ones) and s ``temperature_scale`` (tuned: the prior's weight is 1/s). The data term is handled
on the whole image (a convolution or a resize and their adjoints: cheap), the energy's gradient in tiles
(:class:`febm.tiling.TiledEnergy`): any size, bounded memory. Each step is a forward-backward step (proximal
gradient; plug-and-play when the prior is a denoiser):

    v = x - h / c_k * grad E(x, s_k)  (+ noise * sqrt(2 tau_k) z),     tau_k = h T s / c_k
    x = argmin_x ||A x - y||^2 / (2 sigma^2) + ||x - v||^2 / (2 tau_k)      (conjugate gradients, warm-started)

a gradient step on the prior of ``step_fraction`` h of its inverse curvature c_k, then the data term's exact
proximal step. Plain gradient steps on U would have to be 1 / (||A||^2 / sigma^2) small, where the blur's or the
downsampling's null space leaves the prior to move a hundred times slower; the exact data step removes that.

- Plain energies E(x) (``checkpoints/photo-js``, ``photo-cd``): c_k = the energy's largest curvature
  (:func:`febm.restore.prior_curvature`, measured on the start, or the tuned ``prior_curvature``). With noise 0
  the steps converge to the MAP estimate of U.
- Noise-conditional energies E(x, s) (``FieldEnergy(noise_conditional=True)``, trained by denoising score
  matching, so x - s^2 grad E(x, s) is a denoiser): annealed as in Kadkhodaie & Simoncelli (2021) and DPIR (Zhang
  et al. 2021), the prior's level s_k falling geometrically from ``sigma_start`` to ``sigma_floor``, c_k = 1/s_k^2
  (so v = (1 - h) x + h D_k(x) for h <= 1), and with ``final_denoise`` a last denoising step at the floor (Tweedie).

Settings come from ``config["restoration"]["deblur"]`` / ``["upscale"]`` (tuned on validation crops by
``python -m bench.photo_inverse --tune-model MODEL``, stored by :func:`write_task_settings`), else :data:`DEFAULTS`;
keyword arguments override both (:func:`task_settings`). ``details=True`` returns an :class:`InverseRestoration`
with the start, the sigma used and the consistency ||A x_hat - y|| / sqrt(n) per image (close to sigma when the
restoration explains the observation).

As in :mod:`febm.restore`: every image of a batch is restored alone, with its own noise stream from ``seed`` (an int;
``None``: a fresh one, torch's global stream untouched; a ``torch.Generator`` is drawn from image after image); a
grey image (one channel, or three equal ones) goes through a colour model as three equal channels whose likelihood
counts once and comes back in as many channels as it came; a colour image for a grey model is restored channel by
channel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .model import EBM
from .nets import AtNoiseLevel
from .operators import SIGMA_QUANTISATION, Blur, Downsample, LinearOperator
from .restore import check_images, estimate_sigma, prior_curvature, temperature
from .sampling import energy_and_grad, random_like
from .tiling import DEFAULT_TILE, TiledEnergy

TASKS = ("deblur", "upscale", "inpaint")  # inpaint: noise-conditional energies, through febm.restore.inpaint
PLAIN, NOISE_CONDITIONAL = "plain", "noise_conditional"
# Fallbacks per energy kind where a model's config has no tuned entry (bench.photo_inverse --tune-model tunes them).
DEFAULTS = {
    PLAIN: {"steps": 10, "temperature_scale": 3.0, "step_fraction": 0.5, "noise": 0.0},
    NOISE_CONDITIONAL: {"steps": 20, "temperature_scale": 1.0, "step_fraction": 0.5, "noise": 0.0,
                        "sigma_start": 20 / 255, "sigma_floor": 2 / 255, "final_denoise": True},
}
# Optional settings of either kind: "data_sigma" is the sigma used when a call gives none (upscaling tunes it: a photo
# made smaller carries only rounding noise, and a softer data term restores it better); "prior_curvature" saves
# measuring a plain energy's curvature on every call.
OPTIONAL = ("data_sigma", "prior_curvature")
RECORD_KEYS = ("val_psnr", "start_psnr", "tuned_on", "grid")  # stored beside the settings, not settings
CG_ITERATIONS = 8  # conjugate-gradient steps per data step, warm-started at the previous x (then a fixed point of the
# steps is exactly one of U's; photo-js on validation crops: 3, 8 and 20 steps give the same PSNR within 0.005 dB)


@dataclass
class InverseRestoration:
    images: Tensor  # (B, C, H', W') in [0, 1]: the restoration
    start: Tensor  # (B, C, H', W'): the operator's classical estimate the steps started from
    sigma: Tensor  # (B,): the observation noise used, [0, 1] units
    residual: Tensor  # (B,): ||A x_hat - y|| / sqrt(n), n the values of y per image: near sigma when consistent
    settings: dict = field(default_factory=dict)  # what ran


# --- settings --------------------------------------------------------------------------------------------------
def energy_kind(model: EBM) -> str:
    """``"noise_conditional"`` for an energy E(x, sigma) (noise biases in its layers), else ``"plain"``."""
    return NOISE_CONDITIONAL if model.noise_conditional else PLAIN


def task_settings(model: EBM, task: str, **overrides) -> dict:
    """The settings ``task`` runs with: :data:`DEFAULTS` for the model's kind, updated by its tuned
    ``config["restoration"][task]`` and by ``overrides`` (None = keep). Unknown names are refused."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    kind = energy_kind(model)
    allowed = set(DEFAULTS[kind]) | set(OPTIONAL)
    unknown = sorted(k for k, v in overrides.items() if v is not None and k not in allowed)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for a {kind.replace('_', '-')} energy; "
                         f"valid: {', '.join(sorted(allowed))}")
    tuned = (model.config.get("restoration") or {}).get(task) or {}
    settings = {**DEFAULTS[kind], **{k: v for k, v in tuned.items() if k in allowed},
                **{k: v for k, v in overrides.items() if v is not None}}
    _check_settings(settings)
    return settings


def _check_settings(s: dict) -> None:
    if isinstance(s["steps"], bool) or not isinstance(s["steps"], int) or s["steps"] < 0:
        raise ValueError(f"steps must be an integer >= 0, got {s['steps']!r}")
    for name in ("temperature_scale", "step_fraction", "sigma_start", "sigma_floor", "data_sigma", "prior_curvature"):
        value = s.get(name)
        if value is not None and not (isinstance(value, (int, float)) and 0 < value < math.inf):
            raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if not s["step_fraction"] < 2:
        raise ValueError(f"step_fraction must be in (0, 2) (a fraction of the prior's inverse curvature: gradient "
                         f"steps diverge beyond 2), got {s['step_fraction']}")
    if not 0 <= s["noise"] <= 1:
        raise ValueError(f"noise must be in [0, 1] (1: Langevin on the posterior, 0: no noise), got {s['noise']}")
    if "sigma_start" in s and s["sigma_floor"] > s["sigma_start"]:
        raise ValueError(f"sigma_floor ({s['sigma_floor']:.4g}) must not exceed sigma_start ({s['sigma_start']:.4g})")
    if s.get("data_sigma") is not None and s["data_sigma"] > 1:
        raise ValueError(f"data_sigma is in [0, 1] units, got {s['data_sigma']}")


def write_task_settings(location, task: str, settings: dict) -> dict:
    """Store tuned settings as ``config["restoration"][task]`` of the model folder ``location`` (weights unchanged,
    model card regenerated). ``settings``: setting names of the model's kind (:data:`DEFAULTS`, :data:`OPTIONAL`)
    and, optionally, the tuning's record (``val_psnr``, ``start_psnr``, ``tuned_on``, ``grid``). Returns the entry."""
    from .model import load_model, resolve_model

    kind, folder = resolve_model(location)
    if kind == "hub":
        raise ValueError(f"{location} is a Hub repo: tune a local copy of the model folder")
    model = load_model(folder)
    given = {k: v for k, v in settings.items() if k not in RECORD_KEYS}
    task_settings(model, task, **given)  # checks names and values
    entry = {**given, **{k: v for k, v in settings.items() if k in RECORD_KEYS}}
    restoration = dict(model.config.get("restoration") or {})
    restoration[task] = entry
    model.update_config({"restoration": restoration})
    model.save_pretrained(folder)
    return entry


# --- inputs ----------------------------------------------------------------------------------------------------
def check_sigma(sigma, batch: int, device: torch.device) -> Tensor:
    """sigma as (B,) float32: a number or one value per image, in (0, 1] ([0, 1] units)."""
    s = torch.as_tensor(sigma, dtype=torch.float32, device=device).flatten()
    if s.numel() not in (1, batch):
        raise ValueError(f"sigma must be a number or one value per image ({batch}), got {s.numel()} values")
    if not torch.isfinite(s).all() or (s <= 0).any():
        raise ValueError(f"sigma must be > 0 (the noise std in [0, 1] units), got {sigma}")
    if (s > 1).any():
        big = float(s.max())
        raise ValueError(f"sigma is the noise std in [0, 1] units, a fraction of the pixel range; got {big:g}: noise "
                         f"of {big:g} levels of an 8-bit image is sigma = {big:g}/255 = {big / 255:.4g}")
    return s.expand(batch).clone()


def _check_model(model: EBM) -> None:
    if not isinstance(model, EBM):
        raise TypeError(f"model must be a febm EBM (febm.load_model), got {type(model).__name__}")
    if not model.fully_convolutional:
        raise ValueError("deblurring and upscaling need a photo model (a fully convolutional energy, any image size); "
                         "this model restores only its own image shape")


def _generators(seed, n: int, device: torch.device) -> list[torch.Generator]:
    """One generator per image, all seeded alike (an image restores the same in any batch); a Generator is shared."""
    if isinstance(seed, torch.Generator):
        return [seed] * n
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int, a torch.Generator or None, got {type(seed).__name__}")
    seed = torch.Generator().seed() if seed is None else seed  # a fresh seed; the global stream untouched
    return [torch.Generator(device).manual_seed(seed) for _ in range(n)]


# --- the public API --------------------------------------------------------------------------------------------
@torch.no_grad()
def restore(model: EBM, image: Tensor, operator: LinearOperator, sigma: float | Tensor | None = None, *,
            seed: int | torch.Generator | None = 0, steps: int | None = None, task: str = "deblur",
            tile: int = DEFAULT_TILE, progress: bool = True, details: bool = False,
            **settings) -> Tensor | InverseRestoration:
    """Restore x from y = A x + N(0, sigma^2), A = ``operator``, with the model's energy as the prior.

    ``image``: y, a float tensor (C, H, W) or (B, C, H, W) in [0, 1], at least 32 px a side, grey or colour; the
    result has the operator's input size, (C, H', W') or (B, C, H', W') as ``image`` was. ``sigma``: the noise std in
    [0, 1] units (2 levels of 255: 2/255), a number or one per image; None: the task's tuned ``data_sigma`` if it has
    one, else estimated per image (:func:`febm.restore.estimate_sigma`). ``task``: whose tuned settings to use.
    ``steps`` and ``settings``: see the module docstring and :data:`DEFAULTS`; ``steps=0`` returns the start.
    """
    _check_model(model)
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be a febm.operators.LinearOperator, got {type(operator).__name__}")
    single = isinstance(image, Tensor) and image.dim() == 3
    y = check_images(model, image, "image")
    params = task_settings(model, task, steps=steps, **settings)
    data_sigma = params.pop("data_sigma", None)
    if sigma is None:
        levels = (torch.full((len(y),), float(data_sigma), device=y.device) if data_sigma is not None
                  else estimate_sigma(y).clamp(min=SIGMA_QUANTISATION))
    else:
        levels = check_sigma(sigma, len(y), y.device)
    gens = _generators(seed, len(y), y.device)
    model.eval()  # spectral norm: no power iterations (they would change the weights from tile to tile)
    runs = 3 if model.channels == 1 and y.shape[1] == 3 else 1  # a grey model restores colour channel by channel
    bar = _bar(len(y) * runs * params["steps"], progress)
    tick = bar.update if bar is not None else None
    try:
        parts = [_through_channels(model, y[i:i + 1], lambda x, share, i=i: _restore_one(
            model, x, operator, float(levels[i]), params, share=share, gen=gens[i], tile=tile, tick=tick))
            for i in range(len(y))]
    finally:
        if bar is not None:
            bar.close()
    x = torch.cat([p[0] for p in parts]).clamp(0.0, 1.0)
    if not details:
        return x[0] if single else x
    start = torch.cat([p[1] for p in parts])
    residual = (operator.forward(x) - y).flatten(1).norm(dim=1) / math.sqrt(y[0].numel())
    if single:
        x, start = x[0], start[0]
    return InverseRestoration(x, start, levels, residual, params)


def deblur(model: EBM, image: Tensor, kernel, sigma: float | Tensor | None = None, *,
           seed: int | torch.Generator | None = 0, steps: int | None = None, **kwargs) -> Tensor | InverseRestoration:
    """Deblur ``image`` (C, H, W) or (B, C, H, W) in [0, 1], blurred by ``kernel`` (a 2-D array or tensor summing
    to 1, e.g. ``febm.operators.parse_kernel("motion:9,30")``; reflect borders) with noise of std ``sigma`` ([0, 1]
    units; None: estimated). Same size out. Other arguments: :func:`restore`."""
    return restore(model, image, Blur(kernel), sigma, seed=seed, steps=steps, task="deblur", **kwargs)


def upscale(model: EBM, image: Tensor, factor: int = 2, sigma: float | Tensor | None = None, *,
            seed: int | torch.Generator | None = 0, steps: int | None = None, **kwargs) -> Tensor | InverseRestoration:
    """Enlarge ``image`` (C, H, W) or (B, C, H, W) in [0, 1] by ``factor`` (2, 3 or 4) to (.., factor H, factor W),
    modelling it as the antialiased bicubic downsampling of the result (what PIL and torchvision do to make a photo
    smaller) with noise of std ``sigma`` (None: the tuned ``data_sigma``, else estimated). Other arguments:
    :func:`restore`."""
    return restore(model, image, Downsample(factor), sigma, seed=seed, steps=steps, task="upscale", **kwargs)


# --- one image --------------------------------------------------------------------------------------------------
def _through_channels(model: EBM, y: Tensor, run: Callable[[Tensor, float], tuple[Tensor, Tensor]]
                      ) -> tuple[Tensor, Tensor]:
    """``run(y in the model's channels, likelihood share)`` -> (x, start), seen back in y's channels (the rule of
    febm.restore: grey as three equal channels counted once; colour for a grey model channel by channel)."""
    c = y.shape[1]
    if model.channels == 3 and (c == 1 or bool((y[:, 1:] == y[:, :1]).all())):
        x, start = run(y[:, :1].expand(-1, 3, -1, -1).contiguous(), 1 / 3)
        grey = lambda t: t.mean(dim=1, keepdim=True).expand(-1, c, -1, -1)  # noqa: E731
        return grey(x), grey(start)
    if model.channels == 1 and c == 3:
        parts = [run(y[:, k:k + 1], 1.0) for k in range(3)]
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)
    return run(y, 1.0)


def _restore_one(model: EBM, y: Tensor, operator: LinearOperator, sigma: float, params: dict, *, share: float,
                 gen: torch.Generator, tile: int, tick) -> tuple[Tensor, Tensor]:
    start = operator.start(y, sigma)
    if params["steps"] == 0:
        return start, start
    if energy_kind(model) == NOISE_CONDITIONAL:
        levels = noise_levels(params["sigma_start"], params["sigma_floor"], params["steps"])
        prior = _noise_conditional_grad(model, tile)
        curvatures = [1.0 / s**2 for s in levels]
        t = 1.0
        final = params["sigma_floor"] if params["final_denoise"] else None
    else:
        energy = TiledEnergy(model.energy, tile)
        levels = [None] * params["steps"]
        prior = lambda x, _: energy_and_grad(energy, x)[1]  # noqa: E731
        c = params.get("prior_curvature") or prior_curvature(model, {}, start)
        curvatures = [c] * params["steps"]
        t = temperature(model)
        final = None
    x = forward_backward(prior, operator, y, sigma, start, levels=levels, curvatures=curvatures,
                         prior_temperature=t * params["temperature_scale"], step_fraction=params["step_fraction"],
                         noise=params["noise"], share=share, gen=gen, tick=tick)
    if final is not None:
        x = x - final**2 * prior(x, final)
    return x, start


def _noise_conditional_grad(model: EBM, tile: int) -> Callable[[Tensor, float], Tensor]:
    def grad(x: Tensor, level: float) -> Tensor:
        return energy_and_grad(TiledEnergy(AtNoiseLevel(model.energy, level), tile), x)[1]
    return grad


def noise_levels(sigma_start: float, sigma_floor: float, steps: int) -> list[float]:
    """``steps`` prior levels falling geometrically from sigma_start to sigma_floor (both included)."""
    if steps == 1:
        return [float(sigma_floor)]
    ratio = (sigma_floor / sigma_start) ** (1.0 / (steps - 1))
    return [float(sigma_start * ratio**k) for k in range(steps)]


def forward_backward(prior_grad: Callable[[Tensor, float | None], Tensor], operator: LinearOperator, y: Tensor,
                     sigma: float, start: Tensor, *, levels: list, curvatures: list[float], prior_temperature: float,
                     step_fraction: float, noise: float = 0.0, share: float = 1.0, gen: torch.Generator | None = None,
                     cg_iterations: int = CG_ITERATIONS, tick=None) -> Tensor:
    """One step per entry of ``levels``: the prior's gradient step v = x - h / c_k grad E(x, level_k) (plus ``noise``
    sqrt(2 tau_k) z), tau_k = h prior_temperature / c_k, then x = argmin share ||A x - y||^2 / (2 sigma^2) +
    ||x - v||^2 / (2 tau_k) by ``cg_iterations`` conjugate-gradient steps from the previous x. ``prior_grad(x,
    level)`` = grad_x E (``level`` None for plain energies). From ``start``; returns x, not clamped. Without noise and
    at a fixed level, its fixed point minimises E / prior_temperature + the data term."""
    weight = share / sigma**2
    rhs_data = weight * operator.adjoint(y)
    x = start.clone()
    for level, c in zip(levels, curvatures):
        tau = step_fraction * prior_temperature / c
        v = x - (step_fraction / c) * prior_grad(x, level)
        if noise > 0:
            v = v + noise * math.sqrt(2 * tau) * random_like(x, gen)
        x = conjugate_gradient(lambda z: weight * operator.gram(z) + z / tau, rhs_data + v / tau, x, cg_iterations)
        if tick is not None:
            tick()
    return x


def conjugate_gradient(apply: Callable[[Tensor], Tensor], rhs: Tensor, x0: Tensor, iterations: int) -> Tensor:
    """Solve apply(x) = rhs for a symmetric positive definite ``apply`` (one system per image), from x0."""
    def dot(a: Tensor, b: Tensor) -> Tensor:
        return (a * b).flatten(1).sum(1).view(-1, *[1] * (a.dim() - 1))

    x = x0.clone()
    r = rhs - apply(x)
    p, rs = r.clone(), dot(r, r)
    for _ in range(iterations):
        if float(rs.max()) == 0.0:
            break
        ap = apply(p)
        alpha = rs / dot(p, ap).clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        rs_next = dot(r, r)
        p = r + (rs_next / rs.clamp_min(1e-30)) * p
        rs = rs_next
    return x


def _bar(total: int, progress: bool):
    if not progress or total <= 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Restoring", leave=False)


# --- deepinv (optional: pip install deepinv) ---------------------------------------------------------------------
def deepinv_prior(model: EBM, *, temperature_scale: float = 1.0, tile: int = DEFAULT_TILE):
    """The model's energy as a ``deepinv.optim.Prior``, for deepinv's own solvers (GD, PGD, HQS...):
    fn(x) = E(x) / (T s) and grad(x) = grad E(x) / (T s), T and s = ``temperature_scale`` as in :func:`restore`. A
    noise-conditional energy is asked at the level deepinv passes as the prior's parameter (``g_param`` /
    ``sigma_denoiser`` of its solvers), in [0, 1] units. Images as deepinv has them: (B, C, H, W) in [0, 1]."""
    from deepinv.optim import Prior

    _check_model(model)
    model.eval()
    conditional = energy_kind(model) == NOISE_CONDITIONAL
    scale = (1.0 if conditional else temperature(model)) * temperature_scale

    def energy(level) -> TiledEnergy:
        if conditional and level is None:
            raise ValueError("a noise-conditional energy needs its level: give the deepinv solver g_param "
                             "(sigma_denoiser), in [0, 1] units")
        return TiledEnergy(AtNoiseLevel(model.energy, float(level)) if conditional else model.energy, tile)

    class EnergyPrior(Prior):
        def __init__(self):
            super().__init__()
            self.explicit_prior = True

        def fn(self, x: Tensor, level: float | None = None, *args, **kwargs) -> Tensor:
            with torch.no_grad():
                return energy(level)(x) / scale

        def grad(self, x: Tensor, level: float | None = None, *args, **kwargs) -> Tensor:
            return energy_and_grad(energy(level), x)[1] / scale

    return EnergyPrior()


def deepinv_physics(operator: LinearOperator):
    """A :mod:`febm.operators` operator as a ``deepinv.physics.LinearPhysics`` (its forward and exact adjoint)."""
    from deepinv.physics import LinearPhysics

    return LinearPhysics(A=lambda x, **_: operator.forward(x), A_adjoint=lambda y, **_: operator.adjoint(y))
