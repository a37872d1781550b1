"""febm.inverse: deblurring and upscaling against closed forms, on tiny photo models, any size, seeds and errors."""

import json
import shutil

import pytest
import torch
from torch import nn

from febm.inverse import (
    DEFAULTS,
    NOISE_CONDITIONAL,
    PLAIN,
    deblur,
    energy_kind,
    noise_levels,
    restore,
    task_settings,
    upscale,
    write_task_settings,
)
from febm.model import EBM, load_model
from febm.operators import Blur, Downsample, gaussian_kernel, motion_kernel

NET = {"kind": "field", "width": 6, "dilations": [1, 2], "activation": "silu", "spectral_norm": False,
       "zero_mean_stem": True}
SAMPLER = {"method": "authors", "steps": 3, "step_size": 1.0, "noise": 0.005, "grad_clip": 0.01, "clamp": [0.0, 1.0]}


def tiny_model(noise_conditional: bool, channels: int = 3) -> EBM:
    spec = {**NET, "in_channels": channels, "noise_conditional": noise_conditional}
    return EBM("dsm" if noise_conditional else "cd", spec, None, image_channels=channels, crop_size=32,
               dataset="photos", sampler=dict(SAMPLER)).eval()


@pytest.fixture(params=[PLAIN, NOISE_CONDITIONAL])
def model(request):
    return tiny_model(request.param == NOISE_CONDITIONAL)


def _photo(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, c, h // 8 + 2, w // 8 + 2, generator=g)
    return nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)[0]


# --- closed forms -----------------------------------------------------------------------------------------------
class QuadraticField(nn.Module):
    """E(x) = a ||x||^2 / 2 as a sum of local energies (any noise level alike): a Gaussian prior."""

    receptive_radius = 0

    def __init__(self, a: float, noise_conditional: bool):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))  # a parameter: models are found on its device
        self.noise_bias = nn.Linear(2, 1) if noise_conditional else None

    def energy_map(self, x, sigma=None):
        return 0.5 * self.a * x.pow(2).sum(1, keepdim=True)

    def forward(self, x, per_position=False, sigma=None):
        e = self.energy_map(x)
        return e if per_position else e.sum(dim=(1, 2, 3))


def _gaussian_posterior_mean(op, y: torch.Tensor, prior: float, data: float) -> torch.Tensor:
    """argmin prior ||x||^2 / 2 + data ||A x - y||^2 / 2 = (prior I + data A^T A)^-1 data A^T y, the Gaussian
    posterior's mean, by conjugate gradients in float64 run to convergence."""
    y = y.double()
    rhs = data * op.adjoint(y)
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p, rs = r.clone(), (r * r).sum()
    for _ in range(2000):
        ap = prior * p + data * op.gram(p)
        alpha = rs / (p * ap).sum()
        x, r = x + alpha * p, r - alpha * ap
        rs, rs_old = (r * r).sum(), rs
        if rs < 1e-28:
            break
        p = r + rs / rs_old * p
    return x


@pytest.mark.parametrize("op, size", [(Blur(motion_kernel(5, 30)), (32, 36)), (Downsample(2), (32, 33))])
def test_noise_free_plain_steps_converge_to_the_gaussian_posterior_mean(op, size):
    """Plain energy: without noise the forward-backward steps converge to the minimum of E / (T s) + ||A x - y||^2 /
    (2 sigma^2), for E = a ||x||^2 / 2 the Gaussian posterior's mean (Tikhonov), T the model's sampler's."""
    model = tiny_model(False, channels=1)
    model.config["sampler"] = {**SAMPLER, "step_size": 0.5, "noise": 0.01}  # T = noise^2 / (2 step) = 1e-4
    model.energy = QuadraticField(0.5, noise_conditional=False)
    y = 0.2 + 0.6 * torch.rand(1, 1, *size, generator=torch.Generator().manual_seed(1))
    sigma, scale = 0.01, 2.0
    x = restore(model, y, op, sigma, steps=300, noise=0.0, temperature_scale=scale, step_fraction=0.5,
                task="upscale" if isinstance(op, Downsample) else "deblur", progress=False)
    expected = _gaussian_posterior_mean(op, y, 0.5 / (1e-4 * scale), 1 / sigma**2)
    assert (expected > 0).all() and (expected < 1).all()  # the final clamp does not act
    assert torch.allclose(x.double(), expected, atol=1e-5)


@pytest.mark.parametrize("op, size", [(Blur(gaussian_kernel(1.0)), (32, 33)), (Downsample(3), (32, 35))])
def test_noise_conditional_steps_converge_to_the_gaussian_posterior_mean(op, size):
    """Noise-conditional energy (T = 1): with a quadratic E(x, s) the annealed steps' fixed point is the minimiser
    of E / s + ||A x - y||^2 / (2 sigma^2) at any schedule."""
    model = tiny_model(True, channels=1)
    model.energy = QuadraticField(40.0, noise_conditional=True)
    y = 0.2 + 0.6 * torch.rand(1, 1, *size, generator=torch.Generator().manual_seed(2))
    sigma = 0.1
    x = restore(model, y, op, sigma, task="upscale" if isinstance(op, Downsample) else "deblur", steps=200,
                sigma_start=0.2, sigma_floor=0.1, step_fraction=0.5, temperature_scale=0.5, final_denoise=False,
                progress=False)
    expected = _gaussian_posterior_mean(op, y, 40.0 / 0.5, 1 / sigma**2)
    assert torch.allclose(x.double(), expected, atol=1e-5)


def test_steps_zero_returns_the_operators_start(model):
    y = _photo(3, 40, 44)
    for op in (Blur(gaussian_kernel(1.6)), Downsample(2)):
        task = "upscale" if isinstance(op, Downsample) else "deblur"
        start = op.start(y[None], 0.02)[0]
        assert torch.equal(restore(model, y, op, 0.02, steps=0, task=task, progress=False), start)
        stepped = restore(model, y, op, 0.02, steps=2, task=task, progress=False)
        assert stepped.shape == start.shape and not torch.equal(stepped, start)  # the learned steps move it
        assert 0 <= stepped.min() and stepped.max() <= 1


# --- any size, grey and colour --------------------------------------------------------------------------------
def test_deblur_and_upscale_grey_300x200_and_colour_97x131(model):
    grey, colour = _photo(1, 200, 300), _photo(3, 97, 131)
    assert deblur(model, grey, gaussian_kernel(1.6), 2 / 255, steps=2, progress=False).shape == (1, 200, 300)
    assert deblur(model, colour, motion_kernel(9, 30), steps=2, progress=False).shape == (3, 97, 131)
    assert upscale(model, grey, 2, steps=2, progress=False).shape == (1, 400, 600)
    out = upscale(model, colour[None], factor=3, steps=2, progress=False)
    assert out.shape == (1, 3, 291, 393) and 0 <= out.min() and out.max() <= 1


def test_tiles_change_nothing(model):
    y = _photo(3, 97, 131)
    whole = deblur(model, y, gaussian_kernel(1.2), 0.02, steps=2, progress=False)
    tiled = deblur(model, y, gaussian_kernel(1.2), 0.02, steps=2, tile=32, progress=False)
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_each_image_of_a_batch_restores_as_if_alone(model):
    y = torch.stack([_photo(3, 40, 48, 0), _photo(3, 40, 48, 1)])
    both = deblur(model, y, gaussian_kernel(1.0), torch.tensor([0.01, 0.03]), steps=2, noise=0.5, progress=False)
    second = deblur(model, y[1], gaussian_kernel(1.0), 0.03, steps=2, noise=0.5, progress=False)
    assert both.shape == y.shape
    assert torch.allclose(both[1], second, atol=1e-6)  # its own sigma and its own noise stream


# --- details, seeds -------------------------------------------------------------------------------------------
def test_details_report_the_consistency_with_the_observation(model):
    x = _photo(3, 48, 48)
    op = Blur(gaussian_kernel(1.6))
    y = op.forward(x[None])[0]
    out = deblur(model, y, op.kernel, 0.01, steps=2, progress=False, details=True)
    assert out.images.shape == (3, 48, 48) and out.start.shape == (3, 48, 48)
    expected = (op.forward(out.images[None]) - y[None]).flatten(1).norm(dim=1) / (3 * 48 * 48) ** 0.5
    assert torch.allclose(out.residual, expected) and out.sigma.tolist() == pytest.approx([0.01])
    assert out.settings["steps"] == 2


def test_seeds_reproduce_and_none_leaves_the_global_stream_alone():
    model = tiny_model(False)
    y = _photo(3, 40, 40)
    run = lambda seed: deblur(model, y, gaussian_kernel(1.0), 0.02, seed=seed, steps=3, noise=0.5,  # noqa: E731
                              progress=False)
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    assert torch.equal(run(torch.Generator().manual_seed(3)), run(3))
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a = run(None)
    assert torch.equal(torch.rand(3), expected)
    assert not torch.equal(a, run(None))


def test_sigma_none_is_estimated_or_the_tasks_data_sigma(model):
    y = (Blur(gaussian_kernel(1.0)).forward(_photo(3, 64, 64)[None]) + 0.03 * torch.randn(1, 3, 64, 64)).clamp(0, 1)
    out = deblur(model, y, gaussian_kernel(1.0), steps=0, progress=False, details=True)
    assert out.sigma.item() == pytest.approx(0.03, rel=0.2)
    model.config["restoration"] = {"upscale": {"data_sigma": 0.004}}
    assert upscale(model, y, steps=0, progress=False, details=True).sigma.item() == pytest.approx(0.004)


# --- settings --------------------------------------------------------------------------------------------------
def test_task_settings_follow_defaults_config_and_overrides(model):
    kind = energy_kind(model)
    assert task_settings(model, "deblur") == DEFAULTS[kind]
    model.config["restoration"] = {"deblur": {"steps": 7, "val_psnr": 30.0, "grid": []}}
    assert task_settings(model, "deblur") == {**DEFAULTS[kind], "steps": 7}
    assert task_settings(model, "deblur", steps=3)["steps"] == 3
    assert task_settings(model, "upscale") == DEFAULTS[kind]
    with pytest.raises(ValueError, match="unknown setting"):
        task_settings(model, "deblur", chains=2)
    if kind == PLAIN:  # the noise schedule is for noise-conditional energies only
        with pytest.raises(ValueError, match=r"unknown setting.*sigma_floor.*plain energy"):
            task_settings(model, "deblur", sigma_floor=0.01)
    with pytest.raises(ValueError, match="task must be one of deblur, upscale"):
        task_settings(model, "denoise")


def test_write_task_settings_stores_them_in_the_config(tmp_path):
    model = tiny_model(True)
    model.save_pretrained(tmp_path / "m")
    entry = write_task_settings(tmp_path / "m", "upscale", {"steps": 4, "sigma_start": 0.05, "data_sigma": 0.003,
                                                             "val_psnr": 31.5, "tuned_on": "test"})
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["restoration"]["upscale"] == entry
    assert entry["steps"] == 4 and entry["data_sigma"] == 0.003 and entry["val_psnr"] == 31.5
    assert task_settings(load_model(tmp_path / "m"), "upscale")["sigma_start"] == 0.05
    with pytest.raises(ValueError, match="unknown setting"):
        write_task_settings(tmp_path / "m", "deblur", {"prior_weight": 3.0})
    shutil.rmtree(tmp_path / "m")


def test_noise_levels_fall_geometrically():
    levels = noise_levels(0.1, 0.01, 3)
    assert levels == pytest.approx([0.1, 0.1 * 0.1**0.5, 0.01])
    assert noise_levels(0.1, 0.01, 1) == [0.01]


# --- errors ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma, match", [(25, r"\[0, 1\] units.*25/255"), (0, "> 0"), (-0.1, "> 0"),
                                          (float("nan"), "> 0"), ([0.1, 0.2, 0.3], "one value per image")])
def test_bad_sigma_is_refused(model, sigma, match):
    with pytest.raises(ValueError, match=match):
        deblur(model, _photo(3, 40, 40), gaussian_kernel(1.0), sigma, progress=False)


def test_bad_inputs_are_refused(model):
    y = _photo(3, 40, 40)
    with pytest.raises(ValueError, match="photo model"):
        deblur(EBM("cd", {"kind": "conv", "width": 4, "downsamples": 1}, None, image_shape=[1, 8, 8]), y[:1, :8, :8],
               gaussian_kernel(1.0), progress=False)
    with pytest.raises(TypeError, match="LinearOperator"):
        restore(model, y, lambda x: x, progress=False)
    with pytest.raises(ValueError, match="sums to"):
        deblur(model, y, torch.ones(3, 3), progress=False)
    with pytest.raises(ValueError, match="one of 2, 3, 4"):
        upscale(model, y, factor=5, progress=False)
    with pytest.raises(ValueError, match="at least 32 px"):
        upscale(model, _photo(3, 20, 40), progress=False)
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\]"):
        deblur(model, y * 2, gaussian_kernel(1.0), progress=False)
    with pytest.raises(ValueError, match="larger than the image"):
        deblur(model, y, gaussian_kernel(10.0), progress=False)
    with pytest.raises(ValueError, match="steps must be an integer"):
        deblur(model, y, gaussian_kernel(1.0), steps=-1, progress=False)


# --- deepinv (optional) -----------------------------------------------------------------------------------------
def test_deepinv_gradient_descent_with_the_energy_prior_reaches_the_gaussian_posterior_mean():
    """deepinv's own GD solver on ||A x - y||^2 / (2 sigma^2) + E / (T s), with the energy as a deepinv Prior and the
    operator as deepinv physics, lands where our steps do: for E = a ||x||^2 / 2 the Gaussian posterior's mean."""
    deepinv = pytest.importorskip("deepinv")
    from febm.inverse import deepinv_physics, deepinv_prior

    model = tiny_model(False, channels=1)
    model.config["sampler"] = {**SAMPLER, "step_size": 0.5, "noise": 0.01}  # T = 1e-4
    model.energy = QuadraticField(0.5, noise_conditional=False)
    op = Blur(gaussian_kernel(1.0))
    y = 0.2 + 0.6 * torch.rand(1, 1, 32, 35, generator=torch.Generator().manual_seed(3))
    sigma, scale = 0.1, 50.0  # prior weight a / (T s) = 100, data weight 1 / sigma^2 = 100: GD converges fast
    solver = deepinv.optim.GD(prior=deepinv_prior(model, temperature_scale=scale),
                              data_fidelity=deepinv.optim.L2(sigma=sigma), stepsize=2e-3, max_iter=300,
                              early_stop=False)
    x = solver(y, deepinv_physics(op))
    expected = _gaussian_posterior_mean(op, y, 0.5 / (1e-4 * scale), 1 / sigma**2)
    assert torch.allclose(x.double(), expected, atol=1e-5)
    ours = restore(model, y, op, sigma, steps=100, temperature_scale=scale, step_fraction=1.0, progress=False)
    assert torch.allclose(x, ours, atol=1e-5)


@pytest.mark.parametrize("setting, match", [({"step_fraction": 2.0}, "step_fraction must be in"),
                                            ({"temperature_scale": 0}, "temperature_scale must be a number > 0"),
                                            ({"noise": 1.5}, "noise must be in"),
                                            ({"steps": 2.5}, "steps must be an integer")])
def test_bad_settings_are_refused(model, setting, match):
    with pytest.raises(ValueError, match=match):
        deblur(model, _photo(3, 40, 40), gaussian_kernel(1.0), 0.01, progress=False, **setting)


def test_a_schedule_that_rises_is_refused():
    with pytest.raises(ValueError, match="sigma_floor .* must not exceed sigma_start"):
        deblur(tiny_model(True), _photo(3, 40, 40), gaussian_kernel(1.0), 0.01, sigma_start=0.01, sigma_floor=0.02,
               progress=False)


def test_grey_through_a_colour_model_and_colour_through_a_grey_model():
    colour_model, grey_model = tiny_model(True), tiny_model(True, channels=1)
    grey = _photo(1, 40, 44)
    one = deblur(colour_model, grey, gaussian_kernel(1.0), 0.02, steps=2, progress=False)
    three = deblur(colour_model, grey.expand(3, -1, -1), gaussian_kernel(1.0), 0.02, steps=2, progress=False)
    assert one.shape == (1, 40, 44) and three.shape == (3, 40, 44)
    assert torch.allclose(three, one.expand(3, -1, -1))  # a grey photo saved as RGB restores as the grey one
    colour = _photo(3, 40, 44)
    out = upscale(grey_model, colour, 2, 0.01, steps=2, progress=False)
    green = upscale(grey_model, colour[1:2], 2, 0.01, steps=2, progress=False)
    assert out.shape == (3, 80, 88) and torch.allclose(out[1:2], green)
