"""The paper's 1-D experiment (training/toy.py): real training runs against the exact optimum."""

import json
import math

import pytest
import torch

from training import toy

TOLERANCE = 0.01  # on |mu - mu*| and |sigma - sigma*|, every objective, seed 0 (docs/toy.md: seeds 0-2)


def run_cli(capsys, *args) -> dict:
    assert toy.main(list(args)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_exact_optimum_of_kl_is_moment_matching():
    mean = sum(w * m for w, m in zip(toy.WEIGHTS, toy.MEANS))
    var = sum(w * (s**2 + m**2) for w, m, s in zip(toy.WEIGHTS, toy.MEANS, toy.STDS)) - mean**2
    assert (mean, var) == pytest.approx((1.01, 3.350525))
    mu, sigma = toy.exact_optimum("kl")
    assert mu == pytest.approx(1.01, abs=1e-4)
    assert sigma == pytest.approx(math.sqrt(3.350525), abs=1e-4)


def test_fast_tanh_is_tanh():
    x = torch.linspace(-20, 20, 1001, dtype=torch.float64, requires_grad=True)
    y = toy.FastTanh()(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(y, torch.tanh(x), atol=1e-12)
    assert torch.allclose(grad, 1 - torch.tanh(x) ** 2, atol=1e-12)


def test_critic_starts_as_the_plain_mlp():
    critic = toy.ToyCritic()
    x = torch.randn(7)
    assert torch.equal(critic(x), critic.mlp(x))
    assert sum(p.numel() for p in critic.parameters()) == 4353 + 2  # 1-64-64-1, plus a and b


def test_bad_div_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        toy.main(["--div", "bogus"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_rejection_needs_a_critic(capsys):
    with pytest.raises(SystemExit):
        toy.main(["--div", "cd", "--rejection"])
    assert "critic" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("div", toy.TOY_DIVERGENCES)
def test_learned_parameters_match_exact_optimum(capsys, div):
    args = ["--div", div, "--json"] + (["--rejection"] if div == "js" else [])
    out = run_cli(capsys, *args)
    assert out["div"] == div
    assert abs(out["mu"] - out["mu_star"]) < TOLERANCE, out
    assert abs(out["sigma"] - out["sigma_star"]) < TOLERANCE, out
    if div == "js":  # the learned density ratio corrects the misspecified model (paper Fig. 2)
        assert out["distance_after"] < 0.5 * out["distance_before"], out
        assert 0.05 < out["acceptance_rate"] < 1.0, out


@pytest.mark.slow
def test_figures_and_table(tmp_path, capsys):
    assert toy.main(["--div", "js", "--steps", "40", "--figures", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| js |" in out and "W1 to data" in out
    assert (tmp_path / "toy_fits.png").stat().st_size > 10_000
    assert (tmp_path / "toy_rejection.png").stat().st_size > 10_000
