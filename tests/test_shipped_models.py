"""The checkpoints that ship in checkpoints/: they load, and restore real Fashion-MNIST test images.

Thresholds are well below what the models measure (docs/restoration.md), so that they catch a broken model,
loader or restoration default, not a small change in quality.
"""

import pytest
import torch

from febm import denoise, generate, inpaint, list_models, load_model
from febm.imageio import add_noise, preset_mask
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


def test_denoising_raises_psnr_on_test_images(model, test_images):
    noisy = add_noise(test_images, 0.2, seed=0)
    clean = denoise(model, noisy, 0.2, seed=0, progress=False)
    before, after = psnr(noisy, test_images).mean().item(), psnr(clean, test_images).mean().item()
    assert after > before + 2.0, (before, after)
    blind = denoise(model, noisy, None, seed=0, progress=False)  # sigma estimated from the image
    assert psnr(blind, test_images).mean().item() > before + 1.0


def test_inpainting_fills_the_hole_and_keeps_the_observed_pixels(model, test_images):
    known = preset_mask("center", (1, 28, 28)).bool()
    filled = inpaint(model, test_images, known, seed=0, progress=False)
    observed = known.expand_as(test_images)
    assert torch.equal(filled[observed], test_images[observed])
    zero_fill = torch.where(observed, test_images, torch.zeros_like(test_images))
    before, after = psnr(zero_fill, test_images).mean().item(), psnr(filled, test_images).mean().item()
    assert after > before + 5.0, (before, after)


def test_generation_lowers_the_energy_of_its_starting_points(model):
    samples = generate(model, 16, seed=0, progress=False)
    starts = generate(model, 16, seed=0, steps=0, progress=False)
    assert samples.shape == (16, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1
    with torch.no_grad():
        assert model.energy(samples).mean() < model.energy(starts).mean()


# --- photo models -------------------------------------------------------------------------------------------------
PHOTO_SHIPPED = [m["name"] for m in list_models() if m["dataset"] == "photos"]


def test_checkpoints_ship_photo_models():
    assert {"photo-js", "photo-cd"} <= set(PHOTO_SHIPPED)


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


def test_photo_models_restore_colour_and_grey_arrays_at_their_own_size(photo_model, photo):
    from febm.degradations import add_gaussian_noise

    assert photo.shape == (3, 97, 131)
    noisy = add_gaussian_noise(photo[None], 25 / 255, 0)
    clean = denoise(photo_model, noisy[0], 25 / 255, seed=0, progress=False)
    assert clean.shape == (1, 3, 97, 131)
    before, after = psnr(noisy, photo[None]).item(), psnr(clean, photo[None]).item()
    assert after > before + 4.0, (before, after)  # the tuned defaults on an unseen photo
    grey = add_gaussian_noise(torch.rand(1, 1, 300, 200).mul(0.2).add(photo.mean(0).mean()), 0.1, 1)
    assert denoise(photo_model, grey, 0.1, seed=0, steps=2, progress=False).shape == (1, 1, 300, 200)


def test_photo_models_fill_scribbles_and_keep_the_observed_pixels(photo_model, photo):
    from febm.degradations import scribble_mask

    known = scribble_mask(97, 131, 0)
    filled = inpaint(photo_model, photo[None], known, seed=0, progress=False)
    observed = known.expand_as(filled)
    assert torch.equal(filled[observed], photo[None][observed])
    grey_fill = torch.where(observed, photo[None], torch.full_like(filled, 0.5))
    assert psnr(filled, photo[None]).item() > psnr(grey_fill, photo[None]).item() + 5.0
