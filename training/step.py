"""One iteration of Algorithm 1 (single-step f-EBM), shared by the 1-D experiment and image training."""

from __future__ import annotations

import torch
from torch import Tensor

from febm.objectives import Objective


def febm_step(energy, critic, objective: Objective, x_pos: Tensor, x_neg: Tensor, opt_energy, opt_critic) -> dict:
    """Critic ascent step on L, then energy descent step on the Eq. 18 surrogate.

    ``x_neg`` are model samples (detached). The energy forward pass is shared by both steps: the critic
    step treats energies as constants, and the critic's update does not change them. The energy step
    re-reads the critic after its update, as in Algorithm 1.
    """
    e_pos, e_neg = energy(x_pos), energy(x_neg)
    stats = {"energy_pos": e_pos.mean().item(), "energy_neg": e_neg.mean().item()}
    h_pos = h_neg = None
    if objective.uses_critic:
        h_pos, h_neg = critic(x_pos), critic(x_neg)
        loss_critic = objective.critic_loss(h_pos, h_neg, e_pos, e_neg)
        opt_critic.zero_grad(set_to_none=True)
        loss_critic.backward()
        opt_critic.step()
        with torch.no_grad():
            h_pos, h_neg = critic(x_pos), critic(x_neg)
        stats.update(loss_critic=loss_critic.item(), critic_pos=h_pos.mean().item(), critic_neg=h_neg.mean().item())
    loss_energy = objective.energy_loss(e_pos, e_neg, h_pos, h_neg)
    opt_energy.zero_grad(set_to_none=True)
    loss_energy.backward()
    opt_energy.step()
    stats["loss_energy"] = loss_energy.item()
    return stats
