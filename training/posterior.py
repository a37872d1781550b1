"""Training the photo energy on the posterior it restores with (``--posterior``; issue 29, deliverable 3).

For a clean crop x and its observation y = x + N(0, sigma^2) (sigma from a ladder, training.photos), the model's
conditional is q(x | y) ∝ exp(-U(x | y)), U = E(x, rho sigma) + ||y - x||^2 / (2 sigma^2) (febm.posterior), and the
data's p(x | y) has x itself as an exact sample. The f-EBM game runs between these two conditionals:

    L = E_{p(x, y)}[T(r(x, y))] - E_{p(y) q(x'|y)}[Fstar(r(x', y))],    r = H(x, y, sigma) + U(x | y)

The critic sees the observation (its input is x and y stacked: 2C channels, noise-conditional like the energy),
so H absorbs log Z(y). r, H and U are sums of local terms, and the game runs per pixel (r_i = h_i + u_i): on a
96-px crop the whole log-ratio is thousands of nats and would saturate every divergence's bounded exponentials;
the local game is a sum of f-divergences between the patches of p(x | y) and q(x | y). Model samples are exactly the chains restoration
runs (``febm.posterior.posterior_chains``: the gradient step of y, then ULA on U), K >= 2 per observation, so
that the score term of Eq. 18 is centred per observation (febm.objectives.conditional_energy_surrogate).
``cd`` is the maximum-likelihood (KL) version: E_p[U(x|y)] - E_q[U(x'|y)], diffusion recovery likelihood's
update (Gao et al. 2021) for one noise level at a time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from febm.objectives import Objective, conditional_energy_surrogate, contrastive_divergence, score_matching_loss
from febm.posterior import gradient_step, posterior_chains
from training.step import _clip


def pairs(clean: Tensor, negatives: Tensor, noisy: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The data pairs then the model pairs, flattened: (x, y, sigma) with B + B K rows."""
    k = negatives.shape[1]
    x = torch.cat([clean, negatives.flatten(0, 1)])
    y = torch.cat([noisy, noisy.repeat_interleave(k, dim=0)])
    s = torch.cat([sigma, sigma.repeat_interleave(k)])
    return x, y, s


def local_conditional_energies(energy, x: Tensor, y: Tensor, sigma: Tensor, prior_sigma: Tensor,
                               baseline: Tensor) -> tuple[Tensor, Tensor]:
    """U(x | y) split per pixel, (N, H W), in its two parts: the energy's local terms at the prior's level less
    ``baseline``, and the pixel's likelihood term sum_c (y - x)^2 / (2 sigma^2). ``baseline`` (the energy's local terms at the observation itself,
    detached). The baseline is a function of y alone: it cancels in q(x | y) and in the score term, and in r it is
    part of the critic (which may depend on y); it removes the warm start's arbitrary level of E(., sigma) (tens
    of nats per pixel, varying with sigma) so that the local log-ratios start near zero."""
    e = energy(x, per_position=True, sigma=prior_sigma).float().flatten(1)
    likelihood = (x - y).float().pow(2).sum(1).flatten(1) / (2 * sigma.float().view(-1, 1) ** 2)
    return e - baseline, likelihood


def observation_baseline(energy, noisy: Tensor, sigma: Tensor, chains: int) -> Tensor:
    """The energy's local terms at each observation, detached, repeated for its data pair and its chains."""
    with torch.no_grad():
        e = energy(noisy, per_position=True, sigma=sigma).float().flatten(1)
    return torch.cat([e, e.repeat_interleave(chains, dim=0)])


def posterior_step(energy, critic, sampling_energy, objective: Objective, clean: Tensor, noisy: Tensor,
                   sigma: Tensor, opt_energy, opt_critic, *, chains: int, steps: int, step_fraction: float,
                   prior_fraction: float, generator, max_grad_norm: float | None = None,
                   free_offset: bool = True, map_l2: float = 0.0, start_energy=None, dsm_weight: float = 0.0) -> dict:
    """One iteration of Algorithm 1 on conditionals: chains from q(. | y), a critic ascent step, an energy step.

    The f-divergence game runs per pixel (febm.objectives.conditional_energy_surrogate): r_i = h_i + u_i with
    the critic's and U's local terms. ``cd`` is global maximum likelihood, E_p[U] - E_q[U].
    ``sampling_energy`` is the unwrapped energy the chains differentiate (DDP would sync its input gradients).
    ``start_energy``: a frozen energy whose gradient step starts the chains in place of the trained one's
    (``--frozen-start``). ``dsm_weight``: score matching on the observation's level added to the energy's loss, so
    that the gradient step restoration starts from stays trained (``--dsm-weight``).
    """
    b = clean.shape[0]
    start = None if start_energy is None else gradient_step(start_energy, noisy, sigma)
    negatives = posterior_chains(sampling_energy, noisy, sigma, prior_fraction=prior_fraction, chains=chains,
                                 steps=steps, step_fraction=step_fraction, generator=generator, start=start)
    x, y, s = pairs(clean, negatives, noisy, sigma)
    baseline = observation_baseline(energy, noisy, prior_fraction * sigma, chains)
    contrast, likelihood = local_conditional_energies(energy, x, y, s, prior_fraction * s, baseline)
    u = contrast + likelihood
    # bounds each local energy's contrast to the observation's, as map_l2 does for the unconditional photo f-EBMs:
    # without it CD's energies ran off (beyond 1e4 per pixel in 70 steps)
    penalty = map_l2 * contrast.pow(2).sum(1).mean()
    if dsm_weight:
        penalty = penalty + dsm_weight * score_matching_loss(energy, clean, noisy, sigma)
    if free_offset:  # a constant in the local energies cancels in q(x | y): leave it to the critic (febm_step)
        m = u.mean()
        u = u - (m - m.detach())
    u_pos, u_neg = u[:b], u[b:].view(b, chains, -1)
    stats = {"energy_pos": u_pos.sum(1).mean().item(), "energy_neg": u_neg.sum(2).mean().item(),
             "chain_mse": (negatives - clean[:, None]).pow(2).mean().item()}
    if not objective.uses_critic:
        loss = contrastive_divergence(u_pos.sum(1), u_neg.sum(2).flatten()) + penalty
        _descend(energy, opt_energy, loss, max_grad_norm)
        return {**stats, "loss_energy": loss.item()}
    pair_input = torch.cat([x, y], dim=1)
    h = critic(pair_input, per_position=True, sigma=s).float().flatten(1)
    loss_critic = objective.critic_loss(h[:b].flatten(), h[b:].flatten(), u_pos.flatten(), u_neg.flatten())
    _descend(critic, opt_critic, loss_critic, max_grad_norm)
    with torch.no_grad():
        h = critic(pair_input, per_position=True, sigma=s).float().flatten(1)
    h_pos, h_neg = h[:b], h[b:].view(b, chains, -1)
    loss = conditional_energy_surrogate(objective.divergence, u_pos, u_neg, h_pos, h_neg) + penalty
    _descend(energy, opt_energy, loss, max_grad_norm)
    r_pos, r_neg = h_pos + u_pos.detach(), h_neg + u_neg.detach()
    return {**stats, "loss_critic": loss_critic.item(), "ratio_pos": r_pos.mean().item(),
            "ratio_neg": r_neg.mean().item(), "loss_energy": loss.item()}


def _descend(net, opt, loss: Tensor, max_grad_norm: float | None) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    _clip(net, max_grad_norm)
    opt.step()
