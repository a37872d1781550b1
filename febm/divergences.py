"""f-divergences in the log-ratio parametrisation used by f-EBM.

Every divergence D_f(p||q) = E_q[f(p/q)] is given by a convex generator f with f(1) = 0. f-EBM never
evaluates f on raw ratios; it works with the log-ratio r(x) = H(x) + E(x) ~ log p(x)/q(x) and the two
compositions of Eq. 14:

    T(r)     = f'(exp(r))                               (the data term)
    Fstar(r) = f*(f'(exp(r))) = e^r f'(e^r) - f(e^r)    (the model term)

Both are written in closed form per divergence. Their exponentials would overflow for large |r|, so r is
clipped once, before either is evaluated, to the interval where no exponent exceeds ``max_exponent`` (the
authors clip to [-5, 5]). Clipping r, rather than continuing each exponential on its own, keeps T and Fstar
the compositions of one ratio: Fstar'(r) = e^r T'(r) wherever both are smooth, and the critic's pointwise
objective a T(r) - Fstar(r) stays bounded above with its maximum at r = log a (for |log a| inside the
clip). log(1 + e^r) is a softplus and needs no clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LOG2 = math.log(2.0)

#: The largest exponent any exp() in T or Fstar may see; r is clipped to keep it there (the authors use 5).
DEFAULT_MAX_EXPONENT = 10.0


class Divergence:
    """One f-divergence: the generator f, its derivative, its convex conjugate, and T / Fstar.

    ``f``, ``f_prime`` and ``f_conjugate`` act on plain ratios u > 0 (or on t in the domain of f*)
    and are meant for analysis and tests; training uses the log-space ``T`` and ``Fstar``.
    """

    name: str = ""
    f_second_at_one: float = 1.0  # f''(1), the curvature that scales the local convergence rate
    #: the coefficients c of the exponentials exp(c r) in T and Fstar: they set the clip of r
    exponents: tuple[float, ...] = ()

    def __init__(self, max_exponent: float = DEFAULT_MAX_EXPONENT):
        if not max_exponent > 0:
            raise ValueError(f"max_exponent must be > 0, got {max_exponent}")
        self.max_exponent = float(max_exponent)

    @property
    def r_range(self) -> tuple[float | None, float | None]:
        """(low, high) bounds of r that keep every exponent c r <= max_exponent (None: unbounded)."""
        up = [self.max_exponent / c for c in self.exponents if c > 0]
        down = [self.max_exponent / c for c in self.exponents if c < 0]
        return (max(down) if down else None, min(up) if up else None)

    def clip(self, r: Tensor) -> Tensor:
        """r clipped to ``r_range``; T and Fstar are evaluated at this one clipped log-ratio."""
        low, high = self.r_range
        return r if low is None and high is None else r.clamp(low, high)

    # --- on ratios u = p/q ---------------------------------------------------------------------------
    def f(self, u: Tensor) -> Tensor:
        raise NotImplementedError

    def f_prime(self, u: Tensor) -> Tensor:
        raise NotImplementedError

    def f_conjugate(self, t: Tensor) -> Tensor:
        """f*(t) = sup_u (u t - f(u)); +inf outside the domain of f*."""
        raise NotImplementedError

    # --- on log-ratios r = log p/q -------------------------------------------------------------------
    def T(self, r: Tensor) -> Tensor:
        """f'(e^r), at r clipped to ``r_range``."""
        return self._T(self.clip(r))

    def Fstar(self, r: Tensor) -> Tensor:
        """f*(f'(e^r)) = e^r f'(e^r) - f(e^r), at r clipped to ``r_range``."""
        return self._Fstar(self.clip(r))

    def _T(self, r: Tensor) -> Tensor:
        raise NotImplementedError

    def _Fstar(self, r: Tensor) -> Tensor:
        raise NotImplementedError

    # --- D_f(p||q) --------------------------------------------------------------------------------------
    def perspective(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        """q f(p/q) from log-densities, in log space: finite where q underflows (0 where p = q = 0)."""
        raise NotImplementedError

    def value(self, log_p: Tensor, log_q: Tensor, dx: float) -> Tensor:
        """D_f(p||q) = sum q f(p/q) dx on a grid (for quadrature in analysis code)."""
        return self.perspective(log_p, log_q).sum() * dx

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class KL(Divergence):
    name, f_second_at_one, exponents = "kl", 1.0, (1.0,)

    def perspective(self, log_p, log_q):
        return _xlogy_exp(log_p, log_p - log_q)

    def f(self, u):
        return torch.special.xlogy(u, u)

    def f_prime(self, u):
        return 1.0 + torch.log(u)

    def f_conjugate(self, t):
        return torch.exp(t - 1.0)

    def _T(self, r):
        return 1.0 + r

    def _Fstar(self, r):
        return torch.exp(r)


class ReverseKL(Divergence):
    name, f_second_at_one, exponents = "rkl", 1.0, (-1.0,)

    def perspective(self, log_p, log_q):
        return _xlogy_exp(log_q, log_q - log_p)

    def f(self, u):
        return -torch.log(u)

    def f_prime(self, u):
        return -1.0 / u

    def f_conjugate(self, t):
        # sup_u (ut + log u) = -1 - log(-t) for t < 0
        return torch.where(t < 0, -1.0 - torch.log(-t.clamp(max=-1e-30)), torch.full_like(t, math.inf))

    def _T(self, r):
        return -torch.exp(-r)

    def _Fstar(self, r):
        return r - 1.0


class JensenShannon(Divergence):
    """f-GAN's form, equal to 2 JSD(p||q)."""

    name, f_second_at_one = "js", 0.5

    def perspective(self, log_p, log_q):
        # p log p + q log q - (p + q) log((p + q) / 2)
        log_m = torch.logaddexp(log_p, log_q) - LOG2
        return _xlogy_exp(log_p, log_p - log_m) + _xlogy_exp(log_q, log_q - log_m)

    def f(self, u):
        return torch.special.xlogy(u, u) - (u + 1.0) * torch.log((u + 1.0) / 2.0)

    def f_prime(self, u):
        return torch.log(u) - torch.log((u + 1.0) / 2.0)

    def f_conjugate(self, t):
        # sup_u (ut - f(u)) = -log(2 - e^t) for t < log 2
        return torch.where(t < LOG2, -torch.log(2.0 - torch.exp(t.clamp(max=LOG2))), torch.full_like(t, math.inf))

    def _T(self, r):
        return LOG2 - F.softplus(-r)

    def _Fstar(self, r):
        return F.softplus(r) - LOG2


class SquaredHellinger(Divergence):
    name, f_second_at_one, exponents = "sh", 0.5, (-0.5, 0.5)

    def perspective(self, log_p, log_q):
        return (torch.exp(log_p / 2) - torch.exp(log_q / 2)) ** 2

    def f(self, u):
        return (torch.sqrt(u) - 1.0) ** 2

    def f_prime(self, u):
        return 1.0 - 1.0 / torch.sqrt(u)

    def f_conjugate(self, t):
        return torch.where(t < 1.0, t / (1.0 - t.clamp(max=1.0 - 1e-30)), torch.full_like(t, math.inf))

    def _T(self, r):
        return 1.0 - torch.exp(-r / 2.0)

    def _Fstar(self, r):
        return torch.exp(r / 2.0) - 1.0


class PearsonChi2(Divergence):
    name, f_second_at_one, exponents = "chi2", 2.0, (1.0, 2.0)

    def perspective(self, log_p, log_q):
        # (p - q)^2 / q = p^2/q - 2p + q; p^2/q in log space (it is +inf only where the divergence is)
        return _exp0(2 * log_p - log_q, log_p) - 2 * torch.exp(log_p) + torch.exp(log_q)

    def f(self, u):
        return (u - 1.0) ** 2

    def f_prime(self, u):
        return 2.0 * (u - 1.0)

    def f_conjugate(self, t):
        # f is defined on u > 0, so the supremum sits at u = max(0, 1 + t/2)
        return torch.where(t >= -2.0, t + t**2 / 4.0, torch.full_like(t, -1.0))

    def _T(self, r):
        return 2.0 * (torch.exp(r) - 1.0)

    def _Fstar(self, r):
        return torch.exp(2.0 * r) - 1.0


class NeymanChi2(Divergence):
    name, f_second_at_one, exponents = "neyman", 2.0, (-2.0, -1.0)

    def perspective(self, log_p, log_q):
        return _exp0(2 * log_q - log_p, log_q) - 2 * torch.exp(log_q) + torch.exp(log_p)

    def f(self, u):
        return (1.0 - u) ** 2 / u

    def f_prime(self, u):
        return 1.0 - 1.0 / u**2

    def f_conjugate(self, t):
        # at t = 1 the supremum is the limit u -> inf, 2 (finite); beyond it diverges
        return torch.where(t <= 1.0, 2.0 - 2.0 * torch.sqrt(1.0 - t.clamp(max=1.0)), torch.full_like(t, math.inf))

    def _T(self, r):
        return 1.0 - torch.exp(-2.0 * r)

    def _Fstar(self, r):
        return 2.0 - 2.0 * torch.exp(-r)


class Alpha(Divergence):
    """Amari alpha-divergence, f(u) = (u^a - 1 - a(u - 1)) / (a(a - 1)), a not in {0, 1}."""

    f_second_at_one = 1.0

    def __init__(self, a: float, max_exponent: float = DEFAULT_MAX_EXPONENT):
        super().__init__(max_exponent)
        if a in (0.0, 1.0) or not math.isfinite(a):
            raise ValueError(f"alpha-divergence needs a finite a not in {{0, 1}}, got {a}")
        self.a = float(a)
        self.name = f"alpha:{a:g}"
        self.exponents = (self.a - 1.0, self.a)

    def perspective(self, log_p, log_q):
        # (p^a q^(1-a) - q - a (p - q)) / (a (a - 1))
        a = self.a
        # p^a q^(1-a) is 0 where the factor with a positive power is 0 (both, for 0 < a < 1)
        zero_when = log_p if a > 1 else log_q if a < 0 else torch.minimum(log_p, log_q)
        mixed = _exp0(a * log_p + (1.0 - a) * log_q, zero_when)
        return (mixed - torch.exp(log_q) - a * (torch.exp(log_p) - torch.exp(log_q))) / (a * (a - 1.0))

    def f(self, u):
        a = self.a
        return (u**a - 1.0 - a * (u - 1.0)) / (a * (a - 1.0))

    def f_prime(self, u):
        a = self.a
        return (u ** (a - 1.0) - 1.0) / (a - 1.0)

    def f_conjugate(self, t):
        # u(t) = b^(1/(a-1)), b = 1 + (a-1) t, solves f'(u) = t where b > 0, and then
        # f*(t) = u t - f(u) = (b^(a/(a-1)) - 1) / a. At b = 0 this is the limit of the supremum:
        # -1/a for a < 0 (u -> inf) and a > 1 (u -> 0), +inf for 0 < a < 1.
        a = self.a
        base = 1.0 + (a - 1.0) * t
        value = (base.clamp(min=0.0) ** (a / (a - 1.0)) - 1.0) / a
        if a > 1.0:  # f' is bounded below by -1/(a-1); below that the sup sits at u -> 0: -f(0) = -1/a
            return value
        return torch.where(base >= 0, value, torch.full_like(t, math.inf))

    def _T(self, r):
        a = self.a
        return (torch.exp((a - 1.0) * r) - 1.0) / (a - 1.0)

    def _Fstar(self, r):
        a = self.a
        return (torch.exp(a * r) - 1.0) / a


def _xlogy_exp(log_x: Tensor, log_ratio: Tensor) -> Tensor:
    """x log(ratio) with x = exp(log_x), taken as 0 where x = 0 (also when the log-ratio is infinite)."""
    return torch.where(log_x == -math.inf, torch.zeros_like(log_x), torch.exp(log_x) * log_ratio)


def _exp0(log_v: Tensor, log_zero_when: Tensor) -> Tensor:
    """exp(log_v), but 0 where ``log_zero_when`` is -inf (a factor that is exactly 0 there; avoids inf - inf)."""
    v = torch.exp(log_v)
    return torch.where(log_zero_when == -math.inf, torch.zeros_like(v), v)


_REGISTRY = {cls.name: cls for cls in (KL, ReverseKL, JensenShannon, SquaredHellinger, PearsonChi2, NeymanChi2)}
NAMES = (*_REGISTRY, "alpha:<a>")


def get_divergence(name: str | Divergence, max_exponent: float = DEFAULT_MAX_EXPONENT) -> Divergence:
    """Look a divergence up by name: kl, rkl, js, sh, chi2, neyman, or alpha:<a> (e.g. alpha:0.5)."""
    if isinstance(name, Divergence):
        return name
    key = str(name).strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key](max_exponent=max_exponent)
    if key.startswith("alpha:"):
        try:
            a = float(key.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"cannot read the alpha in {name!r}; write e.g. 'alpha:0.5'") from None
        return Alpha(a, max_exponent=max_exponent)
    raise ValueError(f"unknown divergence {name!r}; valid names: {', '.join(NAMES)}")
