"""The checkpoints that ship in checkpoints/: they load, and restore real Fashion-MNIST test images.

Thresholds are well below what the models measure (docs/restoration.md), so that they catch a broken model,
loader or restoration default, not a small change in quality.
"""

from pathlib import Path

import pytest
import torch

from febm import denoise, generate, inpaint, list_models, load_model
from febm.degradations import add_gaussian_noise
from febm.imageio import preset_mask
from febm.metrics import psnr
from training import data as datasets

SHIPPED = [m["name"] for m in list_models() if m["dataset"] == "fashion-mnist"]
N = 32


@pytest.fixture(scope="module")
def test_images():
    try:
        images = datasets.load_dataset("fashion-mnist", "test").images
    except datasets.DatasetNotFoundError as err:
        pytest.skip(f"Fashion-MNIST not installed: {err}")
    return datasets.to_float(images[:N])


def test_checkpoints_ship_fashion_mnist_models():
    assert {"fmnist-js", "fmnist-cd"} <= set(SHIPPED)


@pytest.fixture(scope="module", params=SHIPPED)
def model(request):
    return load_model(request.param)


def _psnr(x, clean) -> float:
    return psnr(x, clean).mean().item()


def test_denoising_chains_improve_on_their_start(model, test_images):
    """The start (the Gaussian start's posterior mean, steps = 0) already gains 2.6-5 dB; the tuned chains add
    0.7-1.8 dB to it (sigma given) and 0.4-1.5 dB (estimated) on these images: a stub returning the start fails."""
    noisy = add_gaussian_noise(test_images, 0.2, 0)
    before = _psnr(noisy, test_images)
    for sigma, margin in ((0.2, 0.3), (None, 0.2)):  # given, and estimated from the image
        start = _psnr(denoise(model, noisy, sigma, seed=0, steps=0, progress=False), test_images)
        after = _psnr(denoise(model, noisy, sigma, seed=0, progress=False), test_images)
        assert start > before + 2.0 and after > start + margin, (sigma, before, start, after)


def test_inpainting_chains_refine_their_start_and_keep_the_observed_pixels(model, test_images):
    """On the centre box the start (steps = 0) does nearly all of the work: the chains must change the fill
    without spoiling it (they score within 0.1 dB of it on these images)."""
    known = preset_mask("center", (1, 28, 28)).bool()
    filled = inpaint(model, test_images, known, seed=0, progress=False)
    start = inpaint(model, test_images, known, seed=0, steps=0, progress=False)
    observed = known.expand_as(test_images)
    assert torch.equal(filled[observed], test_images[observed])
    zero_fill = torch.where(observed, test_images, torch.zeros_like(test_images))
    assert _psnr(start, test_images) > _psnr(zero_fill, test_images) + 5.0
    assert not torch.equal(filled, start) and _psnr(filled, test_images) > _psnr(start, test_images) - 0.2


def test_generation_lowers_the_energy_of_its_starting_points(model):
    samples = generate(model, 16, seed=0, progress=False)
    starts = generate(model, 16, seed=0, steps=0, progress=False)
    assert samples.shape == (16, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1
    with torch.no_grad():
        assert model.energy(samples).mean() < model.energy(starts).mean()


# --- photo models -------------------------------------------------------------------------------------------------
PHOTO_SHIPPED = [m["name"] for m in list_models() if m["dataset"] == "photos"]


def test_checkpoints_ship_photo_models():
    posterior = {f"photo-{div}-posterior" for div in ("cd", "js", "kl", "rkl", "sh")}  # one recipe, five objectives
    assert {"photo-js", "photo-cd", "photo-dsm", "photo-unrolled", *posterior} <= set(PHOTO_SHIPPED)
    checkpoints = Path(__file__).resolve().parent.parent / "checkpoints"
    card = (checkpoints / "photo-dsm" / "README.md").read_text()
    assert "denoising score matching" in card and "not an f-divergence" in card  # labelled for what it is
    for div in ("js", "kl", "rkl", "sh"):  # f-EBMs, warm-started from the above, and saying so
        card = (checkpoints / f"photo-{div}-posterior" / "README.md").read_text()
        assert f"**{div}** f-divergence" in card and "9000 steps, score matching (dsm)" in card
    card = (checkpoints / "photo-cd-posterior" / "README.md").read_text()
    assert "contrastive divergence" in card and "9000 steps, score matching (dsm)" in card
    card = (checkpoints / "photo-unrolled" / "README.md").read_text()  # separately named: not an f-EBM
    assert "Unrolled restoration energy" in card and "not a divergence" in card
    assert "11800 steps, score matching (dsm)" in card and "9000 steps, score matching (dsm)" in card


@pytest.fixture(scope="module")
def photo():
    """A 97x131 colour crop of an app example photo (a test photo of the benchmarks, never trained on)."""
    from app import photo_example_paths
    from febm.imageio import load_photo

    coffee = next(p for p in photo_example_paths() if p.name.startswith("coffee"))
    return load_photo(coffee).pixels[0, :, 60:157, 100:231]


@pytest.fixture(scope="module", params=PHOTO_SHIPPED)
def photo_model(request):
    return load_model(request.param)


def test_photo_denoising_improves_on_the_wiener_filter_in_colour_and_grey(photo_model, photo):
    """At sigma = 25/255 the tuned defaults must beat the local Wiener filter (the plain models' start, steps =
    descent = 0), which a stub would return: the plain models by their steps from it, the noise-conditional ones
    (whose start is their own gradient step) by what the energy learned. Grey takes the library's grey path."""
    from febm.classical import local_wiener
    from febm.degradations import add_gaussian_noise

    assert photo.shape == (3, 97, 131)
    for clean in (photo[None], photo.mean(0, keepdim=True)[None]):
        noisy = add_gaussian_noise(clean, 25 / 255, 0)
        restored = denoise(photo_model, noisy[0], 25 / 255, seed=0, progress=False)
        wiener = local_wiener(noisy, 25 / 255).clamp(0, 1)
        if not photo_model.noise_conditional:
            start = denoise(photo_model, noisy, 25 / 255, seed=0, steps=0, descent=0, progress=False)
            torch.testing.assert_close(start, wiener)
        assert restored.shape == clean.shape
        before, first, after = (psnr(x, clean).item() for x in (noisy, wiener, restored))
        assert first > before + 4.0 and after > first + 0.5, (before, first, after)


@pytest.mark.parametrize("sigma255", [1, 2, 5])
def test_photo_denoising_never_returns_worse_than_its_input_at_small_noise(photo_model, photo, sigma255):
    from febm.degradations import add_gaussian_noise

    noisy = add_gaussian_noise(photo[None], sigma255 / 255, 0)
    before = psnr(noisy, photo[None]).item()
    # given, and estimated from the image: not at 1/255, where the crop's own grain (the clean crop reads 1.0/255)
    # is as strong as the added noise, the estimate reads 1.44 and removing that grain counts as an error (no blind
    # method can tell the two apart: docs/photos.md, "Small noise"; photo-dsm at step 9000 loses 0.16 dB there)
    for sigma in (sigma255 / 255, None) if sigma255 > 1 else (sigma255 / 255,):
        after = psnr(denoise(photo_model, noisy, sigma, seed=0, progress=False), photo[None]).item()
        assert after >= before, (sigma, before, after)


def test_photo_denoising_leaves_a_flat_grey_image_as_it_is(photo_model):
    flat = torch.full((1, 3, 64, 64), 0.5)
    assert (denoise(photo_model, flat, None, seed=0, progress=False) - flat).abs().max() < 0.5 / 255


def test_photo_inpainting_runs_the_tuned_chains_from_the_smooth_fill(photo_model, photo):
    """The start is the smooth fill (a known answer); the default is what tuning chose: the fill itself when its
    chains lost on validation crops, else chains that change it without spoiling it."""
    from febm.classical import smooth_fill
    from febm.degradations import scribble_mask
    from febm.restore import task_settings

    known = scribble_mask(97, 131, 0)
    filled = inpaint(photo_model, photo[None], known, seed=0, progress=False)
    start = inpaint(photo_model, photo[None], known, seed=0, steps=0, progress=False)
    observed = known.expand_as(filled)
    assert torch.equal(filled[observed], photo[None][observed])
    torch.testing.assert_close(start, smooth_fill(photo[None], known), rtol=0, atol=1e-6)
    grey_fill = torch.where(observed, photo[None], torch.full_like(filled, 0.5))
    assert psnr(start, photo[None]).item() > psnr(grey_fill, photo[None]).item() + 5.0
    if task_settings(photo_model, "inpaint")["steps"] == 0:
        assert torch.equal(filled, start)
    else:
        assert not torch.equal(filled, start)
        assert psnr(filled, photo[None]).item() > psnr(start, photo[None]).item() - 0.3
