"""f-divergences in the log-ratio parametrisation used by f-EBM.

Every divergence D_f(p||q) = E_q[f(p/q)] is given by a convex generator f with f(1) = 0. f-EBM never
evaluates f on raw ratios; it works with the log-ratio r(x) = H(x) + E(x) ~ log p(x)/q(x) and the two
compositions of Eq. 14:

    T(r)     = f'(exp(r))                               (the data term)
    Fstar(r) = f*(f'(exp(r))) = e^r f'(e^r) - f(e^r)    (the model term)

Both are written in closed form per divergence so that they stay finite (with finite gradients) for any
r in [-50, 50]: exponentials grow linearly beyond ``max_exponent`` instead of overflowing, and
log(1 + e^r) is a softplus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LOG2 = math.log(2.0)

#: Exponent above which exp() continues linearly. The authors clip exponents to [-5, 5]; a linear
#: continuation keeps the gradient's sign and size bounded instead of zeroing it.
DEFAULT_MAX_EXPONENT = 10.0


def bounded_exp(z: Tensor, max_exponent: float = DEFAULT_MAX_EXPONENT) -> Tensor:
    """exp(z) for z <= max_exponent, its tangent line beyond: finite, C^1, increasing, convex."""
    c = max_exponent
    # z == c takes the linear branch: clamp's gradient is zero at its bound, the tangent's is e^c
    return torch.where(z < c, torch.exp(z.clamp(max=c)), math.exp(c) * (1.0 + z - c))


class Divergence:
    """One f-divergence: the generator f, its derivative, its convex conjugate, and T / Fstar.

    ``f``, ``f_prime`` and ``f_conjugate`` act on plain ratios u > 0 (or on t in the domain of f*)
    and are meant for analysis and tests; training uses the log-space ``T`` and ``Fstar``.
    """

    name: str = ""
    f_second_at_one: float = 1.0  # f''(1), the curvature that scales the local convergence rate

    def __init__(self, max_exponent: float = DEFAULT_MAX_EXPONENT):
        self.max_exponent = max_exponent

    def _exp(self, z: Tensor) -> Tensor:
        return bounded_exp(z, self.max_exponent)

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
        raise NotImplementedError

    def Fstar(self, r: Tensor) -> Tensor:
        raise NotImplementedError

    def value(self, log_p: Tensor, log_q: Tensor, dx: float) -> Tensor:
        """D_f(p||q) = sum q f(p/q) dx on a grid (for quadrature in analysis code)."""
        q = torch.exp(log_q)
        return (q * self.f(torch.exp(log_p - log_q))).sum() * dx

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class KL(Divergence):
    name, f_second_at_one = "kl", 1.0

    def f(self, u):
        return torch.special.xlogy(u, u)

    def f_prime(self, u):
        return 1.0 + torch.log(u)

    def f_conjugate(self, t):
        return torch.exp(t - 1.0)

    def T(self, r):
        return 1.0 + r

    def Fstar(self, r):
        return self._exp(r)


class ReverseKL(Divergence):
    name, f_second_at_one = "rkl", 1.0

    def f(self, u):
        return -torch.log(u)

    def f_prime(self, u):
        return -1.0 / u

    def f_conjugate(self, t):
        # sup_u (ut + log u) = -1 - log(-t) for t < 0
        return torch.where(t < 0, -1.0 - torch.log(-t.clamp(max=-1e-30)), torch.full_like(t, math.inf))

    def T(self, r):
        return -self._exp(-r)

    def Fstar(self, r):
        return r - 1.0


class JensenShannon(Divergence):
    """f-GAN's form, equal to 2 JSD(p||q)."""

    name, f_second_at_one = "js", 0.5

    def f(self, u):
        return torch.special.xlogy(u, u) - (u + 1.0) * torch.log((u + 1.0) / 2.0)

    def f_prime(self, u):
        return torch.log(u) - torch.log((u + 1.0) / 2.0)

    def f_conjugate(self, t):
        # sup_u (ut - f(u)) = -log(2 - e^t) for t < log 2
        return torch.where(t < LOG2, -torch.log(2.0 - torch.exp(t.clamp(max=LOG2))), torch.full_like(t, math.inf))

    def T(self, r):
        return LOG2 - F.softplus(-r)

    def Fstar(self, r):
        return F.softplus(r) - LOG2


class SquaredHellinger(Divergence):
    name, f_second_at_one = "sh", 0.5

    def f(self, u):
        return (torch.sqrt(u) - 1.0) ** 2

    def f_prime(self, u):
        return 1.0 - 1.0 / torch.sqrt(u)

    def f_conjugate(self, t):
        return torch.where(t < 1.0, t / (1.0 - t.clamp(max=1.0 - 1e-30)), torch.full_like(t, math.inf))

    def T(self, r):
        return 1.0 - self._exp(-r / 2.0)

    def Fstar(self, r):
        return self._exp(r / 2.0) - 1.0


class PearsonChi2(Divergence):
    name, f_second_at_one = "chi2", 2.0

    def f(self, u):
        return (u - 1.0) ** 2

    def f_prime(self, u):
        return 2.0 * (u - 1.0)

    def f_conjugate(self, t):
        # f is defined on u > 0, so the supremum sits at u = max(0, 1 + t/2)
        return torch.where(t >= -2.0, t + t**2 / 4.0, torch.full_like(t, -1.0))

    def T(self, r):
        return 2.0 * (self._exp(r) - 1.0)

    def Fstar(self, r):
        return self._exp(2.0 * r) - 1.0


class NeymanChi2(Divergence):
    name, f_second_at_one = "neyman", 2.0

    def f(self, u):
        return (1.0 - u) ** 2 / u

    def f_prime(self, u):
        return 1.0 - 1.0 / u**2

    def f_conjugate(self, t):
        # at t = 1 the supremum is the limit u -> inf, 2 (finite); beyond it diverges
        return torch.where(t <= 1.0, 2.0 - 2.0 * torch.sqrt(1.0 - t.clamp(max=1.0)), torch.full_like(t, math.inf))

    def T(self, r):
        return 1.0 - self._exp(-2.0 * r)

    def Fstar(self, r):
        return 2.0 - 2.0 * self._exp(-r)


class Alpha(Divergence):
    """Amari alpha-divergence, f(u) = (u^a - 1 - a(u - 1)) / (a(a - 1)), a not in {0, 1}."""

    f_second_at_one = 1.0

    def __init__(self, a: float, max_exponent: float = DEFAULT_MAX_EXPONENT):
        super().__init__(max_exponent)
        if a in (0.0, 1.0) or not math.isfinite(a):
            raise ValueError(f"alpha-divergence needs a finite a not in {{0, 1}}, got {a}")
        self.a = float(a)
        self.name = f"alpha:{a:g}"

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

    def T(self, r):
        a = self.a
        return (self._exp((a - 1.0) * r) - 1.0) / (a - 1.0)

    def Fstar(self, r):
        a = self.a
        return (self._exp(a * r) - 1.0) / a


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
