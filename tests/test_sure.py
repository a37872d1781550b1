"""Stein's unbiased risk estimate (febm.sure) and the weight photo denoising gives its result against its input:
closed forms on Gaussian data, then the restoration it guards."""

from __future__ import annotations

import pytest
import torch

from febm.degradations import add_gaussian_noise
from febm.metrics import psnr
from febm.model import EBM
from febm.restore import SURE_MAX_SIGMA, denoise
from febm.sure import step_weight

S, SIGMA = 0.2, 0.1  # x ~ N(0, S^2) per entry, y = x + N(0, SIGMA^2): the best linear gain is S^2 / (S^2 + SIGMA^2)
GAIN = S**2 / (S**2 + SIGMA**2)


@pytest.fixture(scope="module")
def gaussian():
    g = torch.Generator().manual_seed(0)
    clean = S * torch.randn(1, 1, 256, 256, generator=g)
    return clean, clean + SIGMA * torch.randn(clean.shape, generator=g)


def weight(denoiser, noisy, **kw):
    return step_weight(denoiser, noisy, SIGMA, denoiser(noisy), generator=torch.Generator().manual_seed(1), **kw)


def test_from_a_denoiser_that_returns_zero_the_weight_is_the_wiener_gain(gaussian):
    _, noisy = gaussian
    w = weight(torch.zeros_like, noisy)  # y + w (0 - y) = (1 - w) y: the best is 1 - w = GAIN
    assert w == pytest.approx(1 - GAIN, abs=0.01)


def test_the_wiener_filter_itself_is_trusted_and_a_harmful_step_is_refused(gaussian):
    _, noisy = gaussian
    assert weight(lambda y: GAIN * y, noisy) == pytest.approx(1.0, abs=0.02)
    assert weight(lambda y: 2 * y, noisy) == 0.0  # amplifies the noise: the input is better
    assert weight(lambda y: y.clone(), noisy) == 1.0  # returns its input: nothing to weigh


def test_the_weight_minimises_the_true_error_along_the_segment(gaussian):
    clean, noisy = gaussian
    denoiser = lambda y: torch.tanh(3 * y) / 3  # nonlinear, biased: the best weight is strictly inside (0, 1)
    w = weight(denoiser, noisy)
    grid = torch.linspace(0, 1, 101)
    errors = [(torch.lerp(noisy, denoiser(noisy), float(t)) - clean).pow(2).mean() for t in grid]
    best = float(grid[int(torch.stack(errors).argmin())])
    assert 0.05 < best < 0.95 and w == pytest.approx(best, abs=0.03)


def test_a_grey_image_stored_as_equal_channels_is_one_noise_draw_per_pixel(gaussian):
    _, noisy = gaussian
    shrink = lambda y: 0.5 * y.mean(dim=1, keepdim=True).expand_as(y)  # couples the channels, as the grey path does
    one = weight(shrink, noisy)
    assert weight(shrink, noisy.expand(1, 3, -1, -1), grey=True) == pytest.approx(one, rel=1e-6)
    # read as three independent channels, the same numbers would count each draw thrice and misjudge the divergence
    assert weight(shrink, noisy.expand(1, 3, -1, -1).contiguous()) != pytest.approx(one, rel=1e-3)


# --- in photo denoising --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def untrained(tiny_noise_conditional):
    """A noise-conditional photo energy at initialisation, its weights scaled up: its gradient step is noise."""
    m = tiny_noise_conditional()
    with torch.no_grad():
        for p in m.energy.parameters():
            p.mul_(3)
    return m.eval()


def smooth(shape=(1, 3, 40, 48)):
    y, x = torch.meshgrid(torch.linspace(0, 1, shape[-2]), torch.linspace(0, 1, shape[-1]), indexing="ij")
    return (0.3 + 0.4 * x * y).expand(shape).contiguous()


def test_at_small_noise_the_result_is_weighed_against_its_input(untrained):
    clean = smooth()
    noisy = add_gaussian_noise(clean, 2 / 255, 0)
    raw = denoise(untrained, noisy, 2 / 255, sure=False, progress=False)
    guarded = denoise(untrained, noisy, 2 / 255, progress=False, details=True)  # the default below SURE_MAX_SIGMA
    w = float(guarded.step_weight)
    assert psnr(raw, clean) < psnr(noisy, clean)  # the untrained step is worse than the input ...
    assert psnr(guarded.images, clean) >= psnr(noisy, clean) - 0.05  # ... the guarded result is not
    assert 0 <= w < 0.5
    torch.testing.assert_close(guarded.images, torch.lerp(noisy, raw, w))


def test_above_its_range_the_result_is_left_as_it_is_unless_asked(untrained):
    noisy = add_gaussian_noise(smooth(), 2 * SURE_MAX_SIGMA, 0)
    plain = denoise(untrained, noisy, 2 * SURE_MAX_SIGMA, progress=False, details=True)
    assert plain.step_weight.tolist() == [1.0]
    torch.testing.assert_close(plain.images, denoise(untrained, noisy, 2 * SURE_MAX_SIGMA, sure=False, progress=False))
    asked = denoise(untrained, noisy, 2 * SURE_MAX_SIGMA, sure=True, progress=False, details=True)
    assert float(asked.step_weight) < 1


def test_the_weight_is_per_image_and_grey_as_rgb_weighs_like_grey(untrained):
    clean = torch.cat([smooth(), smooth().flip(-1)])
    noisy = add_gaussian_noise(clean, 3 / 255, 0)
    batch = denoise(untrained, noisy, 3 / 255, progress=False, details=True)
    alone = denoise(untrained, noisy[1:], 3 / 255, progress=False, details=True)
    torch.testing.assert_close(batch.images[1:], alone.images)
    grey = noisy[:1, :1]
    as_l = denoise(untrained, grey, 3 / 255, progress=False, details=True)
    as_rgb = denoise(untrained, grey.expand(1, 3, -1, -1).contiguous(), 3 / 255, progress=False, details=True)
    assert float(as_rgb.step_weight) == pytest.approx(float(as_l.step_weight), abs=1e-5)
    torch.testing.assert_close(as_rgb.images, as_l.images.expand(1, 3, -1, -1))


def test_whole_image_models_refuse_it():
    net = {"kind": "conv", "in_channels": 1, "width": 4, "downsamples": 2}
    m = EBM("js", energy=net, critic=net, dataset="test", image_shape=[1, 13, 11],
            sampler={"method": "authors", "steps": 3, "step_size": 10.0, "noise": 0.005, "grad_clip": 0.01}).eval()
    with pytest.raises(ValueError, match="sure .* is for photo models"):
        denoise(m, torch.rand(1, 1, 13, 11), 0.1, sure=True, progress=False)
