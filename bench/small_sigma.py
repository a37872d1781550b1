"""Is photo denoising ever worse than its input at small noise? A check on validation crops and the test photos.

    python -m bench.small_sigma --out /tmp/small_sigma.json      # both shipped photo models, a few minutes
    python -m bench.small_sigma --models photo-js --crops 8 --photos camera chelsea    # quicker

For each photo model and sigma = 1, 2, 5 (/255), sigma given and estimated (``sigma=None``): ``febm.denoise``
with the model's defaults (seed 0) on ``--crops`` fixed 96-px validation crops (``training.photos.
validation_crops``, Debian's photographs) and on the ten test photos of ``bench.photos`` (at full size, in their
own channels: colour as colour, camera and aero as grey). Noise: ``febm.degradations.add_gaussian_noise``
(clipped as a stored image is), one draw per image with a seed per (sigma, image). Reports per set: the mean
PSNR of the input and the output, the smallest output-minus-input PSNR over the images (``worst``: below 0 means
an image came back worse than it went in), and how many did; with the estimated sigma, its mean in 0-255 levels.
Every image that came back worse is named with the noise the estimator reads on its clean version ("own noise"):
a reference that carries grain of its own cannot be matched by a blind denoiser, which removes that grain too.

The baseline, measured in the same run on the same noisy images: BM3D (``--baseline bm3d``, the ``bm3d``
package, benchmark only) at the same sigma (given, or the one ``febm`` read), so that what an estimate costs is
told apart from what the model does with it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from bench.reports import save, stamped

SIGMAS_255 = (1, 2, 5)


def check(model, images: dict[str, torch.Tensor], sigma255: float, *, estimated: bool, seed: int,
          baseline: bool = False) -> dict:
    """Input and output PSNR of every image (1, C, H, W) at sigma255, summarised; with ``baseline``, BM3D's too."""
    from febm import denoise
    from febm.degradations import add_gaussian_noise
    from febm.metrics import psnr
    from febm.restore import estimate_sigma

    before, after, read, worse, classical = [], [], [], {}, []
    for i, (name, clean) in enumerate(images.items()):
        noisy = add_gaussian_noise(clean, sigma255 / 255, seed + 1000 * i)
        result = denoise(model, noisy, None if estimated else sigma255 / 255, seed=0, progress=False, details=True)
        before.append(psnr(noisy, clean).item())
        after.append(psnr(result.images, clean).item())
        read.append(result.sigma.item() * 255)
        if after[-1] < before[-1]:
            worse[name] = {"gain": round(after[-1] - before[-1], 3), "sigma_read_255": round(read[-1], 2),
                           "own_noise_255": round(estimate_sigma(clean).item() * 255, 2)}
        if baseline:
            classical.append(psnr(bm3d_denoise(noisy, result.sigma.item()), clean).item())
    out = {"input": _mean(before), "output": _mean(after), "worst": round(min(a - b for a, b in zip(after, before)), 3),
           "worse": len(worse), "images": len(images), "worse_images": worse}
    if estimated:
        out["sigma_read_255"] = _mean(read)
    if baseline:
        out["bm3d"] = {"output": _mean(classical), "worse": sum(c < b for c, b in zip(classical, before)),
                       "worst": round(min(c - b for c, b in zip(classical, before)), 3)}
    return out


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 2)


def bm3d_denoise(noisy: torch.Tensor, sigma: float) -> torch.Tensor:
    """BM3D (grey) or CBM3D (colour) on a (1, C, H, W) image, clipped to [0, 1] as a stored image is."""
    from bench.photos import Observation, as_array, as_tensor, run_bm3d

    observed = as_array(noisy)
    out = run_bm3d(Observation(clean=observed, observed=observed, tensor=noisy, sigma=sigma), {})
    return as_tensor(out.clip(0, 1))


def image_sets(crops: int, photos: list[str] | None) -> dict[str, dict[str, torch.Tensor]]:
    from bench.photos import as_tensor, load_test_photos
    from training.photos import validation_crops

    sets = {}
    if crops:
        sets["validation crops"] = {f"crop {i}": c[None].float() / 255
                                    for i, c in enumerate(validation_crops("photos", 96, crops))}
    if photos is None or photos:
        sets["test photos"] = {name: as_tensor(p.astype("float32") / 255)
                               for name, p in load_test_photos(photos).items()}
    return sets


def main(argv=None) -> int:
    from febm import list_models, load_model

    parser = argparse.ArgumentParser(prog="python -m bench.small_sigma", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="photo models (default: the shipped ones)")
    parser.add_argument("--crops", type=int, default=32, help="validation crops (default 32; 0: none)")
    parser.add_argument("--photos", nargs="*", help="test photos (default: all ten; none: no test photos)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS_255), help="noise levels (/255)")
    parser.add_argument("--baseline", choices=["bm3d", "none"], default="bm3d",
                        help="classical method run at the same sigma (default bm3d; needs the bm3d package)")
    parser.add_argument("--out", help="write the JSON report here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    models = args.models or [m["name"] for m in list_models() if m["dataset"] == "photos"]
    sets = image_sets(args.crops, args.photos)
    results = {}
    for name in models:
        model = load_model(name)
        for set_name, images in sets.items():
            for s in args.sigmas:
                for estimated in (False, True):
                    key = f"{name} | {set_name} | sigma {s:g}/255 {'estimated' if estimated else 'given'}"
                    # BM3D does not depend on the model: run once, at the sigma the first model read
                    out = check(model, images, s, estimated=estimated, seed=int(100 * s),
                                baseline=args.baseline == "bm3d" and name == models[0])
                    results[key] = out
                    if "bm3d" in out:
                        results[key.replace(name, "bm3d", 1)] = out.pop("bm3d")
                    print(json.dumps({key: results[key]}), file=sys.stderr, flush=True)
    report = stamped({"results": results}, "bench.small_sigma", argv, started)
    save(report, args.out)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
