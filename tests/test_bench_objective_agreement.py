"""bench.objective_agreement's pieces against closed forms (the benchmark itself needs a trained model)."""

from types import SimpleNamespace

import torch
from torch import nn

from bench.objective_agreement import best_critic_shift, centred_energy_change, energy_gradient
from febm.objectives import Objective


class Linear(nn.Module):
    """E(x) = w . x + b, so dE/dtheta is (x, 1) and a step along -g changes E(x) by -(g_w . x + g_b)."""

    def __init__(self, dim: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.layer = nn.Linear(dim, 1).double()
        with torch.no_grad():
            self.layer.weight.copy_(0.1 * torch.randn(1, dim, generator=gen, dtype=torch.float64))
            self.layer.bias.fill_(0.5 * seed)  # the critic (seed 1) sits off the KL level

    def forward(self, x):
        return self.layer(x.flatten(1)).squeeze(1)


def toy_model():
    return SimpleNamespace(energy=Linear(6, 0), critic=Linear(6, 1))


def batches():
    gen = torch.Generator().manual_seed(2)
    return (torch.randn(64, 6, generator=gen, dtype=torch.float64),
            0.5 + torch.randn(64, 6, generator=gen, dtype=torch.float64))


def test_kl_critic_shift_is_minus_log_mean_ratio_on_model_samples():
    # max_c E_p[1 + r + c] - E_q[e^(r + c)]  =>  e^c E_q[e^r] = 1
    gen = torch.Generator().manual_seed(0)
    r_pos, r_neg = torch.randn(100, generator=gen), 0.3 * torch.randn(100, generator=gen) - 0.4
    expected = -torch.log(torch.exp(r_neg.double()).mean()).item()
    assert abs(best_critic_shift(Objective("kl"), r_pos.double(), r_neg.double()) - expected) <= 1e-3


def test_kl_gradient_at_its_critic_level_is_contrastive_divergence():
    # KL's Eq. 18 gradient is E_p[grad E] - E_q[e^r] E_q[grad E]; at the shifted level E_q[e^r] = 1
    model, (x_pos, x_neg) = toy_model(), batches()
    kl, shift = energy_gradient(model, Objective("kl"), x_pos, x_neg)
    cd, _ = energy_gradient(model, Objective("cd"), x_pos, x_neg)
    assert shift != 0.0
    assert torch.allclose(kl, cd, rtol=0, atol=2e-3 * cd.norm().item())
    unshifted, zero = energy_gradient(model, Objective("kl"), x_pos, x_neg, shift_critic=False)
    assert zero == 0.0 and not torch.allclose(unshifted, cd, rtol=0, atol=2e-3 * cd.norm().item())


def test_centred_energy_change_of_a_linear_energy():
    model, (x, _) = toy_model(), batches()
    g = torch.arange(7, dtype=torch.float64) - 3.0  # (weight gradient, bias gradient)
    before = torch.nn.utils.parameters_to_vector(model.energy.parameters()).clone()
    change = centred_energy_change(model, g, x)
    exact = -(x @ g[:6] + g[6])
    assert torch.allclose(change, exact - exact.mean(), atol=1e-6)
    assert torch.equal(torch.nn.utils.parameters_to_vector(model.energy.parameters()), before)  # restored
