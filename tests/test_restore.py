"""The restoration API on tiny untrained models: shapes, ranges, seeds, masks, errors, closed forms."""

import math

import pytest
import torch
from torch import nn

from febm.model import EBM, load_model
from febm.restore import (
    METHOD_DEFAULTS,
    PosteriorEnergy,
    Restoration,
    denoise,
    estimate_sigma,
    generate,
    generation_sampler,
    inpaint,
    model_sampler,
    task_settings,
    temperature,
)
from febm.sampling import METHODS

NET = {"kind": "conv", "in_channels": 1, "width": 4, "downsamples": 2}
SHAPE = (1, 13, 11)  # odd sizes catch shape bugs
SAMPLER = {"method": "authors", "steps": 3, "step_size": 10.0, "noise": 0.005, "grad_clip": 0.01}


def make_model(divergence="js", shape=SHAPE, **sampler):
    net = {**NET, "in_channels": shape[0]}
    return EBM(divergence, energy=net, critic=None if divergence == "cd" else net, dataset="test",
               image_shape=list(shape), sampler={**SAMPLER, **sampler}).eval()


@pytest.fixture
def model():
    return make_model()


@pytest.fixture
def images():
    return torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(1))


def test_generate_shape_range_and_seed(model):
    a = generate(model, 5, seed=3, progress=False)
    assert a.shape == (5, *SHAPE) and a.dtype == torch.float32
    assert 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, generate(model, 5, seed=3, progress=False))
    assert not torch.equal(a, generate(model, 5, seed=4, progress=False))


def test_generate_batches_and_chain(model):
    out = generate(model, 5, seed=0, batch_size=2, return_chain=True, progress=False, details=True)
    assert isinstance(out, Restoration)
    assert out.images.shape == (5, *SHAPE)
    assert out.chain.shape == (SAMPLER["steps"] + 1, 5, *SHAPE)
    assert torch.equal(out.chain[-1], out.images)


def test_generate_rejection_reports_rate_and_keeps_n(model):
    out = generate(model, 6, seed=0, rejection=True, batch_size=32, progress=False, details=True)
    assert out.images.shape == (6, *SHAPE)
    assert 0 < out.acceptance_rate <= 1
    # a bound at the lowest quantile accepts almost everything
    easy = generate(model, 6, seed=0, rejection=True, rejection_quantile=1e-6, batch_size=32, progress=False,
                    details=True)
    assert easy.acceptance_rate > out.acceptance_rate or out.acceptance_rate == 1


def test_generate_rejection_needs_a_critic():
    with pytest.raises(ValueError, match="no critic"):
        generate(make_model("cd"), 2, rejection=True, progress=False)


def test_generate_rejection_gives_up_with_a_clear_error(model):
    with pytest.raises(RuntimeError, match="max_proposals"):
        generate(model, 64, seed=0, rejection=True, batch_size=8, max_proposals=8, progress=False)


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_generate_rejects_bad_n(model, n):
    with pytest.raises(ValueError, match="n must be"):
        generate(model, n)


def test_denoise_shape_seed_and_sigma(model, images):
    noisy = (images + 0.1 * torch.randn_like(images)).clamp(0, 1)
    a = denoise(model, noisy, sigma=0.1, seed=0, progress=False)
    assert a.shape == noisy.shape and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, denoise(model, noisy, sigma=0.1, seed=0, progress=False))
    single = denoise(model, noisy[0], sigma=0.1, seed=0, progress=False)  # (C, H, W) is one image
    assert single.shape == (1, *SHAPE)
    out = denoise(model, noisy, sigma=None, progress=False, details=True)
    assert out.sigma.shape == (2,) and (out.sigma > 0).all()


def test_denoise_chains_mean_is_the_average_of_the_chains(model, images):
    out = denoise(model, images, sigma=0.2, chains=3, seed=0, progress=False, return_chain=True, details=True)
    one = denoise(model, images, sigma=0.2, chains=3, mean=False, seed=0, progress=False)
    assert out.images.shape == images.shape and out.chain.shape == (4, 2, *SHAPE)
    assert torch.equal(one, out.chain[-1]) and torch.equal(one, out.sample)  # the first chain's sample
    assert not torch.equal(one, out.images)


class Quadratic(nn.Module):
    """E(x) = ||x - m||^2 / (2 s^2): a Gaussian prior N(m, s^2 I)."""

    def __init__(self, m: float, s: float):
        super().__init__()
        self.m, self.s = m, s
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return (x - self.m).pow(2).flatten(1).sum(1) / (2 * self.s ** 2) + 0 * self.dummy


def test_denoise_posterior_mean_matches_the_gaussian_closed_form():
    """Prior N(m, s^2), y = x + N(0, sigma^2): E[x | y] = (y s^2 + m sigma^2) / (s^2 + sigma^2)."""
    m, s, sigma = 0.5, 0.1, 0.1
    model = make_model(method="mala", steps=400, step_size=0.002)
    model.energy = Quadratic(m, s)
    assert temperature(model) == 1.0  # MALA samples exp(-E)
    y = torch.full((1, *SHAPE), 0.7)
    out = denoise(model, y, sigma=sigma, chains=64, seed=0, progress=False)
    expected = (0.7 * s ** 2 + m * sigma ** 2) / (s ** 2 + sigma ** 2)  # 0.6
    assert out.mean().item() == pytest.approx(expected, abs=0.01)


def test_authors_temperature_scales_the_likelihood():
    model = make_model()
    assert temperature(model) == pytest.approx(0.005 ** 2 / 20)
    model.config["sampler"]["temperature"] = 0.5  # the authors' T follows from step and noise: nothing to set
    with pytest.raises(ValueError, match="no temperature to set"):
        temperature(model)


def test_another_method_brings_its_own_step_size_at_the_models_temperature():
    model = make_model()  # the authors' sampler: step 10, noise 0.005, T = 1.25e-6
    t = temperature(model)
    for method in ("ula", "mala"):
        sampler = model_sampler(model, method=method)
        assert sampler.method == method and sampler.step_size == METHOD_DEFAULTS[method]["step_size"]
        assert sampler.steps == SAMPLER["steps"] and sampler.clamp == (0.0, 1.0)  # shared settings are kept
        assert temperature(model, sampler) == pytest.approx(t)  # every method targets the same exp(-E/T)
    model.config["sampler"]["mala"] = {"step_size": 0.01, "temperature": 0.5}  # tuned for MALA: used as is
    sampler = model_sampler(model, method="mala", steps=7)
    assert (sampler.step_size, sampler.steps, temperature(model, sampler)) == (0.01, 7, 0.5)
    ula_model = make_model(method="ula", step_size=0.1, temperature=0.2)
    authors = model_sampler(ula_model, method="authors")  # the authors' own settings, not ULA's step
    assert (authors.step_size, authors.noise, authors.grad_clip) == (10.0, 0.005, 0.01)
    assert temperature(ula_model) == 0.2


def test_denoise_likelihood_weight_is_temperature_over_sigma_squared():
    """The authors' sampler at T = n^2/(2s) = 0.01 on E(x) + (T/sigma^2) ||x - y||^2 / 2 with a Gaussian E draws
    from prior N(m, s_p^2 T) times likelihood N(y, sigma^2). Here s_p^2 T = sigma^2, so E[x | y] = (m + y) / 2;
    the weight inverted (sigma^2 / T = 4) gives 0.69, without T (1/sigma^2) 0.70, T^2/sigma^2 0.50."""
    m, y, sigma, t, step = 0.5, 0.7, 0.2, 0.01, 0.1
    model = make_model(steps=150, step_size=step, noise=math.sqrt(2 * step * t), grad_clip=None)
    model.energy = Quadratic(m, sigma / math.sqrt(t))  # E curvature 0.25 = the likelihood's: chains settle fast
    assert temperature(model) == pytest.approx(t)
    out = denoise(model, torch.full((1, *SHAPE), y), sigma=sigma, chains=16, seed=0, progress=False)
    assert out.mean().item() == pytest.approx((m + y) / 2, abs=0.012)  # 4 standard errors (0.003)


def test_denoise_uses_the_temperature_of_the_sampler_that_runs():
    """An authors model (T = 1.25e-6) denoised with MALA tuned at T = 0.01: the likelihood must be weighted
    by MALA's T, else it vanishes next to E / 0.01 and the result is the prior mean, 0.5, not 0.6."""
    m, y, sigma, t = 0.5, 0.7, 0.1, 0.01
    model = make_model()
    model.config["sampler"]["mala"] = {"step_size": 0.002, "temperature": t}
    model.energy = Quadratic(m, sigma / math.sqrt(t))  # prior N(m, sigma^2) at T
    out = denoise(model, torch.full((1, *SHAPE), y), sigma=sigma, method="mala", steps=150, chains=16, seed=0,
                  progress=False)
    assert out.mean().item() == pytest.approx((m + y) / 2, abs=0.01)


def test_every_method_moves_the_chains_of_a_shipped_model_downhill_and_in_range():
    """fmnist-js was trained with the authors' sampler (step 10); ULA with that step pinned 88 % of the pixels
    at 0 or 1 and MALA never accepted. Each method must now move the start, lower the energy, stay in [0, 1].
    The chains start from the start distribution with its per-pixel residual noise (as in training): its smooth
    part alone is already near the data, where a correct sampler at temperature T may well raise the energy."""
    model = load_model("fmnist-js")
    start = generate(model, 8, steps=0, seed=0, start_residual=1.0, progress=False)
    energy = lambda x: model.energy(x).mean().item()  # noqa: E731
    for method in METHODS:
        x = generate(model, 8, steps=30, method=method, seed=0, start_residual=1.0, progress=False)
        assert 0 <= x.min() and x.max() <= 1
        assert (x - start).abs().mean() > 0.004, method
        assert energy(x) < energy(start), method
        assert ((x == 0) | (x == 1)).float().mean() < 0.5, method


def test_posterior_energy_adds_the_weighted_data_term():
    y = torch.zeros(2, 1, 2, 2)
    post = PosteriorEnergy(Quadratic(0.0, 1.0), y, torch.tensor([1.0, 4.0]))
    x = torch.ones(2, 1, 2, 2)
    assert torch.allclose(post(x), torch.tensor([2.0 + 2.0, 2.0 + 8.0]))


@pytest.mark.parametrize("sigma,match", [(0.0, "> 0"), (-0.1, "> 0"), (float("nan"), "> 0"), ([0.1, 0.2, 0.3], "per image")])
def test_denoise_rejects_bad_sigma(model, images, sigma, match):
    with pytest.raises(ValueError, match=match):
        denoise(model, images, sigma=sigma, progress=False)


def test_denoise_refuses_a_wiener_blend_for_models_without_a_gradient_step_start(model, images):
    with pytest.raises(ValueError, match="wiener_weight is for noise-conditional models"):
        denoise(model, images, 0.1, wiener_weight=0.5, progress=False)


@pytest.mark.parametrize("sigma", [25, 1.5, [0.1, 25 / 255 * 255]])
def test_denoise_refuses_a_sigma_in_0_255_levels(model, images, sigma):
    with pytest.raises(ValueError, match=r"\[0, 1\] units.*/255"):
        denoise(model, images, sigma=sigma, progress=False)


def test_seed_none_leaves_the_global_random_stream_alone(model, images):
    for call in (lambda: denoise(model, images, 0.1, seed=None, progress=False),
                 lambda: inpaint(model, images, torch.ones(SHAPE[1:]).index_fill_(0, torch.tensor([0]), 0),
                                 seed=None, progress=False),
                 lambda: generate(model, 2, seed=None, progress=False)):
        torch.manual_seed(5)
        expected = torch.rand(3)
        torch.manual_seed(5)
        call()
        assert torch.equal(torch.rand(3), expected)
    a = denoise(model, images, 0.1, seed=None, progress=False)
    assert not torch.equal(a, denoise(model, images, 0.1, seed=None, progress=False))  # a fresh seed each call


def test_generate_reports_malas_acceptance(model):
    out = generate(model, 4, steps=5, method="mala", seed=0, progress=False, details=True)
    assert 0 < out.mala_acceptance <= 1
    assert generate(model, 4, steps=5, seed=0, progress=False, details=True).mala_acceptance is None


def test_task_settings_are_the_configs_with_the_nearest_tuned_noise_level(model):
    assert task_settings(model, "denoise") == {"steps": SAMPLER["steps"], "chains": 1, "temperature_scale": 1.0,
                                               "descent": 0}
    assert task_settings(model, "inpaint") == {"steps": SAMPLER["steps"], "chains": 1}
    model.config["restoration"] = {
        "denoise": {"steps": 2, "chains": 3, "temperature_scale": 5.0, "val_psnr": 30.0, "grid": [{"steps": 2}],
                    "per_sigma": [{"sigma": 2 / 255, "steps": 0, "val_psnr": 44.0},
                                  {"sigma": 25 / 255, "steps": 7, "temperature_scale": 0.5, "val_psnr": 29.0}]},
        "inpaint": {"steps": 1}}
    assert task_settings(model, "denoise") == {"steps": 2, "chains": 3, "temperature_scale": 5.0, "descent": 0,
                                               "val_psnr": 30.0}
    assert task_settings(model, "denoise", sigma=1 / 255)["steps"] == 0  # the nearest in log sigma
    assert task_settings(model, "denoise", sigma=10 / 255) == {"steps": 7, "chains": 3, "temperature_scale": 0.5,
                                                               "descent": 0, "val_psnr": 29.0, "sigma": 25 / 255}
    assert task_settings(model, "inpaint") == {"steps": 1, "chains": 1}
    with pytest.raises(ValueError, match="denoise or inpaint"):
        task_settings(model, "deblur")


def test_inpaint_keeps_observed_pixels_bit_identical(model, images):
    known = torch.ones(1, 1, *SHAPE[1:])
    known[..., 3:9, 2:7] = 0
    out = inpaint(model, images, known, seed=0, chains=2, progress=False)
    assert out.shape == images.shape
    keep = known.bool().expand_as(images)
    assert torch.equal(out[keep], images[keep])
    assert not torch.equal(out[~keep], images[~keep])
    assert torch.equal(out, inpaint(model, images, known, seed=0, chains=2, progress=False))
    one = inpaint(model, images, known, seed=0, chains=2, mean=False, progress=False)
    assert torch.equal(one[keep], images[keep])


@pytest.mark.parametrize("mask_shape", [SHAPE[1:], SHAPE, (2, *SHAPE), (1, 1, *SHAPE[1:])])
def test_inpaint_accepts_mask_layouts(model, images, mask_shape):
    known = torch.ones(mask_shape)
    known[..., 0, 0] = 0
    assert inpaint(model, images, known, progress=False).shape == images.shape


@pytest.mark.parametrize("mask,match", [
    (torch.ones(SHAPE[1:]), "nothing to inpaint"),
    (torch.zeros(SHAPE[1:]), "no pixel"),
    (torch.ones(5, 5), "does not match"),
    (torch.full(SHAPE[1:], 0.5), "only 0"),
    (torch.full(SHAPE[1:], float("nan")), "NaN"),
])
def test_inpaint_rejects_bad_masks(model, images, mask, match):
    with pytest.raises(ValueError, match=match):
        inpaint(model, images, mask, progress=False)


@pytest.mark.parametrize("fn", ["denoise", "inpaint"])
@pytest.mark.parametrize("bad,error,match", [
    (torch.rand(1, 1, 5, 5), ValueError, "shape"),
    (torch.empty(0, *SHAPE), ValueError, "empty"),
    (torch.full((1, *SHAPE), float("nan")), ValueError, "NaN"),
    (torch.full((1, *SHAPE), 1.5), ValueError, r"\[0, 1\]"),
    (torch.full((1, *SHAPE), -0.1), ValueError, r"\[0, 1\]"),
    (torch.zeros((1, *SHAPE), dtype=torch.uint8), TypeError, "float"),
    ("an image", TypeError, "torch.Tensor"),
])
def test_bad_images_get_clear_errors(model, fn, bad, error, match):
    known = torch.ones(SHAPE[1:])
    known[0, 0] = 0
    call = (lambda x: denoise(model, x, sigma=0.1, progress=False)) if fn == "denoise" else \
        (lambda x: inpaint(model, x, known, progress=False))
    with pytest.raises(error, match=match):
        call(bad)


def test_estimate_sigma_recovers_gaussian_noise():
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    smooth = (0.3 + 0.2 * xx + 0.2 * yy)[None, None].repeat(3, 1, 1, 1)  # planar: annihilated by the kernel
    for sigma in (0.02, 0.1, 0.2):
        noisy = smooth + sigma * torch.randn(smooth.shape, generator=gen)
        assert torch.allclose(estimate_sigma(noisy), torch.full((3,), sigma), rtol=0.05)


def test_rgb_model_runs_all_three():
    model = make_model(shape=(3, 9, 10))
    x = torch.rand(1, 3, 9, 10)
    known = torch.ones(9, 10)
    known[2:5, 2:5] = 0
    assert generate(model, 2, progress=False).shape == (2, 3, 9, 10)
    assert denoise(model, x, sigma=0.1, progress=False).shape == (1, 3, 9, 10)
    assert inpaint(model, x, known, progress=False).shape == (1, 3, 9, 10)
    assert math.isfinite(estimate_sigma(x).item())


def test_tuned_restoration_defaults_come_from_the_config(model, images):
    model.config["restoration"] = {"denoise": {"steps": 2, "chains": 3, "temperature_scale": 5.0},
                                   "inpaint": {"steps": 1}}
    out = denoise(model, images, sigma=0.2, return_chain=True, progress=False, details=True)
    assert out.chain.shape[0] == 3 and not torch.equal(out.images, out.sample)  # 2 steps, 3 chains averaged
    explicit = denoise(model, images, sigma=0.2, steps=2, chains=3, temperature_scale=5.0, progress=False)
    assert torch.equal(out.images, explicit)
    known = torch.ones(SHAPE[1:])
    known[:4] = 0
    filled = inpaint(model, images, known, return_chain=True, progress=False, details=True)
    assert filled.chain.shape[0] == 2 and torch.equal(filled.images, filled.sample)  # 1 step, 1 chain
    with pytest.raises(ValueError, match="temperature_scale"):
        denoise(model, images, sigma=0.2, temperature_scale=0.0, progress=False)


MIXTURE = {"kind": "pca-mixture", "clusters": 3, "components": 2}


def _pca_model(start: dict | None = None):
    model = EBM("js", energy=NET, critic=NET, dataset="test", image_shape=list(SHAPE), sampler=SAMPLER,
                start=start or {"kind": "pca", "components": 4}).eval()
    data = torch.rand(200, *SHAPE, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.2, 1, SHAPE[-1])
    model.start.fit(data)
    return model


@pytest.mark.parametrize("start", [None, MIXTURE], ids=["pca", "pca-mixture"])
def test_restoration_chains_start_from_the_gaussian_start_conditioned_on_the_observation(images, start):
    model = _pca_model(start)
    sigma = torch.full((2,), 0.2)
    assert torch.equal(denoise(model, images, 0.2, steps=0, progress=False), model.start.posterior(images, sigma))
    known = torch.rand(1, 1, *SHAPE[1:], generator=torch.Generator().manual_seed(3)) < 0.5
    filled = inpaint(model, images, known, steps=0, progress=False)
    want = model.start.posterior(images, torch.zeros(2), known.expand_as(images))
    assert torch.equal(filled, want) and torch.equal(filled[known.expand_as(images)], images[known.expand_as(images)])
    one = inpaint(model, images, known, steps=0, mean=False, seed=1, progress=False)  # a sample, not the mean
    assert not torch.equal(one, filled) and torch.equal(one[known.expand_as(images)], images[known.expand_as(images)])


@pytest.mark.parametrize("start", [None, MIXTURE], ids=["pca", "pca-mixture"])
def test_gaussian_start_inpainting_draws_no_unconditioned_start_samples(images, monkeypatch, start):
    """The unconditioned start is only the fallback of models without a Gaussian start: drawing it anyway
    would shift the random stream of the chains."""
    model = _pca_model(start)
    monkeypatch.setattr(model, "initial_samples", lambda *a, **k: pytest.fail("drew unconditioned start samples"))
    known = torch.ones(1, 1, *SHAPE[1:], dtype=torch.bool)
    known[..., :2, :] = False
    inpaint(model, images, known, steps=2, seed=0, progress=False)


def test_generation_noise_sets_generations_chains_and_leaves_restorations_temperature(model, images):
    descent = generate(model, 4, steps=3, seed=2, noise=0.0, progress=False)
    assert not torch.equal(descent, generate(model, 4, steps=3, seed=2, progress=False))  # the sampler's 0.005
    model.config["sampler"]["generation_noise"] = 0.0  # what training.tune --generation-noise stores
    assert torch.equal(generate(model, 4, steps=3, seed=2, progress=False), descent)
    assert generation_sampler(model).noise == 0.0
    assert model_sampler(model).noise == SAMPLER["noise"]  # restoration's sampler and temperature unchanged
    assert temperature(model) == SAMPLER["noise"] ** 2 / (2 * SAMPLER["step_size"])
    assert generation_sampler(model, method="ula").method == "ula"  # another method: the stored noise is not its
    with pytest.raises(ValueError, match="ula takes its noise"):
        generate(model, 2, noise=0.0, method="ula", progress=False)
    with pytest.raises(ValueError, match="finite number >= 0"):
        generate(model, 2, noise=float("nan"), progress=False)


def test_generation_starts_from_the_smooth_part_of_a_gaussian_start_by_default():
    model = _pca_model()
    model.start.residual.fill_(0.05)
    gen = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    smooth, noisy = model.initial_samples(8, gen(), 0.0), model.initial_samples(8, gen())
    assert torch.equal(generate(model, 8, steps=0, seed=4, progress=False), smooth)
    assert torch.equal(generate(model, 8, steps=0, seed=4, start_residual=1.0, progress=False), noisy)
    model.config["sampler"]["start_residual"] = 1.0  # a model may carry its own
    assert torch.equal(generate(model, 8, steps=0, seed=4, progress=False), noisy)
    with pytest.raises(ValueError, match="start_residual"):
        generate(model, 2, start_residual=1.5, progress=False)


def test_inpainting_with_a_start_of_as_many_components_as_pixels():
    shape = (1, 6, 5)
    model = EBM("js", energy=NET, critic=NET, dataset="test", image_shape=list(shape), sampler=SAMPLER,
                start={"kind": "pca", "components": math.prod(shape)}).eval()
    model.start.fit(torch.rand(200, *shape, generator=torch.Generator().manual_seed(0)))
    image = torch.rand(2, *shape, generator=torch.Generator().manual_seed(1))
    known = torch.ones(1, *shape, dtype=torch.bool)
    known[..., 2:4, 1:4] = False
    for mean in (True, False):
        filled = inpaint(model, image, known, steps=2, mean=mean, seed=0, progress=False)
        assert torch.isfinite(filled).all() and 0 <= filled.min() and filled.max() <= 1
        assert torch.equal(filled[known.expand_as(image)], image[known.expand_as(image)])
