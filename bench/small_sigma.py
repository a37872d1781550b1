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
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from bench.reports import save, stamped

SIGMAS_255 = (1, 2, 5)


def check(model, images: list[torch.Tensor], sigma255: float, *, estimated: bool, seed: int) -> dict:
    """Input and output PSNR of every image (1, C, H, W) at sigma255, summarised."""
    from febm import denoise
    from febm.degradations import add_gaussian_noise
    from febm.metrics import psnr

    before, after, read = [], [], []
    for i, clean in enumerate(images):
        noisy = add_gaussian_noise(clean, sigma255 / 255, seed + 1000 * i)
        result = denoise(model, noisy, None if estimated else sigma255 / 255, seed=0, progress=False, details=True)
        before.append(psnr(noisy, clean).item())
        after.append(psnr(result.images, clean).item())
        read.append(result.sigma.item() * 255)
    gains = [a - b for a, b in zip(after, before)]
    out = {"input": round(sum(before) / len(before), 2), "output": round(sum(after) / len(after), 2),
           "worst": round(min(gains), 3), "worse": sum(g < 0 for g in gains), "images": len(images)}
    if estimated:
        out["sigma_read_255"] = round(sum(read) / len(read), 2)
    return out


def image_sets(crops: int, photos: list[str] | None) -> dict[str, list[torch.Tensor]]:
    from bench.photos import as_tensor, load_test_photos
    from training.photos import validation_crops

    sets = {}
    if crops:
        sets["validation crops"] = [c[None].float() / 255 for c in validation_crops("photos", 96, crops)]
    if photos is None or photos:
        sets["test photos"] = [as_tensor(p.astype("float32") / 255) for p in load_test_photos(photos).values()]
    return sets


def main(argv=None) -> int:
    from febm import list_models, load_model

    parser = argparse.ArgumentParser(prog="python -m bench.small_sigma", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="photo models (default: the shipped ones)")
    parser.add_argument("--crops", type=int, default=32, help="validation crops (default 32; 0: none)")
    parser.add_argument("--photos", nargs="*", help="test photos (default: all ten; none: no test photos)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS_255), help="noise levels (/255)")
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
                    results[key] = check(model, images, s, estimated=estimated, seed=int(100 * s))
                    print(json.dumps({key: results[key]}), file=sys.stderr, flush=True)
    report = stamped({"results": results}, "bench.small_sigma", argv, started)
    save(report, args.out)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
