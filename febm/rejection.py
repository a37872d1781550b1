"""Rejection sampling with the learned density ratio exp(r), r = H + E ~ log p/q (Eq. 16).

A model sample x is kept with probability min(1, exp(r(x) - M)). If exp(r) were exactly p/q and M the
true maximum of r, the kept samples would be distributed as p, whatever the model family can represent
(paper Fig. 2). M is estimated from samples (as in Discriminator Rejection Sampling, Azadi et al. 2018):
by default the maximum of r over the batch; a quantile trades exactness in the tails for a higher
acceptance rate.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    r = log_ratio.detach().flatten().float()
    if r.numel() == 0:
        raise ValueError("cannot estimate a bound from an empty batch")
    if quantile is None:
        return r.max().item()
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    return torch.quantile(r, quantile).item()


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
    if bound is None:
        bound = ratio_bound(log_ratio, quantile)
    p_accept = torch.exp((log_ratio.float() - bound).clamp(max=0.0))
    u = torch.rand(p_accept.shape, generator=generator, device=p_accept.device)
    accepted = u < p_accept
    rate = accepted.float().mean().item() if accepted.numel() else 0.0
    return RejectionResult(samples[accepted], accepted, rate, float(bound))
