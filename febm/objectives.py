"""Training objectives: the f-EBM minimax game (Eq. 14 / 18) and contrastive divergence.

Notation: ``e_pos`` / ``e_neg`` are energies E(x) of data ("positive") and model ("negative") samples,
``h_pos`` / ``h_neg`` critic outputs H(x) on the same samples. Model samples come from Langevin chains
and are detached: no gradient flows through the sampler.

f-EBM value:  L(theta, omega) = E_p[T(H + E)] - E_q[Fstar(H + E)].  omega ascends L, theta descends it.
Because q depends on theta, the theta-gradient has a score-function part (Eq. 18):

    grad L = E_p[grad T(r)] - E_q[grad Fstar(r)] + E_q[g grad E] - E_q[g] E_q[grad E],  g = Fstar(r)

``energy_surrogate`` is a scalar whose autograd gradient is exactly this expression.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .divergences import Divergence, get_divergence

OBJECTIVE_NAMES = ("cd", "kl", "rkl", "js", "sh", "chi2", "neyman", "alpha:<a>")


def fenchel_value(div: Divergence, r_pos: Tensor, r_neg: Tensor) -> Tensor:
    """The variational lower bound E_p[T(r)] - E_q[Fstar(r)] on D_f(p||q)."""
    return div.T(r_pos).mean() - div.Fstar(r_neg).mean()


def critic_loss(div: Divergence, h_pos: Tensor, h_neg: Tensor, e_pos: Tensor, e_neg: Tensor) -> Tensor:
    """Loss for the critic H (minimise it = ascend L). Energies enter as constants."""
    return -fenchel_value(div, h_pos + e_pos.detach(), h_neg + e_neg.detach())


def energy_surrogate(
    div: Divergence, e_pos: Tensor, e_neg: Tensor, h_pos: Tensor, h_neg: Tensor, mean_over_ranks=None
) -> Tensor:
    """Loss for the energy E whose gradient is Eq. 18 (minimise it = descend L). Critic enters as constants.

    Its value equals the Fenchel estimate of L: the score term is written as (g - mean g)(E - E.detach()),
    zero in value, exact in gradient. Under DistributedDataParallel pass ``mean_over_ranks`` (a function
    averaging a scalar over processes) so that mean g is the global batch's, as in a single process.
    """
    r_pos = h_pos.detach() + e_pos
    r_neg = h_neg.detach() + e_neg
    g = div.Fstar(r_neg).detach()
    g_mean = g.mean() if mean_over_ranks is None else mean_over_ranks(g.mean())
    score_term = ((g - g_mean) * (e_neg - e_neg.detach())).mean()  # E_q[g grad E] - E_q[g] E_q[grad E]
    return fenchel_value(div, r_pos, r_neg) + score_term


def contrastive_divergence(e_pos: Tensor, e_neg: Tensor) -> Tensor:
    """Maximum-likelihood (KL) baseline: push data energies down, model energies up."""
    return e_pos.mean() - e_neg.mean()


@dataclass
class Objective:
    """A training objective by name: ``cd`` or any divergence name (see ``febm.divergences``).

    ``l2`` weights the squared-output penalty the authors put on both networks; it keeps energies near
    zero and the critic bounded.
    """

    name: str
    l2: float = 0.0
    max_exponent: float | None = None

    def __post_init__(self):
        self.name = self.name.strip().lower()
        if self.name == "cd":
            self.divergence = None
        else:
            kwargs = {} if self.max_exponent is None else {"max_exponent": self.max_exponent}
            self.divergence = get_divergence(self.name, **kwargs)

    @property
    def uses_critic(self) -> bool:
        return self.divergence is not None

    def critic_loss(self, h_pos: Tensor, h_neg: Tensor, e_pos: Tensor, e_neg: Tensor) -> Tensor:
        if self.divergence is None:
            raise ValueError(f"objective {self.name!r} has no critic (check uses_critic first)")
        loss = critic_loss(self.divergence, h_pos, h_neg, e_pos, e_neg)
        return loss + self.l2 * (h_pos.pow(2).mean() + h_neg.pow(2).mean())

    def energy_loss(
        self, e_pos: Tensor, e_neg: Tensor, h_pos: Tensor | None = None, h_neg: Tensor | None = None,
        mean_over_ranks=None,
    ) -> Tensor:
        if self.divergence is None:
            loss = contrastive_divergence(e_pos, e_neg)
        else:
            if h_pos is None or h_neg is None:
                raise ValueError(f"objective {self.name!r} needs the critic outputs h_pos and h_neg")
            loss = energy_surrogate(self.divergence, e_pos, e_neg, h_pos, h_neg, mean_over_ranks)
        return loss + self.l2 * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
