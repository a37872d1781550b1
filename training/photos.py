"""Photographs as training data for fully convolutional priors (DESIGN.md section 7).

    photos = load_photos("photos", "train")             # decoded once, kept at a working resolution
    crops = PhotoCrops(photos, size=48, generator=g)   # an endless, resumable stream of random crops
    x = next(crops)                                     # uint8 (B, 3, 48, 48); dequantize as any batch
    val = validation_crops("photos", size=96)           # fixed crops of the held-out photos

Sources. ``photos``: the photographs of Debian's ``mate-backgrounds`` (``/usr/share/backgrounds/mate/nature``)
and ``plasma-workspace-wallpapers`` (its photographs only, at their largest size; the rest of that package is
rendered artwork). ``folder:PATH``: every image under a folder (a user's own collection: BSDS, DIV2K...).
Nothing else: the project's photo quality is judged on photographs that are in none of these.

Camera photos of 1280-2560 px are far smoother per pixel than what people restore, so each crop is cut at a
random scale: the photo is (virtually) resized so that its long side is L, log-uniform in [512, 1536] px (never
above the photo's own size), then a random square is cut, flipped and rotated by a multiple of 90 degrees.
Splits: a fixed permutation (``SPLIT_SEED``) of the sorted file list holds out ``VAL_PHOTOS`` photos (10 % of a
folder, at least one) for validation; there is no test split (the test photos ship in PyPI wheels, see
bench/photos.py).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from febm.posterior import gradient_step
from training.data import SPLIT_SEED, DatasetNotFoundError, _list_images, _to_mode

MATE_DIR = Path("/usr/share/backgrounds/mate/nature")
PLASMA_DIR = Path("/usr/share/wallpapers")
#: plasma-workspace-wallpapers' photographs (licence per wallpaper in its metadata file; LGPL-3 for these)
PLASMA_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
                 "Kite", "OneStandsOut", "Path", "summer_1am")
VAL_PHOTOS = 3  # of the 23 photos of ``photos``
LONG_SIDE = (512, 1536)  # the random working scale of a crop's photo, long side in px
INSTALL_HINT = ("the photo priors train on Debian's photographs: run `apt-get install mate-backgrounds "
                "plasma-workspace-wallpapers` (about 140 MB; needed for training only, never by the app or the "
                "tests), or train on your own photos with --dataset folder:PATH")


@dataclass
class PhotoSet:
    """Decoded photos, uint8 (C, H, W) each at most ``LONG_SIDE[1]`` px long, with their original long side."""

    images: list[torch.Tensor]
    original_long_side: list[int]
    files: list[str]
    name: str
    split: str

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return self.images[0].shape[0]


def is_photo_source(name: str) -> bool:
    return name == "photos"


def photo_files(name: str) -> list[Path]:
    """The source's files, sorted (the same order, hence the same split, on every machine)."""
    if name.startswith("folder:"):
        return _list_images(Path(name[7:]).expanduser())
    if name != "photos":
        raise ValueError(f"unknown photo source {name!r}; valid: photos, folder:PATH")
    files = sorted(MATE_DIR.glob("*.jpg")) if MATE_DIR.is_dir() else []
    for wallpaper in PLASMA_PHOTOS:
        sizes = sorted((PLASMA_DIR / wallpaper / "contents" / "images").glob("*x*.*"), key=_area)
        if sizes:
            files.append(sizes[-1])
    if len(files) < 2 * VAL_PHOTOS:
        raise DatasetNotFoundError(f"found {len(files)} of the 23 training photographs: {INSTALL_HINT}")
    return files


def _area(path: Path) -> int:
    try:
        w, h = path.stem.split("x")
        return int(w) * int(h)
    except ValueError:
        return 0


def split_files(files: list[Path], split: str, n_val: int) -> list[Path]:
    """train / val by a fixed permutation of the sorted files; val holds n_val of them."""
    if split not in ("train", "val"):
        raise ValueError(f"photo sources have the splits train and val, got {split!r}")
    if len(files) <= n_val:
        raise DatasetNotFoundError(f"{len(files)} photos cannot give {n_val} for validation and some to train on")
    perm = np.random.RandomState(SPLIT_SEED).permutation(len(files))
    chosen = perm[:n_val] if split == "val" else perm[n_val:]
    return [files[i] for i in sorted(chosen)]


def load_photos(name: str = "photos", split: str = "train", mode: str = "RGB") -> PhotoSet:
    """Decode a split's photos once (EXIF orientation applied), downscaled to at most LONG_SIDE[1] px long."""
    files = photo_files(name)
    files = split_files(files, split, VAL_PHOTOS if name == "photos" else max(1, round(0.1 * len(files))))
    images, longs = [], []
    for path in files:
        with Image.open(path) as im:
            im = _to_mode(ImageOps.exif_transpose(im), mode)
            longs.append(max(im.size))
            scale = LONG_SIDE[1] / max(im.size)
            if scale < 1:
                im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
            arr = np.asarray(im, dtype=np.uint8)
        images.append(torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()))
    return PhotoSet(images, longs, [str(f) for f in files], name, split)


def random_crop(photos: PhotoSet, size: int, generator: torch.Generator, long_side: float | None = None) -> torch.Tensor:
    """One uint8 (C, size, size) crop at a random scale (or the photo resized to ``long_side``), flip and
    rotation."""
    i = int(torch.randint(len(photos), (1,), generator=generator))
    image, original = photos.images[i], photos.original_long_side[i]
    low, high = math.log(LONG_SIDE[0]), math.log(min(LONG_SIDE[1], original))
    draw = math.exp(low + (high - low) * float(torch.rand((), generator=generator))) if high > low else original
    long_side = min(long_side, original) if long_side is not None else draw
    stored_long = max(image.shape[-2:])
    side = min(max(size, round(size * stored_long / long_side)), *image.shape[-2:])  # crop side in stored px
    top = int(torch.randint(image.shape[-2] - side + 1, (1,), generator=generator))
    left = int(torch.randint(image.shape[-1] - side + 1, (1,), generator=generator))
    crop = image[:, top:top + side, left:left + side].float()
    if side != size:
        crop = F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    crop = torch.rot90(crop, int(torch.randint(4, (1,), generator=generator)), dims=(1, 2))
    if bool(torch.rand((), generator=generator) < 0.5):
        crop = crop.flip(-1)
    return crop.round_().clamp_(0, 255).to(torch.uint8)


class PhotoCrops:
    """Endless stream of batches of random crops; ``state_dict`` (the generator's state) resumes it exactly."""

    def __init__(self, photos: PhotoSet, size: int, batch_size: int, generator: torch.Generator):
        if len(photos) == 0 or batch_size < 1:
            raise ValueError("need at least one photo and batch_size >= 1")
        smallest = min(min(im.shape[-2:]) for im in photos.images)
        if size > smallest:
            raise ValueError(f"crop size {size} exceeds the smallest photo side ({smallest} px)")
        self.photos, self.size, self.batch_size, self.generator = photos, size, batch_size, generator

    def sample(self, n: int) -> torch.Tensor:
        return torch.stack([random_crop(self.photos, self.size, self.generator) for _ in range(n)])

    def __iter__(self) -> "PhotoCrops":
        return self

    def __next__(self) -> torch.Tensor:
        return self.sample(self.batch_size)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


VAL_LONG_SIDE = 512  # px: validation crops at the busy end of the training scales, like the test photos


def validation_crops(name: str = "photos", size: int = 96, n: int = 32, seed: int = 0) -> torch.Tensor:
    """Fixed uint8 (n, C, size, size) crops of the validation photos (the same on every call and machine).

    Each crop is cut from a photo resized to a long side of ``VAL_LONG_SIDE`` px: at the random scales of
    training the crops are mostly soft background (non-local means scored 34.9 dB on them at sigma = 25/255,
    29.1 on the test photos), and settings tuned there over-smooth the photos people restore.
    """
    photos = load_photos(name, "val")
    gen = torch.Generator().manual_seed(SPLIT_SEED + seed)
    return torch.stack([random_crop(photos, size, gen, long_side=VAL_LONG_SIDE) for _ in range(n)])


def noisy_crop_start(photos: PhotoSet, size: int, max_sigma: float):
    """Chain starts: fresh crops plus Gaussian noise of a std drawn from U[0, max_sigma], clamped to [0, 1].

    Short chains from here show the energy what noise on photos looks like, the contrast that denoising needs
    (chains from uniform noise never come near a photo in a few steps).
    """

    def sample(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        x = torch.stack([random_crop(photos, size, generator) for _ in range(n)]).float().div_(255)
        sigma = max_sigma * torch.rand((n, 1, 1, 1), generator=generator)
        return (x + sigma * torch.randn(x.shape, generator=generator)).clamp_(0.0, 1.0)

    return sample


def noise_levels(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """(n,) noise stds, log-uniform in [low, high] ([0, 1] units): every decade of sigma trained alike."""
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high for the training noise levels, got {low}, {high}")
    u = torch.rand(n, generator=generator)
    return torch.exp(math.log(low) + (math.log(high) - math.log(low)) * u)


def noisy_observations(clean: torch.Tensor, sigma: torch.Tensor, grey_fraction: float,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, noisy): Gaussian noise of std sigma (B,), clipped to [0, 1] as stored photos are.

    A ``grey_fraction`` of the colour crops becomes grey first (PIL's luma in all three channels) with the same
    noise in every channel: that is what a grey photo looks like to a colour model (febm.restore), and a model
    that never saw it treats the correlated noise as colour detail.
    """
    b, c = clean.shape[:2]
    noise = torch.randn(clean.shape, generator=generator)
    if c == 3 and grey_fraction > 0:
        grey = (torch.rand(b, generator=generator) < grey_fraction).view(-1, 1, 1, 1)
        luma = (clean * LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(clean)
        clean = torch.where(grey, luma, clean)
        noise = torch.where(grey, noise[:, :1].expand_as(noise), noise)
    return clean, (clean + sigma.view(-1, 1, 1, 1) * noise).clamp(0.0, 1.0)


LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601-2, as PIL's convert("L")


VAL_SIGMAS_255 = (5, 15, 25, 50)


def validation_psnr(energy, crops: torch.Tensor, sigmas_255=VAL_SIGMAS_255, seed: int = 0,
                    denoiser=None) -> dict[str, float]:
    """Mean PSNR (dB) on fixed validation crops (float [0, 1]) per noise level, with the same noise draw every
    call: of ``denoiser(noisy, sigma)``, by default the energy's gradient step (how a score-matching or posterior
    run is followed while it trains)."""
    denoiser = denoiser or (lambda y, s: gradient_step(energy, y, s))
    out = {}
    for s in sigmas_255:
        gen = torch.Generator().manual_seed(seed * 1000 + s)
        sigma = torch.full((len(crops),), s / 255.0, device=crops.device)
        clean, noisy = noisy_observations(crops.cpu(), sigma.cpu(), 0.0, gen)
        mse = (denoiser(noisy.to(crops.device), sigma) - clean.to(crops.device)).pow(2).flatten(1).mean(1)
        out[f"val_psnr_{s}"] = round(float((10 * torch.log10(1 / mse)).mean()), 3)
    return out


# --- provenance, for model cards ---------------------------------------------------------------------------
MATE_COPYRIGHT = Path("/usr/share/doc/mate-backgrounds/copyright")


def data_card(name: str) -> str:
    """Markdown: every training and validation photo with its package, author and licence."""
    if name != "photos":
        return f"Random crops of the images under `{name[7:] if name.startswith('folder:') else name}`."
    files = photo_files(name)
    val = set(map(str, split_files(files, "val", VAL_PHOTOS)))
    rows = ["| photo | split | package | author | licence |", "| --- | --- | --- | --- | --- |"]
    for path in files:
        package, author, licence = _provenance(path)
        label = path.parts[-4] if package == "plasma-workspace-wallpapers" else path.stem
        rows.append(f"| {label} | {'val' if str(path) in val else 'train'} | {package} | {author} | {licence} |")
    return ("Random crops (random scale: long side 512-1536 px; flips, 90-degree rotations) of the photographs "
            "of two Debian packages, and nothing else:\n\n" + "\n".join(rows))


def _provenance(path: Path) -> tuple[str, str, str]:
    if path.is_relative_to(PLASMA_DIR):
        meta = path.parents[2] / "metadata.json"
        try:
            plugin = json.loads(meta.read_text(encoding="utf-8"))["KPlugin"]
            author = ", ".join(a.get("Name", "?") for a in plugin.get("Authors", []))
            return "plasma-workspace-wallpapers", author or "?", plugin.get("License", "?")
        except (OSError, ValueError, KeyError):
            return "plasma-workspace-wallpapers", "?", "see the package's metadata"
    stanzas = MATE_COPYRIGHT.read_text(encoding="utf-8").split("\n\n") if MATE_COPYRIGHT.is_file() else []
    for stanza in stanzas:
        if f"nature/{path.name}" in stanza:
            fields = dict(re.findall(r"^(Copyright|License): *(.*)$", stanza, flags=re.M))
            holder = re.sub(r"\s*<[^>]*>", "", fields.get("Copyright", "?")).strip(" ´")  # names, not e-mails
            return "mate-backgrounds", holder, fields.get("License", "?")
    return "mate-backgrounds", "?", "GPL-2+ (see the package's copyright file)"
