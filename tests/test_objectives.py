"""febm.objectives: the Eq. 18 surrogate's gradient term by term, the critic loss, contrastive divergence,
the L2 penalty, and the Fenchel value at the optimal critic against D_f(p||q) in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from febm.divergences import get_divergence
from febm.objectives import Objective, contrastive_divergence, critic_loss, energy_surrogate, fenchel_value

ALL = ["kl", "rkl", "js", "sh", "chi2", "neyman", "alpha:0.5", "alpha:2", "alpha:-1"]



def assert_close(actual, expected, rtol=1e-10, atol=1e-12):
    a = actual.detach().numpy() if torch.is_tensor(actual) else np.asarray(actual)
    b = expected.detach().numpy() if torch.is_tensor(expected) else np.asarray(expected)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# --- a tiny energy and critic on 3-D inputs (float64) -----------------------------------------------------
class MLP(nn.Module):
    def __init__(self, seed: int, scale: float = 1.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(3, 6, generator=g, dtype=torch.float64) * 0.7)
        self.b1 = nn.Parameter(torch.randn(6, generator=g, dtype=torch.float64) * 0.3)
        self.w2 = nn.Parameter(torch.randn(6, generator=g, dtype=torch.float64) * 0.5 * scale)

    def forward(self, x):
        return torch.tanh(x @ self.w1 + self.b1) @ self.w2


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(1)
    energy, critic = MLP(seed=2), MLP(seed=3)
    x_pos = torch.randn(5, 3, generator=g, dtype=torch.float64)
    x_neg = 0.5 + 1.3 * torch.randn(7, 3, generator=g, dtype=torch.float64)
    return energy, critic, x_pos, x_neg


def flat_grad(scalar, params):
    grads = torch.autograd.grad(scalar, params, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])


def per_sample(fn, xs, params):
    """Stack of grad_params fn(x_i), one row per sample (computed one sample at a time)."""
    return torch.stack([flat_grad(fn(x[None]).squeeze(0), params) for x in xs])


# --- Eq. 18 ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_energy_surrogate_gradient_is_eq18_term_by_term(name, setup):
    energy, critic, x_pos, x_neg = setup
    div = get_divergence(name)
    theta = list(energy.parameters())
    with torch.no_grad():
        h_pos, h_neg = critic(x_pos), critic(x_neg)
    r_neg = (h_neg + energy(x_neg)).detach()
    assert r_neg.abs().max() < 5  # the closed forms, not the bounded continuation, are in play

    loss = energy_surrogate(div, energy(x_pos), energy(x_neg), critic(x_pos), critic(x_neg))
    got = flat_grad(loss, theta)

    # Eq. 18 from per-sample gradients: E_p[grad T(r)] - E_q[grad Fstar(r)] + E_q[g grad E] - E_q[g] E_q[grad E]
    grad_T = per_sample(lambda x: div.T(critic(x).detach() + energy(x)), x_pos, theta)
    grad_F = per_sample(lambda x: div.Fstar(critic(x).detach() + energy(x)), x_neg, theta)
    grad_E = per_sample(energy, x_neg, theta)
    g = div.Fstar(r_neg)[:, None]
    expected = grad_T.mean(0) - grad_F.mean(0) + (g * grad_E).mean(0) - g.mean() * grad_E.mean(0)
    assert expected.abs().max() > 1e-3  # a non-trivial gradient
    assert_close(got, expected)

    # The score-function part matters: leaving it out gives a different gradient.
    naive = grad_T.mean(0) - grad_F.mean(0)
    assert (naive - expected).abs().max() > 1e-4

    # Objective wraps the same thing.
    obj_loss = Objective(name).energy_loss(energy(x_pos), energy(x_neg), critic(x_pos), critic(x_neg))
    assert_close(flat_grad(obj_loss, theta), expected)


@pytest.mark.parametrize("name", ALL)
def test_eq18_estimates_the_true_gradient_on_a_finite_space(name):
    """On K points, q_theta = softmax(-theta) is exact: the expected surrogate gradient is grad_theta L."""
    div = get_divergence(name)
    K, N = 6, 200_000
    gen = torch.Generator().manual_seed(7)
    h = 0.4 * torch.randn(K, generator=gen, dtype=torch.float64)
    theta = (0.6 * torch.randn(K, generator=gen, dtype=torch.float64)).requires_grad_(True)

    # exact L(theta) = E_p[T(H + E)] - E_q[Fstar(H + E)], p uniform on the K points, q = exp(-E)/Z
    q = torch.softmax(-theta, 0)
    exact_L = div.T(h + theta).mean() - (q * div.Fstar(h + theta)).sum()
    (exact,) = torch.autograd.grad(exact_L, theta)
    assert exact.abs().max() > 0.02

    idx = torch.multinomial(q.detach(), N, replacement=True, generator=gen)  # exact model samples
    loss = energy_surrogate(div, theta, theta[idx], h, h[idx])  # positives: each point once (p uniform)
    (est,) = torch.autograd.grad(loss, theta)
    # standard error from the influence function of negative j on coordinate k (delta method):
    # (g_j - mean g - Fstar'(r_j)) [x_j = k] - g_j q_k; allow five standard errors per coordinate
    r_all = (h + theta).detach().requires_grad_(True)
    (dF,) = torch.autograd.grad(div.Fstar(r_all).sum(), r_all)
    g = div.Fstar(r_all.detach())[idx]
    onehot = torch.nn.functional.one_hot(idx, K).to(g.dtype)
    influence = ((g - g.mean()) - dF[idx])[:, None] * onehot - g[:, None] * onehot.mean(0)
    se = influence.std(0) / math.sqrt(N)
    assert ((est - exact).abs() < 5 * se + 1e-9).all()

    # without the score-function terms the same samples give a visibly wrong gradient: the test can tell
    (no_score,) = torch.autograd.grad(fenchel_value(div, h + theta, h[idx] + theta[idx]), theta)
    assert (no_score - exact).abs().max() > 5 * (est - exact).abs().max()


@pytest.mark.parametrize("name", ["kl", "js", "alpha:-1"])
def test_surrogate_value_is_the_fenchel_value(name, setup):
    energy, critic, x_pos, x_neg = setup
    div = get_divergence(name)
    e_pos, e_neg, h_pos, h_neg = energy(x_pos), energy(x_neg), critic(x_pos), critic(x_neg)
    g = div.Fstar(h_neg + e_neg).detach()
    expected = fenchel_value(div, h_pos + e_pos, h_neg + e_neg)  # the score term is zero in value
    assert_close(energy_surrogate(div, e_pos, e_neg, h_pos, h_neg), expected)
    # the Fenchel value itself is the sample version of E_p[T(r)] - E_q[Fstar(r)]
    v = fenchel_value(div, h_pos + e_pos, h_neg + e_neg)
    assert_close(v, div.T(h_pos + e_pos).sum() / 5 - div.Fstar(h_neg + e_neg).sum() / 7)


@pytest.mark.parametrize("name", ALL)
def test_energy_surrogate_gives_no_gradient_to_the_critic(name, setup):
    energy, critic, x_pos, x_neg = setup
    loss = energy_surrogate(get_divergence(name), energy(x_pos), energy(x_neg), critic(x_pos), critic(x_neg))
    grads = torch.autograd.grad(loss, list(critic.parameters()), allow_unused=True)
    assert all(g is None for g in grads)


# --- the critic --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_critic_loss_gradient_is_minus_fenchel_gradient(name, setup):
    energy, critic, x_pos, x_neg = setup
    div = get_divergence(name)
    omega = list(critic.parameters())
    loss = critic_loss(div, critic(x_pos), critic(x_neg), energy(x_pos), energy(x_neg))
    got = flat_grad(loss, omega)
    grad_T = per_sample(lambda x: div.T(critic(x) + energy(x).detach()), x_pos, omega)
    grad_F = per_sample(lambda x: div.Fstar(critic(x) + energy(x).detach()), x_neg, omega)
    expected = -(grad_T.mean(0) - grad_F.mean(0))
    assert expected.abs().max() > 1e-3
    assert_close(got, expected)
    # value: minus the Fenchel value
    r_pos, r_neg = critic(x_pos) + energy(x_pos), critic(x_neg) + energy(x_neg)
    assert_close(loss, -(div.T(r_pos).mean() - div.Fstar(r_neg).mean()))
    # and nothing reaches the energy
    grads = torch.autograd.grad(loss, list(energy.parameters()), allow_unused=True)
    assert all(g is None for g in grads)


# --- contrastive divergence and Objective -----------------------------------------------------------------------
def test_contrastive_divergence_gradient(setup):
    energy, _, x_pos, x_neg = setup
    theta = list(energy.parameters())
    expected = per_sample(energy, x_pos, theta).mean(0) - per_sample(energy, x_neg, theta).mean(0)
    assert_close(flat_grad(contrastive_divergence(energy(x_pos), energy(x_neg)), theta), expected)
    obj = Objective("cd")
    assert obj.uses_critic is False and obj.divergence is None
    assert_close(flat_grad(obj.energy_loss(energy(x_pos), energy(x_neg)), theta), expected)
    assert_close(obj.energy_loss(energy(x_pos), energy(x_neg)), energy(x_pos).mean() - energy(x_neg).mean())


def test_objective_names():
    for name in ALL:
        obj = Objective(name)
        assert obj.uses_critic is True and obj.divergence.name == name
    assert Objective("  JS ").divergence.name == "js"
    assert Objective("CD").uses_critic is False
    assert Objective("alpha:0.5", max_exponent=3.0).divergence.max_exponent == 3.0
    with pytest.raises(ValueError, match="valid names"):
        Objective("bogus")
    with pytest.raises(ValueError):
        Objective("alpha:1")


def test_objective_misuse_raises_clear_errors():
    e = torch.zeros(3)
    with pytest.raises(ValueError, match="no critic"):
        Objective("cd").critic_loss(e, e, e, e)
    with pytest.raises(ValueError, match="critic outputs"):
        Objective("js").energy_loss(e, e)


@pytest.mark.parametrize("name", ["cd", "js", "rkl"])
def test_l2_penalty(name, setup):
    energy, critic, x_pos, x_neg = setup
    lam = 0.7
    e_pos, e_neg, h_pos, h_neg = energy(x_pos), energy(x_neg), critic(x_pos), critic(x_neg)
    plain, penalised = Objective(name), Objective(name, l2=lam)
    diff = penalised.energy_loss(e_pos, e_neg, h_pos, h_neg) - plain.energy_loss(e_pos, e_neg, h_pos, h_neg)
    assert_close(diff, lam * (e_pos.pow(2).mean() + e_neg.pow(2).mean()))
    theta = list(energy.parameters())
    # the gradient gains lam * (E_p[2 E grad E] + E_q[2 E grad E])
    ge_pos, ge_neg = per_sample(energy, x_pos, theta), per_sample(energy, x_neg, theta)
    extra = lam * ((2 * e_pos.detach()[:, None] * ge_pos).mean(0) + (2 * e_neg.detach()[:, None] * ge_neg).mean(0))
    g_pen = flat_grad(penalised.energy_loss(e_pos, e_neg, h_pos, h_neg), theta)
    g_plain = flat_grad(plain.energy_loss(e_pos, e_neg, h_pos, h_neg), theta)
    assert_close(g_pen - g_plain, extra)
    if name != "cd":
        diff = penalised.critic_loss(h_pos, h_neg, e_pos, e_neg) - plain.critic_loss(h_pos, h_neg, e_pos, e_neg)
        assert_close(diff, lam * (h_pos.pow(2).mean() + h_neg.pow(2).mean()))


# --- the Fenchel value at the optimal critic is D_f(p||q) ---------------------------------------------------------
X = torch.linspace(-14.0, 14.0, 28001, dtype=torch.float64)
DX = float(X[1] - X[0])
Q_WIDER = ((0.3, 0.8), (0.0, 1.0))  # (mean, std) of p, then of q
P_WIDER = ((0.3, 1.0), (0.0, 0.8))


def log_normal(x, m, s):
    return -0.5 * ((x - m) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))


def alpha_integral(a, p, q):
    """int p^a q^(1-a) dx for two Gaussians (finite when a s_q^2 + (1 - a) s_p^2 > 0)."""
    (m1, s1), (m2, s2) = p, q
    var = a * s2**2 + (1 - a) * s1**2
    assert var > 0
    return s1 ** (1 - a) * s2**a / math.sqrt(var) * math.exp(-0.5 * a * (1 - a) * (m1 - m2) ** 2 / var)


def closed_form(name, p, q):
    (m1, s1), (m2, s2) = p, q
    kl = lambda a, b: math.log(b[1] / a[1]) + (a[1] ** 2 + (a[0] - b[0]) ** 2) / (2 * b[1] ** 2) - 0.5  # noqa: E731
    if name == "kl":
        return kl(p, q)
    if name == "rkl":
        return kl(q, p)
    if name == "sh":
        return 2.0 - 2.0 * alpha_integral(0.5, p, q)
    if name == "chi2":
        return alpha_integral(2.0, p, q) - 1.0
    if name == "neyman":
        return alpha_integral(-1.0, p, q) - 1.0
    if name.startswith("alpha:"):
        a = float(name.split(":")[1])
        return (alpha_integral(a, p, q) - 1.0) / (a * (a - 1.0))
    return None  # js: no closed form, quadrature of the generator only


CASES = [(n, Q_WIDER) for n in ["kl", "rkl", "js", "sh", "chi2", "alpha:0.5", "alpha:2"]] + [
    (n, P_WIDER) for n in ["kl", "rkl", "js", "sh", "neyman", "alpha:-1"]
]


def quadrature_fenchel(div, r, log_p, log_q):
    """int p T(r) - q Fstar(r) dx on the grid."""
    return float(((log_p.exp() * div.T(r)).sum() - (log_q.exp() * div.Fstar(r)).sum()) * DX)


@pytest.mark.parametrize("name, pair", CASES)
def test_fenchel_value_at_optimal_critic_is_the_divergence(name, pair):
    p, q = pair
    div = get_divergence(name, max_exponent=600.0)  # float64: no bounded continuation on the grid
    log_p, log_q = log_normal(X, *p), log_normal(X, *q)
    exact = div.value(log_p, log_q, DX).item()  # D_f by quadrature of the generator
    cf = closed_form(name, p, q)
    if cf is not None:
        assert exact == pytest.approx(cf, rel=1e-9)
    assert exact > 1e-3

    # optimal critic: E = -log q (a normalised energy), H = log p, so r = H + E = log p/q
    energy, h_opt = -log_q, log_p
    r_opt = h_opt + energy
    best = quadrature_fenchel(div, r_opt, log_p, log_q)
    assert best == pytest.approx(exact, rel=1e-9)

    # any other critic gives a strictly lower value (variational lower bound)
    for delta in (0.3 * torch.ones_like(X), -0.3 * torch.ones_like(X), 0.4 * torch.sin(2 * X), 0.5 * torch.tanh(X)):
        worse = quadrature_fenchel(div, r_opt + delta, log_p, log_q)
        assert worse < best - 1e-4


@pytest.mark.parametrize("name", ["kl", "rkl", "js", "sh"])
def test_critic_loss_at_optimum_estimates_divergence_from_samples(name):
    p, q = Q_WIDER
    div = get_divergence(name)
    gen = torch.Generator().manual_seed(3)
    n = 50_000
    x_p = p[0] + p[1] * torch.randn(n, generator=gen, dtype=torch.float64)
    x_q = q[0] + q[1] * torch.randn(n, generator=gen, dtype=torch.float64)
    E = lambda x: -log_normal(x, *q)  # noqa: E731
    H = lambda x: log_normal(x, *p)  # noqa: E731
    value = -critic_loss(div, H(x_p), H(x_q), E(x_p), E(x_q)).item()
    se = math.sqrt(div.T(H(x_p) + E(x_p)).var().item() / n + div.Fstar(H(x_q) + E(x_q)).var().item() / n)
    exact = div.value(log_normal(X, *p), log_normal(X, *q), DX).item()
    assert abs(value - exact) < 5 * se
    # a deliberately wrong critic is worse on the same samples by more than the noise
    wrong = -critic_loss(div, H(x_p) + 0.5, H(x_q) + 0.5, E(x_p), E(x_q)).item()
    assert wrong < value - 5 * se
