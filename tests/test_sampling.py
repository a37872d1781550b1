"""febm.sampling: Langevin samplers against closed-form Gaussians (joint and conditional), masks, seeds,
chains, the authors' clipped update, frozen parameters, and the replay buffer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from febm.sampling import (METHODS, LangevinOutput, LangevinSampler, PCAGaussian, PCAMixture, ReplayBuffer,
                           corrupted_data_start, mixed_start)



def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- a 2-D Gaussian target: E(x) = 0.5 (x - m)^T P (x - m) -----------------------------------------------------------
P = torch.tensor([[4.0, 1.2], [1.2, 2.0]], dtype=torch.float64)
M = torch.tensor([1.0, -0.5], dtype=torch.float64)
S = torch.linalg.inv(P)  # the target covariance
CHAINS = 8000
# standard errors with 8000 chains: mean <= 0.0095, covariance entries <= 0.011; tolerances are ~4-5 of them
MEAN_TOL, COV_TOL = 0.04, 0.05


def quadratic(x: torch.Tensor) -> torch.Tensor:
    d = x - M
    return 0.5 * ((d @ P) * d).sum(-1)


def ula_stationary_cov(eps: float) -> torch.Tensor:
    """Exact stationary covariance of ULA on this Gaussian: C = A C A^T + eps I, A = I - eps/2 P."""
    A = torch.eye(2, dtype=torch.float64) - 0.5 * eps * P
    # vec(C) = (I - A kron A)^-1 vec(eps I)
    K = torch.eye(4, dtype=torch.float64) - torch.kron(A, A)
    return torch.linalg.solve(K, eps * torch.eye(2, dtype=torch.float64).flatten()).view(2, 2)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), torch.cov(x.T)


def start(n: int = CHAINS) -> torch.Tensor:
    return torch.zeros(n, 2, dtype=torch.float64)  # far from the mean and with zero spread: must converge


def test_ula_small_step_recovers_the_gaussian():
    eps = 0.05
    # the O(eps) bias of ULA at this step is well inside the tolerance (checked exactly, not assumed)
    assert (ula_stationary_cov(eps) - S).abs().max() < COV_TOL / 3
    out = LangevinSampler("ula", steps=150, step_size=eps, clamp=None).run(quadratic, start(), generator=gen(0))
    assert isinstance(out, LangevinOutput) and out.acceptance is None
    mean, cov = moments(out.x)
    assert (mean - M).abs().max() < MEAN_TOL
    assert (cov - S).abs().max() < COV_TOL


def test_mala_exact_where_ula_is_biased():
    eps = 0.5
    biased = ula_stationary_cov(eps)
    assert (biased - S).abs().max() > 5 * COV_TOL  # at this step ULA targets a visibly wrong covariance

    ula = LangevinSampler("ula", steps=60, step_size=eps, clamp=None).run(quadratic, start(), generator=gen(1))
    _, cov_ula = moments(ula.x)
    assert (cov_ula - biased).abs().max() < COV_TOL  # ULA lands on its own biased fixed point...
    assert (cov_ula - S).abs().max() > 3 * COV_TOL  # ...which is not the target

    mala = LangevinSampler("mala", steps=100, step_size=eps, clamp=None).run(quadratic, start(), generator=gen(1))
    mean, cov = moments(mala.x)
    assert (mean - M).abs().max() < MEAN_TOL
    assert (cov - S).abs().max() < COV_TOL  # the Metropolis correction removes the bias
    assert 0.3 < mala.acceptance < 1.0


def test_mala_acceptance_is_reported_and_tracks_the_step():
    x = start(500)
    small = LangevinSampler("mala", steps=20, step_size=1e-4, clamp=None).run(quadratic, x, generator=gen(0))
    large = LangevinSampler("mala", steps=20, step_size=1.5, clamp=None).run(quadratic, x, generator=gen(0))
    assert 0.99 < small.acceptance <= 1.0
    assert 0.0 < large.acceptance < 0.9
    for method in ("authors", "ula"):
        assert LangevinSampler(method, steps=2).run(quadratic, x).acceptance is None


@pytest.mark.parametrize("method, eps", [("ula", 0.005), ("mala", 0.05)])
def test_ula_and_mala_sample_at_their_temperature(method, eps):
    t = 0.25  # exp(-E/T): the covariance shrinks to T S
    sampler = LangevinSampler(method, steps=400, step_size=eps, clamp=None, temperature=t)
    assert sampler.target_temperature == t
    mean, cov = moments(sampler.run(quadratic, start(), generator=gen(2)).x)
    assert (mean - M).abs().max() < MEAN_TOL
    assert (cov - t * S).abs().max() < t * COV_TOL


def test_mala_reads_its_statistics_from_the_device_once(monkeypatch):
    """A per-step .item() stalls a GPU every step: acceptance and gradient norm are read once, at the end."""
    reads = []
    for name in ("item", "__float__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, _real=real: reads.append(1) or _real(self))
    out = LangevinSampler("mala", steps=10, step_size=0.1, clamp=None).run(quadratic, start(8), generator=gen(0))
    monkeypatch.undo()
    assert 0 < out.acceptance <= 1 and len(reads) <= 2


# --- the clamp box: MALA's target is exp(-E/T) restricted to it ------------------------------------------------------
def box_moments(c: float) -> tuple[float, float]:
    """Mean and variance of the density exp(-c x) on [0, 1], by quadrature."""
    x = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    w = torch.exp(-c * x)
    z = torch.trapezoid(w, x)
    mean = torch.trapezoid(x * w, x) / z
    return mean.item(), (torch.trapezoid((x - mean) ** 2 * w, x) / z).item()


def test_mala_in_the_box_samples_the_restricted_target_where_the_gradient_pushes_out():
    """E(x) = c x falls towards the wall at 0 and beyond it, where the density peaks: unconstrained proposals
    leave [0, 1] half of the time there. Every state must stay in the box (proposals that leave it are never
    accepted as they are), and the chain must sample exp(-c x) restricted to the box, exactly."""
    c = 5.0
    x = torch.full((4000, 2), 0.5, dtype=torch.float64)
    out = LangevinSampler("mala", steps=200, step_size=0.02).run(lambda v: c * v.sum(1), x, generator=gen(0),
                                                                 return_chain=True)
    assert ((out.chain >= 0) & (out.chain <= 1)).all()
    mean, var = box_moments(c)  # 0.193, 0.0306
    assert out.x.mean().item() == pytest.approx(mean, abs=0.008)  # 4 standard errors
    assert out.x.var().item() == pytest.approx(var, rel=0.06)
    assert 0.3 < out.acceptance < 0.95


def cond_moments(c2: float) -> tuple[float, float]:
    """x1 | x2 = c2: mean m1 + S12/S22 (c2 - m2), variance S11 - S12^2/S22."""
    s11, s12, s22 = S[0, 0].item(), S[0, 1].item(), S[1, 1].item()
    return M[0].item() + s12 / s22 * (c2 - M[1].item()), s11 - s12**2 / s22


@pytest.mark.parametrize("method, eps", [("mala", 0.3), ("ula", 0.04)])
def test_known_mask_gives_the_conditional_gaussian(method, eps):
    # first half of the chains observe x2 = 1.5, second half observe x1 = -0.7 (a per-sample mask)
    n = 2 * CHAINS
    x = torch.zeros(n, 2, dtype=torch.float64)
    x[: n // 2, 1] = 1.5
    x[n // 2 :, 0] = -0.7
    mask = torch.zeros(n, 2)
    mask[: n // 2, 1] = 1
    mask[n // 2 :, 0] = 1
    steps = 100 if method == "mala" else 150
    sampler = LangevinSampler(method, steps=steps, step_size=eps, clamp=None)
    out = sampler.run(quadratic, x, known_mask=mask, generator=gen(2))
    known = mask.bool()
    assert torch.equal(out.x[known], x[known])  # bit-identical observed entries

    s11, s12, s22 = S[0, 0].item(), S[0, 1].item(), S[1, 1].item()
    halves = [
        (out.x[: n // 2, 0], M[0].item() + s12 / s22 * (1.5 - M[1].item()), s11 - s12**2 / s22),  # x1 | x2 = 1.5
        (out.x[n // 2 :, 1], M[1].item() + s12 / s11 * (-0.7 - M[0].item()), s22 - s12**2 / s11),  # x2 | x1 = -0.7
    ]
    for free, mean, var in halves:
        if method == "ula":  # ULA's exact stationary variance in 1-D: 1 / (p (1 - eps p / 4)), p = 1 / var
            p = 1.0 / var
            biased = 1.0 / (p * (1.0 - eps * p / 4.0))
            assert abs(biased - var) < 0.012  # small against the tolerance below
            var = biased
        # standard errors with 8000 chains: mean <= 0.008, variance <= 0.008
        assert free.mean().item() == pytest.approx(mean, abs=0.04)
        assert free.var().item() == pytest.approx(var, abs=0.04)


@pytest.mark.parametrize("method", METHODS)
def test_known_entries_fixed_along_the_whole_chain(method):
    x = torch.rand(16, 2, dtype=torch.float64)
    mask = torch.tensor([[0.0, 1.0]])  # broadcast over the batch
    out = LangevinSampler(method, steps=7, step_size=0.1, clamp=None).run(
        quadratic, x, known_mask=mask, generator=gen(0), return_chain=True
    )
    assert (out.chain[:, :, 1] == x[:, 1]).all()
    assert (out.chain[1:, :, 0] != x[:, 0]).any(dim=1).all()  # the free entry moves at every step somewhere


# --- reproducibility and chains --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_output(method):
    sampler = LangevinSampler(method, steps=10, step_size=0.05, clamp=None if method != "authors" else (0.0, 1.0))
    x = torch.rand(32, 2, dtype=torch.float64)
    a = sampler(quadratic, x, generator=gen(123))
    b = sampler(quadratic, x, generator=gen(123))
    c = sampler(quadratic, x, generator=gen(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(x, x.clone())  # the input is not modified in place


@pytest.mark.parametrize("method", METHODS)
def test_one_generator_per_row_gives_each_row_its_own_stream(method):
    """Restoration seeds every image alike: a row's chain must not depend on which other rows share its batch."""
    sampler = LangevinSampler(method, steps=6, step_size=0.05, clamp=(0.0, 1.0) if method == "authors" else None)
    x = torch.rand(3, 2, dtype=torch.float64, generator=gen(9))
    both = sampler.run(quadratic, x, generator=[gen(1), gen(2), gen(3)])
    for i, seed in enumerate((1, 2, 3)):
        alone = sampler.run(quadratic, x[i:i + 1], generator=gen(seed))
        torch.testing.assert_close(both.x[i:i + 1], alone.x, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="one generator per row"):
        sampler.run(quadratic, x, generator=[gen(1), gen(2)])


@pytest.mark.parametrize("method", METHODS)
def test_return_chain(method):
    x = torch.rand(6, 2, dtype=torch.float64)
    steps = 5
    sampler = LangevinSampler(method, steps=steps, step_size=0.05, clamp=None)
    out = sampler.run(quadratic, x, generator=gen(0), return_chain=True)
    assert out.chain.shape == (steps + 1, *x.shape)
    assert torch.equal(out.chain[0], x)
    assert torch.equal(out.chain[-1], out.x)
    assert LangevinSampler(method, steps=steps).run(quadratic, x).chain is None


@pytest.mark.parametrize("method", METHODS)
def test_zero_steps_returns_the_input(method):
    x = torch.rand(4, 2, dtype=torch.float64)
    out = LangevinSampler(method, steps=0).run(quadratic, x, return_chain=True)
    assert torch.equal(out.x, x) and out.x is not x
    assert out.chain.shape == (1, 4, 2)
    assert out.grad_norm == 0.0


def test_grad_norm_is_the_mean_gradient_norm():
    x = torch.rand(10, 2, dtype=torch.float64)
    out = LangevinSampler("ula", steps=1, step_size=0.01, clamp=None).run(quadratic, x, generator=gen(0))
    # ULA reports the gradient it stepped along: at the starting point
    expected = ((x - M) @ P).norm(dim=1).mean().item()
    assert out.grad_norm == pytest.approx(expected, rel=1e-12)


# --- the authors' sampler --------------------------------------------------------------------------------------------
def test_authors_sampler_stays_in_the_clamp_range():
    x = 3.0 * torch.randn(8, 1, 5, 7)  # far outside [0, 1]
    energy = lambda v: ((v - 0.5) ** 2).sum((1, 2, 3)) * 50  # noqa: E731
    sampler = LangevinSampler("authors", steps=5, step_size=10.0, noise=0.2, grad_clip=0.01)
    out = sampler.run(energy, x, generator=gen(0), return_chain=True)
    assert out.x.min() >= 0.0 and out.x.max() <= 1.0
    assert ((out.chain[1:] >= 0) & (out.chain[1:] <= 1)).all()
    out = LangevinSampler("authors", steps=5, clamp=(-0.25, 0.75)).run(energy, x, generator=gen(0))
    assert out.x.min() >= -0.25 and out.x.max() <= 0.75


def test_authors_gradient_clip_is_per_element():
    # a huge gradient of per-element sign w: each step moves each entry by exactly -step*clip*w plus the noise
    w = torch.where(torch.rand(4, 1, 5, 7) < 0.5, -1.0, 1.0).double()
    energy = lambda v: 1e6 * (w * v).sum((1, 2, 3))  # noqa: E731
    x = torch.rand(4, 1, 5, 7, dtype=torch.float64)
    step, clip, noise, steps = 10.0, 0.01, 0.005, 4
    out = LangevinSampler("authors", steps=steps, step_size=step, noise=noise, grad_clip=clip, clamp=None).run(
        energy, x, generator=gen(5), return_chain=True
    )
    g = gen(5)  # the same stream: one normal draw of x's shape per step
    for k in range(steps):
        z = torch.randn(x.shape, generator=g, dtype=x.dtype)
        move = out.chain[k + 1] - out.chain[k]
        np.testing.assert_allclose(move.numpy(), (noise * z - step * clip * w).numpy(), atol=1e-12)
        assert ((move - noise * z).abs() <= step * clip + 1e-12).all()
    assert out.grad_norm == pytest.approx(1e6 * math.sqrt(35), rel=1e-12)  # raw, unclipped norm reported


def test_authors_sampler_draws_from_exp_minus_energy_over_its_temperature():
    """x <- x + n z, then x <- x - s grad E(x): for E = (x - m)^2 / (2 v) that is x' = m + a (x + n z - m) with
    a = 1 - s / v, whose exact stationary law is N(m, a^2 n^2 / (1 - a^2)). At a fixed T = n^2 / (2 s) that
    variance tends to T v as s -> 0: the law of exp(-E/T), the sampler's target_temperature."""
    m, v, step, noise = 0.3, 1.0, 0.05, 0.1

    def exact_var(step, noise):
        a = 1 - step / v
        return a * a * noise ** 2 / (1 - a * a)

    sampler = LangevinSampler("authors", steps=150, step_size=step, noise=noise, grad_clip=None, clamp=None)
    t = sampler.target_temperature
    assert t == pytest.approx(noise ** 2 / (2 * step))
    assert exact_var(1e-5, math.sqrt(2 * 1e-5 * t)) == pytest.approx(t * v, rel=1e-4)  # the small-step limit
    assert exact_var(step, noise) == pytest.approx(0.0926, abs=1e-4)  # 7 % below T v = 0.1 at this step
    x = sampler.run(lambda u: ((u - m) ** 2).sum(1) / (2 * v), torch.zeros(4000, 4, dtype=torch.float64),
                    generator=gen(3)).x
    assert x.mean().item() == pytest.approx(m, abs=0.01)  # 4 standard errors
    assert x.var().item() == pytest.approx(exact_var(step, noise), rel=0.04)  # 3.5 standard errors


def test_authors_without_clip_takes_the_full_gradient_step():
    x = torch.rand(3, 2, dtype=torch.float64)
    step, noise = 0.1, 0.01
    sampler = LangevinSampler("authors", steps=1, step_size=step, noise=noise, grad_clip=None, clamp=None)
    out = sampler.run(quadratic, x, generator=gen(9))
    y = x + noise * torch.randn(x.shape, generator=gen(9), dtype=x.dtype)  # gradient taken after the noise
    np.testing.assert_allclose(out.x.numpy(), (y - step * (y - M) @ P).numpy(), atol=1e-14)


class TinyEnergy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.fixed = nn.Parameter(torch.tensor(0.5), requires_grad=False)
        self.seen = []

    def forward(self, x):
        self.seen.append([p.requires_grad for p in (self.conv.weight, self.scale)])
        return self.scale * self.conv(x).pow(2).sum((1, 2, 3)) + self.fixed


@pytest.mark.parametrize("method", METHODS)
def test_module_parameters_frozen_only_during_sampling(method):
    energy = TinyEnergy()
    x = torch.rand(3, 1, 5, 7)
    LangevinSampler(method, steps=3, step_size=0.01).run(energy, x, generator=gen(0))
    assert energy.seen and all(flags == [False, False] for flags in energy.seen)  # frozen while sampling
    assert energy.conv.weight.requires_grad and energy.conv.bias.requires_grad and energy.scale.requires_grad
    assert not energy.fixed.requires_grad  # a parameter that was frozen before stays frozen
    assert all(p.grad is None for p in energy.parameters())
    # and the energy is still trainable afterwards
    energy(x).sum().backward()
    assert energy.scale.grad is not None


def test_sampling_works_under_no_grad():
    x = torch.rand(4, 2, dtype=torch.float64)
    with torch.no_grad():
        a = LangevinSampler("mala", steps=3, step_size=0.1, clamp=None)(quadratic, x, generator=gen(0))
    b = LangevinSampler("mala", steps=3, step_size=0.1, clamp=None)(quadratic, x, generator=gen(0))
    assert torch.equal(a, b) and not a.requires_grad


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "hmc"},
        {"method": "ULA"},
        {"steps": -1},
        {"step_size": 0.0},
        {"step_size": -1.0},
        {"step_size": float("nan")},
    ],
)
def test_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        LangevinSampler(**kwargs)


def test_settings_round_trip():
    s = LangevinSampler("mala", steps=7, step_size=0.2, clamp=[0, 1])
    assert s.clamp == (0.0, 1.0)
    assert LangevinSampler(**s.to_dict()) == s
    assert "temperature" not in s.to_dict()  # unset: the records of existing models do not change
    hot = LangevinSampler("ula", temperature=0.5)
    assert LangevinSampler(**hot.to_dict()) == hot and hot.to_dict()["temperature"] == 0.5


# --- shapes ----------------------------------------------------------------------------------------------------------
def image_energy(x):
    return 20.0 * ((x - 0.3) ** 2).sum((1, 2, 3))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mask_shape", [(5, 7), (1, 1, 5, 7), (4, 1, 5, 7)])
@pytest.mark.parametrize("channels", [1, 3])
def test_mask_broadcasting_on_odd_image_shapes(method, mask_shape, channels):
    x = 0.2 + 0.6 * torch.rand(4, channels, 5, 7, generator=gen(0))  # MALA proposals stay inside [0, 1]
    mask = (torch.rand(mask_shape, generator=gen(1)) < 0.4).float()
    sampler = LangevinSampler(method, steps=3, step_size=0.001 if method != "authors" else 10.0, noise=0.01)
    out = sampler.run(image_energy, x, known_mask=mask, generator=gen(2), return_chain=True)
    assert out.x.shape == x.shape and out.chain.shape == (4, *x.shape)
    known = mask.bool().expand_as(x)
    assert torch.equal(out.x[known], x[known])
    assert (out.x[~known] != x[~known]).float().mean() > 0.5  # free pixels move (MALA may reject a few chains)
    assert out.x.min() >= 0 and out.x.max() <= 1


@pytest.mark.parametrize("method", METHODS)
def test_one_dimensional_batches(method):
    # (B,) inputs, as in the paper's 1-D experiment: E(x) = x^2 / 2
    x = torch.zeros(2000, dtype=torch.float64)
    out = LangevinSampler(method, steps=200, step_size=0.3 if method != "authors" else 0.1, noise=0.3, clamp=None).run(
        lambda v: 0.5 * v**2, x, generator=gen(0)
    )
    assert out.x.shape == (2000,)
    if method == "mala":
        assert out.x.var().item() == pytest.approx(1.0, abs=0.15)


def test_energy_with_a_trailing_unit_dimension():
    # E returning (B, 1) must not broadcast against (B,) inside MALA
    x = torch.zeros(500, 2, dtype=torch.float64)
    kw = dict(steps=30, step_size=0.4, clamp=None)
    a = LangevinSampler("mala", **kw).run(quadratic, x, generator=gen(3))
    b = LangevinSampler("mala", **kw).run(lambda v: quadratic(v)[:, None], x, generator=gen(3))
    assert torch.equal(a.x, b.x) and a.acceptance == b.acceptance


def test_energy_with_wrong_output_shape_is_rejected():
    with pytest.raises(ValueError, match="one energy per sample"):
        LangevinSampler("ula", steps=1, clamp=None).run(lambda v: v.sum(), torch.zeros(4, 2))


# --- replay buffer ---------------------------------------------------------------------------------------------------
def test_buffer_capacity_shape_and_range():
    buf = ReplayBuffer(50, (1, 5, 7), data_range=(-1.0, 2.0), generator=gen(0))
    assert buf.samples.shape == (50, 1, 5, 7)
    assert buf.samples.min() >= -1.0 and buf.samples.max() <= 2.0
    x, idx = buf.sample(20, generator=gen(1))
    assert x.shape == (20, 1, 5, 7) and idx.shape == (20,) and idx.dtype == torch.int64
    assert idx.min() >= 0 and idx.max() < 50
    assert x.min() >= -1.0 and x.max() <= 2.0
    # filled with uniform noise: moments of U(-1, 2)
    assert buf.samples.mean().item() == pytest.approx(0.5, abs=0.05)
    assert buf.samples.var().item() == pytest.approx(9 / 12, abs=0.05)


def test_buffer_restart_prob_one_gives_fresh_noise():
    buf = ReplayBuffer(10, (3,), restart_prob=1.0, generator=gen(0))
    buf.update(torch.arange(10), torch.full((10, 3), 7.0))  # a value uniform noise never produces
    x, _ = buf.sample(4000, generator=gen(1))
    assert (x != 7.0).all() and x.min() >= 0 and x.max() <= 1
    assert x.mean().item() == pytest.approx(0.5, abs=0.02)
    assert x.var().item() == pytest.approx(1 / 12, abs=0.01)


def test_buffer_restart_prob_zero_returns_stored_samples_and_update_writes_back():
    buf = ReplayBuffer(10, (2,), restart_prob=0.0, generator=gen(0))
    stored = torch.arange(20, dtype=torch.float32).view(10, 2)
    buf.update(torch.arange(10), stored)
    x, idx = buf.sample(30, generator=gen(1))
    assert torch.equal(x, stored[idx])
    x[:] = -5.0  # a copy: editing the draw does not edit the buffer
    assert torch.equal(buf.samples, stored)
    buf.update(idx[:3], torch.full((3, 2), 42.0))
    assert (buf.samples[idx[:3]] == 42.0).all()
    untouched = torch.ones(10, dtype=torch.bool)
    untouched[idx[:3]] = False
    assert torch.equal(buf.samples[untouched], stored[untouched])


def test_buffer_restart_fraction():
    buf = ReplayBuffer(100, (1,), restart_prob=0.25, generator=gen(0))
    buf.update(torch.arange(100), torch.full((100, 1), 9.0))
    x, _ = buf.sample(8000, generator=gen(1))
    assert (x < 9.0).float().mean().item() == pytest.approx(0.25, abs=0.025)


def test_buffer_state_dict_round_trip():
    a = ReplayBuffer(12, (1, 3, 3), generator=gen(0))
    a.update(torch.arange(4), torch.full((4, 1, 3, 3), 0.25))
    state = a.state_dict()
    state_copy = state["samples"].clone()
    b = ReplayBuffer(12, (1, 3, 3), generator=gen(99))
    assert not torch.equal(a.samples, b.samples)
    b.load_state_dict(state)
    assert torch.equal(a.samples, b.samples)
    a.update(torch.arange(12), torch.zeros(12, 1, 3, 3))  # state_dict and load are copies
    assert torch.equal(state["samples"], state_copy) and torch.equal(b.samples, state_copy)
    b.update(torch.arange(12), a.samples)
    assert torch.equal(b.sample(5, generator=gen(4))[0], a.sample(5, generator=gen(4))[0])


@pytest.mark.parametrize("shape", [(11, 1, 3, 3), (12, 1, 3, 4), (12, 9), (12, 1, 3, 3, 1)])
def test_buffer_load_wrong_shape_raises(shape):
    buf = ReplayBuffer(12, (1, 3, 3))
    with pytest.raises(ValueError, match="does not match"):
        buf.load_state_dict({"samples": torch.zeros(shape)})


def test_buffer_seeded_reproducibility():
    a, b = ReplayBuffer(30, (2, 3), generator=gen(7)), ReplayBuffer(30, (2, 3), generator=gen(7))
    assert torch.equal(a.samples, b.samples)
    xa, ia = a.sample(25, generator=gen(8))
    xb, ib = b.sample(25, generator=gen(8))
    assert torch.equal(xa, xb) and torch.equal(ia, ib)
    xc, ic = a.sample(25, generator=gen(9))
    assert not torch.equal(ia, ic)
    assert not torch.equal(ReplayBuffer(30, (2, 3), generator=gen(8)).samples, a.samples)


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"restart_prob": -0.1}, {"restart_prob": 1.5}])
def test_buffer_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        ReplayBuffer(**{"capacity": 5, "shape": (2,), **kwargs})


# --- the PCA-Gaussian start distribution ---------------------------------------------------------------------------
def test_pca_gaussian_recovers_a_low_rank_gaussian():
    """Data = mean + two orthogonal directions with stds 0.2 and 0.1, plus 0.01 isotropic noise."""
    g = gen(0)
    shape, n = (1, 4, 5), 20000
    mean = torch.full(shape, 0.5)
    u = torch.zeros(2, 20)
    u[0, :10], u[1, 10:] = 1 / 10 ** 0.5, 1 / 10 ** 0.5
    z = torch.randn(n, 2, generator=g) * torch.tensor([0.2, 0.1])
    data = mean + (z @ u).reshape(n, *shape) + 0.01 * torch.randn(n, *shape, generator=g)
    start = PCAGaussian(shape, components=2).fit(data)
    assert torch.allclose(start.mean, mean, atol=0.005)
    assert torch.allclose(start.scale, torch.tensor([0.2, 0.1]), rtol=0.03)
    assert abs(start.basis[0] @ u[0]) == pytest.approx(1.0, abs=1e-3)
    assert start.residual.item() == pytest.approx(0.01 * (18 / 20) ** 0.5, rel=0.05)
    x = start.sample(20000, generator=gen(1))
    assert x.shape == (20000, *shape) and x.min() >= 0 and x.max() <= 1
    cov = torch.cov(x.flatten(1).T.double())
    data_cov = torch.cov(data.flatten(1).T.double())
    assert torch.allclose(cov, data_cov, atol=2e-3)
    assert torch.equal(x[:5], start.sample(20000, generator=gen(1))[:5])  # seeded
    smooth = start.sample(2000, generator=gen(2), residual_scale=0.0)  # the principal subspace only
    off_subspace = (smooth - start.mean).flatten(1) @ (torch.eye(20) - start.basis.T @ start.basis)
    assert off_subspace.abs().max() < 1e-5


def test_pca_gaussian_rejects_bad_component_counts():
    with pytest.raises(ValueError, match="components"):
        PCAGaussian((1, 2, 2), components=5)


def test_pca_gaussian_evidence_is_the_gaussian_density_of_the_observed_pixels():
    g = PCAGaussian((1, 3, 3), components=2).fit(torch.rand(60, 1, 3, 3, generator=gen(0)) ** 2)
    y = torch.rand(4, 1, 3, 3, generator=gen(1))
    sigma = torch.tensor([0.1, 0.2, 0.0, 0.3])
    known = (torch.rand(4, 1, 3, 3, generator=gen(2)) > 0.3).float()
    u = (g.basis.T * g.scale).double()
    for b, value in enumerate(g.log_evidence(y, sigma, known)):
        seen = known[b].flatten().bool()
        cov = u @ u.T + (g.residual.double() ** 2 + sigma[b].double() ** 2) * torch.eye(9, dtype=torch.double)
        d = (y[b] - g.mean).flatten().double()[seen]
        ref = torch.distributions.MultivariateNormal(torch.zeros(len(d), dtype=torch.double), cov[seen][:, seen])
        assert value.item() == pytest.approx(ref.log_prob(d).item(), abs=1e-4)


def two_kinds(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Images of two kinds, 30 % bright on the left and 70 % on the right, each varying in brightness."""
    shape = (1, 4, 4)
    left, right = torch.zeros(shape), torch.zeros(shape)
    left[..., :2], right[..., 2:] = 0.8, 0.6
    kind = torch.rand(n, generator=generator) < 0.3
    base = torch.where(kind.view(-1, 1, 1, 1), left, right)
    x = base * (1 + 0.1 * torch.randn(n, 1, 1, 1, generator=generator)) + 0.01 * torch.randn(n, *shape, generator=generator)
    return x.clamp(0, 1), kind


def test_pca_mixture_keeps_each_sample_within_one_kind():
    data, _ = two_kinds(2000, gen(0))
    mixture = PCAMixture((1, 4, 4), clusters=2, components=1).fit(data)
    assert sorted(mixture.log_weight.exp().tolist()) == pytest.approx([0.3, 0.7], abs=0.03)
    x = mixture.sample(4000, generator=gen(1), residual_scale=0.0)
    left, right = x[..., :2].mean((1, 2, 3)), x[..., 2:].mean((1, 2, 3))
    assert ((left < 0.05) | (right < 0.05)).all()  # never a blend of the two kinds
    assert (left > 0.3).float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert torch.equal(x[:5], mixture.sample(4000, generator=gen(1), residual_scale=0.0)[:5])  # seeded
    single = PCAGaussian((1, 4, 4), components=1).fit(data).sample(4000, generator=gen(1), residual_scale=0.0)
    assert not ((single[..., :2].mean((1, 2, 3)) < 0.05) | (single[..., 2:].mean((1, 2, 3)) < 0.05)).all()


def test_pca_mixture_posterior_follows_the_component_the_observation_came_from():
    data, _ = two_kinds(2000, gen(0))
    mixture = PCAMixture((1, 4, 4), clusters=2, components=1).fit(data)
    clean, kind = two_kinds(200, gen(3))
    sigma = torch.full((200,), 0.2)
    noisy = clean + 0.2 * torch.randn(clean.shape, generator=gen(4))
    for x in (mixture.posterior(noisy, sigma), mixture.posterior(noisy, sigma, generator=gen(5))):
        guessed_left = x[..., :2].mean((1, 2, 3)) > x[..., 2:].mean((1, 2, 3))
        assert torch.equal(guessed_left, kind)
    # inpainting: the known right half decides the kind; exact observations come back unchanged
    known = torch.zeros(1, 1, 4, 4)
    known[..., 2:] = 1
    filled = mixture.posterior(clean, torch.zeros(200), known, generator=gen(6))
    assert torch.equal(filled[..., 2:], clean[..., 2:])
    assert torch.equal(filled[..., :2].mean((1, 2, 3)) > 0.3, kind)


def test_pca_mixture_needs_enough_images_per_cluster():
    with pytest.raises(ValueError, match="too few"):
        PCAMixture((1, 4, 4), clusters=8, components=3).fit(torch.rand(20, 1, 4, 4))


def test_buffer_fills_and_restarts_from_its_start_distribution():
    start = lambda n, generator=None: torch.full((n, 3), 0.25)  # noqa: E731
    buf = ReplayBuffer(10, (3,), restart_prob=1.0, generator=gen(0), start=start)
    assert (buf.samples == 0.25).all()
    buf.update(torch.arange(10), torch.full((10, 3), 7.0))
    x, _ = buf.sample(20, generator=gen(1))
    assert (x == 0.25).all()


# --- the sampler against the common reference loop (issue 7: same noise, same outputs) -----------------------------
def reference_ula(model, x, steps, eps, generator):
    """The loop most EBM repositories use, with the model's parameters still requiring grad."""
    a, b = 0.5 * eps, math.sqrt(eps)
    for _ in range(steps):
        x.requires_grad_(True)
        g = torch.autograd.grad(model(x).sum(), x)[0]
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = (x - a * g + b * noise).detach()
    return x


def small_conv_energy() -> nn.Module:
    from febm.nets import ConvEnergy

    torch.manual_seed(0)
    return ConvEnergy(1, width=4, downsamples=2).eval()  # spectral norm, SiLU: the network trained on CPU


def test_ula_matches_the_reference_loop_bit_for_bit():
    net = small_conv_energy()
    x = torch.rand(3, 1, 12, 12, generator=gen(0))
    ref = reference_ula(net, x.clone(), 4, 1e-3, gen(1))
    ours = LangevinSampler("ula", steps=4, step_size=1e-3, clamp=None)(net, x, generator=gen(1))
    assert torch.equal(ours, ref)  # the same float operations in the same order
    assert all(p.requires_grad for p in net.parameters())


def test_ula_on_a_channels_last_network_matches_the_reference_to_rounding():
    net = small_conv_energy()
    x = torch.rand(3, 1, 12, 12, generator=gen(0))
    ref = reference_ula(net, x.clone(), 4, 1e-3, gen(1))
    net_cl = small_conv_energy().to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    ours = LangevinSampler("ula", steps=4, step_size=1e-3, clamp=None)(net_cl, x_cl, generator=gen(1))
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)  # convolutions sum in another order


def test_parameters_are_unfrozen_when_the_energy_raises():
    energy = TinyEnergy()
    calls = []

    def failing(x):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return energy(x)

    class Wrapped(nn.Module):  # a module, so that the sampler freezes its parameters
        def __init__(self):
            super().__init__()
            self.inner = energy

        def forward(self, x):
            return failing(x)

    with pytest.raises(RuntimeError, match="boom"):
        LangevinSampler("ula", steps=3, step_size=0.01).run(Wrapped(), torch.rand(2, 1, 5, 7), generator=gen(0))
    assert energy.seen[0] == [False, False]  # frozen while sampling
    assert energy.conv.weight.requires_grad and energy.scale.requires_grad
    assert not energy.fixed.requires_grad


def _constant_start(value: float, shape=(1, 8, 8)):
    return lambda n, generator=None: torch.full((n, *shape), value)


def test_corrupted_data_start_gives_noisy_images_and_images_with_filled_holes():
    data = torch.full((10, 1, 8, 8), 128, dtype=torch.uint8)  # every image 128/255
    start = corrupted_data_start(data, _constant_start(2.0), max_sigma=0.3)  # 2.0 marks a filled hole
    x = start(400, torch.Generator().manual_seed(0))
    assert x.shape == (400, 1, 8, 8) and x.dtype == torch.float32
    holed = (x == 2.0).flatten(1).any(1)
    rest = x[~holed]
    assert 0.35 < holed.float().mean() < 0.65  # about half have holes ...
    assert ((x[holed] == 2.0) | (x[holed] == 128 / 255)).all()  # ... and are untouched elsewhere
    assert (rest >= 0).all() and (rest <= 1).all()  # the others are noisy, clamped to [0, 1]
    spread = (rest - 128 / 255).flatten(1).std(1)
    assert spread.max() < 0.3 * 1.3 and spread.min() < 0.05 and spread.median() > 0.05  # sigma ~ U(0, 0.3]


def test_corrupted_data_start_holes_vary_in_size_and_never_cover_everything():
    data = torch.zeros(4, 1, 16, 16)
    x = corrupted_data_start(data, _constant_start(2.0, (1, 16, 16)))(600, torch.Generator().manual_seed(1))
    filled = (x == 2.0).flatten(1).float().mean(1)
    filled = filled[filled > 0]
    assert filled.min() > 0.02 and filled.max() < 0.95 and filled.std() > 0.1


def test_mixed_start_draws_each_point_from_either_source_in_proportion():
    mix = mixed_start(_constant_start(0.0), _constant_start(1.0), 0.25)
    x = mix(2000, torch.Generator().manual_seed(0))
    fraction = x.flatten(1)[:, 0].mean().item()
    assert abs(fraction - 0.25) < 0.04
    assert (mixed_start(_constant_start(0.0), _constant_start(1.0), 0.0)(50) == 0).all()
    with pytest.raises(ValueError, match="second_fraction"):
        mixed_start(_constant_start(0.0), _constant_start(1.0), 1.5)


def _fitted_gaussian(shape=(1, 4, 4), components=3):
    gen = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 0.7, math.prod(shape)).view(1, *shape)
    data = 0.3 * torch.rand(500, *shape, generator=gen) + torch.rand(500, 1, 1, 1, generator=gen) * ramp
    return PCAGaussian(shape, components=components).fit(data), data


def _brute_force_conditional(g: PCAGaussian, y: Tensor, sigma: float, known: Tensor):
    """Mean and covariance of x | y_K by conditioning the full D x D covariance."""
    u = (g.basis.T * g.scale).double()
    cov = u @ u.T + g.residual.double() ** 2 * torch.eye(u.shape[0], dtype=torch.double)
    mu, k = g.mean.flatten().double(), known.flatten()
    obs = cov[k][:, k] + sigma ** 2 * torch.eye(int(k.sum()), dtype=torch.double)
    mean = mu + cov[:, k] @ torch.linalg.solve(obs, (y.flatten().double() - mu)[k])
    return mean, cov - cov[:, k] @ torch.linalg.solve(obs, cov[k, :])


@pytest.mark.parametrize("sigma, rows_known", [(0.1, 2), (0.3, 4), (0.0, 1)])
def test_pca_posterior_mean_and_covariance_match_full_gaussian_conditioning(sigma, rows_known):
    g, data = _fitted_gaussian()
    g.data_range = (-10.0, 10.0)  # no clamping: compare the Gaussian itself
    known = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    known[..., :rows_known, :] = True
    y = data[:1]
    want_mean, want_cov = _brute_force_conditional(g, y, sigma, known)
    mean = g.posterior(y, torch.tensor([sigma]), known)
    assert torch.allclose(mean.flatten().double(), want_mean, atol=1e-5)
    n = 20000
    draws = g.posterior(y.expand(n, -1, -1, -1), torch.full((n,), sigma), known.expand(n, -1, -1, -1),
                        generator=torch.Generator().manual_seed(1)).flatten(1).double()
    assert (torch.cov(draws.T) - want_cov).abs().max() < 0.05 * want_cov.abs().max()
    if sigma == 0:  # exact observations come back unchanged
        assert torch.equal(draws[:, known.flatten()], y.flatten()[known.flatten()].expand(n, -1))


def test_pca_posterior_without_mask_observes_every_pixel_and_stays_in_range():
    g, data = _fitted_gaussian()
    y = (data[:3] + 0.2 * torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    out = g.posterior(y, torch.full((3,), 0.2), generator=torch.Generator().manual_seed(0))
    assert out.shape == y.shape and out.min() >= 0 and out.max() <= 1
    tiny_noise = g.posterior(y, torch.full((3,), 1e-4))
    assert torch.allclose(tiny_noise, y, atol=1e-3)  # almost noiseless: the observation itself


def test_pca_posterior_of_a_start_without_residual_conditions_on_exact_observations():
    """components == dim leaves no residual: inpainting (sigma 0) then divided by a zero variance."""
    g, data = _fitted_gaussian(components=16)
    assert g.residual == 0
    g.data_range = (-10.0, 10.0)
    known = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    known[..., :2, :] = True
    y = data[:1]
    mean = g.posterior(y, torch.zeros(1), known)
    want, _ = _brute_force_conditional(g, y, 1e-4, known)  # the full Gaussian, exact observations in the limit
    assert torch.allclose(mean.flatten().double(), want, atol=1e-3)
    draw = g.posterior(y, torch.zeros(1), known, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(draw).all() and torch.equal(draw[known], y[known])
