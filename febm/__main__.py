"""Restore images from the command line: ``python -m febm generate|denoise|inpaint|deblur|upscale|models``.

    python -m febm models                                          # the models in the checkpoints folder
    python -m febm generate --n 16 --out samples.png               # a 4x4 grid of new samples
    python -m febm denoise noisy.jpg --out clean.png               # the noise level is estimated
    python -m febm denoise noisy.jpg --sigma-255 25 --out clean.png     # sigma 25 on the 0-255 scale
    python -m febm denoise clean.png --add-noise 0.2 --out out.png # a test: also writes out_noisy.png
    python -m febm inpaint photo.png --mask mask.png --out filled.png   # painted (white) pixels are filled
    python -m febm inpaint photo.png --preset center --out filled.png
    python -m febm denoise photo.jpg --model photo-js --out clean.png   # photo models: native resolution
    python -m febm deblur photo.jpg --kernel gaussian:1.6 --out sharp.png   # or box:5, motion:9,30, --kernel-file
    python -m febm deblur sharp.jpg --kernel motion:9,30 --blur-first --out out.png   # a test: prints PSNR
    python -m febm upscale small.jpg --factor 2 --out big.png      # x2, 3 or 4: photo models only
    python -m febm upscale photo.jpg --factor 4 --shrink-first --out out.png         # a test: prints PSNR

Noise levels (sigma) are given either in [0, 1] units, a fraction of the pixel range (--sigma 0.1,
--add-noise 0.1: what the library takes), or in 0-255 levels of an 8-bit image (--sigma-255 25.5,
--add-noise-255 25.5); sigma_[0,1] = sigma_255 / 255.

Fashion-MNIST models (a fixed image shape): inputs of any size, format and mode are converted to the model's
shape (febm.imageio); results are PNG files at the model's resolution (--restore-size: resized back to the
input's size). Photo models (fully convolutional): JPEG/PNG/WebP/TIFF... are restored at their own resolution
(EXIF orientation applied, grey stays grey, colour is RGB) and written as PNG with any alpha channel
re-attached untouched, 16-bit inputs at 16 bits; images above --max-pixels are refused, or downscaled to fit with
--downscale (upscale counts the pixels of its result: factor^2 times the input's). deblur and upscale take photo
models only (default photo-dsm, the best at both on validation crops).
Errors print one line, "error: ...", and exit with status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

from .degradations import add_synthetic_noise
from .imageio import (
    MAX_PIXELS,
    PRESET_MASKS,
    Photo,
    check_output,
    fitted_size,
    from_model_tensor,
    load_image,
    load_photo,
    mask_to_known,
    photo_mask,
    photo_to_restore,
    preset_mask,
    resize_pixels,
    save_image,
    save_photo,
    sigma_from_unit,
    to_model_tensor,
)
from .inverse import deblur, task_settings, upscale
from .metrics import psnr
from .model import EBM, checkpoints_dir, list_models, load_model
from .operators import FACTORS, KERNEL_FORMS, Blur, Downsample, crop_to_multiple, kernel_from_image, parse_kernel
from .restore import MIN_SIDE, denoise, generate, inpaint
from .sampling import METHODS

DEFAULT_MODEL = "fmnist-js"
DEFAULT_PHOTO_MODEL = "photo-dsm"  # deblur and upscale: photo models only; the best of them at both on validation
BLUR_FIRST_SIGMA_255 = 2.0  # --blur-first's noise without --sigma/--sigma-255: the benchmark's deblurring case


# --- shared steps ------------------------------------------------------------------------------------------------
def _load(args: argparse.Namespace, default: str = DEFAULT_MODEL) -> EBM:
    name = args.model
    if name is None:
        names = [m["name"] for m in list_models()]
        if not names:
            raise ValueError(f"no models in {checkpoints_dir()}: pass --model NAME_OR_PATH_OR_REPO "
                             "or set FEBM_CHECKPOINTS to a folder of models")
        name = default if default in names else names[0]
    return load_model(name, device=args.device)


def _load_photo_model(args: argparse.Namespace) -> EBM:
    model = _load(args, DEFAULT_PHOTO_MODEL)
    if not model.fully_convolutional:
        shape = "x".join(map(str, model.config.get("image_shape") or []))
        raise ValueError(f"{args.command} needs a photo model (a fully convolutional one, e.g. --model "
                         f"{DEFAULT_PHOTO_MODEL}); this model restores only {shape} images")
    return model


def _chains(args: argparse.Namespace) -> dict:
    """The keyword arguments every restoration takes."""
    return {"seed": args.seed, "steps": args.steps, "progress": not args.no_progress}


def _sampling(args: argparse.Namespace) -> dict:
    """The keyword arguments every Langevin function takes."""
    return {**_chains(args), "method": args.sampler}


def _write(images, path: Path, placement=None, restore_size: bool = False) -> None:
    save_image(from_model_tensor(images, placement, restore_size=restore_size), path)
    print(f"wrote {path}")


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(f"{path.stem}{suffix}{path.suffix}")


# --- commands ----------------------------------------------------------------------------------------------------
def run_generate(args: argparse.Namespace) -> None:
    from torchvision.utils import make_grid  # here: importing torchvision takes seconds

    out = check_output(args.out)
    model = _load(args)
    size = {"size": tuple(args.size)} if args.size else {}
    result = generate(model, args.n, rejection=args.rejection, noise=args.noise, details=True, **size,
                      **_sampling(args))
    if args.rejection:
        print(f"acceptance rate: {result.acceptance_rate:.3f}")
    if args.separate:
        for i, image in enumerate(result.images):
            _write(image, _sibling(out, f"_{i:03d}"))
    else:  # make_grid makes 3 channels of gray images: keep the first
        grid = make_grid(result.images, nrow=math.ceil(math.sqrt(args.n)), padding=2, pad_value=1.0)
        _write(grid[: result.images.shape[1]], out)


def _sigma(value: float | None, value_255: float | None, option: str) -> float | None:
    """A noise level from --OPTION (in [0, 1] units) or --OPTION-255 (0-255 levels), in [0, 1] units; the bounds
    are the app's (febm.imageio.sigma_from_unit)."""
    if value_255 is not None:
        return sigma_from_unit(value_255, "0-255", name=f"--{option}-255")
    if value is None:
        return None
    return sigma_from_unit(value, "0-1", name=f"--{option}", switch=f"use --{option}-255 {value:g}")


def _photo(args: argparse.Namespace, factor: int = 1) -> tuple[Photo, Photo]:
    """(the input photo as decoded, the one restored: the same, or downscaled by --downscale so that the result,
    ``factor`` times its width and height, has at most --max-pixels)."""
    original = load_photo(args.input, max_pixels=max(MAX_PIXELS, args.max_pixels))
    limit = args.max_pixels // factor**2
    photo = photo_to_restore(original, limit, downscale=args.downscale, min_side=MIN_SIDE)
    if photo is None:
        raise ValueError(_too_large(args, original, limit, factor))
    if photo is not original:
        width, height = original.size
        print(f"downscaled {width}x{height} to {photo.size[0]}x{photo.size[1]} (--max-pixels {args.max_pixels:,})")
    return original, photo


def _too_large(args: argparse.Namespace, original: Photo, limit: int, factor: int) -> str:
    width, height = original.size
    fit = fitted_size(original.size, limit)
    if factor == 1:
        return (f"{args.input} is {width}x{height} = {original.pixel_count:,} pixels, more than --max-pixels "
                f"{args.max_pixels:,}: pass --downscale to restore it downscaled to {fit[0]}x{fit[1]}, or "
                f"a larger --max-pixels to restore it at full size")
    return (f"{args.input} is {width}x{height}: upscaled x{factor} it would be {factor * width}x{factor * height} = "
            f"{factor**2 * original.pixel_count:,} pixels, more than --max-pixels {args.max_pixels:,}: pass "
            f"--downscale to upscale it downscaled to {fit[0]}x{fit[1]} (the result "
            f"{factor * fit[0]}x{factor * fit[1]}), or a larger --max-pixels")


def _write_photo(images, path: Path, original: Photo, photo: Photo, restore_size: bool) -> None:
    """A photo model's result, with the input's alpha; --restore-size undoes a --downscale."""
    if restore_size and photo.size != original.size:
        images, photo = resize_pixels(images, original.size), original
    save_photo(images, path, photo)
    print(f"wrote {path}")


def run_denoise(args: argparse.Namespace) -> None:
    out = check_output(args.out)
    sigma = _sigma(args.sigma, args.sigma_255, "sigma")
    added = _sigma(args.add_noise, args.add_noise_255, "add-noise")
    model = _load(args)
    if model.fully_convolutional:
        original, photo = _photo(args)
        image, placement = photo.pixels, None
    else:
        image, placement = to_model_tensor(load_image(args.input), model)
    if added is not None:
        image = add_synthetic_noise(image, added, args.seed)
    # noise we just added is known exactly: estimating it instead would only add error
    source = "given" if sigma is not None else "added" if added is not None else "estimated"
    sigma = sigma if sigma is not None else added
    result = denoise(model, image, sigma, chains=args.chains, mean=not args.sample, details=True,
                     **_sampling(args))
    _print_sigma(result.sigma[0].item(), source)
    if model.fully_convolutional:
        if added is not None:
            _write_photo(image, _sibling(out, "_noisy"), original, photo, args.restore_size)
        _write_photo(result.images, out, original, photo, args.restore_size)
        return
    if added is not None:
        _write(image, _sibling(out, "_noisy"), placement, args.restore_size)
    _write(result.images, out, placement, args.restore_size)


def run_inpaint(args: argparse.Namespace) -> None:
    if args.mask_observed and args.mask is None:
        raise ValueError("--mask-observed applies to --mask, not to --preset")
    out = check_output(args.out)
    model = _load(args)
    if model.fully_convolutional:
        original, photo = _photo(args)
        image = photo.pixels
        if args.mask is not None:
            known = photo_mask(load_image(args.mask), photo.size, painted_is_fill=not args.mask_observed,
                               input_size=original.size)
        else:
            known = preset_mask(args.preset, image.shape[-2:], seed=args.seed)
        filled = inpaint(model, image, known, chains=args.chains, mean=not args.sample, **_sampling(args))
        _write_photo(filled, out, original, photo, args.restore_size)
        return
    image, placement = to_model_tensor(load_image(args.input), model)
    if args.mask is not None:
        known = mask_to_known(load_image(args.mask), model, painted_is_fill=not args.mask_observed,
                              placement=placement)
    else:
        known = preset_mask(args.preset, model, seed=args.seed)
    filled = inpaint(model, image, known, chains=args.chains, mean=not args.sample, **_sampling(args))
    _write(filled, out, placement, args.restore_size)


def _print_sigma(used: float, source: str) -> None:
    print(f"sigma: {used:.4f} ({source}) in [0, 1] units = {used * 255:.2f} in 0-255 levels")


def _kernel(args: argparse.Namespace):
    """The blur kernel of --kernel (a preset) or --kernel-file (an image, normalised to sum 1)."""
    if args.kernel is not None:
        return parse_kernel(args.kernel)
    return kernel_from_image(load_image(args.kernel_file))


def _print_psnr(result, clean, degraded: str | None = None, observed=None) -> None:
    """PSNR against the original of the result, the classical start and (same size) the degraded input."""
    line = (f"PSNR against the original: {psnr(result.images, clean).item():.2f} dB "
            f"(classical start: {psnr(result.start, clean).item():.2f} dB")
    if observed is not None:
        line += f", {degraded} input: {psnr(observed, clean).item():.2f} dB"
    print(line + ")")


def run_deblur(args: argparse.Namespace) -> None:
    out = check_output(args.out)
    sigma = _sigma(args.sigma, args.sigma_255, "sigma")
    kernel = _kernel(args)
    model = _load_photo_model(args)
    original, photo = _photo(args)
    image, clean, source = photo.pixels, None, "given" if sigma is not None else "estimated"
    if args.blur_first:  # a test on a sharp photo: blur it, then add noise from its own stream
        clean, source = image, "given" if sigma is not None else "added"
        sigma = sigma if sigma is not None else BLUR_FIRST_SIGMA_255 / 255
        image = add_synthetic_noise(Blur(kernel)(clean), sigma, args.seed)
        _write_photo(image, _sibling(out, "_blurred"), original, photo, args.restore_size)
    result = deblur(model, image, kernel, sigma, details=True, **_chains(args))
    _print_sigma(result.sigma[0].item(), source)
    if clean is not None:
        _print_psnr(result, clean, "blurred", image)
    _write_photo(result.images, out, original, photo, args.restore_size)


def run_upscale(args: argparse.Namespace) -> None:
    out = check_output(args.out)
    sigma = _sigma(args.sigma, args.sigma_255, "sigma")
    if isinstance(args.factor, bool) or args.factor not in FACTORS:
        raise ValueError(f"--factor must be one of {', '.join(map(str, FACTORS))}, got {args.factor}")
    model = _load_photo_model(args)
    tuned = task_settings(model, "upscale").get("data_sigma") is not None
    source = "given" if sigma is not None else "the model's tuned" if tuned else "estimated"
    if args.shrink_first:  # a test on a large photo: shrink it (as PIL does), then add noise if sigma is given
        big = _cropped(_photo(args)[1], args.factor)
        clean = big.pixels
        image = Downsample(args.factor)(clean).clamp(0.0, 1.0)
        if sigma is not None:
            image, source = add_synthetic_noise(image, sigma, args.seed), "added"
        save_photo(image, _sibling(out, "_small"))
        print(f"wrote {_sibling(out, '_small')}")
    else:
        _, small = _photo(args, args.factor)
        image, clean = small.pixels, None
    result = upscale(model, image, args.factor, sigma, details=True, **_chains(args))
    _print_sigma(result.sigma[0].item(), source)
    if clean is not None:
        _print_psnr(result, clean)
    else:
        big = _enlarged(small, result.images, args.factor)
    _write_photo(result.images, out, big, big, restore_size=False)


def _cropped(photo: Photo, factor: int) -> Photo:
    """``photo`` without its last rows and columns beyond a multiple of ``factor`` (alpha too)."""
    pixels = crop_to_multiple(photo.pixels, factor)
    height, width = pixels.shape[-2:]
    alpha = None if photo.alpha is None else photo.alpha[:height, :width]
    return Photo(pixels, alpha, photo.mode, photo.bits)


def _enlarged(photo: Photo, pixels, factor: int) -> Photo:
    """``photo`` upscaled to ``pixels``: its alpha with each value repeated factor x factor."""
    alpha = None if photo.alpha is None else photo.alpha.repeat(factor, axis=0).repeat(factor, axis=1)
    return Photo(pixels, alpha, photo.mode, photo.bits)


def run_models(args: argparse.Namespace) -> None:
    models = list_models()
    if not models:
        print(f"no models in {checkpoints_dir()} (set FEBM_CHECKPOINTS to use another folder)")
        return
    rows = [("name", "divergence", "dataset", "metrics")] + [
        (m["name"], str(m["divergence"]), str(m["dataset"]),
         ", ".join(f"{k}={v:.4g}" for k, v in m["metrics"].items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)) or "-")
        for m in models
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


# --- the parser ----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m febm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", metavar="NAME_OR_PATH_OR_REPO",
                        help=f"a model in the checkpoints folder (see the models command), a model folder, or a "
                             f"Hub repo id user/name (default: {DEFAULT_MODEL} if present, else the first model)")
    common.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same output "
                                                            "(default 0)")
    common.add_argument("--steps", type=int, help="Langevin steps; deblur and upscale: restoration steps, 0 = the "
                                                  "classical start (default: the model's)")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")

    langevin = argparse.ArgumentParser(add_help=False)
    langevin.add_argument("--sampler", choices=METHODS,
                          help="Langevin update rule (default: the model's): authors = the training sampler, "
                               "ula = unadjusted Langevin, mala = Metropolis-adjusted Langevin; each brings its own "
                               "step size and samples at the temperature of the model's sampler")

    files = argparse.ArgumentParser(add_help=False)
    files.add_argument("input", metavar="INPUT", help="the image: any file PIL reads, any size and mode")
    files.add_argument("--out", required=True, metavar="OUT.png", help="the result (PNG)")
    files.add_argument("--max-pixels", type=_pixels, default=MAX_PIXELS, metavar="N",
                       help=f"photo models: the largest image restored (upscale: its result), in pixels (e.g. 1e6; "
                            f"default {MAX_PIXELS:,}); larger images are an error unless --downscale")
    files.add_argument("--downscale", action="store_true",
                       help="photo models: downscale an image above --max-pixels to fit (area average, aspect "
                            "ratio kept) instead of refusing it")

    restore_size = argparse.ArgumentParser(add_help=False)
    restore_size.add_argument("--restore-size", action="store_true",
                              help="resize the result back to the input's size (blurry for a small model); "
                                   "default: the model's resolution (photo models: the input's own, or the "
                                   "--downscale size)")

    restoring = argparse.ArgumentParser(add_help=False, parents=[langevin, files, restore_size])
    restoring.add_argument("--chains", type=int, help="Langevin chains per image, averaged (default: the model's)")
    restoring.add_argument("--sample", action="store_true",
                           help="return one posterior sample instead of the mean of the chains")

    p = commands.add_parser("generate", parents=[common, langevin], help="sample new images from the model",
                            description="Sample new images: Langevin chains on the model's energy, from its start "
                                        "distribution (uniform noise, or the smooth part of a Gaussian fitted "
                                        "to the training data).")
    p.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    p.add_argument("--out", default="samples.png", metavar="OUT.png", help="output PNG (default samples.png)")
    layout = p.add_mutually_exclusive_group()
    layout.add_argument("--grid", dest="separate", action="store_false",
                        help="write one grid image, ceil(sqrt(n)) per row (the default)")
    layout.add_argument("--separate", action="store_true",
                        help="write one file per sample: OUT_000.png, OUT_001.png, ...")
    p.add_argument("--noise", type=float, metavar="STD",
                   help="per-step noise of the chains, authors' sampler (default: the model's generation_noise, "
                        "else its sampler's; 0: descent on the energy)")
    p.add_argument("--rejection", action="store_true",
                   help="keep samples by rejection sampling on the learned density ratio (models with a critic); "
                        "prints the acceptance rate")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="photo models: draw images of H x W pixels (default: the training crop)")
    p.set_defaults(run=run_generate, separate=False)

    p = commands.add_parser("denoise", parents=[common, restoring], help="remove Gaussian noise from an image",
                            description="Remove additive Gaussian noise: Langevin on the posterior p(x | noisy).")
    _sigma_options(p, "estimated from the image")
    adding = p.add_mutually_exclusive_group()
    adding.add_argument("--add-noise", type=float, metavar="S",
                        help="first add Gaussian noise of std S in [0, 1] units (its own stream, derived from --seed: "
                             "febm.degradations.add_synthetic_noise), to test the model "
                             "on a clean image; denoises with sigma S unless --sigma/--sigma-255 is given; also writes "
                             "the noisy input as OUT_noisy.png")
    adding.add_argument("--add-noise-255", type=float, metavar="S255",
                        help="as --add-noise, with S255 in 0-255 levels (the same as --add-noise S255/255)")
    p.set_defaults(run=run_denoise)

    p = commands.add_parser("inpaint", parents=[common, restoring], help="fill in the masked part of an image",
                            description="Fill the masked pixels: Langevin with the observed pixels held fixed.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--mask", metavar="MASK",
                        help="an image of the input's size whose painted pixels are filled: non-zero (white) "
                             "pixels, or, in a mask with transparency, the non-transparent ones")
    source.add_argument("--preset", choices=PRESET_MASKS, help="a built-in mask of the pixels to fill")
    p.add_argument("--mask-observed", action="store_true",
                   help="the painted pixels of --mask are the observed ones; the others are filled")
    p.set_defaults(run=run_inpaint)

    p = commands.add_parser("deblur", parents=[common, files, restore_size], help="sharpen a blurred photo",
                            description="Deblur a photo blurred by a known kernel (reflect borders): from a Wiener "
                                        "deconvolution, steps on the posterior with the energy as the prior "
                                        "(febm.deblur). Photo models only.")
    blur = p.add_mutually_exclusive_group(required=True)
    blur.add_argument("--kernel", metavar="KIND:SIZE", help=f"the blur: {KERNEL_FORMS}")
    blur.add_argument("--kernel-file", metavar="KERNEL.png",
                      help="the blur as an image (grey values, normalised to sum 1; black borders cut off)")
    _sigma_options(p, f"estimated from the image; with --blur-first {BLUR_FIRST_SIGMA_255:g} levels")
    p.add_argument("--blur-first", action="store_true",
                   help="a test on a sharp photo: first blur it with the kernel and add noise of --sigma/--sigma-255 "
                        f"(default {BLUR_FIRST_SIGMA_255:g}/255; its own stream, derived from --seed), then deblur; "
                        "prints PSNR against the original and also writes the blurred input as OUT_blurred.png")
    p.set_defaults(run=run_deblur)

    p = commands.add_parser("upscale", parents=[common, files], help="enlarge a small photo x2, x3 or x4",
                            description="Enlarge a photo, modelled as the antialiased bicubic downsampling of the "
                                        "result (what PIL and torchvision do): from bicubic upsampling, steps on the "
                                        "posterior with the energy as the prior (febm.upscale). Photo models only.")
    p.add_argument("--factor", type=int, default=2, help="2, 3 or 4 (default 2)")
    _sigma_options(p, "the model's tuned value, else estimated from the image")
    p.add_argument("--shrink-first", action="store_true",
                   help="a test on a large photo: first shrink it by --factor (antialiased bicubic; the last rows and "
                        "columns beyond a multiple of the factor cut off; noise of --sigma/--sigma-255 added if given, "
                        "from its own stream), then upscale it back; prints PSNR against the original and also writes "
                        "the small input as OUT_small.png")
    p.set_defaults(run=run_upscale)

    p = commands.add_parser("models", help="list the models in the checkpoints folder",
                            description="List the models in the checkpoints folder ($FEBM_CHECKPOINTS, else "
                                        "checkpoints/).")
    p.set_defaults(run=run_models)
    return parser


def _sigma_options(parser: argparse.ArgumentParser, default: str) -> None:
    level = parser.add_mutually_exclusive_group()
    level.add_argument("--sigma", type=float, metavar="S",
                       help="the noise std in [0, 1] units, a fraction of the pixel range (e.g. 0.1; an 8-bit std "
                            f"divided by 255); default: {default}")
    level.add_argument("--sigma-255", type=float, metavar="S255",
                       help="the noise std in 0-255 levels of an 8-bit image (e.g. 25; the same as --sigma S255/255)")


def _pixels(text: str) -> int:
    """A pixel count, also written as 1e6 or 1_000_000."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of pixels: {text!r}") from None
    if not (math.isfinite(value) and value >= 1):
        raise argparse.ArgumentTypeError(f"a number of pixels must be at least 1, got {text!r}")
    return int(value)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():  # restores the default display afterwards
            warnings.showwarning = _show_warning
            args.run(args)
    except (ValueError, OSError, RuntimeError) as e:  # bad input, missing files or models, devices
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
