"""``python -m febm``: each command end to end on a tiny model; errors are one line and exit status 2."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from febm.__main__ import main
from febm.imageio import to_model_tensor
from febm.model import EBM

NET = {"kind": "resnet", "in_channels": 1, "width": 4, "stages": 2}
FAST = ["--steps", "2", "--no-progress"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A checkpoints folder with one tiny model, fmnist-js, and test images of an odd size (23x17)."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    EBM("js", energy=NET, critic=NET, dataset="fashion-mnist", image_shape=[1, 28, 28],
        sampler={"method": "authors", "steps": 3, "step_size": 10.0, "noise": 0.005, "grad_clip": 0.01},
        metrics={"fid": 123.4, "samples": 1000, "split": "test"}).save_pretrained(root / "checkpoints" / "fmnist-js")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)).save(root / "in.png")
    mask = np.zeros((17, 23), np.uint8)
    mask[5:12, 6:18] = 255
    Image.fromarray(mask).save(root / "mask.png")
    return root


@pytest.fixture
def checkpoints(folder, monkeypatch):
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(folder / "checkpoints"))
    return folder / "checkpoints"


def febm(folder, *args):
    env = {**os.environ, "FEBM_CHECKPOINTS": str(folder / "checkpoints"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "febm", *map(str, args)], env=env, cwd=folder,
                          capture_output=True, text=True, timeout=300)


def size(path):
    with Image.open(path) as image:
        return image.size, image.mode


# --- the commands, as subprocesses ----------------------------------------------------------------------------------
def test_models(folder):
    result = febm(folder, "models")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["name", "divergence", "dataset", "metrics"]
    assert row.split() == ["fmnist-js", "js", "fashion-mnist", "fid=123.4,", "samples=1000"]


def test_generate_grid_with_rejection(folder):
    result = febm(folder, "generate", "--n", 5, "--out", "grid.png", "--rejection", *FAST)
    assert result.returncode == 0, result.stderr
    assert "acceptance rate: " in result.stdout
    assert size(folder / "grid.png") == ((3 * 30 + 2, 2 * 30 + 2), "L")  # 3 per row, 28 px + 2 px padding


def test_generate_noise_sets_the_chains_noise(folder):
    for name, noise in (("cold", "0"), ("cold-again", "0"), ("warm", "0.05")):
        result = febm(folder, "generate", "--n", 2, "--out", f"{name}.png", "--noise", noise, *FAST)
        assert result.returncode == 0, result.stderr
    pixels = {name: np.asarray(Image.open(folder / f"{name}.png")) for name in ("cold", "cold-again", "warm")}
    assert np.array_equal(pixels["cold"], pixels["cold-again"]) and not np.array_equal(pixels["cold"], pixels["warm"])


def test_generate_separate(folder):
    result = febm(folder, "generate", "--n", 3, "--out", "one.png", "--separate", *FAST)
    assert result.returncode == 0, result.stderr
    for i in range(3):
        assert size(folder / f"one_{i:03d}.png") == ((28, 28), "L")
    assert not (folder / "one.png").exists()


def test_denoise_with_synthetic_noise_uses_the_added_sigma(folder):
    result = febm(folder, "denoise", "in.png", "--out", "clean.png", "--add-noise", 0.1, "--restore-size", *FAST)
    assert result.returncode == 0, result.stderr
    assert "sigma: 0.1000 (added)" in result.stdout  # not re-estimated from the noisy image
    assert size(folder / "clean.png") == ((23, 17), "L")
    assert size(folder / "clean_noisy.png") == ((23, 17), "L")


def test_denoise_given_sigma_one_sample(folder):
    result = febm(folder, "denoise", "in.png", "--out", "sample.png", "--sigma", 0.1, "--chains", 2, "--sample",
                  *FAST)
    assert result.returncode == 0, result.stderr
    assert "sigma: 0.1000 (given)" in result.stdout
    assert size(folder / "sample.png") == ((28, 28), "L")
    assert not (folder / "sample_noisy.png").exists()


def test_inpaint_with_a_painted_mask_keeps_the_observed_pixels(folder):
    result = febm(folder, "inpaint", "in.png", "--mask", "mask.png", "--out", "filled.png", *FAST)
    assert result.returncode == 0, result.stderr
    assert size(folder / "filled.png") == ((28, 28), "L")
    x, _ = to_model_tensor(Image.open(folder / "in.png"), [1, 28, 28])
    expected = (x[0, 0] * 255).round().numpy()
    filled = np.asarray(Image.open(folder / "filled.png")).astype(np.float32)
    assert np.array_equal(filled[:6], expected[:6])  # rows above the painted box (rows 5-11 of 17)
    assert not np.array_equal(filled[10:16, 9:19], expected[10:16, 9:19])  # inside it: filled in


def test_inpaint_with_a_preset(folder):
    result = febm(folder, "inpaint", "in.png", "--preset", "center", "--out", "centre.png", *FAST)
    assert result.returncode == 0, result.stderr
    assert size(folder / "centre.png") == ((28, 28), "L")


def test_errors_exit_2_with_one_line_and_no_traceback(folder):
    result = febm(folder, "denoise", "in.png", "--model", "nope", "--out", "x.png", *FAST)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: no model 'nope'") and result.stderr.count("\n") == 1


# --- errors and help, in process (same code path, no interpreter start-up) ----------------------------------------
@pytest.mark.parametrize("args,message", [
    (["denoise", "missing.png", "--out", "x.png"], "no such file: missing.png"),
    (["denoise", "mask.png", "--out", "x.png", "--sigma", "0"], "--sigma must be in (0, 1]"),
    (["denoise", "mask.png", "--out", "x.png", "--sigma", "-0.1"], "--sigma must be in (0, 1]"),
    (["denoise", "mask.png", "--out", "x.jpg"], "must end in .png"),
    (["denoise", "mask.png", "--out", "no/x.png"], "no such folder: no"),
    (["denoise", "corrupt.png", "--out", "x.png"], "corrupt.png is not a readable image"),
    (["inpaint", "in.png", "--mask", "small.png", "--out", "x.png"], "the mask is 5x5 pixels but the image is 23x17"),
    (["inpaint", "in.png", "--mask", "corrupt.png", "--out", "x.png"], "corrupt.png is not a readable image"),
    (["inpaint", "in.png", "--mask", "blank.png", "--out", "x.png"], "nothing to inpaint"),
    (["inpaint", "in.png", "--preset", "center", "--mask-observed", "--out", "x.png"], "--mask-observed applies"),
    (["generate", "--n", "0", "--out", "x.png"], "n must be an integer >= 1"),
    (["generate", "--model", "nope", "--out", "x.png"], "no model 'nope'"),
    (["generate", "--noise", "-1", "--out", "x.png"], "finite number >= 0"),
    (["generate", "--noise", "0", "--sampler", "mala", "--out", "x.png"], "mala takes its noise"),
])
def test_bad_input_is_one_error_line(folder, checkpoints, monkeypatch, capsys, args, message):
    monkeypatch.chdir(folder)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("L", (5, 5), 255).save(folder / "small.png")
    Image.new("L", (23, 17), 0).save(folder / "blank.png")
    assert main([*args, *FAST]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (folder / "x.png").exists() and not (folder / "x.jpg").exists()


def test_no_models(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(tmp_path))
    assert main(["generate", "--out", str(tmp_path / "x.png")]) == 2
    assert "error: no models in" in capsys.readouterr().err
    assert main(["models"]) == 0
    assert "no models in" in capsys.readouterr().out


def test_resolution_warning_is_one_line(folder, checkpoints, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    Image.new("L", (200, 150), 128).save(folder / "big.png")
    assert main(["denoise", "big.png", "--out", "big_out.png", "--sigma", "0.1", *FAST]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: the image is 200x150 pixels") and err.count("\n") == 1


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("generate", "denoise", "inpaint", "models"))
    with pytest.raises(SystemExit):
        main(["inpaint", "--help"])
    out = capsys.readouterr().out
    assert all(option in out for option in ("--mask", "--preset", "--mask-observed", "--chains", "--sample"))


# --- photo models: native resolution -------------------------------------------------------------------------------
FIELD = {"kind": "field", "width": 8, "kernel_size": 3, "dilations": [1, 2, 1], "activation": "softplus"}
PHOTO_FAST = ["--model", "photo-js", "--steps", "1", "--no-progress"]
WIDE = (1024, 768)  # the photos' size as shown (width, height)


def bright_left(size, seed=0, channels=3):
    """Noise on a left-bright / right-dark split, as an (H, W[, C]) uint8 array of ``size`` (width, height)."""
    width, height = size
    a = np.random.default_rng(seed).integers(0, 60, (height, width, channels), dtype=np.uint8)
    a[:, : width // 2] += 180
    return a if channels > 1 else a[..., 0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A checkpoints folder with a tiny photo model (fully convolutional, colour), photo-js, and test photos: a
    1024x768 JPEG stored as 768x1024 portrait with EXIF orientation 8 (rotate 90 degrees counter-clockwise to show
    it), a 1024x768 RGBA PNG, a mask for it, and a small grey PNG."""
    folder = tmp_path_factory.mktemp("cli-photos")
    torch.manual_seed(0)
    EBM("js", FIELD, FIELD, dataset="photos", image_channels=3, crop_size=16,
        sampler={"method": "authors", "steps": 3, "step_size": 10.0, "noise": 0.005, "grad_clip": 0.01}
        ).save_pretrained(folder / "checkpoints" / "photo-js")
    shown = Image.fromarray(bright_left(WIDE))
    stored = shown.transpose(Image.Transpose.ROTATE_270)  # 768 wide, 1024 high; orientation 8 rotates it back
    exif = stored.getexif()
    exif[0x0112] = 8
    stored.save(folder / "portrait.jpg", quality=95, exif=exif)
    rgba = np.dstack([bright_left(WIDE, 1), np.random.default_rng(2).integers(0, 256, WIDE[::-1], dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    mask = np.zeros(WIDE[::-1], np.uint8)
    mask[300:400, 500:700] = 255
    Image.fromarray(mask).save(folder / "photo_mask.png")
    Image.fromarray(bright_left((96, 64), 3, channels=1)).save(folder / "grey.png")
    return folder


@pytest.fixture
def photo_checkpoints(photos, monkeypatch):
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(photos / "checkpoints"))
    monkeypatch.chdir(photos)


def test_photo_denoise_at_native_resolution_with_the_exif_orientation_applied(photos):
    result = febm(photos, "denoise", "portrait.jpg", "--out", "portrait_clean.png", "--sigma-255", 25, *PHOTO_FAST)
    assert result.returncode == 0, result.stderr
    assert "sigma: 0.0980 (given) in [0, 1] units = 25.00 in 0-255 levels" in result.stdout
    assert size(photos / "portrait_clean.png") == (WIDE, "RGB")
    out = np.asarray(Image.open(photos / "portrait_clean.png"), dtype=np.float32)
    assert out[:, : WIDE[0] // 2 - 20].mean() > out[:, WIDE[0] // 2 + 20:].mean() + 100  # upright: bright on the left


def test_photo_generate_draws_images_of_the_asked_size(photos, folder):
    result = febm(photos, "generate", "--n", 2, "--size", 40, 56, "--out", "crops.png", "--separate", *PHOTO_FAST)
    assert result.returncode == 0, result.stderr
    assert size(photos / "crops_000.png") == ((56, 40), "RGB")
    result = febm(folder, "generate", "--n", 1, "--size", 40, 56, "--out", "x.png", *FAST)  # a 28x28 model
    assert result.returncode != 0 and "size" in result.stderr and not (folder / "x.png").exists()


def test_photo_alpha_is_carried_through_untouched(photos):
    result = febm(photos, "denoise", "alpha.png", "--out", "alpha_clean.png", "--sigma", 0.1, "--add-noise", 0.1,
                  *PHOTO_FAST)
    assert result.returncode == 0, result.stderr
    alpha = np.asarray(Image.open(photos / "alpha.png"))[..., 3]
    for name in ("alpha_clean.png", "alpha_clean_noisy.png"):
        with Image.open(photos / name) as out:
            assert out.size == WIDE and out.mode == "RGBA"
            assert np.array_equal(np.asarray(out)[..., 3], alpha)


def test_photo_inpaint_keeps_the_observed_pixels_at_native_resolution(photos):
    result = febm(photos, "inpaint", "alpha.png", "--mask", "photo_mask.png", "--out", "alpha_filled.png", *PHOTO_FAST)
    assert result.returncode == 0, result.stderr
    source, filled = np.asarray(Image.open(photos / "alpha.png")), np.asarray(Image.open(photos / "alpha_filled.png"))
    assert filled.shape == source.shape
    painted = np.asarray(Image.open(photos / "photo_mask.png")) > 0
    assert np.array_equal(filled[~painted], source[~painted])  # colour and alpha
    assert not np.array_equal(filled[painted, :3], source[painted, :3])


def test_sigma_255_is_sigma_over_255(photos, photo_checkpoints, capsys):
    assert main(["denoise", "grey.png", "--out", "g1.png", "--sigma", str(25.5 / 255), *PHOTO_FAST]) == 0
    assert main(["denoise", "grey.png", "--out", "g2.png", "--sigma-255", "25.5", *PHOTO_FAST]) == 0
    assert main(["denoise", "grey.png", "--out", "g3.png", "--add-noise-255", "25.5", *PHOTO_FAST]) == 0
    assert main(["denoise", "grey.png", "--out", "g4.png", "--add-noise", str(25.5 / 255), *PHOTO_FAST]) == 0
    out = capsys.readouterr().out
    assert out.count("sigma: 0.1000 (given) in [0, 1] units = 25.50 in 0-255 levels") == 2
    assert out.count("sigma: 0.1000 (added) in [0, 1] units = 25.50 in 0-255 levels") == 2
    images = [np.asarray(Image.open(photos / f"g{i}.png")) for i in range(1, 5)]
    assert np.array_equal(images[0], images[1]) and np.array_equal(images[2], images[3])
    assert Image.open(photos / "g1.png").mode == "L" and images[0].shape == (64, 96)  # grey stays grey


@pytest.mark.parametrize("args,message", [
    (["--sigma", "25"], "--sigma must be in (0, 1] (the noise std in [0, 1] units, a fraction of the pixel range), "
                        "got 25: for 25 on the 0-255 scale use --sigma-255 25"),
    (["--sigma-255", "0"], "--sigma-255 must be in (0, 255]"),
    (["--add-noise", "30"], "use --add-noise-255 30"),
    (["--max-pixels", "3000"], "grey.png is 96x64 = 6,144 pixels, more than --max-pixels 3,000: pass --downscale to "
                               "restore it downscaled to 67x44"),
])
def test_photo_options_errors(photos, photo_checkpoints, capsys, args, message):
    assert main(["denoise", "grey.png", "--out", "x.png", *args, *PHOTO_FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (photos / "x.png").exists()


def test_sigma_and_sigma_255_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["denoise", "in.png", "--out", "x.png", "--sigma", "0.1", "--sigma-255", "25"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_downscale_to_fit_and_restore_size(photos, photo_checkpoints, capsys):
    assert main(["denoise", "grey.png", "--out", "small.png", "--max-pixels", "3000", "--downscale", *PHOTO_FAST]) == 0
    assert "downscaled 96x64 to 67x44 (--max-pixels 3,000)" in capsys.readouterr().out
    assert size(photos / "small.png") == ((67, 44), "L")
    assert main(["inpaint", "alpha.png", "--mask", "photo_mask.png", "--out", "back.png", "--max-pixels", "1e5",
                 "--downscale", "--restore-size", *PHOTO_FAST]) == 0
    with Image.open(photos / "back.png") as back:  # restored downscaled, resized back, the original alpha
        assert back.size == WIDE and back.mode == "RGBA"
        assert np.array_equal(np.asarray(back)[..., 3], np.asarray(Image.open(photos / "alpha.png"))[..., 3])


def test_help_says_the_unit_of_sigma(capsys):
    with pytest.raises(SystemExit):
        main(["denoise", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--sigma S the noise std in [0, 1] units" in out and "--sigma-255 S255 the noise std in 0-255 levels" in out
    assert "--add-noise-255" in out and "--max-pixels" in out and "--downscale" in out


# --- issue 27 ------------------------------------------------------------------------------------------------------
def chains_first_draw(shape, seed):
    """The first noise the restoration chains draw for ``seed``: a fresh generator seeded with it."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model", ["fmnist-js", "photo-js"])
def test_added_noise_is_not_the_chains_first_draw(folder, photos, monkeypatch, capsys, model):
    """--add-noise draws from its own stream: with the chains' seed the chain would start by removing exactly the
    noise it was given (the first Langevin draw equal to the noise just added)."""
    import febm.__main__ as cli

    seen = {}

    def recorded(model, noisy, sigma, **kwargs):
        seen.update(noisy=noisy.clone(), seed=kwargs["seed"])
        raise ValueError("stop here")

    monkeypatch.setattr(cli, "denoise", recorded)
    root = folder if model == "fmnist-js" else photos
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(root / "checkpoints"))
    monkeypatch.chdir(root)
    Image.new("L", (64, 48), 128).save(root / "mid.png")
    assert main(["denoise", "mid.png", "--out", "x.png", "--add-noise", "0.05", "--seed", "5", "--model", model,
                 *FAST]) == 2
    noise = seen["noisy"] - 128 / 255  # no clipping 10 sigma away from 0 and 1
    assert seen["seed"] == 5 and noise.std().item() == pytest.approx(0.05, rel=0.1)
    first = 0.05 * chains_first_draw(noise.shape, 5)
    assert not torch.allclose(noise, first, atol=1e-3)
    assert abs(np.corrcoef(noise.flatten().numpy(), first.flatten().numpy())[0, 1]) < 0.2


SIGMA_255_BOUND = "must be in (0, 255] (the noise std in 0-255 levels of an 8-bit image), got 300"


@pytest.mark.parametrize("option", ["--sigma-255", "--add-noise-255"])
def test_sigma_in_levels_has_the_apps_bound(photos, photo_checkpoints, capsys, option):
    """σ in 0-255 levels above 255 is refused, with the bound and the words the app uses (one check for both)."""
    import gradio as gr

    from app.handlers import check_sigma

    assert main(["denoise", "grey.png", "--out", "x.png", option, "300", *PHOTO_FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option} {SIGMA_255_BOUND}") and err.count("\n") == 1, err
    assert not (photos / "x.png").exists()
    with pytest.raises(gr.Error, match=re.escape(SIGMA_255_BOUND)):
        check_sigma(300, allow_zero=False, unit="0-255")


def test_downscale_below_the_smallest_side_is_a_clear_error(photos, photo_checkpoints, capsys):
    """--downscale to a side under restore.MIN_SIDE says so, in the app's words (one fit-or-refuse rule)."""
    assert main(["denoise", "grey.png", "--out", "x.png", "--max-pixels", "500", "--downscale", *PHOTO_FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: downscaled to fit 500 pixels, this 96x64 photo would be 27x18, below the 32 px a "
                          "side photo models need: crop it first"), err
    assert not (photos / "x.png").exists()


# --- issue 28: deblur and upscale with a shipped photo model --------------------------------------------------------
SHIPPED_PHOTO = str(Path(__file__).resolve().parent.parent / "checkpoints" / "photo-js")
PHOTO_EXAMPLE = Path(__file__).resolve().parent.parent / "app" / "examples" / "photos" / "chelsea-320x240.png"
INVERSE = ["--model", SHIPPED_PHOTO, "--no-progress"]


@pytest.fixture(scope="module")
def inverse_photos(tmp_path_factory):
    """Crops of a real photo: a 300x200 grey one and a 97x131 colour one (odd sizes), the colour one with alpha, and
    a 5x5 white kernel image (a box blur) on a black border."""
    folder = tmp_path_factory.mktemp("cli-inverse")
    with Image.open(PHOTO_EXAMPLE) as photo:
        photo.convert("L").crop((10, 20, 310, 220)).save(folder / "grey.png")
        colour = photo.convert("RGB").crop((100, 60, 197, 191))
    colour.save(folder / "colour.png")
    alpha = np.random.default_rng(0).integers(0, 256, (131, 97), dtype=np.uint8)
    Image.fromarray(np.dstack([np.asarray(colour), alpha]), "RGBA").save(folder / "alpha.png")
    kernel = np.zeros((9, 9), np.uint8)
    kernel[2:7, 2:7] = 255
    Image.fromarray(kernel).save(folder / "box5.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def in_inverse_photos(inverse_photos, monkeypatch):
    monkeypatch.chdir(inverse_photos)
    return inverse_photos


@pytest.mark.parametrize("name,command,expected", [
    ("grey.png", ["deblur", "--kernel", "gaussian:1.6"], ((300, 200), "L")),
    ("colour.png", ["deblur", "--kernel", "motion:9,30", "--sigma-255", "2"], ((97, 131), "RGB")),
    ("grey.png", ["upscale", "--factor", "2"], ((600, 400), "L")),
    ("colour.png", ["upscale", "--factor", "3", "--sigma-255", "1"], ((291, 393), "RGB")),
])
def test_deblur_and_upscale_grey_and_colour_at_any_size(in_inverse_photos, capsys, name, command, expected):
    out = f"{command[0]}-{name}"
    assert main([command[0], name, *command[1:], "--out", out, "--steps", "2", *INVERSE]) == 0
    assert size(in_inverse_photos / out) == expected
    assert "sigma: " in capsys.readouterr().out


def test_a_learned_step_differs_from_the_classical_start(in_inverse_photos):
    for command in (["deblur", "--kernel", "box:5"], ["upscale", "--factor", "2"]):
        for steps in (0, 2):
            assert main([command[0], "colour.png", *command[1:], "--out", f"s{steps}.png", "--steps", str(steps),
                         *INVERSE]) == 0
        start, learned = (np.asarray(Image.open(in_inverse_photos / f"s{s}.png"), np.float32) for s in (0, 2))
        assert start.shape == learned.shape and np.abs(start - learned).mean() > 0.1, command


def psnr_line(out: str) -> tuple[float, float]:
    """(the result's PSNR, the classical start's) from the CLI's PSNR line."""
    match = re.search(r"PSNR against the original: ([\d.]+) dB \(classical start: ([\d.]+) dB", out)
    assert match, out
    return float(match.group(1)), float(match.group(2))


def test_blur_first_deblurs_better_than_the_classical_start(in_inverse_photos, capsys):
    assert main(["deblur", "colour.png", "--kernel", "gaussian:1.6", "--blur-first", "--out", "b0.png", "--steps",
                 "0", *INVERSE]) == 0
    out = capsys.readouterr().out
    assert "sigma: 0.0078 (added) in [0, 1] units = 2.00 in 0-255 levels" in out and "blurred input: " in out
    result, start = psnr_line(out)
    assert result == start  # steps 0: the Wiener deconvolution
    assert main(["deblur", "colour.png", "--kernel", "gaussian:1.6", "--blur-first", "--out", "b3.png", "--steps",
                 "3", *INVERSE]) == 0
    result, start = psnr_line(capsys.readouterr().out)
    assert result > start + 0.05
    assert size(in_inverse_photos / "b3.png") == size(in_inverse_photos / "b3_blurred.png") == ((97, 131), "RGB")


def test_shrink_first_upscales_better_than_bicubic(in_inverse_photos, capsys):
    assert main(["upscale", "colour.png", "--factor", "2", "--shrink-first", "--out", "u.png", "--steps", "3",
                 *INVERSE]) == 0
    result, start = psnr_line(capsys.readouterr().out)
    assert result > start + 0.05
    assert size(in_inverse_photos / "u_small.png") == ((48, 65), "RGB")  # 96x130: the last column and row cut off
    assert size(in_inverse_photos / "u.png") == ((96, 130), "RGB")


def test_blur_first_noise_is_its_own_stream(in_inverse_photos, monkeypatch):
    """--blur-first's noise is drawn like --add-noise's, not from the chains' seed."""
    import febm.__main__ as cli

    seen = {}

    def recorded(model, image, kernel, sigma, **kwargs):
        seen.update(image=image.clone(), seed=kwargs["seed"], sigma=sigma)
        raise ValueError("stop here")

    monkeypatch.setattr(cli, "deblur", recorded)
    Image.new("L", (64, 48), 128).save(in_inverse_photos / "mid.png")
    assert main(["deblur", "mid.png", "--kernel", "box:3", "--blur-first", "--sigma-255", "12.75", "--seed", "5",
                 "--out", "x.png", *INVERSE]) == 2
    noise = seen["image"] - 128 / 255
    assert seen["seed"] == 5 and seen["sigma"] == pytest.approx(0.05) and noise.std().item() == pytest.approx(0.05,
                                                                                                             rel=0.1)
    first = 0.05 * chains_first_draw(noise.shape, 5)
    assert abs(np.corrcoef(noise.flatten().numpy(), first.flatten().numpy())[0, 1]) < 0.2


def test_a_kernel_image_is_the_kernel_it_draws(in_inverse_photos):
    for name, kernel in (("k-file.png", ["--kernel-file", "box5.png"]), ("k-preset.png", ["--kernel", "box:5"])):
        assert main(["deblur", "grey.png", *kernel, "--out", name, "--steps", "1", *INVERSE]) == 0
    assert np.array_equal(np.asarray(Image.open(in_inverse_photos / "k-file.png")),
                          np.asarray(Image.open(in_inverse_photos / "k-preset.png")))


def test_upscale_keeps_the_alpha_each_pixel_repeated(in_inverse_photos):
    assert main(["upscale", "alpha.png", "--factor", "2", "--out", "alpha2.png", "--steps", "0", *INVERSE]) == 0
    with Image.open(in_inverse_photos / "alpha2.png") as out:
        assert out.size == (194, 262) and out.mode == "RGBA"
        alpha = np.asarray(Image.open(in_inverse_photos / "alpha.png"))[..., 3]
        assert np.array_equal(np.asarray(out)[..., 3], alpha.repeat(2, 0).repeat(2, 1))


def test_upscale_counts_the_pixel_limit_on_its_result(in_inverse_photos, capsys):
    args = ["upscale", "colour.png", "--factor", "2", "--max-pixels", "40000", "--steps", "0", *INVERSE]
    assert main([*args, "--out", "x.png"]) == 2  # 97x131 = 12,707 pixels in, 50,828 out
    err = capsys.readouterr().err
    assert err.startswith("error: colour.png is 97x131: upscaled x2 it would be 194x262 = 50,828 pixels, more than "
                          "--max-pixels 40,000: pass --downscale to upscale it downscaled to 86x116 (the result "
                          "172x232)"), err
    assert not (in_inverse_photos / "x.png").exists()
    assert main([*args, "--downscale", "--out", "fit.png"]) == 0
    assert size(in_inverse_photos / "fit.png") == ((172, 232), "RGB")


@pytest.mark.parametrize("args,message", [
    (["deblur", "grey.png", "--kernel", "blurry"], "unknown kernel 'blurry': use gaussian:SIGMA"),
    (["deblur", "grey.png", "--kernel", "gaussian:wide"], "'wide' in the kernel 'gaussian:wide' is not a number"),
    (["deblur", "grey.png", "--kernel", "box:2,3"], "box takes one number"),
    (["deblur", "grey.png", "--kernel-file", "notes.txt"], "notes.txt is not a readable image"),
    (["deblur", "grey.png", "--kernel-file", "missing.png"], "no such file: missing.png"),
    (["deblur", "grey.png", "--kernel", "gaussian:1.6", "--sigma", "2"], "for 2 on the 0-255 scale use --sigma-255 2"),
    (["deblur", "box5.png", "--kernel", "box:5"], "image must be at least 32 px a side, got 9x9"),
    (["deblur", "grey.png", "--kernel", "gaussian:40"], "the blur kernel (321x321) is larger than the image (200x300)"),
    (["upscale", "grey.png", "--factor", "5"], "--factor must be one of 2, 3, 4, got 5"),
    (["upscale", "grey.png", "--factor", "1"], "--factor must be one of 2, 3, 4, got 1"),
])
def test_deblur_and_upscale_errors(in_inverse_photos, capsys, args, message):
    assert main([*args, "--out", "x.png", "--steps", "1", *INVERSE]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (in_inverse_photos / "x.png").exists()


@pytest.mark.parametrize("command", [["deblur", "--kernel", "box:3"], ["upscale"]])
def test_deblur_and_upscale_need_a_photo_model(folder, checkpoints, capsys, command):
    assert main([command[0], str(folder / "in.png"), *command[1:], "--out", str(folder / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {command[0]} needs a photo model (a fully convolutional one, e.g. --model "
                          "photo-dsm); this model restores only 1x28x28 images"), err


def test_a_kernel_is_required_and_one_only(capsys):
    for args in ([], ["--kernel", "box:3", "--kernel-file", "k.png"]):
        with pytest.raises(SystemExit) as exit_:
            main(["deblur", "in.png", "--out", "x.png", *args])
        assert exit_.value.code == 2 and "--kernel" in capsys.readouterr().err


def test_help_names_deblur_and_upscale(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "deblur" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["deblur", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(option in out for option in ("--kernel KIND:SIZE", "motion:LENGTH[,ANGLE]", "--kernel-file",
                                            "--blur-first", "--sigma-255", "--max-pixels"))
    assert "--sampler" not in out and "--chains" not in out
    with pytest.raises(SystemExit):
        main(["upscale", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(option in out for option in ("--factor", "--shrink-first", "its result"))
