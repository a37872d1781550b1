"""Rejection sampling with the learned density ratio exp(r), r = H + E ~ log p/q (Eq. 16).

A model sample x is kept with probability min(1, exp(r(x) - M)). If exp(r) were exactly p/q and M the
true maximum of r, the kept samples would be distributed as p, whatever the model family can represent
(paper Fig. 2). M is estimated from samples (as in Discriminator Rejection Sampling, Azadi et al. 2018):
by default the maximum of r over the batch; a quantile trades exactness in the tails for a higher
acceptance rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class RejectionResult:
    samples: Tensor  # the accepted samples
    accepted: Tensor  # bool mask over the input batch
    acceptance_rate: float
    bound: float  # the M used


def ratio_bound(log_ratio: Tensor, quantile: float | None = None) -> float:
    """Estimate M = sup r from a batch of log-ratios: the maximum, or a quantile in (0, 1]."""
    _check_quantile(quantile)
    r = log_ratio.detach().flatten()
    if r.numel() == 0:
        raise ValueError("cannot estimate a bound from an empty batch")
    if not torch.isfinite(r).all():
        raise ValueError("log-ratios must be finite")
    if quantile is None:
        return r.max().item()
    # numpy: torch.quantile refuses inputs above 2^24 elements; same (linear) interpolation
    return float(np.quantile(r.double().cpu().numpy(), quantile))


def _check_quantile(quantile: float | None) -> None:
    if quantile is not None and not 0.0 < quantile <= 1.0:  # also rejects NaN
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")


def rejection_sample(
    samples: Tensor,
    log_ratio: Tensor,
    *,
    bound: float | None = None,
    quantile: float | None = None,
    generator: torch.Generator | None = None,
) -> RejectionResult:
    """Keep each sample with probability min(1, exp(log_ratio - bound)).

    ``bound`` (M) defaults to ``ratio_bound(log_ratio, quantile)``; pass one estimated on a larger
    calibration batch when filtering small batches.
    """
    log_ratio = log_ratio.detach().flatten()
    if log_ratio.shape[0] != samples.shape[0]:
        raise ValueError(f"{samples.shape[0]} samples but {log_ratio.shape[0]} log-ratios")
    if not torch.isfinite(log_ratio).all():
        raise ValueError("log-ratios must be finite")
    _check_quantile(quantile)
    if bound is None:
        bound = ratio_bound(log_ratio, quantile)
    elif not math.isfinite(bound):
        raise ValueError(f"the bound must be finite, got {bound}")
    # subtract in the input's precision (large log-ratios lose their differences in float32)
    p_accept = torch.exp((log_ratio - bound).clamp(max=0.0).float())
    u = torch.rand(p_accept.shape, generator=generator, device=p_accept.device)
    accepted = u < p_accept
    rate = accepted.float().mean().item() if accepted.numel() else 0.0
    return RejectionResult(samples[accepted], accepted, rate, float(bound))
