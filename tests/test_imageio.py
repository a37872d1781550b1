"""febm.imageio: PIL / numpy / tensors / files <-> model tensors, masks, presets, noise. Odd sizes throughout."""

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from febm.degradations import add_gaussian_noise
from febm.imageio import (
    LUMA,
    PRESET_MASKS,
    SIGMA_UNITS,
    Photo,
    Placement,
    ResolutionWarning,
    add_noise,
    check_pil,
    fit_photo,
    fitted_size,
    from_model_tensor,
    load_image,
    load_photo,
    mask_to_known,
    photo_image,
    photo_mask,
    photo_to_restore,
    preset_mask,
    save_image,
    save_photo,
    sigma_from_unit,
    to_model_tensor,
)

GRAY, RGB = [1, 17, 23], [3, 17, 23]  # model shapes [C, H, W]: 23 wide, 17 high
MODEL = [1, 28, 28]


def rng_uint8(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --- round trips and conversions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pil", "numpy"])
def test_uint8_gray_round_trip_is_exact(kind):
    a = rng_uint8(17, 23)
    x, placement = to_model_tensor(Image.fromarray(a) if kind == "pil" else a, GRAY)
    assert x.shape == (1, 1, 17, 23) and x.dtype == torch.float32
    assert placement == Placement((23, 17), "L", (0, 0, 23, 17))
    out = from_model_tensor(x)
    assert out.mode == "L" and np.array_equal(np.asarray(out), a)


def test_rgb_round_trip_is_exact():
    a = rng_uint8(17, 23, 3)
    x, _ = to_model_tensor(a, RGB)
    out = from_model_tensor(x[0])
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), a)


def test_tensors_in():
    t = torch.rand(1, 17, 23)
    assert torch.equal(to_model_tensor(t, GRAY)[0][0], t)
    assert torch.equal(to_model_tensor(t[0], GRAY)[0][0], t)
    assert to_model_tensor(torch.rand(3, 17, 23), GRAY)[0].shape == (1, 1, 17, 23)


def _image(mode):
    rgb = Image.fromarray(rng_uint8(17, 23, 3))
    if mode == "I;16":
        return Image.fromarray(np.random.default_rng(0).integers(0, 65536, (17, 23), dtype=np.uint16))
    if mode == "I":
        return _image("I;16").convert("I")
    if mode == "F":
        return Image.fromarray(np.random.default_rng(0).random((17, 23), dtype=np.float32))
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return rgb.convert(mode)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK", "YCbCr"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_pil_mode_gives_the_model_shape_in_range(mode, channels):
    image = _image(mode)
    assert image.mode == mode
    x, placement = to_model_tensor(image, [channels, 28, 28])
    assert x.shape == (1, channels, 28, 28) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and x.std() > 0
    assert placement.mode == mode and placement.size == (23, 17)


def test_colour_to_gray_is_bt601_luma_and_gray_to_colour_replicates():
    red = np.zeros((17, 23, 3), np.uint8)
    red[..., 0] = 255
    assert torch.allclose(to_model_tensor(red, GRAY)[0], torch.full((1, 1, 17, 23), LUMA[0]))
    gray = rng_uint8(17, 23)
    x, _ = to_model_tensor(gray, RGB)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])


def test_alpha_is_composited_onto_black():
    a = np.zeros((17, 23, 4), np.uint8)
    a[..., :3] = (200, 100, 50)
    a[..., 3] = 128
    a[:, :5, 3] = 0  # transparent: black
    x, _ = to_model_tensor(Image.fromarray(a), GRAY)
    expected = np.dot((200, 100, 50), LUMA) / 255 * 128 / 255
    assert torch.allclose(x[..., 5:], torch.tensor(expected, dtype=torch.float32), atol=1e-6)
    assert x[..., :5].max() == 0
    la = Image.fromarray(np.stack([np.full((17, 23), 255, np.uint8), np.full((17, 23), 51, np.uint8)], -1))
    assert la.mode == "LA"
    assert torch.allclose(to_model_tensor(la, GRAY)[0], torch.tensor(0.2))


def test_sixteen_bit_is_scaled_by_65535(tmp_path):
    a = np.array([[0, 32768, 65535]] * 5, dtype=np.uint16)
    expected = torch.tensor([0.0, 32768 / 65535, 1.0])
    for image in (a, Image.fromarray(a), Image.fromarray(a).convert("I")):
        x, _ = to_model_tensor(image, [1, 5, 3])
        assert torch.allclose(x[0, 0, 0], expected)
    Image.fromarray(a).save(tmp_path / "16bit.png")
    loaded = load_image(tmp_path / "16bit.png")
    assert loaded.mode == "I;16"
    assert torch.allclose(to_model_tensor(loaded, [1, 5, 3])[0][0, 0, 0], expected)


def test_bad_arrays_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_model_tensor(np.full((17, 23), 2.0), GRAY)
    with pytest.raises(TypeError, match="uint8"):
        to_model_tensor(np.zeros((17, 23), np.int64), GRAY)
    with pytest.raises(ValueError, match="shape"):
        to_model_tensor(np.zeros((17, 23, 5), np.uint8), GRAY)
    with pytest.raises(TypeError, match="PIL image"):
        to_model_tensor([[0.5]], GRAY)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        to_model_tensor(np.zeros((17, 23), np.uint8), [2, 17, 23])


# --- sizes -----------------------------------------------------------------------------------------------------
def test_resize_to_the_model_and_back():
    a = rng_uint8(17, 23)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 17x23 -> 28x28 is no ResolutionWarning
        x, placement = to_model_tensor(a, MODEL)
    assert x.shape == (1, 1, 28, 28) and placement.box == (0, 0, 23, 17)
    assert from_model_tensor(x, placement).size == (28, 28)  # the model's resolution by default
    assert from_model_tensor(x, placement, restore_size=True).size == (23, 17)
    with pytest.raises(ValueError, match="Placement"):
        from_model_tensor(x, restore_size=True)


def test_downscaling_averages():
    a = np.zeros((34, 46), np.uint8)
    a[:, 1::2] = 255  # stripes average to gray under a box filter
    x, _ = to_model_tensor(a, GRAY)
    assert torch.allclose(x, torch.tensor(0.5), atol=1e-6)


def test_center_fit_crops_to_the_model_aspect_ratio():
    a = np.zeros((21, 41), np.uint8)
    a[:, 10:31] = 255  # the central square is white, the sides black
    x, placement = to_model_tensor(a, MODEL, fit="center")
    assert placement.box == (10, 0, 31, 21) and placement.size == (41, 21)
    assert torch.allclose(x, torch.tensor(1.0))
    assert from_model_tensor(x, placement, restore_size=True).size == (21, 21)
    with pytest.raises(ValueError, match="resize, center"):
        to_model_tensor(a, MODEL, fit="tile")


@pytest.mark.parametrize("size,warns", [((200, 100), True), ((5, 30), True), ((100, 60), False), ((23, 17), False)])
def test_resolution_warning(size, warns):
    image = Image.new("L", size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        to_model_tensor(image, MODEL)
    assert [w.category for w in caught] == ([ResolutionWarning] if warns else [])
    if warns:
        assert f"{size[0]}x{size[1]}" in str(caught[0].message)


# --- files -------------------------------------------------------------------------------------------------------
def test_load_image_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="text.png is not a readable image"):
        load_image(tmp_path / "text.png")
    Image.fromarray(rng_uint8(100, 100)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.png is not a readable image"):
        load_image(tmp_path / "truncated.png")
    with pytest.raises(ValueError, match=r"full.png has too many pixels: 100x100 = 10,000 > max_pixels = 5,000"):
        load_image(tmp_path / "full.png", max_pixels=5000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's own decompression-bomb guard, when stricter
    with pytest.raises(ValueError, match="full.png has too many pixels"):
        load_image(tmp_path / "full.png", max_pixels=1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # the warning band (1-2x the limit) too
    with pytest.raises(ValueError, match="full.png has too many pixels"):
        load_image(tmp_path / "full.png", max_pixels=6000)


def test_load_image_returns_the_decoded_pixels(tmp_path):
    a = rng_uint8(17, 23, 3)
    Image.fromarray(a).save(tmp_path / "x.png")
    image = load_image(tmp_path / "x.png")
    assert np.array_equal(np.asarray(image), a)


def test_check_pil():
    with pytest.raises(ValueError, match="empty"):
        check_pil(Image.new("L", (0, 5)))
    with pytest.raises(ValueError, match="too many pixels"):
        check_pil(Image.new("L", (100, 100)), max_pixels=5000)
    image = Image.new("L", (17, 23))
    assert check_pil(image) is image


def test_save_image_is_atomic(tmp_path, monkeypatch):
    x = torch.rand(1, 17, 23)
    path = save_image(x, tmp_path / "out.png")
    assert os.listdir(tmp_path) == ["out.png"]
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(from_model_tensor(x)))
    before = path.read_bytes()

    def broken_save(self, fp, format=None, **params):
        fp.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(torch.rand(1, 17, 23), path)
    assert os.listdir(tmp_path) == ["out.png"] and path.read_bytes() == before
    with pytest.raises(OSError, match="disk full"):
        save_image(x, tmp_path / "new.png")
    assert os.listdir(tmp_path) == ["out.png"]


def test_save_image_refuses_bad_paths(tmp_path):
    with pytest.raises(ValueError, match=r"\.png"):
        save_image(torch.rand(1, 5, 5), tmp_path / "out.jpg")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        save_image(torch.rand(1, 5, 5), tmp_path / "missing" / "out.png")


# --- masks -------------------------------------------------------------------------------------------------------
def test_painted_pixels_are_filled_by_default():
    painted = np.zeros((17, 23), np.uint8)
    painted[2:9, 3:20] = 255
    known = mask_to_known(Image.fromarray(painted), GRAY)
    assert known.shape == (1, 1, 17, 23) and known.dtype == torch.float32
    assert torch.equal(known[0, 0], torch.from_numpy(painted == 0).float())
    observed = mask_to_known(painted > 0, GRAY, painted_is_fill=False)
    assert torch.equal(observed, 1 - known)


def test_paint_layer_alpha_marks_painted_pixels():
    layer = np.zeros((17, 23, 4), np.uint8)
    layer[..., :3] = 255  # white but transparent: not painted
    layer[4:8, 5:9] = (0, 0, 0, 255)  # a black stroke: painted
    known = mask_to_known(Image.fromarray(layer), GRAY)
    assert known.sum() == 17 * 23 - 16 and known[0, 0, 4:8, 5:9].max() == 0
    opaque = np.zeros((17, 23, 4), np.uint8)  # black and white saved as RGBA: read by colour
    opaque[..., 3] = 255
    opaque[4:8, 5:9, :3] = 255
    assert torch.equal(mask_to_known(Image.fromarray(opaque), GRAY), known)


def test_mask_follows_the_image_placement():
    image = np.zeros((34, 46), np.uint8)
    mask = np.zeros((34, 46), np.uint8)
    mask[:17, :23] = 255  # top-left quarter
    _, placement = to_model_tensor(image, GRAY)
    known = mask_to_known(mask, GRAY, placement=placement)
    assert torch.equal(known.unique(), torch.tensor([0.0, 1.0]))
    assert known[0, 0, :8, :11].max() == 0 and known[0, 0, 9:, 12:].min() == 1
    with pytest.raises(ValueError, match="the mask is 23x17 pixels but the image is 46x34"):
        mask_to_known(np.zeros((17, 23), np.uint8), GRAY, placement=placement)
    _, centre = to_model_tensor(np.zeros((21, 41), np.uint8), MODEL, fit="center")
    side = np.zeros((21, 41), bool)
    side[:, :10] = True  # painted only outside the centre crop
    assert mask_to_known(side, MODEL, placement=centre).min() == 1


@pytest.mark.parametrize("shape", [[1, 17, 23], [28, 28]])
@pytest.mark.parametrize("kind", PRESET_MASKS)
def test_preset_masks(kind, shape):
    h, w = shape[-2:]
    known = preset_mask(kind, shape)
    assert known.shape == (1, 1, h, w) and torch.equal(known.unique(), torch.tensor([0.0, 1.0]))
    unknown = int((known == 0).sum())
    expected = {"center": (h // 2) * (w // 2), "left-half": h * (w // 2), "right-half": h * (w // 2),
                "top-half": (h // 2) * w, "bottom-half": (h // 2) * w,
                "random-50": round(0.5 * h * w), "random-80": round(0.8 * h * w)}[kind]
    assert unknown == expected
    assert torch.equal(preset_mask(kind, shape), known)


def test_preset_mask_places_and_seeds():
    known = preset_mask("left-half", [17, 23])[0, 0]
    assert known[:, :11].max() == 0 and known[:, 11:].min() == 1
    known = preset_mask("center", [17, 23])[0, 0]
    assert known[4:12, 6:17].max() == 0 and known.sum() == 17 * 23 - 8 * 11
    assert not torch.equal(preset_mask("random-50", [17, 23], seed=1), preset_mask("random-50", [17, 23]))
    with pytest.raises(ValueError, match="center, left-half"):
        preset_mask("circle", [17, 23])


# --- noise -------------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_add_noise_is_seeded_and_clipped():
    x = torch.full((2, 1, 17, 23), 0.5)
    noisy = add_noise(x, 0.1, seed=3)
    assert torch.equal(noisy, add_noise(x, 0.1, seed=3))
    assert not torch.equal(noisy, add_noise(x, 0.1, seed=4))
    assert abs((noisy - x).std().item() - 0.1) < 0.01
    assert add_noise(x, 1.0).min() == 0 and add_noise(x, 1.0).max() == 1
    assert add_noise(x, 1.0, clip=False).max() > 1
    assert torch.equal(add_noise(x, 0.0), x)
    with pytest.raises(ValueError, match=">= 0"):
        add_noise(x, -0.1)


def test_add_noise_is_a_deprecated_alias_of_add_gaussian_noise():
    x = torch.rand(2, 3, 17, 23)
    with pytest.deprecated_call(match="febm.degradations.add_gaussian_noise"):
        noisy = add_noise(x, 0.1, seed=3)
    assert torch.equal(noisy, add_gaussian_noise(x, 0.1, 3))
    with pytest.deprecated_call():
        assert torch.equal(add_noise(x[0], 0.1, seed=3), add_gaussian_noise(x[:1], 0.1, 3)[0])  # any shape


# --- photos at their own resolution --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,channels,alpha", [
    ("1", 1, False), ("L", 1, False), ("LA", 1, True), ("I;16", 1, False), ("I", 1, False), ("F", 1, False),
    ("P", 3, False), ("RGB", 3, False), ("RGBA", 3, True), ("CMYK", 3, False), ("YCbCr", 3, False),
])
def test_load_photo_keeps_the_size_grey_stays_grey_and_splits_the_alpha(mode, channels, alpha):
    image = _image(mode)
    photo = load_photo(image)
    assert photo.pixels.shape == (1, channels, 17, 23) and photo.pixels.dtype == torch.float32
    assert 0 <= photo.pixels.min() and photo.pixels.max() <= 1 and photo.pixels.std() > 0
    assert (photo.alpha is not None) == alpha and photo.mode == mode and photo.size == (23, 17)
    if alpha:
        assert photo.alpha.dtype == np.uint8 and np.array_equal(photo.alpha, np.asarray(image.getchannel("A")))
    assert photo.bits == (16 if mode in ("I;16", "I", "F") else 8)


def test_load_photo_keeps_the_colour_under_transparent_pixels():
    a = rng_uint8(17, 23, 4)
    a[:, :5, 3] = 0
    photo = load_photo(Image.fromarray(a))
    assert np.array_equal((photo.pixels[0].permute(1, 2, 0).numpy() * 255).round(), a[..., :3])  # not composited
    assert np.array_equal(photo.alpha, a[..., 3])


def test_load_photo_reads_a_palette_transparency():
    image = Image.fromarray(rng_uint8(17, 23, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    image.info["transparency"] = 0
    photo = load_photo(image)
    index = np.asarray(image)
    assert photo.alpha is not None and photo.pixels.shape[1] == 3
    assert np.array_equal(photo.alpha == 0, index == 0)


@pytest.mark.parametrize("suffix", ["jpg", "png", "webp", "tiff"])
def test_load_photo_applies_the_exif_orientation(tmp_path, suffix):
    shown = np.zeros((40, 64, 3), np.uint8)
    shown[:, :32] = 255  # bright on the left
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)  # 40 wide, 64 high
    exif = stored.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show it
    stored.save(tmp_path / f"p.{suffix}", exif=exif)
    photo = load_photo(tmp_path / f"p.{suffix}")
    assert photo.size == (64, 40)
    assert photo.pixels[..., :28].mean() > 0.9 and photo.pixels[..., 36:].mean() < 0.1


def test_save_photo_round_trips_and_reattaches_the_alpha(tmp_path):
    rgba = rng_uint8(17, 23, 4)
    Image.fromarray(rgba).save(tmp_path / "in.png")
    photo = load_photo(tmp_path / "in.png")
    save_photo(photo.pixels, tmp_path / "out.png", photo)
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == "RGBA" and np.array_equal(np.asarray(out), rgba)
    sixteen = np.random.default_rng(0).integers(0, 65536, (17, 23), dtype=np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "16.png")
    photo = load_photo(tmp_path / "16.png")
    save_photo(photo.pixels, tmp_path / "16out.png", photo)
    with Image.open(tmp_path / "16out.png") as out:
        assert out.mode.startswith("I") and np.array_equal(np.asarray(out).astype(np.uint16), sixteen)
    grey_alpha = Photo(torch.rand(1, 1, 17, 23), rgba[..., 3], "LA")
    assert photo_image(grey_alpha.pixels, grey_alpha.alpha).mode == "LA"
    with pytest.raises(ValueError, match="the alpha channel is 23x17 pixels but the image is 5x4"):
        photo_image(torch.rand(1, 3, 4, 5), rgba[..., 3])
    with pytest.raises(ValueError, match=r"\.png"):
        save_photo(photo.pixels, tmp_path / "out.jpg")


def test_fit_photo_downscales_to_the_pixel_limit_keeping_the_aspect_ratio():
    photo = Photo(torch.rand(1, 3, 768, 1024), rng_uint8(768, 1024), "RGBA")
    assert fit_photo(photo, 1024 * 768) is photo
    small = fit_photo(photo, 100_000)
    width, height = small.size
    assert width * height <= 100_000 and (width, height) == fitted_size((1024, 768), 100_000) == (365, 273)
    assert small.alpha.shape == (273, 365) and small.pixels.shape == (1, 3, 273, 365)
    assert 0 <= small.pixels.min() and small.pixels.max() <= 1
    flat = Photo(torch.full((1, 1, 64, 64), 0.25))
    assert torch.allclose(fit_photo(flat, 1000).pixels, torch.tensor(0.25))  # an area average


def test_photo_mask_at_the_photo_size_and_after_a_downscale():
    painted = np.zeros((40, 60), np.uint8)
    painted[10:20, 30:50] = 255
    known = photo_mask(painted, (60, 40))
    assert known.shape == (1, 1, 40, 60) and known[0, 0, 10:20, 30:50].sum() == 0 and known.sum() == 60 * 40 - 200
    half = photo_mask(painted, (30, 20), input_size=(60, 40))
    assert half.shape == (1, 1, 20, 30) and half.sum() == 30 * 20 - 50  # nearest neighbour: 5 x 10 painted
    with pytest.raises(ValueError, match="the mask is 60x40 pixels but the image is 64x40"):
        photo_mask(painted, (64, 40))


# --- noise levels at the edges -------------------------------------------------------------------------------------
def test_sigma_from_unit_has_one_bound_per_unit():
    assert sigma_from_unit(0.1) == 0.1 and sigma_from_unit(25.5, "0-255") == pytest.approx(0.1)
    assert sigma_from_unit(1) == 1.0 and sigma_from_unit("255", "0-255") == 1.0
    for value, unit in ((0, "0-1"), (-0.1, "0-1"), (1.5, "0-1"), (300, "0-255"), (float("nan"), "0-255"),
                        (float("inf"), "0-1"), ("x", "0-1"), (None, "0-255")):
        with pytest.raises(ValueError, match=rf"sigma must be in \(0, {SIGMA_UNITS[unit]:g}\]"):
            sigma_from_unit(value, unit)
    with pytest.raises(ValueError, match="got 25: for 25 on the 0-255 scale use levels"):
        sigma_from_unit(25.0, name="sigma", switch="use levels")
    with pytest.raises(ValueError, match=r"got 300$"):  # no 0-255 reading of a value above 255
        sigma_from_unit(300, switch="use levels")
    with pytest.raises(ValueError, match="the unit of sigma must be one of 0-1, 0-255"):
        sigma_from_unit(0.1, "percent")


def test_photo_to_restore_fits_or_refuses():
    photo = Photo(torch.rand(1, 3, 64, 96))
    assert photo_to_restore(photo, 96 * 64, downscale=False) is photo
    assert photo_to_restore(photo, 3000, downscale=False) is None  # the caller says how to ask for the downscale
    small = photo_to_restore(photo, 3000, downscale=True, min_side=32)
    assert small.size == fitted_size((96, 64), 3000) == (67, 44)
    with pytest.raises(ValueError, match="this 96x64 photo would be 27x18, below the 32 px a side"):
        photo_to_restore(photo, 500, downscale=True, min_side=32)


# --- issue 27: inputs read right -------------------------------------------------------------------------------------
PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type: grey, grey + alpha, RGB, RGBA


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_png16(path, a: np.ndarray, transparent=None) -> str:
    """A 16-bit PNG of (H, W, C) uint16 written without PIL (which cannot write 16-bit colour); ``transparent``: a
    tRNS colour key (grey value, or (r, g, b))."""
    height, width, channels = a.shape
    rows = a.astype(">u2").reshape(height, -1).view(np.uint8)
    data = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 16, PNG_COLOUR_TYPES[channels], 0, 0, 0)
    key = b"" if transparent is None else png_chunk(b"tRNS", struct.pack(f">{np.size(transparent)}H",
                                                                         *np.atleast_1d(transparent)))
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + key
                           + png_chunk(b"IDAT", zlib.compress(data)) + png_chunk(b"IEND", b""))
    return str(path)


def rng_uint16(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)


def test_sixteen_bit_grey_with_transparency_is_read_and_round_trips(tmp_path):
    """I;16 + tRNS: PIL's convert("LA") clipped the grey values to 255 (mean 0.998 instead of 0.50)."""
    grey = rng_uint16(17, 23, 1)
    key = int(grey[3, 4, 0])
    photo = load_photo(write_png16(tmp_path / "key.png", grey, transparent=key))
    assert photo.grey and photo.bits == 16
    assert np.abs(photo.pixels[0, 0].numpy() - grey[..., 0] / 65535).max() <= 0.5 / 65535
    assert photo.pixels.mean().item() == pytest.approx(0.5, abs=0.05)
    assert np.array_equal(photo.alpha == 0, grey[..., 0] == key)
    save_photo(photo.pixels, tmp_path / "out.png", photo)
    again = load_photo(tmp_path / "out.png")
    assert (again.pixels - photo.pixels).abs().max().item() <= 1 / 65535
    assert np.array_equal(again.alpha == 0, photo.alpha == 0) and again.grey and again.bits == 16


def test_sixteen_bit_grey_and_alpha_round_trips_within_one_level(tmp_path):
    la = rng_uint16(17, 23, 2)
    photo = load_photo(write_png16(tmp_path / "la.png", la))
    assert photo.grey and photo.bits == 16 and photo.pixels.shape == (1, 1, 17, 23)
    assert np.abs(photo.pixels[0, 0].numpy() - la[..., 0] / 65535).max() <= 0.5 / 65535
    assert photo.alpha.dtype == np.uint16 and np.array_equal(photo.alpha, la[..., 1])
    save_photo(photo.pixels, tmp_path / "out.png", photo)
    again = load_photo(tmp_path / "out.png")
    assert (again.pixels - photo.pixels).abs().max().item() <= 1 / 65535
    assert np.array_equal(again.alpha, la[..., 1])
    with Image.open(tmp_path / "out.png") as out:  # PIL reads the top 8 bits of 16-bit grey + alpha as RGBA
        assert np.array_equal(np.asarray(out)[..., 3], (la[..., 1] >> 8).astype(np.uint8))


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_keeps_its_16_bits(tmp_path, channels):
    """PIL decodes 16-bit RGB(A) PNGs to 8 bits; the docstring says 16-bit values are divided by 65535."""
    a = rng_uint16(17, 23, channels)
    photo = load_photo(write_png16(tmp_path / "deep.png", a))
    assert photo.bits == 16 and photo.pixels.shape == (1, 3, 17, 23)
    assert np.abs(photo.pixels[0].permute(1, 2, 0).numpy() - a[..., :3] / 65535).max() <= 0.5 / 65535
    assert (photo.alpha is None) == (channels == 3)
    save_photo(photo.pixels, tmp_path / "out.png", photo)
    again = load_photo(tmp_path / "out.png")
    assert (again.pixels - photo.pixels).abs().max().item() <= 1 / 65535
    if channels == 4:
        assert np.array_equal(again.alpha, a[..., 3])


def test_sixteen_bit_colour_key_transparency_and_exif_orientation(tmp_path):
    a = rng_uint16(4, 6, 3)
    key = tuple(int(v) for v in a[1, 2])
    photo = load_photo(write_png16(tmp_path / "key.png", a, transparent=key))
    assert np.array_equal(photo.alpha == 0, (a == key).all(axis=2))
    Image.fromarray((a >> 8).astype(np.uint8)).save(tmp_path / "eight.png")
    for orientation in range(1, 9):  # the same turn as PIL applies to the 8-bit copy
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = (tmp_path / "key.png").read_bytes()
        exif_chunk = png_chunk(b"eXIf", exif.tobytes()[6:])  # without the "Exif\0\0" header
        (tmp_path / "turned.png").write_bytes(data[:33] + exif_chunk + data[33:])  # after IHDR
        turned = load_photo(tmp_path / "turned.png")
        eight = ImageOps.exif_transpose(Image.open(tmp_path / "turned.png"))
        assert turned.size == eight.size
        assert np.array_equal((turned.pixels[0].permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16) >> 8,
                              np.asarray(eight.convert("RGB")))


def test_an_i_mode_image_of_8_bit_values_is_divided_by_255():
    eight = rng_uint8(17, 23)
    image = Image.fromarray(eight).convert("I")
    assert np.asarray(image).max() <= 255
    expected = torch.from_numpy(eight / 255).float()
    assert torch.allclose(load_photo(image).pixels[0, 0], expected) and load_photo(image).bits == 8
    assert torch.allclose(to_model_tensor(image, [1, 17, 23])[0][0, 0], expected, atol=1e-6)


def test_max_pixels_above_pils_own_limit_is_honoured(tmp_path, monkeypatch):
    """PIL's decompression-bomb limit must not cap a larger max_pixels (the CLI's message says to raise it)."""
    Image.fromarray(rng_uint8(100, 100)).save(tmp_path / "full.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels: above twice PIL's limit
    assert load_image(tmp_path / "full.png", max_pixels=20_000).size == (100, 100)
    assert load_photo(tmp_path / "full.png", max_pixels=20_000).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == 1000  # left as it was
    with pytest.raises(ValueError, match="full.png has too many pixels: 100x100 = 10,000 > max_pixels = 5,000"):
        load_image(tmp_path / "full.png", max_pixels=5000)
