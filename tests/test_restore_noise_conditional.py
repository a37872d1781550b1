"""Restoration with a noise-conditional photo energy E(x, sigma) (score matching or a posterior f-EBM): denoising is
its gradient step and then the very chain posterior training runs (febm.posterior), inpainting goes through
febm.inverse with a mask; each is checked against the function it must equal, not against shapes alone."""

from __future__ import annotations

import pytest
import torch

from febm.classical import smooth_fill
from febm.degradations import add_gaussian_noise, scribble_mask
from febm.operators import Mask
from febm.posterior import PRIOR_FRACTION, energy_grad, gradient_step, posterior_chains
from febm.restore import denoise, generate, inpaint, task_settings

@pytest.fixture(scope="module")
def model(tiny_noise_conditional):
    m = tiny_noise_conditional()
    with torch.no_grad():
        for p in m.energy.noise_bias.parameters():
            p.normal_(0, 0.5)  # zero at initialisation: give sigma an effect
    return m.eval()


@pytest.fixture(scope="module")
def noisy():
    clean = torch.rand(1, 3, 37, 45, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    return add_gaussian_noise(clean, 0.1, 0)


def test_noise_conditional_models_denoise_from_their_gradient_step_by_default(model, noisy):
    settings = task_settings(model, "denoise")
    assert settings["steps"] == 0 and settings["descent"] == 1  # the step, then one noise-free posterior step
    start = denoise(model, noisy, 0.1, steps=0, descent=0, progress=False)
    torch.testing.assert_close(start, gradient_step(model.energy, noisy, torch.tensor([0.1])))
    assert not torch.equal(denoise(model, noisy, 0.1, progress=False), start)


def test_the_start_blends_the_gradient_step_with_the_local_wiener_filter(model, noisy):
    from febm.classical import local_wiener

    step = noisy - 0.1**2 * energy_grad(model.energy, noisy, torch.tensor([0.1]))  # before its clamp
    wiener = local_wiener(noisy, 0.1)
    assert task_settings(model, "denoise")["wiener_weight"] == 0.0
    for w in (0.5, 1.0):
        blended = denoise(model, noisy, 0.1, steps=0, descent=0, wiener_weight=w, progress=False)
        torch.testing.assert_close(blended, ((1 - w) * step + w * wiener).clamp(0, 1))
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"wiener_weight must be in \[0, 1\]"):
            denoise(model, noisy, 0.1, wiener_weight=bad, progress=False)


def test_the_wiener_weight_is_interpolated_in_log_sigma_between_tuned_levels(model):
    ladder = [{"sigma": 1 / 255, "steps": 0, "wiener_weight": 0.5}, {"sigma": 4 / 255, "steps": 1, "wiener_weight": 0.0},
              {"sigma": 16 / 255, "steps": 0}]  # an entry without a weight: the default, none
    model.config["restoration"] = {"denoise": {"per_sigma": ladder}}
    try:
        weight = {s: task_settings(model, "denoise", s / 255)["wiener_weight"] for s in (0.5, 1, 2, 4, 8, 32)}
        assert task_settings(model, "denoise", 3 / 255)["steps"] == 1  # discrete settings: the nearest level's
    finally:
        del model.config["restoration"]
    assert weight == {0.5: 0.5, 1: 0.5, 2: pytest.approx(0.25), 4: 0.0, 8: 0.0, 32: 0.0}


def test_denoising_chains_are_the_chains_posterior_training_runs(model, noisy):
    sigma = torch.tensor([0.1])
    ours = denoise(model, noisy, 0.1, steps=3, descent=1, seed=5, mean=False, progress=False)
    theirs = posterior_chains(model.energy, noisy, sigma, prior_fraction=PRIOR_FRACTION, steps=3, final_steps=1,
                              generator=torch.Generator().manual_seed(5))[:, 0].clamp(0, 1)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_tiles_batches_and_grey_do_not_change_the_result(model, noisy):
    other = add_gaussian_noise(noisy.flip(-1), 0.05, 3)
    both = denoise(model, torch.cat([noisy, other]), torch.tensor([0.1, 0.05]), steps=2, chains=2, seed=1,
                   progress=False)
    alone = denoise(model, other, 0.05, steps=2, chains=2, seed=1, progress=False)
    torch.testing.assert_close(both[1:], alone, rtol=0, atol=1e-6)
    tiled = denoise(model, noisy, 0.1, steps=2, chains=2, seed=1, tile=32, progress=False)
    torch.testing.assert_close(tiled, both[:1], rtol=0, atol=1e-5)
    grey = noisy.mean(1, keepdim=True)
    as_l = denoise(model, grey, 0.1, steps=2, seed=1, progress=False)
    as_rgb = denoise(model, grey.expand(-1, 3, -1, -1), 0.1, steps=2, seed=1, progress=False)
    assert as_l.shape == grey.shape
    torch.testing.assert_close(as_rgb, as_l.expand(-1, 3, -1, -1))


def test_inpainting_anneals_from_the_smooth_fill_and_keeps_the_observed_pixels(model, noisy):
    image = noisy.clamp(0, 1)
    known = scribble_mask(37, 45, 0)
    start = inpaint(model, image, known, steps=0, progress=False)
    torch.testing.assert_close(start, smooth_fill(image, known).clamp(0, 1))
    filled = inpaint(model, image, known, steps=3, progress=False)
    observed = known.expand_as(image)
    assert torch.equal(filled[observed], image[observed]) and not torch.equal(filled, start)
    assert task_settings(model, "inpaint")["steps"] > 0
    with pytest.raises(ValueError, match="one estimate per image"):
        inpaint(model, image, known, chains=4, progress=False)


def test_noise_conditional_models_refuse_to_generate(model):
    with pytest.raises(ValueError, match="does not generate"):
        generate(model, 2, size=(32, 32), progress=False)


def test_the_mask_operator_is_self_adjoint_and_refuses_non_binary_masks():
    known = torch.rand(1, 1, 9, 7) > 0.5
    op = Mask(known)
    x, y = torch.rand(2, 3, 9, 7), torch.rand(2, 3, 9, 7)
    torch.testing.assert_close((op(x) * y).sum(), (x * op.adjoint(y)).sum())
    torch.testing.assert_close(op.gram(x), op(op(x)))
    with pytest.raises(ValueError, match="mask of 0 and 1"):
        Mask(torch.full((1, 1, 4, 4), 0.5))
