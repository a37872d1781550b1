"""Synthetic degradations: the library's one home for noise and masks that restoration is measured on.

    g = torch.Generator().manual_seed(0)                 # or pass an int seed
    noisy = add_gaussian_noise(clean, 25 / 255, g)        # sigma in [0, 1] units, clipped to [0, 1]
    noisy = add_synthetic_noise(clean, 25 / 255, seed=s)  # a test input for a restoration run with seed s
    known = scribble_mask(512, 512, g)                    # (1, 1, H, W) bool: True = observed, False = fill
    known = text_mask(512, 512)                           # overlaid text, deterministic

Images are float tensors (B, C, H, W) in [0, 1]; masks follow the project convention ``known_mask`` (1 = observed
pixel, 0 = to be filled) and are bool (1, 1, H, W), broadcastable to any batch and channel count. Every random
degradation takes a ``torch.Generator`` or an int seed and draws on the CPU, so the same seed gives the same
degradation on every device.

Synthetic noise added to test a restoration (the CLI's ``--add-noise``, the app's "add synthetic noise") draws
from its own stream, :func:`synthetic_noise_generator`: the restoration chains seed a generator with the run's seed
``s`` and draw the image's shape first, so noise drawn from ``s`` too would be exactly the chain's first draw.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

SCRIBBLE_FRACTION = (0.05, 0.15)  # share of pixels a scribble mask hides: drawn uniformly in this range
SCRIBBLE_WIDTH = (3, 7)  # brush width in px, drawn per stroke (inclusive)
SYNTHETIC_NOISE_STREAM = 1  # SeedSequence spawn key of the synthetic noise (the chains use the seed itself)
TEXT = "The quick brown fox jumps over the lazy dog 0123456789"


def as_generator(generator: torch.Generator | int) -> torch.Generator:
    """A CPU generator: ``generator`` itself, or a fresh one seeded with the int ``generator``."""
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(int(generator))
    raise TypeError(f"pass a torch.Generator or an int seed, got {type(generator).__name__}")


def _uniform(gen: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _check_size(h: int, w: int) -> None:
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in (h, w)):
        raise ValueError(f"mask size must be two integers >= 1, got {h!r} x {w!r}")


# --- noise ----------------------------------------------------------------------------------------------------
def add_gaussian_noise(x: Tensor, sigma: float | Tensor, generator: torch.Generator | int, clip: bool = True
                       ) -> Tensor:
    """``x`` + N(0, sigma^2) per pixel, clipped to [0, 1] (as a stored image holds it) unless ``clip=False``.

    ``sigma``: the noise std in [0, 1] units (25/255 for "sigma = 25"), a number or one value per image (B,).
    The noise is drawn on the CPU from ``generator`` (a torch.Generator or an int seed), then moved to x's device.
    Note that clipping makes the noise weaker than sigma near black and white (what real stored images get).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 4:
        raise TypeError("x must be a float tensor (B, C, H, W) in [0, 1]")
    s = torch.as_tensor(sigma, dtype=torch.float64).flatten()
    if s.numel() not in (1, x.shape[0]) or not torch.isfinite(s).all() or (s < 0).any():
        raise ValueError(f"sigma must be finite, >= 0, and a number or one value per image; got {sigma}")
    noise = torch.randn(x.shape, generator=as_generator(generator), dtype=torch.float32)
    s = s.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
    noisy = x + s * noise.to(device=x.device, dtype=x.dtype)
    return noisy.clamp(0, 1) if clip else noisy


def synthetic_noise_generator(seed: int) -> torch.Generator:
    """The synthetic noise's own stream for a restoration run seeded with ``seed``: a CPU generator seeded with
    the first 64 bits of ``numpy.random.SeedSequence(seed mod 2**64, spawn_key=(1,))``, never with ``seed``
    itself (the chains' seed)."""
    derived = np.random.SeedSequence(int(seed) % 2**64, spawn_key=(SYNTHETIC_NOISE_STREAM,))
    return torch.Generator().manual_seed(int(derived.generate_state(1, np.uint64)[0]))


def add_synthetic_noise(x: Tensor, sigma: float | Tensor, seed: int) -> Tensor:
    """``x`` + N(0, sigma^2), clipped to [0, 1]: the noisy input that tests a restoration run with ``seed``, drawn
    from :func:`synthetic_noise_generator` so that it is independent of the chains' noise."""
    return add_gaussian_noise(x, sigma, synthetic_noise_generator(seed))


# --- scribbles ------------------------------------------------------------------------------------------------
def _stroke(h: int, w: int, gen: torch.Generator, width: tuple[int, int]) -> np.ndarray:
    """One smooth brush stroke, bool (H, W): a random walk whose heading turns smoothly, drawn with a round brush."""
    size = min(h, w)
    brush = int(width[0] + math.floor(_uniform(gen) * (width[1] - width[0] + 1)))
    brush = max(1, min(brush, width[1]))
    x, y = _uniform(gen, 0, w - 1), _uniform(gen, 0, h - 1)
    heading, turn = _uniform(gen, 0, 2 * math.pi), _uniform(gen, -0.4, 0.4)
    length = _uniform(gen, 0.25, 0.7) * size  # px along the stroke
    vertices = 12
    step = length / vertices
    points = [(x, y)]
    for _ in range(vertices):
        turn = 0.7 * turn + 0.35 * float(torch.randn((), generator=gen))  # smooth curvature
        heading += turn
        x, y = x + step * math.cos(heading), y + step * math.sin(heading)
        points.append((x, y))
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    draw.line(points, fill=255, width=brush, joint="curve")
    r = (brush - 1) / 2
    for px, py in (points[0], points[-1]):  # round caps
        draw.ellipse((px - r, py - r, px + r, py + r), fill=255)
    return np.asarray(canvas) > 0


def scribble_mask(h: int, w: int, generator: torch.Generator | int, *,
                  fraction: tuple[float, float] = SCRIBBLE_FRACTION, width: tuple[int, int] = SCRIBBLE_WIDTH,
                  max_strokes: int = 400) -> Tensor:
    """Random smooth brush strokes to fill: ``known_mask`` bool (1, 1, h, w), False under the strokes.

    A target share of hidden pixels is drawn uniformly in ``fraction``; strokes (each ``width`` px wide, a random
    curve about a quarter to two thirds of the short side long) are added until the target is reached, and a stroke
    that would take the share above ``fraction[1]`` is left out, so the share always lies in ``fraction`` (below it
    only if ``max_strokes`` strokes do not reach it, which takes an image of a few pixels).
    """
    _check_size(h, w)
    low, high = fraction
    if not 0 <= low <= high <= 1:
        raise ValueError(f"fraction must be (low, high) with 0 <= low <= high <= 1, got {fraction}")
    if not 1 <= width[0] <= width[1]:
        raise ValueError(f"width must be (low, high) px with 1 <= low <= high, got {width}")
    gen = as_generator(generator)
    target = _uniform(gen, low, high)
    hidden = np.zeros((h, w), dtype=bool)
    total = h * w
    count = 0
    for _ in range(max_strokes):
        if count >= target * total:
            break
        union = hidden | _stroke(h, w, gen, width)
        new = int(union.sum())
        if new <= high * total:
            hidden, count = union, new
    return torch.from_numpy(~hidden)[None, None]


# --- text -----------------------------------------------------------------------------------------------------
def _bitmap_font() -> ImageFont.ImageFont:
    """PIL's built-in bitmap font (the same glyphs everywhere, no FreeType needed)."""
    if hasattr(ImageFont, "load_default_imagefont"):  # Pillow >= 10.1: load_default() may return FreeType
        return ImageFont.load_default_imagefont()
    return ImageFont.load_default()


def text_mask(h: int, w: int, text: str = TEXT, *, scale: int | None = None, line_spacing: float = 2.0,
              offset: int = 0) -> Tensor:
    """Overlaid text to fill: ``known_mask`` bool (1, 1, h, w), False on the glyphs. Deterministic (no seed).

    Lines of ``text`` (repeated to span the width, each line shifted along by a few characters) are rendered in
    PIL's built-in bitmap font (11 px lines, 1-px strokes) and scaled up by the integer ``scale`` (nearest
    neighbour: strokes ``scale`` px wide, lines 11 * scale px tall); ``scale=None`` picks max(1, round(long side
    / 256)): 2 for a 512-px photo. Lines repeat every ``line_spacing`` line heights, starting ``offset`` px
    (unscaled) from the top. About 10-15 % of the pixels are hidden at the defaults.
    """
    _check_size(h, w)
    if not text or not text.strip():
        raise ValueError("text must contain something to draw")
    if scale is None:
        scale = max(1, round(max(h, w) / 256))
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    if not line_spacing >= 1:
        raise ValueError(f"line_spacing must be >= 1 (line heights), got {line_spacing}")
    font = _bitmap_font()
    small_h, small_w = math.ceil(h / scale), math.ceil(w / scale)
    left, top, right, bottom = font.getbbox(text + " ")
    line_h = max(1, bottom - top)
    char_w = max(1, (right - left) / max(1, len(text) + 1))
    canvas = Image.new("L", (small_w, small_h), 0)
    draw = ImageDraw.Draw(canvas)
    pitch = max(line_h + 1, round(line_h * line_spacing))
    repeats = math.ceil(small_w / max(1, right - left)) + 2
    line = (text + " ") * repeats
    for k, y in enumerate(range(int(offset), small_h, pitch)):
        shift = (7 * k) % (len(text) + 1)  # shift each line by a few characters: the glyphs do not line up
        draw.text((-round(shift * char_w), y - top), line, fill=255, font=font)
    hidden = np.asarray(canvas) > 0
    hidden = hidden.repeat(scale, axis=0).repeat(scale, axis=1)[:h, :w]
    return torch.from_numpy(~hidden)[None, None]


def masked_fraction(known_mask: Tensor) -> float:
    """Share of pixels to fill (0 in ``known_mask``)."""
    return float((~known_mask.bool()).float().mean())
