"""Stein's unbiased risk estimate (SURE): how far to trust a denoiser's output over its input, without the clean image.

For y = x + N(0, sigma^2 I) with N independent entries and a denoiser f, SURE = ||f(y) - y||^2 / N - sigma^2
+ 2 sigma^2 div f(y) / N estimates ||f(y) - x||^2 / N without bias (Stein 1981); the divergence is estimated with
one random probe b of +-1 entries, div f(y) ~ b . (f(y + eps b) - f(y)) / eps (Monte-Carlo SURE, Ramani, Blu &
Unser 2008), whose error falls as 1/sqrt(N): on a photo of 10^5 pixels it is a fraction of a percent.

Along the segment y + w (f(y) - y) the estimate is a parabola in w,
    SURE(w) = w^2 a + sigma^2 + 2 sigma^2 w (d - 1),  a = ||f(y) - y||^2 / N,  d = div f(y) / N,
least at w = sigma^2 (1 - d) / a. Restoration keeps w in [0, 1]: w = 1 is the denoiser's output as it is, w = 0 the
input. At small noise, where a learned step can cost more than it gains, this is what keeps a result from being
worse than its input (up to the estimate's own error).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

PROBE_STEP = 0.01  # eps as a fraction of sigma: a linearisation well inside the noise, far above float32 round-off


def step_weight(denoiser: Callable[[Tensor], Tensor], noisy: Tensor, sigma: float, restored: Tensor, *,
                generator: torch.Generator, grey: bool = False) -> float:
    """The weight w in [0, 1] of ``restored`` = denoiser(noisy) against ``noisy`` that minimises SURE.

    ``denoiser`` must be deterministic (a chain with a fixed seed is). ``grey``: ``noisy`` is one grey image
    stored as equal channels, i.e. one noise draw per pixel: the probe is equal across channels and the
    statistics are taken on one channel.
    """
    entries = noisy[:, :1] if grey else noisy
    # Rademacher (+-1) entries: of all probes the one whose estimate varies least (Hutchinson 1990)
    probe = (2 * torch.randint(0, 2, entries.shape, generator=generator, device=noisy.device) - 1).expand_as(noisy)
    eps = PROBE_STEP * sigma
    moved = denoiser(noisy + eps * probe) - restored
    one = (lambda t: t[:, :1]) if grey else (lambda t: t)
    residual = one(restored - noisy).double()
    a = residual.pow(2).mean().item()
    d = (one(probe).double() * one(moved).double()).mean().item() / eps
    if a == 0:  # the denoiser returned its input: nothing to weigh
        return 1.0
    return min(max(sigma**2 * (1 - d) / a, 0.0), 1.0)
