"""Cheap classical estimates where restoration chains of fully convolutional models start.

Fashion-MNIST models start from their data-fitted Gaussian conditioned on the observation. Photos have no
global Gaussian, but the same idea holds locally: a Gaussian prior on each small window gives the local Wiener
filter (denoising), and a smooth surface through the observed pixels gives the fill (inpainting). Both cost a
few operations per pixel, work on any size, and leave the energy's chains only what they know beyond them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

def wiener_window(sigma: float) -> int:
    """The window side for noise of std ``sigma`` ([0, 1] units): stronger noise needs more pixels to average.

    Measured on 16 validation crops of 96 px (training.photos.validation_crops): best 7 px at sigma = 15/255
    and 25/255 (5 px: -0.2 and -0.6 dB), 9 px at 50/255 (7 px: -0.25 dB).
    """
    return 5 if sigma < 10 / 255 else 7 if sigma < 40 / 255 else 9


def local_wiener(noisy: Tensor, sigma: Tensor | float, window: int | None = None) -> Tensor:
    """The adaptive Wiener filter: per pixel, a Gaussian prior with the window's mean and variance.

    x = m + max(v - sigma^2, 0) / v * (y - m), m and v the local mean and variance of y (reflect padding);
    ``sigma`` a number or one value per image (B,); ``window`` default: :func:`wiener_window` of each image's
    sigma (an image's result does not depend on the batch around it). Input and output (B, C, H, W).
    """
    b = noisy.shape[0]
    sigma = torch.as_tensor(sigma, dtype=noisy.dtype, device=noisy.device).reshape(-1).expand(b)
    if window is None:
        windows = [wiener_window(float(s)) for s in sigma]
        if len(set(windows)) > 1:
            return torch.cat([local_wiener(noisy[i:i + 1], sigma[i:i + 1], w) for i, w in enumerate(windows)])
        window = windows[0]
    if window < 1 or window % 2 == 0:
        raise ValueError(f"the Wiener window must be an odd number of pixels, got {window}")
    var_noise = sigma.reshape(b, 1, 1, 1) ** 2
    pad = window // 2
    padded = F.pad(noisy, (pad,) * 4, mode="reflect")
    mean = F.avg_pool2d(padded, window, stride=1)
    var = (F.avg_pool2d(padded * padded, window, stride=1) - mean * mean).clamp(min=0)
    gain = (var - var_noise).clamp(min=0) / var.clamp(min=1e-12)
    return mean + gain * (noisy - mean)


def smooth_fill(image: Tensor, known: Tensor, iterations: int = 30) -> Tensor:
    """Fill the pixels where ``known`` is False with a smooth surface through the known ones (push-pull).

    Coarse-to-fine: the known pixels are averaged down a pyramid until every coarse pixel has data, each level
    fills its holes from the one below (bilinear), then ``iterations`` Jacobi steps of Laplace's equation
    smooth each level's fill. Known pixels are returned unchanged. (B, C, H, W) float; ``known`` bool,
    broadcastable to the image.
    """
    known = known.expand_as(image)
    weight = known.to(image.dtype)
    return _fill(image * weight, weight, iterations)


def _fill(values: Tensor, weight: Tensor, iterations: int) -> Tensor:
    h, w = values.shape[-2:]
    observed = weight > 0
    estimate = values / weight.clamp(min=1e-12)
    if bool(observed.all()) or min(h, w) <= 2:
        if not bool(observed.all()):  # a tiny level with holes: the mean of what it has
            mean = (values.sum(dim=(-2, -1), keepdim=True) / weight.sum(dim=(-2, -1), keepdim=True).clamp(min=1e-12))
            estimate = torch.where(observed, estimate, mean.expand_as(estimate))
        return estimate
    coarse = _fill(F.avg_pool2d(values, 2, ceil_mode=True), F.avg_pool2d(weight, 2, ceil_mode=True), iterations)
    up = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    x = torch.where(observed, estimate, up)
    kernel = x.new_tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]]).view(1, 1, 3, 3)
    c = x.shape[1]
    for _ in range(iterations):
        neighbours = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3), groups=c)
        x = torch.where(observed, estimate, neighbours)
    return x
