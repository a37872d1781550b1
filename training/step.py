"""One iteration of Algorithm 1 (single-step f-EBM), shared by the 1-D experiment and image training."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from febm.objectives import Objective


def febm_step(
    energy, critic, objective: Objective, x_pos: Tensor, x_neg: Tensor, opt_energy, opt_critic,
    max_grad_norm: float | None = None, update_energy: bool = True, map_l2: float = 0.0,
    free_offset: bool = False,
) -> dict:
    """Critic ascent step on L, then energy descent step on the Eq. 18 surrogate.

    ``x_neg`` are model samples (detached). The energy forward pass is shared by both steps: the critic
    step treats energies as constants, and the critic's update does not change them. The energy step
    re-reads the critic after its update, as in Algorithm 1. ``max_grad_norm`` clips each network's
    gradient norm: the estimators of chi2-type divergences are heavy-tailed while the model is far off.
    ``update_energy=False`` makes it a critic-only step (a warm-up that lets the critic catch up).
    ``map_l2`` (fully convolutional networks) adds map_l2 * sum_i e_i^2 over every position's local output, for
    the energy and the critic: it bounds each local energy, which a penalty on the sums alone does not, and
    keeps the critic from saturating on crops that it tells apart too easily.
    ``free_offset`` takes the energy's additive constant out of its f-EBM update (the value is unchanged). The
    constant cancels in p_theta and only H + E enters the game, so E and H move it in opposite directions, step
    after step: on photo crops E and H drifted to -3e4 / +3e4 within 30 steps. Left to the critic alone, it
    settles. CD's update has no such component (it is the same with or without).
    """
    x = torch.cat([x_pos, x_neg])  # one forward pass per network over both batches
    n = x_pos.shape[0]
    e_pos, e_neg, energy_penalty = _outputs(energy, x, n, map_l2)
    stats = {"energy_pos": e_pos.mean().item(), "energy_neg": e_neg.mean().item()}
    h_pos = h_neg = None
    if objective.uses_critic:
        h_pos, h_neg, critic_penalty = _outputs(critic, x, n, map_l2)
        loss_critic = objective.critic_loss(h_pos, h_neg, e_pos, e_neg) + critic_penalty
        opt_critic.zero_grad(set_to_none=True)
        loss_critic.backward()
        _clip(critic, max_grad_norm)
        opt_critic.step()
        if not update_energy:
            return stats
        with torch.no_grad():
            h_pos, h_neg = critic(x).split([n, x.shape[0] - n])
        stats.update(loss_critic=loss_critic.item(), critic_pos=h_pos.mean().item(), critic_neg=h_neg.mean().item())
    if free_offset:
        e_pos, e_neg = _without_offset(e_pos, e_neg)
    loss_energy = objective.energy_loss(e_pos, e_neg, h_pos, h_neg, mean_over_ranks=_mean_over_ranks()) + energy_penalty
    opt_energy.zero_grad(set_to_none=True)
    loss_energy.backward()
    _clip(energy, max_grad_norm)
    opt_energy.step()
    stats["loss_energy"] = loss_energy.item()
    return stats


def _outputs(net, x: Tensor, n: int, map_l2: float) -> tuple[Tensor, Tensor, Tensor | float]:
    """The network's outputs on the positives and the negatives, and map_l2 * sum_i e_i^2 over the local outputs
    of a fully convolutional network, averaged over the batch (computed through the wrapper's forward, so DDP
    sees it). A sum over positions, like the energy itself: a mean would dilute the penalty by the number of
    positions, and energies and critics then drifted to thousands (photo pilots, docs/photos.md)."""
    if map_l2 <= 0:
        pos, neg = net(x).split([n, x.shape[0] - n])
        return pos, neg, 0.0
    maps = net(x, per_position=True).float()
    pos, neg = maps.sum(dim=(1, 2, 3)).split([n, x.shape[0] - n])
    return pos, neg, map_l2 * maps.pow(2).sum(dim=(1, 2, 3)).mean()


def _without_offset(e_pos: Tensor, e_neg: Tensor) -> tuple[Tensor, Tensor]:
    """The energies with the gradient of their common shift removed (same values): e - m + m.detach(), m their
    mean over the batch (this process's)."""
    m = torch.cat([e_pos, e_neg]).mean()
    shift = m - m.detach()
    return e_pos - shift, e_neg - shift


def _mean_over_ranks():
    """Under torch.distributed, a function averaging a scalar over processes (None in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None

    def mean(t: Tensor) -> Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t / dist.get_world_size()

    return mean


def _clip(module, max_norm: float | None) -> None:
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
