"""Images at the edges: PIL / numpy / files <-> the model's float tensors, masks, preset masks.

    image = load_image("photo.jpg")                           # clear errors for missing, corrupt, huge files
    x, placement = to_model_tensor(image, model)              # (1, C, H, W) in [0, 1] at the model's size
    known = mask_to_known(load_image("mask.png"), model, placement=placement)   # painted = fill -> 0
    save_image(from_model_tensor(result), "result.png")       # 8-bit PNG, written atomically

Fully convolutional (photo) models work at the image's own resolution instead:

    photo = load_photo("photo.jpg")                           # (1, C, H, W) pixels + the alpha, kept apart
    photo = photo_to_restore(photo, 1_000_000, downscale=True)  # downscaled (area average) only if larger
    save_photo(result, "clean.png", photo)                    # PNG, the alpha re-attached, 16-bit kept 16-bit

Noise levels given at the edges in either unit: ``sigma_from_unit(25, "0-255")`` -> 25 / 255, the library's unit.

Inside febm images are float tensors (B, C, H, W) in [0, 1] and masks are ``known_mask`` (1 = observed, 0 =
fill). For model-sized tensors transparent pixels are composited onto black, the background of Fashion-MNIST;
photos keep their colour under transparent pixels and their alpha apart.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from .degradations import add_gaussian_noise
from .files import atomic_path, write_atomic
from .png16 import png16_bytes, read_png16

MAX_PIXELS = 40_000_000
RESOLUTION_RATIO = 4  # ResolutionWarning when a side is this many times larger or smaller than the model's
PRESET_MASKS = ("center", "left-half", "right-half", "top-half", "bottom-half", "random-50", "random-80")
FITS = ("resize", "center")
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
# The units a noise std (sigma) is given in at the edges, and the largest value each allows: "0-1", a fraction of
# the [0, 1] pixel range (the library's unit); "0-255", levels of an 8-bit image.
SIGMA_UNITS = {"0-1": 1.0, "0-255": 255.0}
_SIGMA_MEANING = {"0-1": "the noise std in [0, 1] units, a fraction of the pixel range",
                  "0-255": "the noise std in 0-255 levels of an 8-bit image"}
ORIENTATION_TAG = 0x0112  # EXIF orientation, 1-8
_ORIENTATIONS = {  # EXIF orientation -> the transpose that shows the image upright (as in ImageOps.exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# PIL modes -> the 8-bit mode they are read in; others (CMYK, YCbCr, HSV, LAB, RGBX...) are read as RGB.
# "P" goes through RGBA so that a palette's transparent entry is kept.
_READ_AS = {"1": "L", "L": "L", "LA": "LA", "La": "LA", "P": "RGBA", "PA": "RGBA", "RGBA": "RGBA", "RGBa": "RGBA"}


class ResolutionWarning(UserWarning):
    """The input's size is far from the model's: resizing loses detail (or cannot add any)."""


@dataclass(frozen=True)
class Placement:
    """Where a model-sized tensor came from: what maps results and masks back onto the input."""

    size: tuple[int, int]  # the input's (width, height), PIL order
    mode: str  # the input's PIL mode; for arrays and tensors "L", "LA", "RGB" or "RGBA" by channel count
    box: tuple[int, int, int, int]  # the region (left, upper, right, lower) that was resized to the model's size


# --- files --------------------------------------------------------------------------------------------------
def check_pil(image: Image.Image, max_pixels: int = MAX_PIXELS, *, what: str = "image") -> Image.Image:
    """``image`` if it has pixels and at most ``max_pixels`` of them (PIL knows the size before decoding)."""
    width, height = image.size
    if width == 0 or height == 0:
        raise ValueError(f"{what} is empty ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise ValueError(f"{what} has too many pixels: {width}x{height} = {width * height:,} > "
                         f"max_pixels = {max_pixels:,}")
    return image


_PIL_LIMIT = threading.Lock()


@contextlib.contextmanager
def _pil_limit_at_least(max_pixels: int):
    """PIL's decompression-bomb check (``Image.MAX_IMAGE_PIXELS``) off while a file is opened when it is below
    ``max_pixels``, so that it never caps a larger ``max_pixels`` (which :func:`check_pil` checks before decoding);
    restored afterwards."""
    with _PIL_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS
        if saved is not None and saved < max_pixels:
            Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _decode(path: Path, max_pixels: int) -> tuple[Image.Image, int]:
    """(the decoded image, upright per its EXIF orientation; that orientation, 1 = as stored), independent of the
    file, with :func:`load_image`'s errors."""
    with warnings.catch_warnings(), _pil_limit_at_least(max_pixels):
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"no such file: {path}") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ValueError(f"{path} has too many pixels: {e}") from None
        except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
            raise ValueError(f"{path} is not a readable image: {e}") from None
    with image:
        check_pil(image, max_pixels, what=str(path))
        try:
            image.load()
            orientation = int(image.getexif().get(ORIENTATION_TAG, 1))  # what exif_transpose reads
            return ImageOps.exif_transpose(image), orientation  # a decoded copy
        except Exception as e:  # decoders raise many types on corrupt data (OSError, EOFError, struct.error...)
            raise ValueError(f"{path} is not a readable image: {e}") from None


def _upright(a: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, C) array ``a`` turned as ImageOps.exif_transpose turns an image of that EXIF ``orientation``."""
    method = _ORIENTATIONS.get(orientation)
    if method is None:
        return a
    height, width = a.shape[:2]
    index = Image.fromarray(np.arange(height * width, dtype=np.int32).reshape(height, width)).transpose(method)
    return a.reshape(height * width, -1)[np.asarray(index)]


def load_image(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and decode an image file (any format PIL reads), upright per its EXIF orientation.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a readable image or
    has more than ``max_pixels`` pixels (checked before decoding; PIL's own decompression-bomb limit,
    ``Image.MAX_IMAGE_PIXELS``, applies only when it is the stricter one).
    """
    return _decode(Path(path), max_pixels)[0]


def check_output(path: str | os.PathLike) -> Path:
    """The checks ``save_image`` makes (a .png name in an existing folder), to fail before a long run."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: images are written as PNG (lossless), so the name must end in .png")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"no such folder: {path.parent}")
    return path


def save_image(image: Tensor | Image.Image, path: str | os.PathLike) -> Path:
    """Write a PIL image, or a tensor (see :func:`from_model_tensor`), as a PNG file.

    Atomic: the PNG goes to a temporary file in the same folder, then replaces ``path``; on error nothing
    is left behind and an existing ``path`` is unchanged.
    """
    path = check_output(path)
    if isinstance(image, Tensor):
        image = from_model_tensor(image)
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        image.save(f, format="PNG")
    return path


# --- images -> tensors --------------------------------------------------------------------------------------
def _shape(model_or_shape) -> tuple[int, ...]:
    """A model's ``config["image_shape"]``, or a shape given directly."""
    config = getattr(model_or_shape, "config", None)
    shape = config.get("image_shape") if config is not None else model_or_shape
    if shape is None:
        raise ValueError("the model's config has no image_shape")
    return tuple(int(s) for s in shape)


def _model_shape(model_or_shape) -> tuple[int, int, int]:
    shape = _shape(model_or_shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"expected a model or an image shape [C, H, W] with C = 1 or 3, got {list(shape)}")
    return shape


def _integer_scale(image: Image.Image) -> float:
    """The full scale of an integer grey image: 65535 for the 16-bit modes (I;16*); for "I" (32-bit integers)
    255 when every value fits in 8 bits (an 8-bit image held as integers), else 65535."""
    if image.mode != "I":
        return 65535.0
    low, high = image.getextrema()
    return 255.0 if 0 <= low and high <= 255 else 65535.0


def _pil_array(image: Image.Image) -> np.ndarray:
    """(H, W, C): 8-bit L/LA/RGB/RGBA; integer grey modes (I;16*, I) divided by their scale (:func:`_integer_scale`)
    to float; F as it is."""
    if image.mode.startswith("I"):
        return np.clip(np.asarray(image, dtype=np.float32) / _integer_scale(image), 0.0, 1.0)[..., None]
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)[..., None]
    a = np.asarray(image.convert(_READ_AS.get(image.mode, "RGB")))
    return a if a.ndim == 3 else a[..., None]


def _as_array(image) -> tuple[np.ndarray, str]:
    """A PIL image, numpy array (H, W[, C]) or tensor ([1, ]C, H, W) / (H, W) -> ((H, W, C) array, mode)."""
    if isinstance(image, Image.Image):
        return _pil_array(check_pil(image)), image.mode
    if isinstance(image, Tensor):
        t = image.detach().cpu()
        t = t.float() if t.is_floating_point() else t
        t = t[0] if t.dim() == 4 and t.shape[0] == 1 else t
        a = t.permute(1, 2, 0).numpy() if t.dim() == 3 else t.numpy()
    elif isinstance(image, np.ndarray):
        a = image
    else:
        raise TypeError(f"expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}")
    a = a[..., None] if a.ndim == 2 else a
    if a.ndim != 3 or not 1 <= a.shape[2] <= 4 or a.size == 0:
        raise ValueError(f"expected a non-empty image of shape (H, W) or (H, W, C) with C in 1-4 "
                         f"(tensors: (C, H, W)), got {tuple(image.shape)}")
    return a, ("L", "LA", "RGB", "RGBA")[a.shape[2] - 1]


def _unit_float(a: np.ndarray) -> np.ndarray:
    """uint8 / 255, uint16 / 65535, bool as 0/1, floats checked to lie in [0, 1]; as float32."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"image arrays must be uint8, uint16, bool or float in [0, 1], got {a.dtype}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0:
        raise ValueError(f"float images must lie in [0, 1], got values in [{a.min():.4g}, {a.max():.4g}] "
                         "(divide 8-bit values by 255)")
    return a


def _composite(a: np.ndarray) -> np.ndarray:
    """Drop the alpha channel (of LA, RGBA) by compositing onto black: colour * alpha."""
    return a[..., :-1] * a[..., -1:] if a.shape[2] in (2, 4) else a


def _to_channels(a: np.ndarray, channels: int) -> np.ndarray:
    """RGB -> gray by BT.601 luma, gray -> RGB by replication."""
    if a.shape[2] == channels:
        return a
    if channels == 1:
        return (a @ np.asarray(LUMA, dtype=np.float32))[..., None]
    return np.repeat(a, 3, axis=2)


def _crop_box(width: int, height: int, target: tuple[int, int], fit: str) -> tuple[int, int, int, int]:
    """The region to resize: the whole image ("resize") or its centre at the target's aspect ratio ("center")."""
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; valid: {', '.join(FITS)}")
    if fit == "resize":
        return 0, 0, width, height
    tw, th = target
    crop_w = max(1, min(width, round(height * tw / th)))
    crop_h = max(1, min(height, round(width * th / tw)))
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return left, top, left + crop_w, top + crop_h


def _resize(image: Image.Image, size: tuple[int, int], box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """Crop to ``box`` (no pixels from outside it), then resize: box filter (area average) to shrink,
    Lanczos otherwise; a same-size resize is an exact copy."""
    image = image.crop(box) if box is not None else image
    shrink = image.width >= size[0] and image.height >= size[1]
    return image.resize(size, Image.Resampling.BOX if shrink else Image.Resampling.LANCZOS)


def to_model_tensor(image, model_or_shape, *, fit: str = "resize") -> tuple[Tensor, Placement]:
    """Any image -> ((1, C, H, W) float32 in [0, 1] of the model's shape, its Placement).

    ``image``: a PIL image of any mode (1, L, LA, P, RGB, RGBA, I;16, I, F, CMYK, YCbCr...), a numpy array
    (H, W) or (H, W, C) of uint8, uint16 or float in [0, 1], or a tensor (C, H, W) / (H, W) in [0, 1]; any
    size. Alpha is composited onto black; 16-bit values are divided by 65535 (an "I" image of 8-bit values by
    255; PIL images hold 8 bits a colour channel: :func:`load_photo` reads 16-bit colour files); colour becomes
    gray by BT.601 luma for a grayscale model, gray is replicated for an RGB one. ``fit="resize"`` resizes the whole image
    to the model's size (aspect ratio not kept); ``"center"`` first crops the centre to the model's aspect
    ratio. A :class:`ResolutionWarning` is raised when a side is more than 4x larger or smaller than the
    model's. ``model_or_shape``: an EBM or [C, H, W].
    """
    channels, height, width = _model_shape(model_or_shape)
    raw, mode = _as_array(image)
    a = _to_channels(_composite(_unit_float(raw)), channels)
    placement = Placement((a.shape[1], a.shape[0]), mode, _crop_box(a.shape[1], a.shape[0], (width, height), fit))
    ratios = (a.shape[1] / width, a.shape[0] / height)
    if any(r > RESOLUTION_RATIO or r < 1 / RESOLUTION_RATIO for r in ratios):
        warnings.warn(f"the image is {a.shape[1]}x{a.shape[0]} pixels but the model works at {width}x{height}: "
                      f"resizing by more than {RESOLUTION_RATIO}x, the result is at the model's resolution",
                      ResolutionWarning, stacklevel=2)
    planes = [np.asarray(_resize(Image.fromarray(np.ascontiguousarray(a[..., c])), (width, height), placement.box))
              for c in range(channels)]
    return torch.from_numpy(np.clip(np.stack(planes), 0.0, 1.0))[None], placement  # Lanczos overshoots


def from_model_tensor(t: Tensor, placement: Placement | None = None, *, restore_size: bool = False) -> Image.Image:
    """(C, H, W) or (1, C, H, W) in [0, 1] -> an 8-bit PIL image, "L" (C = 1) or "RGB" (C = 3).

    ``restore_size=True`` resizes it to the input region it came from (``placement.box``: the whole input
    for fit="resize", the crop for fit="center"). Upscaling a small model's result (28x28) is blurry, which
    is why the default keeps the model's resolution.
    """
    t = t[0] if t.dim() == 4 and t.shape[0] == 1 else t
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"expected a tensor (C, H, W) or (1, C, H, W) with C = 1 or 3, got {tuple(t.shape)}")
    a = (t.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)
    if restore_size:
        if placement is None:
            raise ValueError("restore_size=True needs the Placement returned by to_model_tensor")
        left, top, right, bottom = placement.box
        image = _resize(image, (right - left, bottom - top))
    return image


# --- photos at their own resolution (fully convolutional models) ------------------------------------------------
_GREY_MODES = ("1", "L", "LA", "La", "F")  # and every "I" mode (16- and 32-bit integers)
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


@dataclass(frozen=True)
class Photo:
    """An image at its own resolution, as a fully convolutional model restores it, with its alpha kept apart.

    ``pixels``: (1, C, H, W) float32 in [0, 1]; C = 1 for grey sources (PIL modes 1, L, LA, I;16, I, F, and 16-bit
    grey + alpha PNGs), else 3 (RGB; palette, CMYK, YCbCr... converted). Colour under transparent pixels is kept as
    it is (not composited). ``alpha``: (H, W), the source's alpha channel exactly as decoded (uint8, or uint16 for
    16-bit sources; a colour key becomes 0 on the key, the maximum elsewhere), None when it has none;
    :func:`save_photo` re-attaches it to the result. ``mode``: the source's PIL mode. ``bits``: 16 for 16-bit and
    float sources, which are saved back as 16-bit PNG; else 8.
    """

    pixels: Tensor
    alpha: np.ndarray | None = None
    mode: str = "RGB"
    bits: int = 8

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), PIL order."""
        return int(self.pixels.shape[-1]), int(self.pixels.shape[-2])

    @property
    def pixel_count(self) -> int:
        return self.size[0] * self.size[1]

    @property
    def grey(self) -> bool:
        return self.pixels.shape[1] == 1


def load_photo(source, *, max_pixels: int = MAX_PIXELS) -> Photo:
    """A file (any format PIL reads: JPEG, PNG, WebP, TIFF...) or PIL image -> a :class:`Photo` at its own size.

    Upright per its EXIF orientation; palette, CMYK, YCbCr... converted to RGB; grey stays grey (one channel); an
    alpha channel (or a palette's or tRNS transparency) is split off untouched. 16-bit sources keep their 16 bits,
    divided by 65535: grey ("I;16"), and grey + alpha, RGB and RGBA PNG files (which PIL alone reads at 8 bits,
    see febm.png16); an "I" image of 8-bit values is divided by 255. File errors as for :func:`load_image`.
    """
    if isinstance(source, Image.Image):
        return _pil_photo(ImageOps.exif_transpose(check_pil(source, max_pixels)))
    image, orientation = _decode(Path(source), max_pixels)
    deep = read_png16(source)
    if deep is not None:
        return _uint16_photo(_upright(deep, orientation), image.mode)
    return _pil_photo(image)


def _uint16_photo(a: np.ndarray, mode: str) -> Photo:
    """A Photo of (H, W, C) uint16: grey + alpha (C = 2), RGB (3) or RGBA (4)."""
    channels = 1 if a.shape[2] == 2 else 3
    alpha = np.ascontiguousarray(a[..., channels]) if a.shape[2] in (2, 4) else None
    pixels = np.ascontiguousarray(a[..., :channels].transpose(2, 0, 1), dtype=np.float32) / 65535.0
    return Photo(torch.from_numpy(pixels)[None], alpha, mode, 16)


def _pil_photo(image: Image.Image) -> Photo:
    """A Photo of an upright PIL image of any mode."""
    mode = image.mode
    grey = mode in _GREY_MODES or mode.startswith("I")
    bits = 16 if mode == "F" or (mode.startswith("I") and _integer_scale(image) == 65535) else 8
    alpha = None
    if mode.startswith("I") or mode == "F":  # PIL's LA would clip these values to 255
        a = _unit_float(_pil_array(image))  # I: divided by its scale and clipped; F: checked to lie in [0, 1]
        if "transparency" in image.info:  # a colour key: fully transparent on the key
            dtype = np.uint16 if bits == 16 else np.uint8
            alpha = (np.asarray(image) != image.info["transparency"]).astype(dtype) * np.iinfo(dtype).max
    else:
        if mode in _ALPHA_MODES or "transparency" in image.info:
            with_alpha = image.convert("LA" if grey else "RGBA")  # un-premultiplies La / RGBa
            alpha = np.array(with_alpha.getchannel("A"))
            image = with_alpha  # its colour untouched by the alpha
        a = np.asarray(image.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
        a = a[..., None] if a.ndim == 2 else a
    pixels = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]
    return Photo(pixels, alpha, mode, bits)


def _alpha_bits(alpha: np.ndarray, bits: int) -> np.ndarray:
    """An alpha channel (uint8 or uint16) at ``bits`` bits: uint8, or uint16 (x 257 from 8 bits)."""
    alpha = np.asarray(alpha)
    if bits == 16:
        return alpha.astype(np.uint16) if alpha.dtype == np.uint16 else alpha.astype(np.uint16) * 257
    return alpha if alpha.dtype == np.uint8 else np.rint(alpha / 257.0).astype(np.uint8)


def _photo_planes(pixels: Tensor, alpha: np.ndarray | None) -> Tensor:
    """(C, H, W) of ``pixels`` (C, H, W) or (1, C, H, W), C = 1 or 3, checked against ``alpha``'s size."""
    t = pixels[0] if pixels.dim() == 4 and pixels.shape[0] == 1 else pixels
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"expected a tensor (C, H, W) or (1, C, H, W) with C = 1 or 3, got {tuple(pixels.shape)}")
    if alpha is not None and tuple(alpha.shape) != tuple(t.shape[1:]):
        raise ValueError(f"the alpha channel is {alpha.shape[1]}x{alpha.shape[0]} pixels but the image is "
                         f"{t.shape[2]}x{t.shape[1]}")
    return t


def photo_image(pixels: Tensor, alpha: np.ndarray | None = None, bits: int = 8) -> Image.Image:
    """(C, H, W) or (1, C, H, W) in [0, 1] -> PIL: "L" / "RGB", "LA" / "RGBA" with ``alpha`` (H, W) attached (at 8
    bits), or "I;16" for ``bits=16`` grey without alpha (PIL images hold 8 bits a colour or alpha channel;
    :func:`save_photo` writes all 16-bit PNGs)."""
    t = _photo_planes(pixels, alpha)
    if bits == 16 and t.shape[0] == 1 and alpha is None:
        return Image.fromarray(_uint16(t)[..., 0])
    image = from_model_tensor(t)
    if alpha is not None:
        image.putalpha(Image.fromarray(_alpha_bits(alpha, 8)))
    return image


def _uint16(t: Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, C) uint16."""
    return (t.detach().float().clamp(0, 1) * 65535).round().permute(1, 2, 0).cpu().numpy().astype(np.uint16)


def save_photo(pixels: Tensor, path: str | os.PathLike, photo: Photo | None = None) -> Path:
    """Write a restored photo as PNG (atomically, as :func:`save_image`), re-attaching ``photo``'s alpha
    untouched (it must have the result's size) and keeping a 16-bit source's 16 bits (grey or colour, with or
    without alpha)."""
    alpha, bits = (photo.alpha, photo.bits) if photo is not None else (None, 8)
    if bits != 16:
        return save_image(photo_image(pixels, alpha), path)
    t, path = _photo_planes(pixels, alpha), check_output(path)
    a = _uint16(t) if alpha is None else np.dstack([_uint16(t), _alpha_bits(alpha, 16)])
    return write_atomic(path, png16_bytes(a))


def fitted_size(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """The largest (width, height) of ``size``'s aspect ratio with at most ``max_pixels`` pixels (``size`` itself
    when it fits)."""
    width, height = size
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def resize_pixels(pixels: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, H, W) in [0, 1] resized to ``size`` (width, height): area average to shrink, Lanczos (clipped)
    otherwise."""
    out = [[np.asarray(_resize(Image.fromarray(np.ascontiguousarray(plane.float().cpu().numpy())), size))
            for plane in image] for image in pixels]
    return torch.from_numpy(np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0))


def fit_photo(photo: Photo, max_pixels: int) -> Photo:
    """``photo`` downscaled (area average, aspect ratio kept) to at most ``max_pixels`` pixels, its alpha too;
    ``photo`` itself when it fits."""
    size = fitted_size(photo.size, max_pixels)
    if size == photo.size:
        return photo
    alpha = None if photo.alpha is None else _resize_alpha(photo.alpha, size)
    return Photo(resize_pixels(photo.pixels, size), alpha, photo.mode, photo.bits)


def _resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An alpha channel (uint8 or uint16) resized to ``size`` by area average, in its own dtype."""
    if alpha.dtype == np.uint8:
        return np.asarray(Image.fromarray(alpha).resize(size, Image.Resampling.BOX))
    small = Image.fromarray(alpha.astype(np.float32)).resize(size, Image.Resampling.BOX)
    return np.rint(np.asarray(small)).astype(alpha.dtype)


def photo_to_restore(photo: Photo, max_pixels: int, *, downscale: bool, min_side: int = 1) -> Photo | None:
    """Fit or refuse, the one rule for large photos (CLI and app): ``photo`` itself when it has at most
    ``max_pixels`` pixels; above that, ``photo`` downscaled to fit (:func:`fit_photo`) when ``downscale``, else None
    (the caller says how to ask for the downscale). ValueError when the downscaled photo would have a side under
    ``min_side`` (``febm.restore.MIN_SIDE`` for photo models)."""
    if photo.pixel_count <= max_pixels:
        return photo
    if not downscale:
        return None
    fitted = fitted_size(photo.size, max_pixels)
    if min(fitted) < min_side:
        raise ValueError(f"downscaled to fit {max_pixels:,} pixels, this {photo.size[0]}x{photo.size[1]} photo would "
                         f"be {fitted[0]}x{fitted[1]}, below the {min_side} px a side photo models need: crop it "
                         "first, or allow more pixels")
    return fit_photo(photo, max_pixels)


def photo_mask(mask, size: tuple[int, int], *, painted_is_fill: bool = True,
               input_size: tuple[int, int] | None = None) -> Tensor:
    """A drawn mask -> ``known_mask`` (1, 1, H, W) float 0/1 for a photo of ``size`` (width, height).

    The mask must have the input photo's size (``input_size``, default ``size``: pass the original size when the
    photo was downscaled), and is then resized to ``size`` with nearest neighbour. Painted pixels as for
    :func:`mask_to_known`.
    """
    source = tuple(input_size or size)
    width, height = size
    return mask_to_known(mask, [1, height, width], painted_is_fill=painted_is_fill,
                         placement=Placement(source, "L", (0, 0, *source)))


# --- masks ---------------------------------------------------------------------------------------------------
def _painted(a: np.ndarray) -> np.ndarray:
    """(H, W) bool: alpha > 0 where the mask has transparency, else any non-zero channel."""
    if a.shape[2] in (2, 4):
        alpha = a[..., -1]
        opaque = np.iinfo(a.dtype).max if np.issubdtype(a.dtype, np.integer) else 1
        if (alpha < opaque).any():
            return alpha > 0
        a = a[..., :-1]  # an opaque mask (e.g. black and white saved as RGBA) is read by its colour
    return (a != 0).any(axis=2)


def mask_to_known(mask, model_or_shape, *, painted_is_fill: bool = True,
                  placement: Placement | None = None) -> Tensor:
    """A drawn mask -> ``known_mask`` (1, 1, H, W) float 0/1 at the model's size (1 = observed).

    ``mask``: PIL (any mode), numpy or tensor, as for :func:`to_model_tensor`. Painted pixels are the
    non-zero ones, or, when the mask has transparent pixels (a paint layer), the non-transparent ones.
    ``painted_is_fill=True`` (the app's and CLI's convention): painted pixels are filled; ``False``: painted
    pixels are the observed ones. With the image's ``placement`` the mask must have the image's size and
    goes through the same crop. Resized with nearest neighbour, so the mask stays binary.
    """
    _, height, width = _model_shape(model_or_shape)
    raw, _ = _as_array(mask)
    painted = _painted(raw)
    size = (painted.shape[1], painted.shape[0])
    if placement is not None and size != placement.size:
        raise ValueError(f"the mask is {size[0]}x{size[1]} pixels but the image is "
                         f"{placement.size[0]}x{placement.size[1]}: they must have the same size")
    box = placement.box if placement is not None else (0, 0, *size)
    small = Image.fromarray(painted.astype(np.uint8) * 255).crop(box).resize((width, height), Image.Resampling.NEAREST)
    known = (np.asarray(small) == 0) if painted_is_fill else (np.asarray(small) > 0)
    return torch.from_numpy(known.astype(np.float32))[None, None]


def preset_mask(kind: str, shape, *, seed: int = 0) -> Tensor:
    """A named ``known_mask`` (1, 1, H, W) for the app and benchmarks (0 = fill); kinds in PRESET_MASKS.

    "center": a centred box of half the height and width; "left-half" ... "bottom-half": that half
    (the smaller one for odd sizes); "random-50" / "random-80": that percentage of the pixels, drawn with
    ``seed``. ``shape``: a model, [C, H, W] or [H, W].
    """
    if kind not in PRESET_MASKS:
        raise ValueError(f"unknown mask preset {kind!r}; valid: {', '.join(PRESET_MASKS)}")
    height, width = _shape(shape)[-2:]
    known = torch.ones(height, width)
    if kind.startswith("random-"):
        n = round(height * width * int(kind.removeprefix("random-")) / 100)
        gen = torch.Generator().manual_seed(seed)
        known.view(-1)[torch.randperm(height * width, generator=gen)[:n]] = 0
    else:
        h, w = height // 2, width // 2
        top, left = (height - h) // 2, (width - w) // 2
        region = {
            "center": (slice(top, top + h), slice(left, left + w)),
            "left-half": (slice(None), slice(0, w)),
            "right-half": (slice(None), slice(width - w, None)),
            "top-half": (slice(0, h), slice(None)),
            "bottom-half": (slice(height - h, None), slice(None)),
        }[kind]
        known[region] = 0
    return known[None, None]


# --- noise levels ------------------------------------------------------------------------------------------------
def sigma_from_unit(value, unit: str = "0-1", *, name: str = "sigma", switch: str = "") -> float:
    """A noise std given at an edge (CLI, app) in ``unit`` (see SIGMA_UNITS) -> [0, 1] units, the library's.

    One bound for every edge: 0 < value <= 1 in "0-1", <= 255 in "0-255"; otherwise a ValueError that names the
    value as ``name`` and, for a "0-1" value that looks like 0-255 levels, says how to give it in levels
    (``switch``, e.g. "use --sigma-255 25").
    """
    if unit not in SIGMA_UNITS:
        raise ValueError(f"the unit of {name} must be one of {', '.join(SIGMA_UNITS)}, got {unit!r}")
    try:
        sigma = float(value)
    except (TypeError, ValueError):
        sigma = math.nan
    top = SIGMA_UNITS[unit]
    if 0 < sigma <= top:  # False for NaN
        return sigma / top
    shown = str(value) if math.isnan(sigma) else f"{sigma:g}"
    message = f"{name} must be in (0, {top:g}] ({_SIGMA_MEANING[unit]}), got {shown}"
    if unit == "0-1" and 1 < sigma <= SIGMA_UNITS["0-255"] and switch:
        message += f": for {shown} on the 0-255 scale {switch}"
    raise ValueError(message)


# --- deprecated ---------------------------------------------------------------------------------------------------
def add_noise(images: Tensor, sigma: float, *, seed: int = 0, clip: bool = True) -> Tensor:
    """Deprecated: use :func:`febm.degradations.add_gaussian_noise` (the home of degradations), or
    :func:`febm.degradations.add_synthetic_noise` to test a restoration run. The same noise as
    ``add_gaussian_noise(images, sigma, seed, clip)``, for images of any shape."""
    warnings.warn("febm.imageio.add_noise is deprecated: use febm.degradations.add_gaussian_noise",
                  DeprecationWarning, stacklevel=2)
    if not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a number, got {type(sigma).__name__}")
    flat = images.reshape(1, 1, 1, -1)  # the same draws as for any shape of the same size
    return add_gaussian_noise(flat, sigma, seed, clip).reshape(images.shape)
