"""Linear degradations y = A x (+ Gaussian noise) that restoration inverts with a learned prior.

    blur = Blur(gaussian_kernel(1.6))          # or box_kernel(5), motion_kernel(9, 30), parse_kernel("motion:9,30")
    y = blur(x)                                # = blur.forward(x), reflect borders, same size
    x0 = blur.start(y, sigma=2 / 255)          # Wiener deconvolution: where restoration chains start
    down = Downsample(2)                       # antialiased bicubic, as PIL's resize(..., BICUBIC) does
    small = down(x)                            # (B, C, H/2, W/2)
    x0 = down.start(small)                     # bicubic upsampling
    holes = Mask(known)                        # inpainting: the observed pixels (known 1); start: a smooth fill

Every operator maps images (B, C, H, W) to images, acts on each channel alike, and has the exact adjoint
``adjoint(y)`` (<A x, y> = <x, A^T y>), computed as the vector-Jacobian product of ``forward``: A is linear, so its
vjp at any point is A^T, also where reflect padding folds border pixels back in (there the adjoint of a padded
convolution is not the flipped-kernel convolution). ``data_gradient(x, y)`` gives A x - y and A^T (A x - y) from
one forward and one backward pass: what a restoration chain needs every step.

Why not ``deepinv.physics``: its ``Downsampling`` is a convolution with a 4f x 4f bicubic filter followed by
taking every f-th pixel, with circular/reflect/replicate padding. That is not what PIL's ``resize(..., BICUBIC)``
and torchvision's ``resize(antialias=True)`` compute (they centre output pixel i on input (i + 1/2) f - 1/2 and
renormalise the weights that fall outside the image), and the point of ``Downsample`` is to model photos made
smaller by those tools; ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)`` computes exactly that.
Its ``Blur`` with reflect padding would fit, but deepinv pulls in torchmetrics, einops, h5py, natsort and requests
for a 20-line operator; ``febm.inverse.deepinv_prior`` and ``deepinv_physics`` (optional) plug our energies and
operators into deepinv's solvers instead.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .classical import smooth_fill

KERNEL_SUM_TOLERANCE = 1e-3  # |sum - 1| allowed before a kernel is refused as not normalised
SIGMA_QUANTISATION = 1 / (255 * math.sqrt(12))  # the rounding noise of an 8-bit image: the smallest sigma used
# Wiener regularisation: S_noise / S_image(f) = sigma^2 G(f) / c for a 1/f^2 image spectrum, G = |grad|^2's response
# and c the mean squared gradient of photos (0.0039 on the validation crops: 1/c = 256). Tuned on 16 validation crops
# (python -m bench.photo_inverse --tune): best 500-700 for a Gaussian blur of 1.6 px, 1500 for a 9-px motion blur, and
# 1000 within 0.07 dB of the best for both.
WIENER_WEIGHT = 1000.0
FACTORS = (2, 3, 4)


class LinearOperator:
    """y = A x on images (B, C, H, W); subclasses define ``forward``, ``input_size`` and ``start``."""

    name = "linear"

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the images whose forward has size (height, width)."""
        return height, width

    def adjoint(self, y: Tensor) -> Tensor:
        """A^T y: the vjp of ``forward`` (exact, A being linear)."""
        b, c, h, w = y.shape
        x = y.new_zeros(b, c, *self.input_size(h, w))
        _, pullback = torch.func.vjp(self.forward, x)
        return pullback(y)[0]

    def data_gradient(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(A x - y, A^T (A x - y)): the residual and the gradient of ||A x - y||^2 / 2."""
        ax, pullback = torch.func.vjp(self.forward, x)
        residual = ax - y
        return residual, pullback(residual)[0]

    def gram(self, x: Tensor) -> Tensor:
        """A^T A x, from one forward and one backward pass."""
        ax, pullback = torch.func.vjp(self.forward, x)
        return pullback(ax)[0]

    def start(self, y: Tensor, sigma: float | Tensor) -> Tensor:
        """A classical estimate of x from y, clamped to [0, 1]: where restoration chains start."""
        raise NotImplementedError

    def norm_squared(self, channels: int = 1, size: int = 64, iterations: int = 30) -> float:
        """||A||^2 = the largest eigenvalue of A^T A, by power iteration on a size x size image (fixed seed).
        Restoration sizes its steps by it (the data term's curvature is ||A||^2 / sigma^2)."""
        size = self._probe_size(size)
        x = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        value = 1.0
        for _ in range(iterations):
            x = x / x.norm()
            x = self.gram(x)
            value = float(x.norm())
        return value

    def _probe_size(self, size: int) -> int:
        return size


# --- blur -------------------------------------------------------------------------------------------------------
def check_kernel(kernel) -> Tensor:
    """A blur kernel as a float64 (kh, kw) tensor: 2-D, finite, no negative entries, summing to 1.

    A kernel that does not sum to 1 is refused rather than silently rescaled: a sum of 0.5 may be a kernel image read
    with the wrong scale or a blur that also darkens, and the caller knows which. ``kernel_from_image`` normalises.
    """
    if isinstance(kernel, Tensor):
        k = kernel.detach().cpu().to(torch.float64)
    else:
        try:
            k = torch.as_tensor(np.asarray(kernel, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError("a blur kernel must be a 2-D array or tensor of numbers, "
                            f"got {type(kernel).__name__}") from None
    if k.dim() != 2 or k.numel() == 0:
        raise ValueError(f"a blur kernel must be 2-D (height, width), got shape {tuple(k.shape)}")
    if not torch.isfinite(k).all():
        raise ValueError("the blur kernel contains NaN or infinite values")
    if (k < 0).any():
        raise ValueError(f"a blur kernel has no negative entries, got a minimum of {k.min().item():.4g}")
    total = k.sum().item()
    if abs(total - 1.0) > KERNEL_SUM_TOLERANCE:
        raise ValueError(f"a blur kernel must sum to 1, this one sums to {total:.6g}: divide it by its sum "
                         "(kernel_from_image does) if the blur keeps the image's brightness")
    return k / total


class Blur(LinearOperator):
    """Convolution with a 2-D kernel, per channel, with reflect borders: y has x's size.

    y[i, j] = sum_{m, n} k[m, n] x[i + cy - m, j + cx - n], (cy, cx) = ((kh - 1) // 2, (kw - 1) // 2) the kernel's
    centre, x reflected at the border (torch's "reflect": the edge pixel is not repeated). The kernel must not be
    larger than the image. ``start``: Wiener deconvolution (:func:`wiener_deconvolution`).
    """

    name = "blur"

    def __init__(self, kernel):
        self.kernel = check_kernel(kernel).to(torch.float32)

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) reflect padding that makes the valid correlation with the flipped kernel
        a convolution centred on the kernel's centre."""
        kh, kw = self.kernel.shape
        return kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2

    def check_size(self, height: int, width: int) -> None:
        kh, kw = self.kernel.shape
        if kh > height or kw > width:
            raise ValueError(f"the blur kernel ({kh}x{kw}) is larger than the image ({height}x{width})")

    def forward(self, x: Tensor) -> Tensor:
        self.check_size(*x.shape[-2:])
        c = x.shape[1]
        weight = self.kernel.flip(0, 1).to(x.device, x.dtype).expand(c, 1, *self.kernel.shape)
        return F.conv2d(F.pad(x, self.padding, mode="reflect"), weight, groups=c)

    def start(self, y: Tensor, sigma: float | Tensor, weight: float = WIENER_WEIGHT) -> Tensor:
        """Wiener deconvolution, clamped to [0, 1]. Measured against Richardson-Lucy on 16 validation crops (noise
        2/255, each at its best setting; bench/photo_inverse_params.json): Gaussian blur 1.6 px, Wiener 34.67 dB
        (grey) / 34.74 (colour), Richardson-Lucy 34.87 / 34.90 after 12-20 steps; motion 9 px, Wiener 32.68 / 32.74,
        Richardson-Lucy 32.16 / 32.32 after 8 steps (more steps amplify the noise). Wiener is one FFT, a few times
        cheaper, and needs no step count per kernel."""
        return wiener_deconvolution(y, self.kernel, sigma, weight).clamp(0.0, 1.0)

    def _probe_size(self, size: int) -> int:
        return max(size, *self.kernel.shape)

    def __repr__(self) -> str:
        return f"Blur(kernel {self.kernel.shape[0]}x{self.kernel.shape[1]})"


def _sigma_column(sigma: float | Tensor, y: Tensor) -> Tensor:
    s = torch.as_tensor(sigma, dtype=y.dtype, device=y.device).flatten()
    if s.numel() not in (1, y.shape[0]):
        raise ValueError(f"sigma must be a number or one value per image ({y.shape[0]}), got {s.numel()} values")
    return s.expand(y.shape[0]).view(-1, 1, 1, 1)


def wiener_deconvolution(y: Tensor, kernel: Tensor, sigma: float | Tensor, weight: float = WIENER_WEIGHT) -> Tensor:
    """x = F^-1[conj(K) Y / (|K|^2 + weight sigma^2 G)] on a mirrored copy of y, cropped back to y's size.

    The Wiener filter for noise of std ``sigma`` (a number or one per image; at least the 8-bit rounding level) and
    an image spectrum c / G(f), G(f) = 4 sin^2(pi u) + 4 sin^2(pi v) the response of the squared gradient: photos'
    spectra fall as 1/f^2, and c is their mean squared gradient, so ``weight`` = 1/c. The FFT is periodic: y is
    mirrored into a (2H, 2W) image (half-sample symmetric, so the periodic copy has no seams), which models the blur
    at the border as the reflect padding of :class:`Blur` does (up to the edge pixel).
    """
    kernel = check_kernel(kernel).to(y.device, y.dtype)
    h, w = y.shape[-2:]
    mirrored = torch.cat([y, y.flip(-2)], dim=-2)
    mirrored = torch.cat([mirrored, mirrored.flip(-1)], dim=-1)
    big_h, big_w = mirrored.shape[-2:]
    kh, kw = kernel.shape
    if kh > big_h or kw > big_w:
        raise ValueError(f"the blur kernel ({kh}x{kw}) is larger than the image ({h}x{w})")
    psf = y.new_zeros(big_h, big_w)
    psf[:kh, :kw] = kernel
    psf = torch.roll(psf, shifts=(-((kh - 1) // 2), -((kw - 1) // 2)), dims=(0, 1))
    k_hat = torch.fft.rfft2(psf)
    u = torch.fft.fftfreq(big_h, device=y.device, dtype=y.dtype).view(-1, 1)
    v = torch.fft.rfftfreq(big_w, device=y.device, dtype=y.dtype).view(1, -1)
    gradient_response = 4 * torch.sin(math.pi * u) ** 2 + 4 * torch.sin(math.pi * v) ** 2
    noise = _sigma_column(sigma, y).clamp(min=SIGMA_QUANTISATION) ** 2
    x_hat = k_hat.conj() * torch.fft.rfft2(mirrored) / (k_hat.abs() ** 2 + weight * noise * gradient_response)
    return torch.fft.irfft2(x_hat, s=(big_h, big_w))[..., :h, :w]


# --- kernels ----------------------------------------------------------------------------------------------------
def gaussian_kernel(sigma_b: float, truncate: float = 4.0) -> Tensor:
    """A Gaussian blur of std ``sigma_b`` px, sampled on (2r + 1)^2 pixels, r = ceil(truncate sigma_b), sum 1."""
    sigma_b = _positive(sigma_b, "the Gaussian blur's sigma")
    r = max(1, math.ceil(truncate * sigma_b))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-t**2 / (2 * sigma_b**2))
    k = g[:, None] * g[None, :]
    return (k / k.sum()).float()


def box_kernel(size: int) -> Tensor:
    """A size x size box (uniform) blur."""
    size = _whole(size, "the box size")
    return torch.full((size, size), 1.0 / size**2)


def motion_kernel(length: float, angle_deg: float = 0.0, supersample: int = 8) -> Tensor:
    """A straight camera shake: a 1-px wide bar of ``length`` px through the centre at ``angle_deg`` (counter-
    clockwise from horizontal, image rows pointing down), each pixel weighted by the bar's area in it (``supersample``
    ^2 points per pixel), sum 1. At 0 degrees a length of 9 is exactly a 1 x 9 box."""
    length = _positive(length, "the motion length")
    angle = math.radians(float(angle_deg))
    half = math.ceil(math.hypot(length / 2, 0.5))
    side = 2 * half + 1
    s = supersample
    t = (torch.arange(side * s, dtype=torch.float64) + 0.5) / s - half - 0.5  # sub-pixel centres, kernel centre at 0
    rows, cols = torch.meshgrid(t, t, indexing="ij")
    along = cols * math.cos(angle) - rows * math.sin(angle)
    across = cols * math.sin(angle) + rows * math.cos(angle)
    inside = ((along.abs() <= length / 2) & (across.abs() <= 0.5)).double()
    k = F.avg_pool2d(inside[None, None], s)[0, 0]
    return _trim(k / k.sum()).float()


def _trim(k: Tensor) -> Tensor:
    """Drop all-zero border rows/columns in pairs (top with bottom, left with right): the centre stays put."""
    while k.shape[0] > 2 and k[0].sum() == 0 and k[-1].sum() == 0:
        k = k[1:-1]
    while k.shape[1] > 2 and k[:, 0].sum() == 0 and k[:, -1].sum() == 0:
        k = k[:, 1:-1]
    return k


def kernel_from_image(image) -> Tensor:
    """A blur kernel from an image (PIL image, or a 2-D / (H, W, C) array): its grey values divided by their sum
    (a kernel image's scale is arbitrary), with all-zero border rows and columns cut off. Colour images are
    averaged over their channels; an alpha channel is ignored."""
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL
        image = np.asarray(image.convert("F") if image.mode not in ("I;16", "I", "F") else image, dtype=np.float64)
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3:
        a = a[..., :3].mean(axis=-1) if a.shape[-1] in (3, 4) else a.mean(axis=-1)
    if a.ndim != 2:
        raise ValueError(f"a kernel image must be 2-D (grey) or (H, W, channels), got shape {a.shape}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError("a kernel image must hold finite values >= 0")
    rows, cols = np.flatnonzero(a.sum(axis=1)), np.flatnonzero(a.sum(axis=0))
    if rows.size == 0:
        raise ValueError("the kernel image is all black: there is no blur kernel in it")
    a = a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return torch.from_numpy(a / a.sum()).float()


KERNEL_FORMS = "gaussian:SIGMA (e.g. gaussian:1.6), box:SIZE (e.g. box:5) or motion:LENGTH[,ANGLE] (e.g. motion:9,30)"


def parse_kernel(text: str) -> Tensor:
    """A kernel preset from text: "gaussian:1.6" (std in px), "box:5" (side in px), "motion:9,30" (length in px,
    angle in degrees; "motion:9" is horizontal)."""
    match = re.fullmatch(r"\s*(gaussian|box|motion)\s*:\s*([^,]+?)\s*(?:,\s*(.+?))?\s*", str(text))
    if match is None:
        raise ValueError(f"unknown kernel {text!r}: use {KERNEL_FORMS}")
    kind, first, second = match.groups()
    if second is not None and kind != "motion":
        raise ValueError(f"{kind} takes one number, got {text!r}: use {KERNEL_FORMS}")
    if kind == "gaussian":
        return gaussian_kernel(_number(first, text))
    if kind == "box":
        return box_kernel(_number(first, text))
    return motion_kernel(_number(first, text), _number(second, text) if second is not None else 0.0)


def _number(text: str, whole: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} in the kernel {whole!r} is not a number: use {KERNEL_FORMS}") from None
    if not math.isfinite(value):
        raise ValueError(f"the kernel {whole!r} needs finite numbers")
    return value


MAX_KERNEL_PX = 101  # presets: larger blurs than this are not a preset's business


def _positive(value, what: str) -> float:
    value = float(value)
    if not 0 < value <= MAX_KERNEL_PX / 2:
        raise ValueError(f"{what} must be > 0 and at most {MAX_KERNEL_PX / 2:g} px, got {value:g}")
    return value


def _whole(value, what: str) -> int:
    if float(value) != int(float(value)) or not 1 <= int(float(value)) <= MAX_KERNEL_PX:
        raise ValueError(f"{what} must be a whole number of pixels in [1, {MAX_KERNEL_PX}], got {value}")
    return int(float(value))


# --- downsampling -----------------------------------------------------------------------------------------------
class Downsample(LinearOperator):
    """Antialiased bicubic downsampling by an integer ``factor`` (2, 3 or 4): what PIL's ``resize(..., BICUBIC)``
    and torchvision's ``resize(antialias=True)`` do to make a photo smaller (the cubic kernel with a = -0.5,
    stretched by the factor; output pixel i centred on input (i + 1/2) factor - 1/2; weights that fall outside the
    image dropped and the rest renormalised), via ``torch.nn.functional.interpolate(antialias=True)``.

    Sizes: the image's height and width must be multiples of the factor (the result is then exactly 1/factor of
    it); other sizes are refused, since a resize to round(H / factor) would not be a downsampling by ``factor``
    (:func:`crop_to_multiple` cuts the last rows/columns off). ``start``: bicubic upsampling (the same kernel).
    """

    name = "downsample"

    def __init__(self, factor: int):
        if isinstance(factor, bool) or factor not in FACTORS:
            raise ValueError(f"the downsampling factor must be one of {', '.join(map(str, FACTORS))}, got {factor!r}")
        self.factor = int(factor)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        return height * self.factor, width * self.factor

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        f = self.factor
        if h % f or w % f:
            raise ValueError(f"downsampling by {f} needs a height and width that are multiples of {f}, got {h}x{w} "
                             f"(crop_to_multiple(x, {f}) cuts the last rows/columns off)")
        return F.interpolate(x, size=(h // f, w // f), mode="bicubic", antialias=True, align_corners=False)

    def start(self, y: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        """Bicubic upsampling (PIL's BICUBIC enlargement), clamped to [0, 1]; sigma is not used."""
        h, w = self.input_size(*y.shape[-2:])
        return F.interpolate(y, size=(h, w), mode="bicubic", antialias=True, align_corners=False).clamp(0.0, 1.0)

    def _probe_size(self, size: int) -> int:
        return self.factor * math.ceil(size / self.factor)

    def __repr__(self) -> str:
        return f"Downsample({self.factor})"


class Mask(LinearOperator):
    """Inpainting's degradation: y = x on the observed pixels (``known`` 1), 0 on the missing ones. Self-adjoint and
    its own Gram; the start is the smooth fill of the holes (febm.classical.smooth_fill). ``known``: (1 or B, 1 or
    C, H, W), broadcast over the images it is applied to."""

    name = "mask"

    def __init__(self, known: Tensor):
        self.known = torch.as_tensor(known).to(torch.float32)
        if self.known.dim() != 4 or not ((self.known == 0) | (self.known == 1)).all():
            raise ValueError(f"known must be a (B, C, H, W) mask of 0 and 1, got shape {tuple(self.known.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        return x * self.known.to(x.device, x.dtype)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.forward(y)

    def gram(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def start(self, y: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        return smooth_fill(y, self.known.to(y.device).bool()).clamp(0.0, 1.0)


def crop_to_multiple(x: Tensor, factor: int) -> Tensor:
    """x without its last H mod factor rows and W mod factor columns."""
    h, w = x.shape[-2:]
    return x[..., : h - h % factor, : w - w % factor]
