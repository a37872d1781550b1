"""Noise-conditional photo energies, denoising score matching, the denoising posterior's chains, and the f-EBM
estimator on conditionals (Eq. 18 per observation): closed forms, term-by-term gradients, training runs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from febm.divergences import get_divergence
from febm.model import load_model
from febm.nets import AtNoiseLevel, build_net
from febm.objectives import conditional_energy_surrogate, fenchel_value, score_matching_loss, unrolled_loss
from febm.posterior import gradient_step, posterior_chains, posterior_mean
from febm.tiling import TiledEnergy
from training.run import main

NC = {"kind": "field", "width": 6, "kernel_size": 3, "dilations": [1, 2], "activation": "silu",
      "spectral_norm": False, "zero_mean_stem": True, "noise_conditional": True}


class Quadratic(nn.Module):
    """E(x, sigma) = a ||x||^2 / 2 (float64): the energy of a Gaussian, whatever sigma."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, x, sigma=None):
        return 0.5 * self.a * x.pow(2).flatten(1).sum(1)


# --- the noise-conditional energy --------------------------------------------------------------------------------
def test_noise_conditional_energy_needs_sigma_and_takes_one_per_image():
    net = build_net(NC)
    with torch.no_grad():
        for p in net.noise_bias.parameters():
            p.normal_()  # zero at initialisation: give sigma an effect
    x = torch.rand(3, 3, 21, 19)
    with pytest.raises(ValueError, match="noise-conditional: give the noise level"):
        net(x)
    with pytest.raises(ValueError, match="one value per image"):
        net(x, sigma=torch.tensor([0.1, 0.2]))
    sigma = torch.tensor([0.02, 0.1, 0.3])
    together = net(x, sigma=sigma)
    alone = torch.cat([net(x[i:i + 1], sigma=sigma[i]) for i in range(3)])
    torch.testing.assert_close(together, alone)
    assert not torch.allclose(net(x, sigma=0.02), net(x, sigma=0.3))
    plain = build_net({**NC, "noise_conditional": False})
    assert torch.equal(plain(x), plain(x, sigma=0.5))  # other nets ignore sigma


def test_a_noise_level_bound_energy_tiles_exactly():
    net = build_net(NC).eval()
    x = torch.rand(2, 3, 70, 53)
    sigma = torch.tensor([0.05, 0.2])
    whole = AtNoiseLevel(net, sigma)
    tiled = TiledEnergy(AtNoiseLevel(net, sigma), tile=32)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ea, eb = whole(xa), tiled(xb)
    (ga,), (gb,) = torch.autograd.grad(ea.sum(), xa), torch.autograd.grad(eb.sum(), xb)
    torch.testing.assert_close(ea, eb, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)


# --- denoising score matching ------------------------------------------------------------------------------------
def test_score_matching_loss_of_a_gaussian_has_its_closed_form_and_minimum_at_the_wiener_filter():
    """x ~ N(0, s^2 I), E = a ||y||^2 / 2: the loss is sigma^2 a^2 s^2 + (1 - sigma^2 a)^2 per pixel, smallest at
    a = 1 / (s^2 + sigma^2), where the gradient step is the Wiener filter."""
    s, sigma = 0.3, 0.2
    gen = torch.Generator().manual_seed(0)
    clean = s * torch.randn(4000, 1, 8, 8, generator=gen, dtype=torch.float64)
    noisy = clean + sigma * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    sig = torch.full((4000,), sigma, dtype=torch.float64)
    best = 1 / (s * s + sigma * sigma)
    for a in (0.5 * best, best, 2 * best):
        loss = score_matching_loss(Quadratic(a), clean, noisy, sig)
        expected = sigma ** 2 * a * a * s * s + (1 - sigma ** 2 * a) ** 2
        assert abs(loss.item() - expected) < 0.02 * expected
    slopes = []
    for a in (best, 2 * best):
        energy = Quadratic(a)
        (slope,) = torch.autograd.grad(score_matching_loss(energy, clean, noisy, sig), energy.a)
        slopes.append(abs(slope.item()))
    assert slopes[0] < 0.05 * slopes[1]  # d loss / d a vanishes at the optimum


def test_the_gradient_step_of_a_quadratic_energy_is_the_wiener_filter():
    s, sigma = 0.3, 0.2
    noisy = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    out = gradient_step(Quadratic(1 / (s * s + sigma * sigma)), noisy, torch.tensor([sigma, sigma]))
    torch.testing.assert_close(out, (s * s / (s * s + sigma * sigma) * noisy).clamp(0, 1))


# --- score matching through the restorer's unrolled steps (--div unrolled) ---------------------------------------
def test_unrolled_loss_is_score_matching_through_restorations_descent_steps():
    """E = a ||x||^2 / 2: the gradient step x0 = (1 - sigma^2 a) y (clamped), then x <- x - (f / 2) (sigma^2 a x +
    x - y), f = step_fraction; the loss is ||x_K - x||^2 / sigma^2 per pixel, and its slope in a is that of the
    whole chain (a finite difference of the closed form), so no step is left out of the gradient."""
    gen = torch.Generator().manual_seed(1)
    clean = 0.3 + 0.4 * torch.rand(6, 1, 5, 5, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([0.05, 0.1, 0.2, 0.05, 0.1, 0.2], dtype=torch.float64)
    noisy = (clean + sigma.view(-1, 1, 1, 1) * torch.randn(clean.shape, generator=gen, dtype=torch.float64))
    s2, f = sigma.view(-1, 1, 1, 1) ** 2, 0.2

    def iterate(a: float, steps: int) -> torch.Tensor:
        x = ((1 - s2 * a) * noisy).clamp(0, 1) if steps else (1 - s2 * a) * noisy
        for _ in range(steps):
            x = x - 0.5 * f * (s2 * a * x + x - noisy)
        return x

    def closed_form(a: float, steps: int) -> float:
        return ((iterate(a, steps) - clean) ** 2 / s2).mean().item()

    a = 3.0
    assert unrolled_loss(Quadratic(a), clean, noisy, sigma, 0).item() == pytest.approx(
        score_matching_loss(Quadratic(a), clean, noisy, sigma).item(), rel=1e-12)
    for steps in (1, 3):
        energy = Quadratic(a)
        loss = unrolled_loss(energy, clean, noisy, sigma, steps, step_fraction=f)
        assert loss.item() == pytest.approx(closed_form(a, steps), rel=1e-10)
        # the estimate restoration and validation run (febm.posterior) is the same iterate
        torch.testing.assert_close(posterior_mean(energy, noisy, sigma, chains=1, steps=0, final_steps=steps,
                                                  step_fraction=f), iterate(a, steps).clamp(0, 1))
        assert loss.item() != pytest.approx(closed_form(a, 0), rel=1e-3)  # the steps change what is regressed
        (slope,) = torch.autograd.grad(loss, energy.a)
        h = 1e-5
        assert slope.item() == pytest.approx((closed_form(a + h, steps) - closed_form(a - h, steps)) / (2 * h),
                                             rel=1e-5)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        unrolled_loss(Quadratic(a), clean, noisy, sigma, -1)


def test_unrolled_run_warm_starts_from_score_matching_and_trains_the_restorer_it_names(dsm_model, photo_folder,
                                                                                       tmp_path):
    run = tmp_path / "unrolled"
    assert main(run_args(photo_folder, run, "--div", "unrolled", "--unroll-steps", "2", "--warm-start",
                         str(dsm_model / "model"), "--max-steps", "6", "--checkpoint-every", "6")) == 0
    model = load_model(run / "model")
    assert model.divergence == "unrolled" and model.critic is None
    assert model.config["training"]["options"]["unroll_steps"] == 2
    warm = load_model(dsm_model / "model").energy
    assert any(not torch.equal(a, b) for a, b in zip(model.energy.state_dict().values(), warm.state_dict().values()))
    lines = [json.loads(ln) for ln in (run / "stats.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [5, 6, 6] and all(math.isfinite(ln["loss_unrolled"]) for ln in lines[:2])
    assert set(lines[-1]) == {"step", "val_psnr_5", "val_psnr_15", "val_psnr_25", "val_psnr_50"}
    card = (run / "model" / "README.md").read_text()
    assert "Unrolled restoration energy" in card and "not a divergence" in card and "2 noise-free" in card
    meta = card.split("---")[1]
    assert "- unrolled-restoration" in meta and "f-divergence" not in meta and "score-matching" not in meta


# --- the posterior's chains --------------------------------------------------------------------------------------
def test_posterior_chains_sample_the_gaussian_posterior_with_ulas_known_bias():
    """Prior N(0, 1/a), y = x + N(0, sigma^2): the posterior has precision lam = a + 1/sigma^2 and mean
    (y / sigma^2) / lam; ULA with step eps keeps the mean and has variance 1 / (lam (1 - eps lam / 4))."""
    a, sigma, fraction = 4.0, 0.25, 0.5
    noisy = torch.full((1, 1, 40, 50), 0.6, dtype=torch.float64)
    sig = torch.tensor([sigma], dtype=torch.float64)
    x = posterior_chains(Quadratic(a), noisy, sig, chains=4, steps=60, step_fraction=fraction,
                         generator=torch.Generator().manual_seed(0), start=torch.zeros_like(noisy))
    lam = a + 1 / sigma ** 2
    eps = fraction * sigma ** 2
    assert x.shape == (1, 4, 1, 40, 50)
    assert abs(x.mean().item() - 0.6 / sigma ** 2 / lam) < 0.01
    assert abs(x.var().item() / (1 / (lam * (1 - eps * lam / 4))) - 1) < 0.05


def test_posterior_chains_check_their_arguments():
    noisy, sig = torch.rand(1, 1, 8, 8, dtype=torch.float64), torch.tensor([0.1], dtype=torch.float64)
    with pytest.raises(ValueError, match="step_fraction"):
        posterior_chains(Quadratic(1.0), noisy, sig, step_fraction=4.0)
    with pytest.raises(ValueError, match="chains >= 1"):
        posterior_chains(Quadratic(1.0), noisy, sig, chains=0)


# --- Eq. 18 per observation ---------------------------------------------------------------------------------------
class Pairs(nn.Module):
    """Local terms u_i(x | y) = tanh(x W1 + y W2) w_i, i < P (float64), standing in for E + likelihood per pixel."""

    def __init__(self, seed: int, positions: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(0.6 * torch.randn(3, 5, generator=g, dtype=torch.float64))
        self.w2 = nn.Parameter(0.6 * torch.randn(3, 5, generator=g, dtype=torch.float64))
        self.w = nn.Parameter(0.5 * torch.randn(5, positions, generator=g, dtype=torch.float64))

    def forward(self, x, y):
        return torch.tanh(x @ self.w1 + y @ self.w2) @ self.w


@pytest.mark.parametrize("name", ["js", "kl", "rkl", "sh"])
@pytest.mark.parametrize("positions", [1, 4])
def test_conditional_surrogate_gradient_is_eq18_with_a_covariance_per_observation(name, positions):
    """Value: mean over positions of the Fenchel terms; gradient: their Eq. 18 with g = mean_i Fstar(r_i), the
    covariance taken per observation over its K chains, and grad U = sum_i grad u_i."""
    div = get_divergence(name)
    g = torch.Generator().manual_seed(1)
    b, k = 4, 3
    y = torch.randn(b, 3, generator=g, dtype=torch.float64)
    x_pos = y + 0.3 * torch.randn(b, 3, generator=g, dtype=torch.float64)
    x_neg = y[:, None] + 0.5 * torch.randn(b, k, 3, generator=g, dtype=torch.float64)
    energy, critic = Pairs(2, positions), Pairs(3, positions)
    theta = list(energy.parameters())
    y_neg = y[:, None].expand(b, k, 3)
    with torch.no_grad():
        h_pos, h_neg = critic(x_pos, y), critic(x_neg, y_neg)  # (B, P), (B, K, P)
    u_pos, u_neg = energy(x_pos, y), energy(x_neg, y_neg)
    loss = conditional_energy_surrogate(div, u_pos, u_neg, h_pos, h_neg)
    torch.testing.assert_close(loss, fenchel_value(div, (h_pos + u_pos).flatten(), (h_neg + u_neg).flatten()))
    got = torch.cat([t.flatten() for t in torch.autograd.grad(loss, theta)])

    def grads(values):  # one row of d value / d theta per entry
        return torch.stack([torch.cat([t.flatten() for t in torch.autograd.grad(v, theta, retain_graph=True)])
                            for v in values.flatten()]).view(*values.shape, -1)

    du_pos, du_neg = grads(energy(x_pos, y)), grads(energy(x_neg, y_neg))  # (B, P, n), (B, K, P, n)
    r_pos, r_neg = (h_pos + u_pos).detach(), (h_neg + u_neg).detach()
    d = lambda fn, r: torch.func.vmap(torch.func.grad(fn))(r.flatten()).view(r.shape)  # noqa: E731
    gq = div.Fstar(r_neg).mean(-1)  # (B, K)
    cov = ((gq - gq.mean(1, keepdim=True))[..., None] * du_neg.sum(2)).sum(1) / (k - 1)  # (B, n)
    expected = ((d(div.T, r_pos)[..., None] * du_pos).mean((0, 1))
                - (d(div.Fstar, r_neg)[..., None] * du_neg).mean((0, 1, 2)) + cov.mean(0))
    torch.testing.assert_close(got, expected)


def test_conditional_surrogate_needs_two_chains_per_observation():
    div = get_divergence("js")
    with pytest.raises(ValueError, match="K >= 2"):
        conditional_energy_surrogate(div, torch.zeros(3), torch.zeros(3, 1), torch.zeros(3), torch.zeros(3, 1))


# --- training runs -----------------------------------------------------------------------------------------------
def run_args(source, run_dir, *extra):
    return ["--dataset", source, "--crop-size", "16", "--net", json.dumps(NC), "--batch-size", "4", "--l2", "0",
            "--max-steps", "4", "--log-every", "1", "--checkpoint-every", "100", "--sample-every", "100",
            "--buffer-size", "1", "--run-dir", str(run_dir), "--no-progress", *extra]


@pytest.fixture(scope="module")
def dsm_model(photo_folder, tmp_path_factory):
    run = tmp_path_factory.mktemp("dsm") / "run"
    assert main(run_args(photo_folder, run, "--div", "dsm", "--lr", "1e-2")) == 0
    return run


def test_score_matching_run_exports_a_noise_conditional_energy_without_critic(dsm_model):
    model = load_model(dsm_model / "model")
    assert model.divergence == "dsm" and model.critic is None and model.energy.noise_bias is not None
    lines = [json.loads(ln) for ln in (dsm_model / "stats.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [1, 2, 3, 4] and all(math.isfinite(ln["loss_dsm"]) for ln in lines)
    card = (dsm_model / "model" / "README.md").read_text()
    assert "score matching" in card
    meta = card.split("---")[1]  # the Hub's metadata: it restores (image to image), by score matching
    assert "pipeline_tag: image-to-image" in meta and "- score-matching" in meta and "f-divergence" not in meta


@pytest.mark.parametrize("div", ["js", "cd"])
def test_posterior_run_warm_starts_from_the_score_matching_energy(dsm_model, photo_folder, tmp_path, div):
    run = tmp_path / "post"
    assert main(run_args(photo_folder, run, "--div", div, "--posterior", "--posterior-chains", "2",
                         "--posterior-steps", "2", "--warm-start", str(dsm_model / "model"), "--max-steps", "6",
                         "--checkpoint-every", "6")) == 0
    model = load_model(run / "model")
    assert model.config["posterior"] == {"chains": 2, "steps": 2, "step_fraction": 0.2, "prior_fraction": 0.5}
    if div == "js":
        assert model.critic.stem.in_channels == 6  # x and the observation y
    lines = [json.loads(ln) for ln in (run / "stats.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [5, 6, 6]  # counts on from the warm start's 4 steps; then validation
    assert all(math.isfinite(v) for ln in lines for v in ln.values())
    assert set(lines[-1]) == {"step", "val_psnr_5", "val_psnr_15", "val_psnr_25", "val_psnr_50"}


def test_a_frozen_start_starts_the_chains_and_survives_a_resume(dsm_model, photo_folder, tmp_path, monkeypatch):
    """--frozen-start: the chains start from the warm start's gradient step, never trained, also after a resume."""
    from training import posterior as training_posterior

    warm = load_model(dsm_model / "model").energy
    seen = []
    real = training_posterior.posterior_chains

    def spy(energy, noisy, sigma, **kw):
        seen.append(kw["start"])
        torch.testing.assert_close(kw["start"], gradient_step(warm, noisy, sigma))  # the warm start's, unchanged
        return real(energy, noisy, sigma, **kw)

    monkeypatch.setattr(training_posterior, "posterior_chains", spy)
    run = tmp_path / "post"
    args = run_args(photo_folder, run, "--div", "js", "--posterior", "--posterior-chains", "2", "--posterior-steps",
                    "1", "--lr", "1e-2", "--warm-start", str(dsm_model / "model"), "--frozen-start",
                    "--checkpoint-every", "1")
    assert main(args + ["--max-steps", "6"]) == 0
    assert main(["--resume", str(run), "--max-steps", "8"]) == 0
    assert len(seen) == 4 and all(s is not None for s in seen)
    trained = load_model(run / "model").energy
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), warm.state_dict().values()))


def test_dsm_weight_adds_score_matching_to_the_posterior_energys_loss(dsm_model, photo_folder, tmp_path, monkeypatch):
    """--dsm-weight w: the energy's loss is the game's plus w times score matching on the same batch."""
    from training import posterior as training_posterior

    seen = []
    real = training_posterior.score_matching_loss

    def spy(energy, clean, noisy, sigma):
        loss = real(energy, clean, noisy, sigma)
        seen.append((clean.shape, loss.item()))
        return loss

    monkeypatch.setattr(training_posterior, "score_matching_loss", spy)
    base = run_args(photo_folder, tmp_path / "a", "--div", "js", "--posterior", "--posterior-chains", "2",
                    "--posterior-steps", "1", "--warm-start", str(dsm_model / "model"), "--max-steps", "6")
    assert main(base) == 0 and seen == []  # off by default
    weighted = [a if a != str(tmp_path / "a") else str(tmp_path / "b") for a in base] + ["--dsm-weight", "1000"]
    assert main(weighted) == 0
    assert len(seen) == 2 and all(shape[0] == 4 and loss > 0 for shape, loss in seen)  # once per step, the batch
    plain = json.loads((tmp_path / "a" / "stats.jsonl").read_text().splitlines()[0])
    added = json.loads((tmp_path / "b" / "stats.jsonl").read_text().splitlines()[0])
    # same batch and chains (same seed): the first step's energy loss differs by exactly w times the DSM loss
    assert added["loss_energy"] - plain["loss_energy"] == pytest.approx(1000 * seen[0][1], rel=1e-3)


@pytest.mark.parametrize("extra, message", [
    (["--div", "js", "--posterior", "--posterior-chains", "1"], "posterior-chains >= 2"),
    (["--div", "js", "--posterior", "--net", json.dumps({**NC, "noise_conditional": False})], "noise-conditional"),
    (["--div", "dsm", "--sigma-min-255", "0"], "sigma-min-255"),
    (["--div", "js", "--posterior", "--frozen-start"], "--frozen-start needs --posterior and --warm-start"),
    (["--div", "dsm", "--dsm-weight", "1"], "--dsm-weight must be >= 0 and needs --posterior"),
    (["--div", "unrolled", "--net", json.dumps({**NC, "noise_conditional": False})], "--div unrolled trains a noise"),
    (["--div", "unrolled", "--unroll-steps", "-1"], "--unroll-steps must be >= 0"),
])
def test_bad_photo_training_arguments_fail_clearly(photo_folder, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        main(run_args(photo_folder, tmp_path / "run") + extra)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# --- the direct residual denoiser (bench.photo_supervised) ----------------------------------------------------
def test_residual_reference_trains_resumes_and_denoises_better_than_its_input(photo_folder, tmp_path):
    from bench import photo_supervised

    args = ["--run-dir", str(tmp_path / "ref"), "--dataset", photo_folder, "--net", json.dumps(NC), "--crop-size", "24",
            "--val-crop", "32", "--batch-size", "4", "--lr", "3e-3", "--checkpoint-every", "10"]
    photo_supervised.main(args + ["--cpu-minutes", "0.02"])
    first = json.loads((tmp_path / "ref" / "denoiser.json").read_text())
    photo_supervised.main(args + ["--cpu-minutes", "0.06"])
    second = json.loads((tmp_path / "ref" / "denoiser.json").read_text())
    assert second["steps"] > first["steps"] > 0 and second["cpu_minutes"] >= 0.06  # continued, not restarted
    net = photo_supervised.load(tmp_path / "ref")
    crops = torch.rand(2, 3, 32, 32)
    sigma = torch.full((2,), 25 / 255)
    assert net(crops, sigma).shape == crops.shape
    # trained on smooth photos: at sigma = 25/255 it beats the noisy input on their validation crops
    noisy_psnr = 10 * math.log10(1 / (25 / 255) ** 2)
    assert second["validation"]["val_psnr_25"] > noisy_psnr + 1


def test_pilot_table_states_its_command_protocol_start_and_runs():
    from bench.photo_pilots import markdown

    row = {"divergence": "js", "steps": 9200, "estimator": "step", "psnr": {"val_psnr_5": 41.0, "val_psnr_25": 31.5},
           "s_per_mpx": 8.0}
    result = {"command": "python -m bench.photo_pilots runs/a/model", "protocol": "16 crops", "threads": 1,
              "start_model": "checkpoints/photo-dsm",
              "rows": [{**row, "model": m} for m in ("runs/a/model", "runs/b/snapshots/step_009100", "checkpoints/x")]}
    text = markdown(result)
    assert text.startswith("Validation PSNR (dB) from `python -m bench.photo_pilots runs/a/model`")
    assert "16 crops; 1 torch thread(s); chains start from the gradient step of checkpoints/photo-dsm." in text
    assert "| model | objective | steps | estimator | σ=5 | σ=25 | s/Mpx |" in text
    assert "| a | js | 9200 | step | 41.00 | 31.50 | 8.0 |" in text  # a run's model folder by its run
    assert "| b/step_009100 |" in text and "| x |" in text


def test_a_runs_checkpoint_exports_the_model_the_run_exports(dsm_model, tmp_path):
    from training.export import main as export_main

    assert export_main([str(dsm_model), "--out", str(tmp_path / "snap")]) == 0
    ours, theirs = load_model(tmp_path / "snap"), load_model(dsm_model / "model")
    for k, v in theirs.state_dict().items():
        assert torch.equal(v, ours.state_dict()[k]), k
    assert ours.config["training"]["steps"] == theirs.config["training"]["steps"] == 4
    with pytest.raises(SystemExit):
        export_main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    from training.checkpoint import load_state

    assert export_main([str(dsm_model), "--out", str(tmp_path / "raw"), "--weights", "raw"]) == 0
    raw, state = load_model(tmp_path / "raw"), load_state(dsm_model / "state.safetensors")
    for k, v in raw.energy.state_dict().items():
        assert torch.equal(v, state["model"]["energy." + k]), k
    assert raw.config["training"]["exported_weights"].startswith("raw")


def test_the_posterior_asks_the_energy_at_a_fraction_of_the_observations_noise():
    seen = []

    class Recorder(Quadratic):
        def forward(self, x, sigma=None):
            seen.append(torch.as_tensor(sigma).clone())
            return super().forward(x)

    noisy = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    posterior_chains(Recorder(1.0), noisy, torch.tensor([0.1, 0.3]), prior_fraction=0.5, steps=2,
                     start=noisy, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 2 and all(torch.allclose(s.double(), torch.tensor([0.05, 0.15], dtype=torch.float64))
                                  for s in seen)


def test_tune_picks_a_noise_conditional_models_steps_from_its_gradient_step(dsm_model):
    """Per sigma the start is the energy's own gradient step (no curvature, no temperature); inpainting tunes the
    annealed steps and their top level, and the smooth fill alone (steps 0) is in its grid."""
    from training import tune

    result = tune.tune(str(dsm_model / "model"), n=2, inpaint_steps=(0, 2),
                       photo_grid={"descent": (1,), "chains": ((1, 0, 2),), "inpaint_levels": (20 / 255, 40 / 255)},
                       log=lambda line: None)
    denoising, inpainting = result["denoise"], result["inpaint"]
    assert "prior_curvature" not in denoising and {r["temperature_scale"] for r in denoising["grid"]} == {1.0}
    assert {(r["steps"], r["descent"], r["chains"]) for r in denoising["grid"]} == {(0, 0, 1), (0, 1, 1), (1, 0, 2)}
    blends = {r["wiener_weight"] for r in denoising["grid"] if r["steps"] == r["descent"] == 0}
    assert blends == {0.0, *tune.NOISE_CONDITIONAL_GRID["wiener_weights"]}
    assert all(e["wiener_weight"] in blends for e in denoising["per_sigma"])
    for sigma in {r["sigma_255"] for r in denoising["grid"]}:  # descent from every blend, not only the best start
        assert {r["wiener_weight"] for r in denoising["grid"]
                if r["sigma_255"] == sigma and (r["steps"], r["descent"]) == (0, 1)} == blends
    for entry in denoising["per_sigma"]:  # the start: the best blend by mean PSNR, whatever it lost to the step
        starts = [r["psnr"] for r in denoising["grid"]
                  if r["steps"] == r["descent"] == 0 and round(r["sigma_255"] / 255, 6) == entry["sigma"]]
        assert len(starts) == len(blends) and entry["start_psnr"] == max(starts)
    assert all(e["val_psnr"] >= e["start_psnr"] for e in denoising["per_sigma"])
    assert [(r["steps"], r["sigma_start"]) for r in inpainting["grid"]] == [(0, 20 / 255), (2, 20 / 255),
                                                                            (2, 40 / 255)]
    assert inpainting["val_psnr"] == max(r["psnr"] for r in inpainting["grid"])
