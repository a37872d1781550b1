"""The README's first figure: a shipped photo model denoising the app's example photos, as before / after crops.

    .venv/bin/python scripts/readme_figure.py                       # docs/readme_photo.png with photo-js
    .venv/bin/python scripts/readme_figure.py --model photo-cd --sigma-255 15

Each example photo (app/examples/photos: public domain and CC0, test photos never used for training or tuning)
gets Gaussian noise of sigma (0-255 levels) from febm.degradations.add_synthetic_noise (seed 0) and is denoised
whole by the model with its tuned defaults; the figure shows a zoomed crop of each: the noisy input, the model's
result and the original, with PSNR over the whole photo. It prints the numbers for the README's caption. Re-run it
when a new model ships.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from febm import denoise, load_model
from febm.degradations import add_synthetic_noise
from febm.imageio import from_model_tensor, load_photo
from febm.metrics import psnr

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ("chelsea-320x240.png", "astronaut-256x256.png")
CROP = 128  # px of the photo shown per panel, zoomed ZOOM times (nearest neighbour: the pixels as they are)
ZOOM = 2
LABEL = 30  # px of label above each panel
GAP = 6


def restore(model, path: Path, sigma: float, seed: int) -> tuple[list[Image.Image], float, float]:
    """(crops of the noisy input, the result and the original; PSNR of the noisy input and of the result)."""
    clean = load_photo(path).pixels
    noisy = add_synthetic_noise(clean, sigma, seed)
    result = denoise(model, noisy, sigma, seed=seed, progress=False)
    width, height = clean.shape[-1], clean.shape[-2]
    left, top = (width - CROP) // 2, (height - CROP) // 2
    crops = [from_model_tensor(x[..., top:top + CROP, left:left + CROP]).convert("RGB")
             .resize((CROP * ZOOM, CROP * ZOOM), Image.Resampling.NEAREST) for x in (noisy, result, clean)]
    return crops, psnr(noisy, clean).item(), psnr(result, clean).item()


def figure(rows: list[tuple[list[Image.Image], list[str]]]) -> Image.Image:
    """Panels in a grid, each under its label (ASCII: the default font has no Greek)."""
    side = CROP * ZOOM
    columns = len(rows[0][0])
    sheet = Image.new("RGB", (columns * (side + GAP) - GAP, len(rows) * (side + LABEL + GAP) - GAP), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=18)
    for r, (panels, labels) in enumerate(rows):
        top = r * (side + LABEL + GAP)
        for c, (panel, label) in enumerate(zip(panels, labels)):
            left = c * (side + GAP)
            draw.text((left + 4, top + 5), label, fill="black", font=font)
            sheet.paste(panel, (left, top + LABEL))
    return sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="photo-js", help="a shipped photo model (default photo-js)")
    parser.add_argument("--sigma-255", type=float, default=25.0, help="noise std in 0-255 levels (default 25)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "readme_photo.png"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, sigma = load_model(args.model), args.sigma_255 / 255
    rows = []
    for name in PHOTOS:
        crops, before, after = restore(model, ROOT / "app" / "examples" / "photos" / name, sigma, args.seed)
        labels = [f"noisy, sigma {args.sigma_255:g}/255: {before:.2f} dB", f"{args.model}: {after:.2f} dB", "original"]
        rows.append((crops, labels))
        print(f"{name}: noisy {before:.2f} dB, {args.model} {after:.2f} dB (PSNR over the whole photo)")
    figure(rows).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
