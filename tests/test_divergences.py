"""febm.divergences against closed forms: lookup, f(1) = 0, T = f'(e^r), Fstar = f*(f'(e^r)), the convex
conjugate (checked against a numerical supremum), f''(1), stability on [-50, 50], the clip of r
and D_f by quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from febm.divergences import DEFAULT_MAX_EXPONENT, Divergence, get_divergence

ALL = ["kl", "rkl", "js", "sh", "chi2", "neyman", "alpha:0.5", "alpha:2", "alpha:-1"]
LOG2 = math.log(2.0)
HYP = settings(max_examples=20, deadline=None, derandomize=True)



def t64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-12, atol: float = 1e-12) -> None:
    np.testing.assert_allclose(actual.detach().numpy(), expected.detach().numpy(), rtol=rtol, atol=atol)


# The table of DESIGN.md section 2, written independently of the implementation (numpy, float64).
def _alpha(a):
    return {
        "f": lambda u: (u**a - 1 - a * (u - 1)) / (a * (a - 1)),
        "T": lambda r: (np.exp((a - 1) * r) - 1) / (a - 1),
        "Fstar": lambda r: (np.exp(a * r) - 1) / a,
        "f2": 1.0,
    }


TABLE = {
    "kl": {"f": lambda u: u * np.log(u), "T": lambda r: 1 + r, "Fstar": np.exp, "f2": 1.0},
    "rkl": {"f": lambda u: -np.log(u), "T": lambda r: -np.exp(-r), "Fstar": lambda r: r - 1, "f2": 1.0},
    "js": {
        "f": lambda u: u * np.log(u) - (u + 1) * np.log((u + 1) / 2),
        "T": lambda r: LOG2 - np.logaddexp(0, -r),
        "Fstar": lambda r: np.logaddexp(0, r) - LOG2,
        "f2": 0.5,
    },
    "sh": {
        "f": lambda u: (np.sqrt(u) - 1) ** 2,
        "T": lambda r: 1 - np.exp(-r / 2),
        "Fstar": lambda r: np.exp(r / 2) - 1,
        "f2": 0.5,
    },
    "chi2": {
        "f": lambda u: (u - 1) ** 2,
        "T": lambda r: 2 * (np.exp(r) - 1),
        "Fstar": lambda r: np.exp(2 * r) - 1,
        "f2": 2.0,
    },
    "neyman": {
        "f": lambda u: (1 - u) ** 2 / u,
        "T": lambda r: 1 - np.exp(-2 * r),
        "Fstar": lambda r: 2 - 2 * np.exp(-r),
        "f2": 2.0,
    },
    "alpha:0.5": _alpha(0.5),
    "alpha:2": _alpha(2.0),
    "alpha:-1": _alpha(-1.0),
}

# The domain of f*: the closure of the range of f' on u > 0 (lower, upper, is the upper end included?).
# chi2 and alpha:2 have f' bounded below: for t below that bound the supremum sits at u -> 0, value -f(0).
CONJ_DOMAIN = {
    "kl": (-math.inf, math.inf),
    "rkl": (-math.inf, 0.0),
    "js": (-math.inf, LOG2),
    "sh": (-math.inf, 1.0),
    "chi2": (-math.inf, math.inf),
    "neyman": (-math.inf, 1.0),
    "alpha:0.5": (-math.inf, 2.0),
    "alpha:2": (-math.inf, math.inf),
    "alpha:-1": (-math.inf, 0.5),
}
# value of f* at the (open) upper end of its domain: +inf where the sup diverges, the finite limit otherwise
CONJ_AT_UPPER = {"rkl": math.inf, "js": math.inf, "sh": math.inf, "neyman": 2.0, "alpha:0.5": math.inf, "alpha:-1": 1.0}


# --- lookup -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_lookup_by_name(name):
    div = get_divergence(name)
    assert isinstance(div, Divergence)
    assert div.name == name
    assert get_divergence(f"  {name.upper()} ").name == name  # case and whitespace insensitive
    assert get_divergence(div) is div  # an instance passes through
    assert div.max_exponent == DEFAULT_MAX_EXPONENT
    assert get_divergence(name, max_exponent=3.0).max_exponent == 3.0


def test_alpha_instances_are_distinct():
    assert get_divergence("alpha:0.5").a == 0.5
    assert get_divergence("alpha:2").a == 2.0
    assert get_divergence("alpha:-1").a == -1.0
    assert get_divergence("alpha:2.0").name == "alpha:2"


@pytest.mark.parametrize("bad", ["foo", "", "kl2", "reverse-kl", "alpha", "cd"])
def test_unknown_name_lists_valid_names(bad):
    with pytest.raises(ValueError) as info:
        get_divergence(bad)
    msg = str(info.value)
    for valid in ["kl", "rkl", "js", "sh", "chi2", "neyman", "alpha:<a>"]:
        assert valid in msg


@pytest.mark.parametrize("bad", ["alpha:1", "alpha:0", "alpha:1.0", "alpha:nan", "alpha:inf"])
def test_alpha_excluded_values(bad):
    with pytest.raises(ValueError, match=r"not in \{0, 1\}"):
        get_divergence(bad)


@pytest.mark.parametrize("bad", ["alpha:x", "alpha:", "alpha:0.5.1", "alpha:1/2"])
def test_alpha_unreadable(bad):
    with pytest.raises(ValueError, match="alpha:0.5"):  # the message shows the expected form
        get_divergence(bad)


# --- the generator f ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_f_matches_table_and_vanishes_at_one(name):
    div = get_divergence(name)
    u = np.exp(np.linspace(-6, 6, 241))
    np.testing.assert_allclose(div.f(t64(u)).numpy(), TABLE[name]["f"](u), rtol=1e-12, atol=1e-12)
    assert div.f(t64(1.0)).item() == pytest.approx(0.0, abs=1e-15)
    ut = t64(u)
    assert (div.f(ut) - div.f_prime(t64(1.0)) * (ut - 1) >= -1e-12).all()  # convex: above its tangent at 1


@pytest.mark.parametrize("name", ALL)
@HYP
@given(log_u=st.floats(-8, 8))
def test_f_prime_is_the_derivative_of_f(name, log_u):
    div = get_divergence(name)
    u = t64(math.exp(log_u)).requires_grad_(True)
    (grad,) = torch.autograd.grad(div.f(u), u)
    assert div.f_prime(u.detach()).item() == pytest.approx(grad.item(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_f_second_at_one_matches_finite_difference(name):
    div = get_divergence(name)
    h = 1e-4
    fd = (div.f(t64(1 + h)) - 2 * div.f(t64(1.0)) + div.f(t64(1 - h))).item() / h**2
    assert div.f_second_at_one == pytest.approx(fd, rel=1e-6)
    assert div.f_second_at_one == TABLE[name]["f2"]


def test_alpha_family_contains_the_chi2_pair_and_kl_limit():
    u = t64(np.exp(np.linspace(-4, 4, 81)))
    kl, rkl = get_divergence("kl"), get_divergence("rkl")
    assert_close(2 * get_divergence("alpha:2").f(u), get_divergence("chi2").f(u))
    assert_close(2 * get_divergence("alpha:-1").f(u), get_divergence("neyman").f(u))
    # a -> 1: u log u - (u - 1); a -> 0: -log u + (u - 1) (KL / reverse KL up to an affine term)
    assert_close(get_divergence("alpha:1.000001").f(u), kl.f(u) - (u - 1), rtol=1e-4, atol=1e-5)
    assert_close(get_divergence("alpha:0.000001").f(u), rkl.f(u) + (u - 1), rtol=1e-4, atol=1e-5)


# --- log-space compositions T and Fstar ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_T_and_Fstar_match_the_design_table(name):
    div = get_divergence(name)
    r = np.linspace(-4, 4, 161)
    np.testing.assert_allclose(div.T(t64(r)).numpy(), TABLE[name]["T"](r), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(div.Fstar(t64(r)).numpy(), TABLE[name]["Fstar"](r), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
@HYP
@given(r=st.floats(-4, 4))
def test_T_is_f_prime_and_Fstar_is_conjugate_of_T(name, r):
    div = get_divergence(name)
    rt = t64(r)
    u = torch.exp(rt)
    T, Fs = div.T(rt), div.Fstar(rt)
    assert T.item() == pytest.approx(div.f_prime(u).item(), rel=1e-10, abs=1e-12)
    assert Fs.item() == pytest.approx(div.f_conjugate(div.f_prime(u)).item(), rel=1e-9, abs=1e-10)
    # Fenchel-Young with equality at t = f'(u): f*(f'(u)) = u f'(u) - f(u)
    assert Fs.item() == pytest.approx((u * T - div.f(u)).item(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name", ALL)
@HYP
@given(r=st.floats(-4, 4))
def test_Fstar_derivative_is_exp_r_times_T_derivative(name, r):
    # differentiating Fstar = e^r T - f(e^r): Fstar' = e^r T' (and T' = e^r f''(e^r) > 0)
    div = get_divergence(name)
    rt = t64(r).requires_grad_(True)
    (dT,) = torch.autograd.grad(div.T(rt), rt)
    (dF,) = torch.autograd.grad(div.Fstar(rt), rt)
    assert dT.item() > 0
    assert dF.item() == pytest.approx(math.exp(r) * dT.item(), rel=1e-10)


# --- f* is the convex conjugate ------------------------------------------------------------------------------
_S = np.linspace(-30.0, 30.0, 60001)  # log u grid for the numerical supremum


def numerical_conjugate(div: Divergence, t: float) -> float:
    """sup_{u > 0} (u t - f(u)) by a dense log-grid, refined by bounded Brent around the best point."""
    with np.errstate(over="ignore", invalid="ignore"):
        phi = lambda s: np.exp(s) * t - div.f(t64(np.exp(s))).numpy()  # noqa: E731
        vals = phi(_S)
    vals = np.where(np.isfinite(vals), vals, -np.inf)
    i = int(np.argmax(vals))
    if i in (0, len(_S) - 1):  # supremum at the edge (u -> 0 or u -> inf): the grid value is the answer
        return float(vals[i])
    lo, hi = _S[i - 1], _S[i + 1]
    res = minimize_scalar(
        lambda s: -float(phi(np.array([s]))[0]), bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}
    )
    return max(float(vals[i]), -float(res.fun))


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=15, deadline=None, derandomize=True)
@given(log_u=st.floats(-3, 3))
def test_f_conjugate_is_the_supremum_in_the_interior(name, log_u):
    div = get_divergence(name)
    t = div.f_prime(t64(math.exp(log_u))).item()  # the range of f' is the interior of dom f*
    assert div.f_conjugate(t64(t)).item() == pytest.approx(numerical_conjugate(div, t), rel=1e-8, abs=1e-9)


@pytest.mark.parametrize(
    "name, t", [("chi2", -2.5), ("chi2", -10.0), ("alpha:2", -1.5), ("alpha:2", -7.0), ("kl", -30.0), ("kl", 5.0)]
)
def test_f_conjugate_where_f_prime_is_bounded_below(name, t):
    # below the range of f' the supremum is approached as u -> 0: f*(t) = -f(0)
    div = get_divergence(name)
    expected = numerical_conjugate(div, t)
    assert div.f_conjugate(t64(t)).item() == pytest.approx(expected, rel=1e-8, abs=1e-9)
    if name != "kl":
        assert div.f_conjugate(t64(t)).item() == pytest.approx(-div.f(t64(0.0)).item())


@pytest.mark.parametrize("name", [n for n, (lo, hi) in CONJ_DOMAIN.items() if math.isfinite(hi)])
def test_f_conjugate_outside_and_at_the_edge_of_its_domain(name):
    div = get_divergence(name)
    hi = CONJ_DOMAIN[name][1]
    for beyond in (hi + 1e-3, hi + 1.0, hi + 100.0):
        assert div.f_conjugate(t64(beyond)).item() == math.inf
        assert numerical_conjugate(div, beyond) > 1e3  # the sup really diverges there
    at_edge = div.f_conjugate(t64(hi)).item()
    assert at_edge == pytest.approx(CONJ_AT_UPPER[name])
    # and f* is continuous from the left at the edge (lower semicontinuity of a conjugate)
    just_below = div.f_conjugate(t64(hi - 1e-10)).item()
    if math.isfinite(at_edge):
        assert just_below == pytest.approx(at_edge, abs=1e-4)
    else:
        assert just_below > 10.0


@pytest.mark.parametrize("name", ALL)
def test_conjugate_is_convex_and_increasing_in_its_domain(name):
    div = get_divergence(name)
    lo, hi = CONJ_DOMAIN[name]
    t = torch.linspace(-5.0, min(hi, 5.0) - 1e-3, 2001, dtype=torch.float64)
    v = div.f_conjugate(t)
    assert torch.isfinite(v).all()
    d = torch.diff(v)
    assert (d >= -1e-12).all()  # f*' = u(t) >= 0
    assert (torch.diff(d) >= -1e-9).all()


# --- numerics on [-50, 50] in float32 --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_T_and_Fstar_finite_with_finite_gradients_float32(name):
    div = get_divergence(name)
    r = torch.cat([torch.linspace(-50, 50, 4001), torch.tensor([-50.0, 50.0, 0.0, 1e-8, -1e-8])]).requires_grad_(True)
    T, Fs = div.T(r), div.Fstar(r)
    assert T.dtype == Fs.dtype == torch.float32
    assert torch.isfinite(T).all() and torch.isfinite(Fs).all()
    (gT,) = torch.autograd.grad(T.sum(), r)
    (gF,) = torch.autograd.grad(Fs.sum(), r)
    assert torch.isfinite(gT).all() and torch.isfinite(gF).all()
    assert (gT >= 0).all() and (gF >= 0).all()  # both are non-decreasing in r
    assert (torch.diff(T.detach()[:4001]) >= 0).all() and (torch.diff(Fs.detach()[:4001]) >= 0).all()


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=15, deadline=None, derandomize=True)
@given(r=st.floats(-50, 50, width=32))
def test_T_and_Fstar_finite_anywhere_in_range(name, r):
    div = get_divergence(name)
    rt = torch.tensor(r, dtype=torch.float32, requires_grad=True)
    for fn in (div.T, div.Fstar):
        v = fn(rt)
        (g,) = torch.autograd.grad(v, rt)
        assert math.isfinite(v.item()) and math.isfinite(g.item())


# --- the clip of r: one ratio for T and Fstar (issue 14) --------------------------------------------------------
R_GRID = torch.linspace(-30, 30, 60001, dtype=torch.float64)  # step 1e-3


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("a", [1 / 8, 1 / 2, 2.0, 8.0])
def test_pointwise_critic_objective_is_bounded_and_maximal_at_log_ratio(name, a):
    """sup_r a T(r) - Fstar(r) sits at r = log a (the critic learns log p/q), and nothing beyond the clip
    pays more: before the fix chi2 with a = 2 scored 1 at log 2 but 2.9e5 at r = 20."""
    div = get_divergence(name)
    values = a * div.T(R_GRID) - div.Fstar(R_GRID)
    assert torch.isfinite(values).all()
    best = R_GRID[values.argmax()].item()
    assert best == pytest.approx(math.log(a), abs=2e-3)
    at_log_a = (a * div.T(t64(math.log(a))) - div.Fstar(t64(math.log(a)))).item()
    assert values.max().item() <= at_log_a + 1e-9


@pytest.mark.parametrize("name", ALL)
def test_Fstar_derivative_is_e_r_times_T_derivative(name):
    """Fstar(r) = f*(f'(e^r)) implies Fstar'(r) = e^r T'(r); the clip must keep it (linear continuations at
    different points for T and Fstar broke it)."""
    div = get_divergence(name)
    low, high = div.r_range
    r = R_GRID.clone()
    smooth = torch.ones_like(r, dtype=torch.bool)  # away from the clip's kinks
    for bound in (low, high):
        if bound is not None:
            smooth &= (r - bound).abs() > 1e-2
    r = r[smooth].requires_grad_(True)
    (dT,) = torch.autograd.grad(div.T(r).sum(), r)
    (dF,) = torch.autograd.grad(div.Fstar(r).sum(), r)
    inside = torch.ones_like(dT, dtype=torch.bool)
    if low is not None:
        inside &= r.detach() > low
    if high is not None:
        inside &= r.detach() < high
    expected = torch.exp(r.detach()) * dT
    assert_close(dF[inside], expected[inside], rtol=1e-7, atol=1e-12)  # e^r sigmoid(-r) loses digits at r ~ 30
    assert (dF[~inside] == 0).all() and (dT[~inside] == 0).all()  # clipped: both flat together


@pytest.mark.parametrize("name", ALL)
def test_clip_keeps_every_exponent_below_max_exponent(name):
    div = get_divergence(name)
    low, high = div.r_range
    for c in div.exponents:
        for bound in (low, high):
            if bound is not None and c * bound > 0:
                assert c * bound <= DEFAULT_MAX_EXPONENT + 1e-12
    # outside the clip both functions are constant: the value at the bound
    for bound, beyond in ((low, -1e4), (high, 1e4)):
        if bound is not None:
            for fn in (div.T, div.Fstar):
                assert fn(t64(beyond)).item() == fn(t64(bound)).item()


def test_r_range_per_divergence():
    assert get_divergence("kl").r_range == (None, 10.0)
    assert get_divergence("rkl").r_range == (-10.0, None)
    assert get_divergence("js").r_range == (None, None)
    assert get_divergence("sh").r_range == (-20.0, 20.0)
    assert get_divergence("chi2").r_range == (None, 5.0)
    assert get_divergence("neyman").r_range == (-5.0, None)
    assert get_divergence("chi2", max_exponent=3.0).r_range == (None, 1.5)
    with pytest.raises(ValueError, match="max_exponent"):
        get_divergence("kl", max_exponent=0.0)


# --- Divergence.value (quadrature) -----------------------------------------------------------------------------
def test_value_matches_gaussian_kl_closed_form():
    x = torch.linspace(-15, 15, 30001, dtype=torch.float64)
    dx = float(x[1] - x[0])
    m1, s1, m2, s2 = 0.3, 0.8, -0.2, 1.3
    log_n = lambda m, s: -0.5 * ((x - m) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))  # noqa: E731
    kl = math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    assert get_divergence("kl").value(log_n(m1, s1), log_n(m2, s2), dx).item() == pytest.approx(kl, rel=1e-9)
    assert get_divergence("rkl").value(log_n(m2, s2), log_n(m1, s1), dx).item() == pytest.approx(kl, rel=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_value_is_finite_where_q_underflows(name):
    """q = N(0, 1) underflows to 0 in float64 beyond |x| ~ 38.6 while p = N(0, 1) there too: q f(p/q) must
    stay finite (0), as computed in log space (exp(log q) * f(exp(log p - log q)) gave 0 * f(nan) = NaN)."""
    x = torch.linspace(-60, 60, 12001, dtype=torch.float64)
    dx = float(x[1] - x[0])
    log_n = lambda m, s: -0.5 * ((x - m) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))  # noqa: E731
    div = get_divergence(name)
    same = div.value(log_n(0.0, 1.0), log_n(0.0, 1.0), dx)
    assert same.item() == pytest.approx(0.0, abs=1e-12)
    near = div.value(log_n(0.1, 1.0), log_n(0.0, 1.0), dx)  # D_f ~ f''(1)/2 chi2 = f''(1)/2 (e^0.01 - 1)
    assert math.isfinite(near.item())
    assert near.item() == pytest.approx(div.f_second_at_one / 2 * math.expm1(0.01), rel=0.02)


def test_value_kl_with_q_underflowing_matches_closed_form():
    x = torch.linspace(-60, 60, 120001, dtype=torch.float64)
    dx = float(x[1] - x[0])
    log_n = lambda m, s: -0.5 * ((x - m) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))  # noqa: E731
    m1, s1, m2, s2 = 0.0, 2.0, 0.5, 1.0  # q narrower than p: q underflows where p is still > 0
    kl = math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    assert get_divergence("kl").value(log_n(m1, s1), log_n(m2, s2), dx).item() == pytest.approx(kl, rel=1e-9)
