"""The denoising posterior of a noise-conditional photo energy, and the chains that sample it.

A photo energy trained on noisy observations (``FieldEnergy(noise_conditional=True)``) defines, for an
observation y = x + N(0, sigma^2), the model's conditional

    q(x | y) ∝ exp(-U(x)),    U(x) = E(x, rho sigma) + ||y - x||^2 / (2 sigma^2)

with the prior taken at a fraction rho (``prior_fraction``, 1/2) of the observation's noise level. E(., s) is the
energy of photos with noise s: s = sigma would favour noisy images; s near 0 is the clean photo's prior, but its
curvature (up to 1 / s^2) would force steps of s^2 and hundreds of them. At rho sigma the likelihood and the prior
have comparable curvature, so a few steps of a fixed fraction of sigma^2 mix, as in diffusion recovery
likelihood's conditionals between neighbouring noise levels (Gao et al. 2021).

Restoration and posterior training (training/posterior.py) run the same chain on it:

- start at the energy's gradient step ``gradient_step(energy, y, sigma)`` = y - sigma^2 grad E(y, sigma), the
  posterior mean when E is the score-matching energy of noisy photos (Tweedie's formula);
- then ``steps`` unadjusted Langevin steps on U, x <- x - (eps / 2) grad U + sqrt(eps) z, with a step that fits
  the curvature of U (1 / sigma^2 + up to 1 / (rho sigma)^2): eps = ``step_fraction`` * sigma^2 per image (ULA
  is stable on a quadratic of curvature c for eps c < 4, and its bias there is O(eps c)).

No gradient clipping and no clamp inside the chain: its temperature is exactly 1, so U means what it says.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sampling import Generators, random_like

STEP_FRACTION = 0.2  # eps = STEP_FRACTION * sigma^2
PRIOR_FRACTION = 0.5  # the prior's noise level, as a fraction of the observation's


def _column(sigma: Tensor, x: Tensor) -> Tensor:
    return sigma.to(x.device, x.dtype).view(-1, *[1] * (x.dim() - 1))


def energy_grad(energy, x: Tensor, sigma: Tensor) -> Tensor:
    """grad_x E(x, sigma) for a batch (the network's parameters get no gradient)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(x, sigma=sigma).sum(), x)
    return grad


def gradient_step(energy, noisy: Tensor, sigma: Tensor) -> Tensor:
    """y - sigma^2 grad E(y, sigma): the posterior mean of a score-matching energy (Tweedie), in [0, 1]."""
    return (noisy - _column(sigma, noisy) ** 2 * energy_grad(energy, noisy, sigma)).clamp(0.0, 1.0)


def posterior_grad(energy, x: Tensor, noisy: Tensor, sigma: Tensor, prior_fraction: float = PRIOR_FRACTION) -> Tensor:
    """grad_x U(x) = grad E(x, rho sigma) + (x - y) / sigma^2."""
    return energy_grad(energy, x, prior_fraction * sigma) + (x - noisy) / _column(sigma, x) ** 2


def posterior_chains(energy, noisy: Tensor, sigma: Tensor, *, prior_fraction: float = PRIOR_FRACTION, chains: int = 1,
                     steps: int = 5, final_steps: int = 0, step_fraction: float = STEP_FRACTION, generator: Generators = None,
                     start: Tensor | None = None) -> Tensor:
    """``chains`` samples per observation from q(x | y): (B, chains, C, H, W).

    Every chain starts at ``start`` (default: the gradient step of y) and runs ``steps`` ULA steps on U; the
    chains of one observation share the start and differ in their noise. ``sigma``: (B,) in [0, 1] units.
    ``generator``: one for the batch, or one per chain row (B * chains, observation-major; febm.sampling).
    """
    if chains < 1 or steps < 0 or final_steps < 0:
        raise ValueError(f"need chains >= 1, steps >= 0 and final_steps >= 0, got {chains}, {steps}, {final_steps}")
    if not 0 < step_fraction < 4:
        raise ValueError(f"step_fraction must be in (0, 4) (ULA on the likelihood is unstable beyond), got {step_fraction}")
    b = noisy.shape[0]
    if start is None:
        start = gradient_step(energy, noisy, sigma)
    repeat = (lambda t: t.repeat_interleave(chains, dim=0))
    y, s, x = repeat(noisy), repeat(sigma.flatten()), repeat(start)
    eps = step_fraction * _column(s, x) ** 2
    for _ in range(steps):
        z = random_like(x, generator)
        x = x - 0.5 * eps * posterior_grad(energy, x, y, s, prior_fraction) + eps.sqrt() * z
    for _ in range(final_steps):  # noise-free: towards the posterior's mode, without the chain's last noise
        x = x - 0.5 * eps * posterior_grad(energy, x, y, s, prior_fraction)
    return x.detach().view(b, chains, *noisy.shape[1:])


def posterior_mean(energy, noisy: Tensor, sigma: Tensor, *, prior_fraction: float = PRIOR_FRACTION, chains: int = 4,
                   steps: int = 5, final_steps: int = 0, step_fraction: float = STEP_FRACTION,
                   generator: Generators = None, start: Tensor | None = None) -> Tensor:
    """The average of ``chains`` posterior chains (each ending with ``final_steps`` noise-free steps), in [0, 1]:
    the posterior-mean estimate, which one sample misses by its own spread (twice the mean's squared error).
    ``start`` as in :func:`posterior_chains`."""
    x = posterior_chains(energy, noisy, sigma, prior_fraction=prior_fraction, chains=chains, steps=steps,
                         final_steps=final_steps, step_fraction=step_fraction, generator=generator, start=start)
    return x.mean(dim=1).clamp(0.0, 1.0)

