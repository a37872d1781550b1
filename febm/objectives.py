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
from .posterior import PRIOR_FRACTION, STEP_FRACTION

OBJECTIVE_NAMES = ("cd", "kl", "rkl", "js", "sh", "chi2", "neyman", "alpha:<a>", "dsm", "unrolled")
# objectives without a critic: contrastive divergence, denoising score matching, and score matching through
# restoration's unrolled descent (a regression on the restorer's output, not a divergence)
NO_CRITIC = ("cd", "dsm", "unrolled")
REGRESSIONS = ("dsm", "unrolled")  # trained on (clean, noisy) pairs, no samples: no energy surrogate


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


def conditional_energy_surrogate(div: Divergence, u_pos: Tensor, u_neg: Tensor, h_pos: Tensor, h_neg: Tensor) -> Tensor:
    """Eq. 18 for conditional models q(x | y), applied per observation: the energy's loss when every data pair
    (x, y) has K >= 2 model samples x'_k ~ q(. | y), and the log-ratio is a sum of local terms.

    ``u_pos`` (B, P) and ``u_neg`` (B, K, P) are the conditional energies U(x | y) split into P local terms (per
    pixel for photo energies; P = 1, or (B,) and (B, K), for whole-image terms), ``h_pos`` / ``h_neg`` the critic's
    local terms on the same pairs. The value is the mean over positions i of E_p[T(r_i)] - E_q[Fstar(r_i)],
    r_i = h_i + u_i: for P > 1 the f-divergence game runs on every patch's marginal at once (a sum of local
    f-divergences, each of order one, where the whole crop's log-ratio would be thousands of nats and saturate
    the divergences' bounded exponentials). q depends on theta through U = sum_i u_i, and
    grad log q(x | y) = -grad U + E_q(.|y)[grad U], so the score term is a covariance under q(. | y) of
    g = mean_i Fstar(r_i) and grad U, one per observation: with K chains per observation
    (1 / (K - 1)) sum_k (g_k - mean_k g) grad U_k estimates it without bias (a centring by the batch's mean g, as
    in the unconditional ``energy_surrogate``, would mix observations whose q differ).
    """
    if u_pos.dim() == 1:
        u_pos, u_neg, h_pos, h_neg = u_pos[:, None], u_neg[..., None], h_pos[:, None], h_neg[..., None]
    if u_neg.dim() != 3 or u_neg.shape[1] < 2 or h_neg.shape != u_neg.shape or h_pos.shape != u_pos.shape:
        raise ValueError(f"need (B, K >= 2[, P]) model energies and critic outputs, got {tuple(u_neg.shape)}, "
                         f"{tuple(h_neg.shape)}")
    r_pos = h_pos.detach() + u_pos
    r_neg = h_neg.detach() + u_neg
    g = div.Fstar(r_neg).mean(dim=2).detach()  # (B, K)
    total = u_neg.sum(dim=2)
    k = u_neg.shape[1]
    score_term = ((g - g.mean(dim=1, keepdim=True)) * (total - total.detach())).sum(dim=1).mean() / (k - 1)
    return fenchel_value(div, r_pos.flatten(), r_neg.flatten()) + score_term


def score_matching_loss(energy, clean: Tensor, noisy: Tensor, sigma: Tensor) -> Tensor:
    """Denoising score matching (Vincent 2011) in its denoiser form, for any image energy ``energy(x, sigma=)``.

    The gradient step D(y) = y - sigma^2 grad_y E(y) is regressed on the clean image: the loss is
    ||D(y) - x||^2 / sigma^2 per pixel (sigma (B,), one noise level per image), which equals the classic DSM
    loss ||sigma grad E + (y - x) / sigma||^2 and weighs every noise level alike. At its minimum D is the
    posterior-mean denoiser (Tweedie) and grad E the score of the noisy photos: a Fisher divergence, not an
    f-divergence. Differentiable in the energy's parameters (a double backward through the network).
    """
    return unrolled_loss(energy, clean, noisy, sigma, 0)


def unrolled_loss(energy, clean: Tensor, noisy: Tensor, sigma: Tensor, steps: int, *,
                  step_fraction: float = STEP_FRACTION, prior_fraction: float = PRIOR_FRACTION) -> Tensor:
    """Score matching through the restorer's own steps (the TNRD / TDV route; issue 29, item 5).

    The estimate restoration runs for a noise-conditional energy (febm.restore): the gradient step
    y - sigma^2 grad E(y, sigma), clamped to [0, 1], then ``steps`` noise-free posterior steps
    x <- x - (eps / 2) (grad E(x, rho sigma) + (x - y) / sigma^2), eps = step_fraction sigma^2 (febm.posterior).
    Every step is differentiated through (create_graph), and the last iterate is regressed on the clean crop as in
    :func:`score_matching_loss` (``steps = 0`` is exactly that loss). This trains the restorer, not a density: a
    regression, not a divergence, and the energy's descent steps need not sample anything.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    s2 = sigma.view(-1, *[1] * (noisy.dim() - 1)).to(noisy.dtype).pow(2)

    def grad(x: Tensor, level: Tensor) -> Tensor:
        (g,) = torch.autograd.grad(energy(x, sigma=level).sum(), x, create_graph=True)
        return g

    y = noisy.detach().requires_grad_(True)
    with torch.enable_grad():
        x = y - s2 * grad(y, sigma)
        if steps:
            x = x.clamp(0.0, 1.0)  # as restoration's start
        for _ in range(steps):
            x = x - 0.5 * step_fraction * s2 * grad(x, prior_fraction * sigma) - 0.5 * step_fraction * (x - y)
    return ((x - clean).pow(2) / s2).mean()


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
        if self.name in NO_CRITIC:
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
        if self.name in REGRESSIONS:
            raise ValueError(f"{self.name!r} has no energy surrogate on samples: use score_matching_loss or "
                             "unrolled_loss")
        if self.divergence is None:
            loss = contrastive_divergence(e_pos, e_neg)
        else:
            if h_pos is None or h_neg is None:
                raise ValueError(f"objective {self.name!r} needs the critic outputs h_pos and h_neg")
            loss = energy_surrogate(self.divergence, e_pos, e_neg, h_pos, h_neg, mean_over_ranks)
        return loss + self.l2 * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
