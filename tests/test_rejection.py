"""febm.rejection: acceptance probabilities min(1, exp(r - M)), recovery of p from q with the exact log-ratio,
the bound (maximum or quantile), validation and seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from febm.rejection import RejectionResult, ratio_bound, rejection_sample



def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# p = N(0.5, 0.7^2) (data), q = N(0, 1.5^2) (model, wider, so p/q is bounded)
MP, SP, MQ, SQ = 0.5, 0.7, 0.0, 1.5


def log_ratio(x: torch.Tensor) -> torch.Tensor:
    log_p = -0.5 * ((x - MP) / SP) ** 2 - math.log(SP)
    log_q = -0.5 * ((x - MQ) / SQ) ** 2 - math.log(SQ)
    return log_p - log_q


def true_sup() -> float:
    # r is a concave quadratic: zero of r'(x) = -(x - MP)/SP^2 + (x - MQ)/SQ^2
    x_star = (MP / SP**2 - MQ / SQ**2) / (1 / SP**2 - 1 / SQ**2)
    return log_ratio(torch.tensor(x_star, dtype=torch.float64)).item()


def proposals(n: int, seed: int) -> torch.Tensor:
    return MQ + SQ * torch.randn(n, generator=gen(seed), dtype=torch.float64)


def test_acceptance_rate_is_mean_acceptance_probability():
    n = 200_000
    r = 0.7 * torch.randn(n, generator=gen(0))
    x = torch.arange(n)
    res = rejection_sample(x, r, generator=gen(1))
    assert isinstance(res, RejectionResult)
    M = r.max().item()
    expected = torch.exp(r - M).clamp(max=1).mean().item()
    se = math.sqrt(expected * (1 - expected) / n)
    assert res.acceptance_rate == pytest.approx(expected, abs=5 * se)
    assert res.acceptance_rate == pytest.approx(res.accepted.float().mean().item())
    assert res.accepted.dtype == torch.bool and res.accepted.shape == (n,)
    assert torch.equal(res.samples, x[res.accepted])
    # accepted by the right probability, not just the right overall rate: high r accepted more often
    hi = r > M - 0.5
    assert res.accepted[hi].float().mean() > 0.6 > res.accepted[r < M - 3].float().mean()


@pytest.mark.parametrize("given_bound", [False, True])
def test_exact_ratio_recovers_p_from_q(given_bound):
    n = 200_000
    x = proposals(n, seed=2)
    r = log_ratio(x)
    bound = true_sup() if given_bound else None
    res = rejection_sample(x, r, bound=bound, generator=gen(3))
    # acceptance 1/K with K = sup p/q when M is the true sup (the batch max is within a hair of it)
    assert r.max().item() <= true_sup() + 1e-12
    assert res.bound == pytest.approx(true_sup(), abs=1e-3)
    k_inv = math.exp(-true_sup())
    assert res.acceptance_rate == pytest.approx(k_inv, abs=5 * math.sqrt(k_inv * (1 - k_inv) / n))

    kept = res.samples
    m = kept.numel()
    assert m > 50_000
    assert kept.mean().item() == pytest.approx(MP, abs=5 * SP / math.sqrt(m))
    assert kept.std().item() == pytest.approx(SP, abs=5 * SP / math.sqrt(2 * m))
    assert stats.kstest(kept.numpy(), "norm", args=(MP, SP)).pvalue > 1e-3
    # the proposals themselves are far from p: the check has power
    assert stats.kstest(x.numpy(), "norm", args=(MP, SP)).pvalue < 1e-10


def test_bound_defaults_to_the_maximum():
    r = torch.tensor([0.1, -2.0, 3.5, 1.0], dtype=torch.float64)
    res = rejection_sample(torch.zeros(4, 2), r, generator=gen(0))
    assert res.bound == 3.5
    assert ratio_bound(r) == 3.5
    assert res.accepted[2]  # the maximiser is always kept
    assert ratio_bound(r, quantile=1.0) == pytest.approx(3.5)


def test_equal_ratios_accept_everything():
    res = rejection_sample(torch.randn(100, 3), torch.full((100,), -4.2), generator=gen(0))
    assert res.acceptance_rate == 1.0 and res.samples.shape == (100, 3)


def test_quantile_bound():
    n = 50_000
    x = proposals(n, seed=4)
    r = log_ratio(x)
    for q in (0.5, 0.9, 0.99):
        assert ratio_bound(r, quantile=q) == pytest.approx(float(np.quantile(r.numpy(), q)), rel=1e-12)
    exact = rejection_sample(x, r, generator=gen(5))
    loose = rejection_sample(x, r, quantile=0.9, generator=gen(5))
    assert loose.bound == pytest.approx(float(np.quantile(r.numpy(), 0.9)))
    assert loose.bound < exact.bound
    # every sample above the quantile is kept; the rate is the mean of min(1, exp(r - M))
    assert loose.accepted[r >= loose.bound].all()
    expected = torch.exp(r - loose.bound).clamp(max=1).mean().item()
    assert loose.acceptance_rate == pytest.approx(expected, abs=5 * math.sqrt(expected / n))
    # same uniforms, larger acceptance probabilities: a superset of the exact bound's acceptances
    assert (loose.accepted | exact.accepted).equal(loose.accepted)
    assert loose.acceptance_rate > exact.acceptance_rate
    half = rejection_sample(x, r, quantile=0.5, generator=gen(5))
    assert half.acceptance_rate > exact.acceptance_rate + 0.2


def test_given_bound_is_used():
    r = torch.linspace(-3, 0, 1000)
    res = rejection_sample(torch.arange(1000), r, bound=5.0, generator=gen(0))
    assert res.bound == 5.0
    expected = torch.exp(r - 5.0).mean().item()
    assert res.acceptance_rate == pytest.approx(expected, abs=5 * math.sqrt(expected / 1000))


def test_multidimensional_samples_and_column_log_ratios():
    x = torch.randn(500, 1, 5, 7, generator=gen(0))
    r = torch.randn(500, 1, generator=gen(1))  # (N, 1) is accepted as N log-ratios
    res = rejection_sample(x, r, generator=gen(2))
    assert res.samples.shape[1:] == (1, 5, 7)
    assert torch.equal(res.samples, x[res.accepted])


def test_large_float64_log_ratios_keep_their_differences():
    # in float32, 1e8 + 0 and 1e8 - 1 are the same number; the acceptance probabilities must not be
    r = torch.tensor([1e8, 1e8 - 1.0] * 20_000, dtype=torch.float64)
    res = rejection_sample(torch.arange(r.numel()), r, generator=gen(0))
    assert res.accepted[0::2].all()
    assert res.accepted[1::2].float().mean().item() == pytest.approx(math.exp(-1), abs=0.02)


def test_validation():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="10 samples but 9 log-ratios"):
        rejection_sample(x, torch.zeros(9))
    with pytest.raises(ValueError, match="10 samples but 20"):
        rejection_sample(x, torch.zeros(10, 2))
    for bad in (float("nan"), float("inf"), float("-inf")):
        r = torch.zeros(10)
        r[3] = bad
        with pytest.raises(ValueError, match="finite"):
            rejection_sample(x, r)
        with pytest.raises(ValueError, match="finite"):
            ratio_bound(r)
        with pytest.raises(ValueError, match="finite"):
            rejection_sample(x, torch.zeros(10), bound=bad)
    with pytest.raises(ValueError, match="empty"):
        ratio_bound(torch.zeros(0))
    with pytest.raises(ValueError, match="empty"):
        rejection_sample(torch.zeros(0, 2), torch.zeros(0))
    for q in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="quantile"):
            ratio_bound(torch.zeros(10), quantile=q)
        with pytest.raises(ValueError, match="quantile"):
            rejection_sample(x, torch.zeros(10), quantile=q)
        with pytest.raises(ValueError, match="quantile"):
            rejection_sample(x, torch.zeros(10), quantile=q, bound=1.0)


def test_empty_batch_with_a_given_bound():
    res = rejection_sample(torch.zeros(0, 2), torch.zeros(0), bound=1.0)
    assert res.samples.shape == (0, 2) and res.acceptance_rate == 0.0


def test_seeded_reproducibility():
    x = proposals(5000, seed=6)
    r = log_ratio(x)
    a = rejection_sample(x, r, generator=gen(7))
    b = rejection_sample(x, r, generator=gen(7))
    c = rejection_sample(x, r, generator=gen(8))
    assert torch.equal(a.accepted, b.accepted) and torch.equal(a.samples, b.samples)
    assert not torch.equal(a.accepted, c.accepted)
