"""Image data sets for training and evaluation (DESIGN.md section 4). The library `febm` never imports this.

    data = load_dataset("fashion-mnist", "train")       # ImageData: uint8 images (N, C, H, W), int64 labels
    stream = batches(data.images, 64, generator=torch.Generator().manual_seed(0))
    x = dequantize(next(stream), generator)              # float in [0, 1), as the authors train (DESIGN section 3)

Names: `fashion-mnist` (default), `mnist`, `cifar10`, `celeba` (32x32), `folder:PATH` (any folder of images).
Splits: `train`, `val`, `test`. `test` is the official test split, for reported numbers only. `val` is held out
of the official training split by a fixed permutation (`numpy.random.RandomState(SPLIT_SEED)`, a stream NumPy
promises never to change), so `train` and `val` never overlap and are the same on every machine and call.
Default validation sizes: 5,000 images for (Fashion-)MNIST and CIFAR-10; CelebA has its own official
validation split; folders are split 80/10/10.

Where files come from. With `root=None`: Debian's folder (`/usr/share/datasets/fashion-mnist/`, from the
package `dataset-fashion-mnist`) where one exists, then the cache folder (`$FEBM_DATA`, default
`~/.cache/febm/data`), then a torchvision download into the cache. With `root=...`: that folder only (and
torchvision's layout inside it), downloading into it. torchvision is only the downloader: this module parses
the files itself (IDX, CIFAR-10 pickles through a restricted unpickler, CelebA's partition list), so Debian's
files, torchvision's downloads and the tests' stand-in data all go through the same code, and no md5 check
stands in the way of stand-in data. Downloads happen only when allowed: `download=True`, or `download=None`
with `HF_HUB_OFFLINE` unset (the tests set it). A missing data set raises `DatasetNotFoundError` saying how to
get it.

Images stay uint8 in memory (Fashion-MNIST's 60,000 x 784 bytes is 47 MB) and become float per batch.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

SPLIT_SEED = 2020  # seed of the permutation that holds out validation images; changing it changes every split
SPLITS = ("train", "val", "test")
NAMES = ("fashion-mnist", "mnist", "cifar10", "celeba", "folder:PATH")
DEFAULT_VAL_SIZE = 5000  # (Fashion-)MNIST and CIFAR-10
FOLDER_VAL_FRACTION = FOLDER_TEST_FRACTION = 0.1
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SYSTEM_DIRS = {  # folders of Debian's dataset packages, searched when root is None
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
    "mnist": Path("/usr/share/datasets/mnist"),
}
_INFO = {
    "fashion-mnist": {"channels": 1, "image_size": 28, "num_classes": 10},
    "mnist": {"channels": 1, "image_size": 28, "num_classes": 10},
    "cifar10": {"channels": 3, "image_size": 32, "num_classes": 10},
    "celeba": {"channels": 3, "image_size": 32, "num_classes": None},
}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
            "cifar-10": "cifar10", "cifar_10": "cifar10"}
_TORCHVISION_CLASS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST", "cifar10": "CIFAR10", "celeba": "CelebA"}
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_LIST = ", ".join(f"{stem}.gz" for pair in _IDX_FILES.values() for stem in pair)
_HOW_TO_GET = {
    "fashion-mnist": "install Debian's package (`apt-get install dataset-fashion-mnist`, which puts the IDX files in "
                     "/usr/share/datasets/fashion-mnist/), or pass root= a folder holding " + _IDX_LIST,
    "mnist": "pass root= a folder holding MNIST's " + _IDX_LIST,
    "cifar10": "extract CIFAR-10's python archive (cifar-10-python.tar.gz) so that {dest}/cifar-10-batches-py/ "
               "holds data_batch_1 ... data_batch_5 and test_batch",
    "celeba": "put CelebA's img_align_celeba/ folder and list_eval_partition.txt in {dest}/celeba/ (torchvision's "
              "download needs the gdown package and often hits Google Drive's quota)",
}
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))  # largest float32 < 1


class DatasetNotFoundError(RuntimeError):
    """The data set's files are not on this machine and could not (or may not) be downloaded."""


@dataclass
class ImageData:
    """One split of a data set: images uint8 (N, C, H, W); labels int64 (N,) or None (CelebA, folders)."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    split: str

    def __len__(self) -> int:
        return self.images.shape[0]


# --- public entry points -------------------------------------------------------------------------------
def load_dataset(name: str = "fashion-mnist", split: str = "train", root: str | Path | None = None, *,
                 val_size: int | None = None, image_size: int | None = None, download: bool | None = None,
                 mode: str | None = None) -> ImageData:
    """Load one split of a data set into memory as uint8.

    val_size: images held out of the official training split for `val` (default 5000; folders: 10%; CelebA
    uses its official split and refuses it). image_size: square side to resize to (default: native size;
    folders and CelebA: 32). mode: "L" or "RGB" for folders (default: the majority of the files' modes).
    root: the only folder to search and download into (None: Debian's folder, then the cache; unused by
    folder:PATH). download: None means allowed unless HF_HUB_OFFLINE is set.
    """
    name = canonical_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if mode is not None and not name.startswith("folder:"):
        raise ValueError("mode applies to folder:PATH data sets only")
    root = None if root is None else Path(root).expanduser()
    download = _download_allowed(download)
    if name.startswith("folder:"):
        return ImageData(_load_folder(Path(name[7:]).expanduser(), split, val_size, image_size or 32, mode),
                         None, name, split)
    if name == "celeba":
        if val_size is not None:
            raise ValueError("celeba has an official validation split; val_size does not apply")
        return ImageData(_load_celeba(split, root, download, image_size or 32), None, name, split)
    loader = _load_cifar10 if name == "cifar10" else _load_idx_set
    images, labels = loader(name, "test" if split == "test" else "train", root, download)
    if split != "test":
        train_idx, val_idx = split_indices(len(images), DEFAULT_VAL_SIZE if val_size is None else val_size)
        keep = torch.from_numpy(train_idx if split == "train" else val_idx)
        images, labels = images[keep], (None if labels is None else labels[keep])
    if image_size is not None and image_size != images.shape[-1]:
        images = resize_images(images, image_size)
    return ImageData(images.contiguous(), labels, name, split)


def dataset_info(name: str = "fashion-mnist", *, image_size: int | None = None, mode: str | None = None) -> dict:
    """channels, image_size and num_classes of what `load_dataset` returns, to build networks before loading.

    For folders this reads only the files' headers (to find the majority mode); num_classes is None there.
    """
    name = canonical_name(name)
    if name.startswith("folder:"):
        folder = Path(name[7:]).expanduser()
        mode = mode or _majority_mode(_list_images(folder))
        return {"channels": 1 if _check_mode(mode) == "L" else 3, "image_size": image_size or 32, "num_classes": None}
    info = dict(_INFO[name])
    if image_size is not None:
        info["image_size"] = image_size
    return info


def canonical_name(name: str) -> str:
    """The data set's name as this module spells it; ValueError listing the valid names otherwise."""
    if name.startswith("folder:") and len(name) > 7:
        return name
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _INFO:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(NAMES)}")
    return key


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1], the library's image convention (evaluation, restoration inputs)."""
    _check_uint8(images)
    return images.float().div_(255)


def dequantize(images: torch.Tensor, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """uint8 -> float32 (x + U(0, 1)) / 256 in [0, 1): x*255/256 + U(0, 1/256) for x in [0, 1] (DESIGN section 3).

    Training data get continuous values so a density model cannot put infinite mass on the 256 levels.
    The noise is drawn on the generator's device, so a CPU generator gives the same values for CUDA images.
    """
    _check_uint8(images)
    gen = _as_generator(generator)
    device = gen.device if gen is not None else images.device
    noise = torch.rand(images.shape, generator=gen, device=device).to(images.device)
    return (images.float() + noise).div_(256).clamp_(max=_BELOW_ONE)  # float32 rounding could reach 1.0


class Batches:
    """Endless stream of shuffled batches: each epoch is a fresh permutation, every image once per epoch.

    Epochs run into each other so every batch has exactly batch_size images (the stream is the concatenation
    of the epochs' permutations, cut into batches). Epoch e's permutation comes from a seed drawn once from
    `generator` plus e, so the stream does not depend on who else draws from that generator, and
    `state_dict()` (seed, epoch, position, permutation) is all a training run needs to resume exactly.
    Yields images[idx], or (images[idx], labels[idx]) when labels are given.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, generator: torch.Generator | int | None = None,
                 labels: torch.Tensor | None = None):
        if batch_size < 1 or len(images) == 0:
            raise ValueError("need batch_size >= 1 and at least one image")
        if labels is not None and len(labels) != len(images):
            raise ValueError("labels and images differ in length")
        self.images, self.labels, self.batch_size = images, labels, batch_size
        gen = _as_generator(generator)
        device = gen.device if gen is not None else "cpu"
        self.seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=device).item())
        self.epoch, self.position = 0, 0
        self.permutation = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(len(self.images), generator=torch.Generator().manual_seed(self.seed + epoch))

    def __iter__(self) -> Batches:
        return self

    def __next__(self):
        parts, need = [], self.batch_size
        while need:
            if self.position == len(self.permutation):
                self.epoch, self.position = self.epoch + 1, 0
                self.permutation = self._permutation(self.epoch)
            take = self.permutation[self.position:self.position + need]
            parts.append(take)
            self.position += len(take)
            need -= len(take)
        idx = torch.cat(parts).to(self.images.device)
        return self.images[idx] if self.labels is None else (self.images[idx], self.labels[idx.to(self.labels.device)])

    def state_dict(self) -> dict:
        """seed, epoch, position and the current permutation (int64 tensor; may be dropped, then recomputed)."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "permutation": self.permutation.clone(), "num_images": len(self.images)}

    def load_state_dict(self, state: dict) -> None:
        if state["num_images"] != len(self.images):
            raise ValueError(f"state is for {state['num_images']} images, this stream has {len(self.images)}")
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        perm = state.get("permutation")
        self.permutation = self._permutation(self.epoch) if perm is None else torch.as_tensor(perm).long().clone()


def batches(images: torch.Tensor, batch_size: int, generator: torch.Generator | int | None = None,
            labels: torch.Tensor | None = None) -> Batches:
    """The training loop's data: an endless, reproducible, resumable `Batches` stream."""
    return Batches(images, batch_size, generator, labels)


# --- building blocks, public because tests and tools use them -------------------------------------------
def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file, gzipped or not: (Fashion-)MNIST's format, simple enough to skip torchvision's layout.

    Layout: two zero bytes, a type code (0x08 = uint8), the number of dimensions, each dimension as a
    big-endian uint32, then the data in C order. Images are magic 2051 (uint8, 3 dims), labels 2049.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    dtypes = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in dtypes:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim, dtype = raw[3], np.dtype(dtypes[raw[2]])
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    count, offset = math.prod(dims), 4 + 4 * ndim
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: {len(raw) - offset} data bytes, dims {dims} need {count * dtype.itemsize}")
    return np.frombuffer(raw, dtype, count, offset).reshape(dims).astype(dtype.newbyteorder("="))


def split_indices(n: int, val_size: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices into an official training split of n images, each sorted; fixed for a seed."""
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}), got {val_size}")
    perm = np.random.RandomState(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) to size x size, antialiased bilinear, in chunks to bound memory."""
    out = [F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
           .round_().clamp_(0, 255).to(torch.uint8) for chunk in images.split(4096)]
    return torch.cat(out) if out else images.new_zeros((0, images.shape[1], size, size))


def cache_dir() -> Path:
    """Where downloads go when no root is given: $FEBM_DATA, default ~/.cache/febm/data."""
    return Path(os.environ.get("FEBM_DATA") or "~/.cache/febm/data").expanduser()


# --- (Fashion-)MNIST: IDX files -------------------------------------------------------------------------
def _load_idx_set(name: str, official: str, root: Path | None, download: bool):
    images_stem, labels_stem = _IDX_FILES[official]
    tv = _TORCHVISION_CLASS[name]
    dest = root if root is not None else cache_dir()
    dirs = [root, root / tv / "raw"] if root is not None else [SYSTEM_DIRS[name], dest / tv / "raw"]
    path = _find_file(dirs, images_stem)
    if path is None and download:
        _fetch(name, dest, lambda ds: ds(str(dest), train=True, download=True))
        path = _find_file(dirs, images_stem)
    if path is None:
        raise DatasetNotFoundError(_missing(name, dirs, dest, download))
    images = read_idx(path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    labels_path = _find_file([path.parent], labels_stem)
    labels = None if labels_path is None else torch.from_numpy(read_idx(labels_path).astype(np.int64))
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{labels_path} has {len(labels)} labels for {len(images)} images")
    return torch.from_numpy(images).unsqueeze(1), labels


def _find_file(dirs: list[Path], stem: str) -> Path | None:
    for folder in dirs:
        for candidate in (folder / (stem + ".gz"), folder / stem):
            if candidate.is_file():
                return candidate
    return None


# --- CIFAR-10: torchvision's cifar-10-batches-py pickles ------------------------------------------------
class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10's batches are pickles; allow only what they hold (dicts, lists, str, NumPy arrays), no code."""

    def find_class(self, module, name):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return np.ndarray.__reduce__(np.zeros(0))[0]  # NumPy's own _reconstruct, whatever its module
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch file")


def _load_cifar10(name: str, official: str, root: Path | None, download: bool):
    dest = root if root is not None else cache_dir()
    folder = dest / "cifar-10-batches-py"
    files = [folder / f"data_batch_{i}" for i in range(1, 6)] if official == "train" else [folder / "test_batch"]
    if not all(f.is_file() for f in files) and download:
        _fetch(name, dest, lambda ds: ds(str(dest), train=True, download=True))
    if not all(f.is_file() for f in files):
        raise DatasetNotFoundError(_missing(name, [folder], dest, download))
    images, labels = [], []
    for path in files:
        with open(path, "rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"])
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64)


# --- CelebA: aligned JPEGs + official partition, centre crop 140 then resize (the EBM convention) ------
def _load_celeba(split: str, root: Path | None, download: bool, size: int) -> torch.Tensor:
    dest = root if root is not None else cache_dir()
    folder = dest / "celeba"
    partition, image_dir = folder / "list_eval_partition.txt", folder / "img_align_celeba"
    if not (partition.is_file() and image_dir.is_dir()) and download:
        _fetch("celeba", dest, lambda ds: ds(str(dest), split="all", target_type=[], download=True))
    if not (partition.is_file() and image_dir.is_dir()):
        raise DatasetNotFoundError(_missing("celeba", [folder], dest, download))
    code = {"train": "0", "val": "1", "test": "2"}[split]
    files = [image_dir / row[0] for row in map(str.split, partition.read_text().splitlines()) if row[1:2] == [code]]

    def read(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            w, h = im.size
            crop = min(140, w, h)
            box = ((w - crop) // 2, (h - crop) // 2, (w - crop) // 2 + crop, (h - crop) // 2 + crop)
            im = im.convert("RGB").crop(box).resize((size, size), Image.Resampling.BICUBIC)
            return np.asarray(im).transpose(2, 0, 1)

    return _stack(_parallel_map(read, files), 3, size)


# --- any folder of images --------------------------------------------------------------------------------
def _load_folder(folder: Path, split: str, val_size: int | None, size: int, mode: str | None) -> torch.Tensor:
    """Split the sorted file list 80/10/10 by the fixed permutation, then decode only the requested split."""
    files = _list_images(folder)
    mode = _check_mode(mode or _majority_mode(files))
    n = len(files)
    n_test = round(FOLDER_TEST_FRACTION * n)
    n_val = round(FOLDER_VAL_FRACTION * n) if val_size is None else val_size
    if n_val < 0 or n_val + n_test >= n:
        raise ValueError(f"{folder}: {n} images cannot give {n_val} val + {n_test} test and a training split")
    perm = np.random.RandomState(SPLIT_SEED).permutation(n)
    chosen = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}[split]
    arrays = _parallel_map(lambda i: _read_image(files[i], mode, size), sorted(chosen))
    bad = [str(files[i]) for i, a in zip(sorted(chosen), arrays) if a is None]
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s) in {folder}: {', '.join(bad[:5])}", stacklevel=3)
    return _stack([a for a in arrays if a is not None], 1 if mode == "L" else 3, size)


def _list_images(folder: Path) -> list[Path]:
    """Image files under folder, recursively, sorted by relative path (same order on every machine)."""
    if not folder.is_dir():
        raise DatasetNotFoundError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise DatasetNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return files


def _majority_mode(files: list[Path]) -> str:
    """'L' when most files are grayscale (by their header), else 'RGB' (ties go to RGB)."""
    gray = 0
    for path in files:
        try:
            with Image.open(path) as im:
                gray += _is_gray(im.mode)
        except OSError:
            pass
    return "L" if gray * 2 > len(files) else "RGB"


def _is_gray(mode: str) -> bool:
    return mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;")


def _check_mode(mode: str) -> str:
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    return mode


def _read_image(path: Path, mode: str, size: int) -> np.ndarray | None:
    """One file -> uint8 (C, size, size): EXIF rotation, 16-bit scaled to 8, alpha over white, centre crop."""
    try:
        with Image.open(path) as im:
            im = _to_mode(ImageOps.exif_transpose(im), mode)
            im = ImageOps.fit(im, (size, size), Image.Resampling.LANCZOS)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _to_mode(im: Image.Image, mode: str) -> Image.Image:
    if im.mode in ("I", "F") or im.mode.startswith("I;"):  # PIL's convert("L") would clip these, not scale
        a = np.asarray(im, dtype=np.float64)
        if im.mode != "F":
            a = a / 257  # 16-bit range (PNG's 16-bit grayscale opens as I;16 or I)
        elif a.max(initial=0) <= 1:
            a = a * 255  # floats in [0, 1]
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
    return im.convert(mode)


# --- small shared helpers --------------------------------------------------------------------------------
def _parallel_map(fn, items) -> list:
    """Decode images on a few threads (PIL releases the GIL while decoding and resizing)."""
    items = list(items)
    if len(items) < 64:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


def _stack(arrays: list[np.ndarray], channels: int, size: int) -> torch.Tensor:
    if not arrays:
        return torch.zeros((0, channels, size, size), dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays))


def _check_uint8(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8:  # a float image here would be scaled twice
        raise TypeError(f"expected uint8 images, got {images.dtype}")


def _as_generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    """A seed becomes a fresh CPU generator; None means torch's global RNG."""
    return torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator


def _download_allowed(download: bool | None) -> bool:
    if download is not None:
        return bool(download)
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("1", "true", "yes", "on")


def _fetch(name: str, dest: Path, call) -> None:
    """Let torchvision download `name` into dest; any failure becomes DatasetNotFoundError with the way out."""
    import torchvision.datasets

    try:
        dest.mkdir(parents=True, exist_ok=True)
        call(getattr(torchvision.datasets, _TORCHVISION_CLASS[name]))
    except Exception as err:  # URLError, RuntimeError, no gdown...: all mean "not here"
        raise DatasetNotFoundError(f"{name}: downloading into {dest} failed ({type(err).__name__}: {err}). "
                                   f"To get it: {_HOW_TO_GET[name].format(dest=dest)}.") from err


def _missing(name: str, dirs: list[Path], dest: Path, download: bool) -> str:
    why = "" if download else " Downloads are disabled (download=False or HF_HUB_OFFLINE is set)."
    return (f"{name} not found (looked in {', '.join(str(d) for d in dirs)}).{why} To get it: "
            f"{_HOW_TO_GET[name].format(dest=dest)}; or run once with internet (download=True, HF_HUB_OFFLINE "
            f"unset) so torchvision downloads it to {dest}.")
