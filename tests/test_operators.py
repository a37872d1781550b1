"""febm.operators: exact adjoints, PIL-compatible downsampling, kernels and their errors, the classical starts."""

import numpy as np
import pytest
import torch
from PIL import Image

from febm.operators import (
    Blur,
    Downsample,
    box_kernel,
    crop_to_multiple,
    gaussian_kernel,
    kernel_from_image,
    motion_kernel,
    parse_kernel,
    wiener_deconvolution,
)

OPERATORS = {
    "gaussian": lambda: Blur(gaussian_kernel(1.6)),
    "box-even": lambda: Blur(box_kernel(4)),
    "motion": lambda: Blur(motion_kernel(9, 30)),
    "wide-asymmetric": lambda: Blur(_random_kernel(3, 8)),
    "down2": lambda: Downsample(2),
    "down3": lambda: Downsample(3),
    "down4": lambda: Downsample(4),
}


def _random_kernel(h: int, w: int) -> torch.Tensor:
    k = torch.rand(h, w, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return k / k.sum()


def _shapes(op):
    f = getattr(op, "factor", 1)
    return [(1, 1, 17 * f, 23 * f), (2, 3, 19 * f, 31 * f)]  # odd sizes, grey and colour


@pytest.mark.parametrize("name", OPERATORS)
def test_adjoint_satisfies_the_dot_product_identity(name):
    op = OPERATORS[name]()
    g = torch.Generator().manual_seed(0)
    for shape in _shapes(op):
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        ax = op.forward(x)
        y = torch.randn(ax.shape, generator=g, dtype=torch.float64)
        aty = op.adjoint(y)
        assert aty.shape == x.shape
        assert torch.allclose((ax * y).sum(), (x * aty).sum(), rtol=1e-10, atol=1e-10)


def test_the_adjoint_of_a_reflect_padded_blur_differs_from_the_flipped_kernel_at_the_border():
    """Reflect padding folds border pixels back in: a naive transpose (convolution with the flipped kernel) is
    wrong in a band of the kernel's radius along the border and right inside it."""
    op = Blur(gaussian_kernel(1.6))  # radius 7
    y = torch.rand(1, 1, 40, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    naive = Blur(op.kernel.flip(0, 1)).forward(y)
    exact = op.adjoint(y)
    assert torch.allclose(exact[..., 8:-8, 8:-8], naive[..., 8:-8, 8:-8], atol=1e-6)
    assert (exact - naive).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["gaussian", "motion", "down2", "down4"])
def test_data_gradient_is_the_residual_and_its_adjoint(name):
    op = OPERATORS[name]()
    x = torch.rand(_shapes(op)[1], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = op.forward(torch.rand_like(x))
    residual, grad = op.data_gradient(x, y)
    assert torch.allclose(residual, op.forward(x) - y)
    assert torch.allclose(grad, op.adjoint(op.forward(x) - y), atol=1e-12)


def test_blur_is_a_convolution_centred_on_the_kernel_centre():
    x = torch.zeros(1, 1, 21, 21)
    x[..., 10, 10] = 1.0
    k = _random_kernel(5, 3).float()
    y = Blur(k).forward(x)
    assert torch.allclose(y[0, 0, 8:13, 9:12], k, atol=1e-7)  # an impulse's image is the kernel itself
    assert torch.isclose(y.sum(), torch.tensor(1.0))
    flat = torch.full((1, 3, 19, 24), 0.3)
    assert torch.allclose(Blur(motion_kernel(9, 30)).forward(flat), flat)  # sums to 1 at the borders too


def test_motion_and_box_kernels():
    assert torch.allclose(motion_kernel(9, 0), torch.full((1, 9), 1 / 9))
    assert torch.allclose(motion_kernel(9, 90), torch.full((9, 1), 1 / 9))
    k = motion_kernel(9, 30)
    assert k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1 and torch.isclose(k.sum(), torch.tensor(1.0))
    assert torch.allclose(k, k.flip(0, 1), atol=1e-6)  # a bar through the centre is point-symmetric
    assert k[0, -1] > 0 or k[1, -2] > 0  # 30 degrees counter-clockwise: up and to the right
    assert torch.allclose(box_kernel(5), torch.full((5, 5), 1 / 25))
    g = gaussian_kernel(1.6)
    assert g.shape == (15, 15) and torch.isclose(g.sum(), torch.tensor(1.0)) and g.argmax() == 7 * 15 + 7


def test_parse_kernel_presets_and_errors():
    assert torch.equal(parse_kernel("gaussian:1.6"), gaussian_kernel(1.6))
    assert torch.equal(parse_kernel("box:5"), box_kernel(5))
    assert torch.equal(parse_kernel(" motion: 9, 30 "), motion_kernel(9, 30))
    assert torch.equal(parse_kernel("motion:9"), motion_kernel(9, 0))
    for bad, match in [("disk:3", "unknown kernel"), ("gaussian", "unknown kernel"), ("gaussian:abc", "not a number"),
                       ("box:2.5", "whole number"), ("box:5,3", "one number"), ("gaussian:0", "> 0"),
                       ("gaussian:-1", "> 0"), ("motion:nan", "finite")]:
        with pytest.raises(ValueError, match=match):
            parse_kernel(bad)


@pytest.mark.parametrize("kernel, match", [
    (np.ones(5) / 5, "2-D"),
    (np.ones((2, 2, 2)) / 8, "2-D"),
    (np.array([[0.5, -0.1, 0.6]]), "negative"),
    (np.ones((3, 3)) / 18, "sums to 0.5.*divide it by its sum"),
    (np.array([[np.nan, 1.0]]), "NaN"),
    ("abc", "2-D array"),
])
def test_bad_kernels_are_refused(kernel, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Blur(kernel)


def test_a_kernel_larger_than_the_image_is_refused():
    with pytest.raises(ValueError, match=r"kernel \(15x15\) is larger than the image \(12x40\)"):
        Blur(gaussian_kernel(1.6)).forward(torch.rand(1, 1, 12, 40))


def test_kernel_from_image_normalises_and_trims():
    a = np.zeros((20, 30), dtype=np.uint8)
    a[5:8, 10:15] = 200
    a[6, 12] = 255
    k = kernel_from_image(Image.fromarray(a))
    assert k.shape == (3, 5) and torch.isclose(k.sum(), torch.tensor(1.0))
    assert k[1, 2] > k[0, 0]
    rgb = np.stack([a, a, a], -1)
    assert torch.allclose(kernel_from_image(rgb), k)
    with pytest.raises(ValueError, match="all black"):
        kernel_from_image(np.zeros((4, 4)))


# --- downsampling -------------------------------------------------------------------------------------------------
def _smooth_uint8(h: int, w: int, channels: int = 3) -> np.ndarray:
    """A photo-like 8-bit image in [40, 215]: bicubic overshoot never reaches 0 or 255."""
    g = torch.Generator().manual_seed(4)
    coarse = torch.rand(1, channels, h // 6 + 2, w // 6 + 2, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    fine = fine + 0.1 * torch.rand(fine.shape, generator=g)
    a = (40 + 175 * (fine - fine.min()) / (fine.max() - fine.min()))[0].permute(1, 2, 0).round().byte().numpy()
    return a[..., 0] if channels == 1 else a


def _pil_resize(a: np.ndarray, size: tuple[int, int], mode: str = "uint8") -> np.ndarray:
    """PIL's bicubic resize of (H, W[, C]) to size (w, h), on 8-bit images or per channel in float ("F")."""
    if mode == "uint8":
        return np.asarray(Image.fromarray(a).resize(size, Image.Resampling.BICUBIC)).astype(np.float64)
    channels = [a] if a.ndim == 2 else [a[..., c] for c in range(a.shape[-1])]
    out = [np.asarray(Image.fromarray(c.astype(np.float32), "F").resize(size, Image.Resampling.BICUBIC))
           for c in channels]
    return np.stack(out, -1).astype(np.float64) if a.ndim == 3 else out[0].astype(np.float64)


def _tensor(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(a.astype(np.float64) / 255)
    return (t[None] if t.dim() == 2 else t.permute(2, 0, 1))[None]


def _array(t: torch.Tensor) -> np.ndarray:
    a = t[0].permute(1, 2, 0).numpy() * 255
    return a[..., 0] if a.shape[-1] == 1 else a


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("channels", [1, 3])
def test_downsample_matches_pil_bicubic(factor, channels):
    a = _smooth_uint8(24 * factor + 0, 36 * factor, channels)[: 23 * factor, : 35 * factor]  # odd output sizes
    h, w = a.shape[:2]
    ours = _array(Downsample(factor).forward(_tensor(a)))
    # PIL in float: the same arithmetic, to float32 precision
    assert np.abs(ours - _pil_resize(a, (w // factor, h // factor), "F")).max() < 1e-3
    # PIL on the 8-bit image: within a rounding level (PIL rounds after each of its two 1-D passes)
    assert np.abs(np.round(ours) - _pil_resize(a, (w // factor, h // factor))).max() <= 1


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downsample_matches_torchvision_and_interpolate(factor):
    from torchvision.transforms.functional import InterpolationMode, resize

    x = torch.rand(2, 3, 15 * factor, 21 * factor, generator=torch.Generator().manual_seed(5))
    ours = Downsample(factor).forward(x)
    assert ours.shape == (2, 3, 15, 21)
    assert torch.allclose(ours, resize(x, [15, 21], InterpolationMode.BICUBIC, antialias=True), atol=1e-6)
    reference = torch.nn.functional.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True)
    assert torch.allclose(ours, reference, atol=1e-6)


def test_downsample_start_is_pil_bicubic_enlargement():
    small = _smooth_uint8(23, 35)
    ours = _array(Downsample(2).start(_tensor(small)))
    assert np.abs(ours - _pil_resize(small, (70, 46), "F")).max() < 1e-3


def test_sizes_that_are_not_multiples_of_the_factor_are_refused():
    with pytest.raises(ValueError, match=r"multiples of 3, got 31x33.*crop_to_multiple"):
        Downsample(3).forward(torch.rand(1, 1, 31, 33))
    cropped = crop_to_multiple(torch.rand(1, 1, 31, 33), 3)
    assert cropped.shape[-2:] == (30, 33) and Downsample(3).forward(cropped).shape[-2:] == (10, 11)
    assert Downsample(3).input_size(10, 11) == (30, 33)


@pytest.mark.parametrize("factor", [1, 5, 2.5, True, "2"])
def test_only_factors_2_3_4(factor):
    with pytest.raises(ValueError, match="one of 2, 3, 4"):
        Downsample(factor)


# --- starts ---------------------------------------------------------------------------------------------------
def test_wiener_deconvolution_inverts_a_noise_free_blur_inside_the_image():
    """With almost no noise, the regularised inverse undoes the blur of a smooth image (up to the border, where the
    mirrored copy is not exactly the reflect padding)."""
    x = _tensor(_smooth_uint8(60, 80)).float()
    op = Blur(gaussian_kernel(1.0))
    y = op.forward(x)
    restored = wiener_deconvolution(y, op.kernel, 1e-4, weight=0.01)
    err_blurred = (y - x)[..., 8:-8, 8:-8].abs().mean()
    err_restored = (restored - x)[..., 8:-8, 8:-8].abs().mean()
    assert err_restored < 0.2 * err_blurred


def test_operator_norms():
    assert Blur(gaussian_kernel(1.6)).norm_squared() == pytest.approx(1.0, abs=0.02)  # the DC passes unchanged
    assert 0.2 < Downsample(2).norm_squared() < 0.5  # a mean over ~4 pixels
