"""Photo restoration benchmark: classical restorers, BM3D and the shipped photo models on the TEST photos.

    python -m bench.photos --tune                         # once: classical parameters on the VALIDATION crops
    python -m bench.photos --out docs/photos.json --markdown docs/photos_benchmark.md \\
        --figure docs/photos_benchmark.png                # the benchmark (all photos, cases and methods)
    python -m bench.photos --photos camera chelsea --cases grey-25 text --methods input start tv \\
        --max-side 128 --out /tmp/p.json                  # a quick check (seconds)

Test photos (DESIGN.md section 7; never used for training or tuning): the photographs inside PyPI wheels:
scikit-image's astronaut, camera, chelsea, coffee, rocket, motorcycle_left (stereo_motorcycle()[0]),
scikit-learn's china and flower, matplotlib's grace_hopper, PyWavelets' aero. Grey cases use all ten (the luma
of the colour ones, as PIL's convert("L") stores it; camera and aero as they are), colour cases the eight colour
photos. ``--max-side N`` downscales each photo (Lanczos, uint8) so that its long side is at most N, for quick runs.

Cases: grey and colour denoising at sigma = 15, 25, 50 (/255; noise clipped to [0, 1] as stored images are),
colour inpainting of scribbles (``febm.degradations.scribble_mask``) and of overlaid text (``text_mask``). The
degraded input of an inpainting case shows the strokes / glyphs in white; every method is given the mask, so that
white only enters the input row's score. Seeds are per (seed, case, photo), independent of what else runs.

Methods, side by side in one run: ``input``; ``wavelet`` (scikit-image, BayesShrink at the true sigma; wavelet
and, for colour, YCbCr tuned); ``tv`` (Chambolle, weight tuned); ``nlm`` (fast non-local means, h, patch size and
distance tuned); ``bm3d`` (the ``bm3d`` package: bm3d for grey, bm3d_rgb (CBM3D) for colour, at the true sigma,
no tuning); ``biharmonic`` (scikit-image's inpaint_biharmonic); ``start``, the Gaussian start of the photo models'
chains alone (``febm.classical.local_wiener`` with the window the chains use, ``wiener_window(sigma)``;
``smooth_fill`` for inpainting); and ``model:NAME`` for every shipped fully convolutional photo model
(``febm.list_models()`` entries whose config has ``image_channels``) and every ``--model PATH``, restored by
``febm.denoise`` / ``febm.inpaint`` (seed 0, the model's own defaults) on the whole photo as one (1, C, H, W)
tensor in the photo's own channels: a grey photo goes through the library's grey path (febm.restore).
``reference:NAME`` for every ``--reference RUN_DIR``: the supervised reference of ``bench.photo_supervised`` (a
direct residual denoiser with the photo energies' body, not an EBM; denoising only), D(y, sigma) on the whole photo,
a grey photo as three equal channels as it met grey crops in training.

Tuning (``--tune``): per case (grey/colour x sigma), the parameters with the best mean PSNR on the 16 fixed 96-px
validation crops of ``training.photos.validation_crops("photos")`` (Debian's photographs; apt-get install
mate-backgrounds plasma-workspace-wallpapers), written to bench/photo_params.json; the benchmark reads that file
and never tunes on the test photos.

Metrics: PSNR (dB) and SSIM (scikit-image, data range 1, 7x7 window, channels averaged) over the whole photo,
outputs clipped to [0, 1]; the mean over photos per case. Speed: seconds per megapixel (1e6 pixels, whatever
the channel count), time.perf_counter around each method call on each photo, summed over photos divided by their
summed megapixels, all methods in the same run on the same machine (torch at its default thread count, recorded)
after one untimed warm-up call each; the process's CPU time (time.process_time, all threads) is recorded beside it,
since a shared machine's other jobs stretch wall-clock time. ``--from-json`` re-renders the Markdown of a run.

Licences: ``bm3d`` (and its ``bm4d`` library) is free for non-commercial use only (Tampere University): a
benchmark baseline here, imported only by this file (when BM3D runs); ``febm`` never imports or depends on it.
scikit-learn's china and flower photos are CC-BY (their authors are credited in scikit-learn's documentation).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import io
import json
import os
import platform
import sys
import time
import zlib
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from skimage.metrics import structural_similarity
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, denoise_wavelet, inpaint_biharmonic
from torch import Tensor
from tqdm.auto import tqdm

from febm import denoise, inpaint, list_models, load_model
from febm.classical import local_wiener, smooth_fill, wiener_window
from febm.degradations import add_gaussian_noise, scribble_mask, text_mask
from febm.files import write_atomic
from febm.model import read_config

PARAMS_FILE = Path(__file__).with_name("photo_params.json")


# --- the test photos ------------------------------------------------------------------------------------------
class PhotoUnavailable(ImportError):
    """A test photo's wheel is not installed."""


def _skimage(name: str):
    def load() -> np.ndarray:
        import skimage.data
        return skimage.data.stereo_motorcycle()[0] if name == "stereo_motorcycle" else getattr(skimage.data, name)()
    return load


def _sklearn(file: str):
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image
        return load_sample_image(file)
    return load


def _matplotlib(file: str):
    def load() -> np.ndarray:
        import matplotlib.cbook
        with matplotlib.cbook.get_sample_data(file) as f, Image.open(f) as im:
            return np.asarray(im.convert("RGB"))
    return load


def _pywt(name: str):
    def load() -> np.ndarray:
        import pywt.data
        return getattr(pywt.data, name)()
    return load


#: name -> (the package whose wheel holds it, loader returning uint8 (H, W) or (H, W, 3))
PHOTOS: dict[str, tuple[str, Callable[[], np.ndarray]]] = {
    "astronaut": ("scikit-image", _skimage("astronaut")),
    "camera": ("scikit-image", _skimage("camera")),
    "chelsea": ("scikit-image", _skimage("chelsea")),
    "coffee": ("scikit-image", _skimage("coffee")),
    "rocket": ("scikit-image", _skimage("rocket")),
    "motorcycle_left": ("scikit-image", _skimage("stereo_motorcycle")),
    "china": ("scikit-learn", _sklearn("china.jpg")),
    "flower": ("scikit-learn", _sklearn("flower.jpg")),
    "grace_hopper": ("matplotlib", _matplotlib("grace_hopper.jpg")),
    "aero": ("PyWavelets", _pywt("aero")),
}
GREY_ONLY = ("camera", "aero")


def load_test_photo(name: str, max_side: int | None = None) -> np.ndarray:
    """One test photo, uint8 (H, W) or (H, W, 3), downscaled (Lanczos) to a long side <= ``max_side``."""
    if name not in PHOTOS:
        raise ValueError(f"unknown test photo {name!r}; valid: {', '.join(PHOTOS)}")
    package, loader = PHOTOS[name]
    try:
        image = np.asarray(loader(), dtype=np.uint8)
    except ImportError as e:  # the wheel that holds it is not installed
        raise PhotoUnavailable(f"test photo {name!r} needs {package} (pip install {package})") from e
    if max_side is not None and max(image.shape[:2]) > max_side:
        h, w = image.shape[:2]
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    return image


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 luma (H, W) as a stored grey image holds it (PIL's convert("L"), ITU-R 601-2); grey stays."""
    return image if image.ndim == 2 else np.asarray(Image.fromarray(image).convert("L"))


def load_test_photos(names=None, max_side: int | None = None, *, missing: list[str] | None = None
                     ) -> dict[str, np.ndarray]:
    """{name: uint8 photo} for ``names`` (default: all ten). Photos whose wheel is missing are left out, with
    a line in ``missing`` when a list is given (else PhotoUnavailable is raised)."""
    out = {}
    for name in names or PHOTOS:
        try:
            out[name] = load_test_photo(name, max_side)
        except PhotoUnavailable as e:
            if missing is None:
                raise
            missing.append(str(e))
    return out


# --- cases ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    task: str  # "denoise" | "inpaint"
    colour: bool
    sigma255: int | None = None  # denoising: the noise std in 0-255 units
    mask: str | None = None  # inpainting: "scribbles" | "text"

    @property
    def sigma(self) -> float:
        return self.sigma255 / 255

    @property
    def title(self) -> str:
        if self.task == "denoise":
            return f"{'colour' if self.colour else 'grey'} denoising, σ = {self.sigma255}/255"
        return f"colour inpainting, {'scribbles' if self.mask == 'scribbles' else 'overlaid text'}"


SIGMAS = (15, 25, 50)
CASES = {c.name: c for c in [
    *(Case(f"grey-{s}", "denoise", False, s) for s in SIGMAS),
    *(Case(f"colour-{s}", "denoise", True, s) for s in SIGMAS),
    Case("scribbles", "inpaint", True, mask="scribbles"),
    Case("text", "inpaint", True, mask="text"),
]}


def case_photos(case: Case, photos: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The case's clean photos: every photo as grey for grey cases, the colour photos for colour cases."""
    if case.colour:
        return {n: p for n, p in photos.items() if p.ndim == 3}
    return {n: to_grey(p) for n, p in photos.items()}


def case_seed(seed: int, case: str, photo: str) -> int:
    """A reproducible seed per (seed, case, photo), independent of which others run."""
    return zlib.crc32(f"{seed}/{case}/{photo}".encode())


@dataclass
class Observation:
    """A degraded photo in both forms the methods take: numpy (H, W[, 3]) float64 and torch (1, C, H, W)."""

    clean: np.ndarray
    observed: np.ndarray
    tensor: Tensor
    known: np.ndarray | None = None  # bool (H, W), True = observed; inpainting only
    known_tensor: Tensor | None = None  # bool (1, 1, H, W)
    sigma: float | None = None

    @property
    def megapixels(self) -> float:
        return self.clean.shape[0] * self.clean.shape[1] / 1e6


def as_tensor(image: np.ndarray) -> Tensor:
    """(H, W[, 3]) -> float32 (1, C, H, W)."""
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    return (t[None] if t.dim() == 2 else t.permute(2, 0, 1))[None].contiguous()


def as_array(t: Tensor) -> np.ndarray:
    """(1, C, H, W) -> float64 (H, W) or (H, W, C)."""
    a = t.detach().cpu().double()[0].numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def degrade(case: Case, clean_uint8: np.ndarray, seed: int) -> Observation:
    """Apply the case's degradation (``febm.degradations``) to one clean uint8 photo."""
    clean = (clean_uint8.astype(np.float32) / 255).astype(np.float64)  # the float32 values the tensors hold
    x = as_tensor(clean)
    h, w = clean.shape[:2]
    if case.task == "denoise":
        y = add_gaussian_noise(x, case.sigma, seed)
        return Observation(clean, as_array(y), y, sigma=case.sigma)
    known = scribble_mask(h, w, seed) if case.mask == "scribbles" else text_mask(h, w)
    y = torch.where(known, x, torch.ones_like(x))  # the strokes / glyphs drawn in white
    return Observation(clean, as_array(y), y, known=known[0, 0].numpy(), known_tensor=known)


# --- methods --------------------------------------------------------------------------------------------------
def _channel_axis(image: np.ndarray) -> int | None:
    return -1 if image.ndim == 3 else None


def run_wavelet(obs: Observation, p: dict) -> np.ndarray:
    colour = obs.observed.ndim == 3
    return denoise_wavelet(obs.observed, sigma=obs.sigma, wavelet=p.get("wavelet", "db1"), method="BayesShrink",
                           mode="soft", rescale_sigma=True, channel_axis=_channel_axis(obs.observed),
                           convert2ycbcr=bool(p.get("ycbcr", False)) and colour)


def run_tv(obs: Observation, p: dict) -> np.ndarray:
    return denoise_tv_chambolle(obs.observed, weight=p["weight"], channel_axis=_channel_axis(obs.observed))


def run_nlm(obs: Observation, p: dict) -> np.ndarray:
    """h as a multiple of sigma; fast_mode subtracts 2 sigma^2 from patch distances (sigma given)."""
    return denoise_nl_means(obs.observed, h=p["h"] * obs.sigma, sigma=obs.sigma, patch_size=p["patch_size"],
                            patch_distance=p["patch_distance"], fast_mode=True,
                            channel_axis=_channel_axis(obs.observed))


def run_bm3d(obs: Observation, p: dict) -> np.ndarray:
    import bm3d  # non-commercial licence: a benchmark baseline only, never imported by febm

    if obs.observed.ndim == 3:
        return bm3d.bm3d_rgb(obs.observed, obs.sigma)
    return bm3d.bm3d(obs.observed, obs.sigma)


def run_biharmonic(obs: Observation, p: dict) -> np.ndarray:
    return inpaint_biharmonic(obs.observed, ~obs.known, channel_axis=_channel_axis(obs.observed))


def run_start(obs: Observation, p: dict) -> Tensor:
    """The photo models' Gaussian start alone: the local Wiener filter with the window their chains use, or the
    smooth fill."""
    if obs.known is None:
        return local_wiener(obs.tensor, obs.sigma)
    return smooth_fill(obs.tensor, obs.known_tensor)


def run_input(obs: Observation, p: dict) -> np.ndarray:
    return obs.observed


@dataclass(frozen=True)
class Method:
    fn: Callable[[Observation, dict], np.ndarray | Tensor]
    tasks: tuple[str, ...]
    label: str
    needs: str | None = None  # a module that must be importable


METHODS: dict[str, Method] = {
    "input": Method(run_input, ("denoise", "inpaint"), "input (noisy / masked)"),
    "wavelet": Method(run_wavelet, ("denoise",), "wavelet (BayesShrink)", "pywt"),
    "tv": Method(run_tv, ("denoise",), "TV (Chambolle)"),
    "nlm": Method(run_nlm, ("denoise",), "non-local means (fast)"),
    "bm3d": Method(run_bm3d, ("denoise",), "BM3D / CBM3D", "bm3d"),
    "biharmonic": Method(run_biharmonic, ("inpaint",), "biharmonic"),
    "start": Method(run_start, ("denoise", "inpaint"), "Gaussian start alone (local Wiener / smooth fill)"),
}
SHORT = {"input": "input", "wavelet": "wavelet", "tv": "TV", "nlm": "non-local means", "bm3d": "BM3D",
         "biharmonic": "biharmonic", "start": "Gaussian start"}
CLASSICAL = ("wavelet", "tv", "nlm", "biharmonic")  # the figure's "best other classical" is chosen among these
#: fallback parameters when bench/photo_params.json is missing (the run says so); --tune replaces them
DEFAULT_PARAMS = {"wavelet": {"wavelet": "db1", "ycbcr": True}, "tv": {"weight": 0.1},
                  "nlm": {"h": 0.8, "patch_size": 5, "patch_distance": 6}}
TUNED = ("wavelet", "tv", "nlm")  # the methods with tuned parameters (the start takes the chains' Wiener window)


def method_label(name: str, case: Case | None = None) -> str:
    if name.startswith("model:"):
        return f"**{name[6:]}** (photo model)"
    if name.startswith("reference:"):
        return f"{name[10:]} (supervised reference: a direct residual denoiser, not an EBM)"
    if name == "start" and case is not None:
        return "Gaussian start alone: " + ("local Wiener" if case.task == "denoise" else "smooth fill")
    if name == "input" and case is not None:
        return "noisy input" if case.task == "denoise" else "masked input (white)"
    return METHODS[name].label


# --- photo models ---------------------------------------------------------------------------------------------
def photo_models(extra: list[str] = (), shipped: bool = True) -> list[tuple[str, str]]:
    """(name, location) of every shipped fully convolutional photo model, then of each ``--model PATH``."""
    found = []
    for entry in list_models() if shipped else []:
        channels = entry.get("image_channels")
        if channels is None:
            try:
                channels = read_config(entry["path"]).get("image_channels")
            except (OSError, ValueError, KeyError, TypeError):
                continue
        if channels is not None:
            found.append((entry["name"], entry["path"]))
    for path in extra:
        p = Path(path)
        name = p.name if p.name not in ("model", "") else f"{p.parent.name}-{p.name}"
        while name in {n for n, _ in found}:
            name += "'"
        found.append((name, str(path)))
    return found


def load_references(runs: list[str], device: str = "cpu") -> list[tuple[str, object]]:
    """[("reference:NAME", net)] for each run folder of ``bench.photo_supervised`` (NAME: the folder's name)."""
    from bench.photo_supervised import load

    return [(f"reference:{Path(run).name}", load(run).to(device)) for run in runs]


def reference_restore(net, obs: Observation, device: str | torch.device = "cpu") -> Tensor:
    """The supervised reference D(y, sigma) on the whole photo; a grey photo as three equal channels (its training
    met grey crops so), the output's mean channel returned."""
    y = obs.tensor.to(device)
    grey = y.shape[1] == 1
    with torch.no_grad():
        out = net(y.expand(-1, 3, -1, -1) if grey else y, torch.full((1,), obs.sigma, device=device))
    return (out.mean(1, keepdim=True) if grey else out).clamp(0.0, 1.0).cpu()


def restore_with(name: str, restorer, obs: Observation, device: str | torch.device = "cpu") -> Tensor:
    """A loaded photo model (``model:NAME``) or supervised reference (``reference:NAME``) on one observation."""
    return (reference_restore if name.startswith("reference:") else model_restore)(restorer, obs, device)


def runs_case(name: str, case: Case) -> bool:
    """Whether a loaded method takes part in a case: the references only denoise."""
    return case.task == "denoise" or not name.startswith("reference:")


def model_restore(model, obs: Observation, device: str | torch.device = "cpu") -> Tensor:
    """``febm.denoise`` / ``febm.inpaint`` (seed 0, the model's defaults) on the whole photo, in its own channels:
    the library's one grey path takes a grey photo to a colour model (and a colour one to a grey model)."""
    y = obs.tensor.to(device)
    if obs.known is None:
        return denoise(model, y, sigma=obs.sigma, seed=0, progress=False).cpu()
    return inpaint(model, y, obs.known_tensor.to(device), seed=0, progress=False).cpu()


# --- metrics --------------------------------------------------------------------------------------------------
def score(estimate: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    est = np.clip(estimate, 0, 1)
    mse = max(float(np.mean((est - clean) ** 2)), 1e-20)
    ssim = structural_similarity(est, clean, data_range=1.0, channel_axis=_channel_axis(clean))
    return {"psnr": 10 * float(np.log10(1 / mse)), "ssim": float(ssim)}


def _to_numpy(out) -> np.ndarray:
    return as_array(out) if isinstance(out, Tensor) else np.asarray(out, dtype=np.float64)


# --- tuning ---------------------------------------------------------------------------------------------------
TUNE_GRIDS: dict[str, dict[str, list]] = {
    "tv": {"weight": [0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.32, 0.4, 0.5,
                      0.65]},
    "nlm": {"h": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2], "patch_size": [5, 7], "patch_distance": [6, 11]},
    "wavelet": {"wavelet": ["db1", "db2", "sym4", "sym8"], "ycbcr": [False, True]},
}
TUNE_CROPS = {"name": "photos", "size": 96, "n": 16}


def grid(params: dict[str, list]) -> list[dict]:
    return [dict(zip(params, values)) for values in product(*params.values())]


def at_edge(params: dict[str, list], best: dict) -> list[str]:
    """Numeric parameters tuned to an end of their grid (the optimum may lie outside it)."""
    return [k for k, v in params.items() if len(v) > 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                                for x in v) and best[k] in (min(v), max(v))]


def tune(crops: Tensor, sigmas=SIGMAS, grids: dict[str, dict[str, list]] | None = None, seed: int = 0,
         progress: bool = True) -> dict:
    """Grid search per case (grey / colour x sigma): the parameters with the best mean PSNR on ``crops``.

    ``crops``: uint8 (n, 3, h, w) validation crops; grey cases use their luma. Returns the JSON-able record
    {"params": {case: {method: params}}, "validation_psnr": {case: {method: dB}}, "at_edge": [...]}.
    """
    grids = TUNE_GRIDS if grids is None else grids
    colour_crops = [c.permute(1, 2, 0).numpy() for c in crops]
    params: dict[str, dict] = {}
    val_psnr: dict[str, dict] = {}
    edges: list[str] = []
    cases = [c for c in CASES.values() if c.task == "denoise" and c.sigma255 in sigmas]
    bar = tqdm(total=len(cases) * sum(len(grid(g)) for g in grids.values()), desc="tuning", disable=not progress)
    for case in cases:
        clean = [c if case.colour else to_grey(c) for c in colour_crops]
        obs = [degrade(case, c, case_seed(seed, "val/" + case.name, str(i))) for i, c in enumerate(clean)]
        params[case.name], val_psnr[case.name] = {}, {}
        val_psnr[case.name]["input"] = round(float(np.mean([score(o.observed, o.clean)["psnr"] for o in obs])), 3)
        for name, g in grids.items():
            candidates = [p for p in grid(g) if case.colour or not p.get("ycbcr", False)]
            results = []
            for p in candidates:
                results.append(float(np.mean([score(_to_numpy(METHODS[name].fn(o, p)), o.clean)["psnr"]
                                              for o in obs])))
                bar.update(1)
            bar.update(len(grid(g)) - len(candidates))
            i = int(np.argmax(results))
            params[case.name][name] = candidates[i]
            val_psnr[case.name][name] = round(results[i], 3)
            edges += [f"{case.name} {name}: {k} = {candidates[i][k]} is at the end of its grid"
                      for k in at_edge(g, candidates[i])]
    bar.close()
    return {"params": params, "validation_psnr": val_psnr, "at_edge": edges}


def load_params(path: str | os.PathLike | None = PARAMS_FILE) -> tuple[dict, str | None]:
    """(params per case, None) from the tuned file, or (defaults, a note saying so) when it is missing."""
    if path is not None and Path(path).is_file():
        return json.loads(Path(path).read_text("utf-8"))["params"], None
    return {}, (f"no tuned parameters at {path}: classical methods ran with untuned defaults "
                f"{json.dumps(DEFAULT_PARAMS)} (run python -m bench.photos --tune)")


def params_for(params: dict, case: Case, method: str) -> dict:
    p = {**DEFAULT_PARAMS.get(method, {}), **params.get(case.name, {}).get(method, {})}
    if not case.colour:
        p.pop("ycbcr", None)  # a colour-space option: meaningless for grey photos
    return p


# --- the benchmark --------------------------------------------------------------------------------------------
FIGURE_ROWS = {"grey-25": "camera", "colour-25": "chelsea", "colour-50": "astronaut", "text": "coffee"}
WARM_UP = 256  # px: the side of the untimed warm-up crop
FIGURE_CROP = 96  # px of the photo, shown enlarged (nearest neighbour)


def package_versions() -> dict[str, str]:
    """Installed versions of what the numbers depend on (from the packages' metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("torch", "numpy", "scikit-image", "PyWavelets", "scikit-learn", "bm3d", "bm4d", "Pillow"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "versions": package_versions()}


def load_models(models: list[tuple[str, str]], device: str = "cpu", notes: list[str] | None = None
                ) -> list[tuple[str, object]]:
    """[("model:NAME", loaded model)]; a folder that does not load is reported in ``notes`` and left out."""
    loaded = []
    for name, location in models:
        try:
            loaded.append((f"model:{name}", load_model(location, device=device)))
        except Exception as e:  # noqa: BLE001 - a broken model folder is reported, not fatal to the benchmark
            if notes is None:
                raise
            notes.append(f"model {name} ({location}) could not be loaded: {type(e).__name__}: {e}")
    return loaded


def run_benchmark(photos: dict[str, np.ndarray], cases: list[Case], methods: list[str], params: dict, *,
                  models: list[tuple[str, object]] = (), device: str = "cpu", seed: int = 0,
                  bm3d_cases: set[str] | None = None, figure_cases=(), progress: bool = True,
                  notes: list[str] | None = None) -> tuple[dict, dict]:
    """Every method on every (case, photo); returns (results per case, figure data per figure case).

    ``models``: loaded photo models as (method name, model) from :func:`load_models`, and supervised references
    from :func:`load_references`; ``bm3d_cases``: the cases BM3D runs in (default: all).
    """
    notes = [] if notes is None else notes
    loaded = dict(models)
    if "bm3d" in methods:
        import bm3d  # noqa: F401 - imported before the clock starts (non-commercial licence: benchmark only)
    results: dict[str, dict] = {}
    figures: dict[str, dict] = {}
    total = sum(len(case_photos(c, photos)) for c in cases)
    bar = tqdm(total=total, desc="photos", disable=not progress)
    for case in cases:
        clean_photos = case_photos(case, photos)
        names = [m for m in methods if case.task in METHODS[m].tasks
                 and (m != "bm3d" or bm3d_cases is None or case.name in bm3d_cases)]
        names += [m for m in loaded if runs_case(m, case)]
        per_photo: dict[str, dict[str, dict]] = {m: {} for m in names}
        figure_photo = FIGURE_ROWS.get(case.name, next(iter(clean_photos), None))
        if figure_photo not in clean_photos:
            figure_photo = next(iter(clean_photos), None)
        warm_up(case, clean_photos, names, params, loaded, device)
        for photo, clean_uint8 in clean_photos.items():
            bar.set_postfix_str(f"{case.name} {photo}")
            obs = degrade(case, clean_uint8, case_seed(seed, case.name, photo))
            keep = case.name in figure_cases and photo == figure_photo
            if keep:
                figures[case.name] = {"photo": photo, "clean": obs.clean, "outputs": {}}
            for m in names:
                model = loaded.get(m)
                try:
                    t0, c0 = time.perf_counter(), time.process_time()
                    if model is None:
                        out = METHODS[m].fn(obs, params_for(params, case, m))
                    else:
                        out = restore_with(m, model, obs, device)
                    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                except Exception as e:  # noqa: BLE001 - a model that fails is reported in the notes
                    if model is None:
                        raise
                    notes.append(f"{m} failed on {case.name}/{photo}: {type(e).__name__}: {e}")
                    continue
                estimate = _to_numpy(out)
                per_photo[m][photo] = {**score(estimate, obs.clean), "seconds": seconds, "cpu_seconds": cpu,
                                       "megapixels": obs.megapixels}
                if keep:
                    figures[case.name]["outputs"][m] = np.clip(estimate, 0, 1)
            bar.update(1)
        results[case.name] = {"title": case.title, "task": case.task, "colour": case.colour,
                              "sigma255": case.sigma255, "mask": case.mask, "photos": list(clean_photos),
                              "methods": {m: summarize(v) for m, v in per_photo.items() if v}}
    bar.close()
    return results, figures


def warm_up(case: Case, clean_photos: dict[str, np.ndarray], names: list[str], params: dict, models: dict,
            device: str = "cpu") -> None:
    """Run every method once on a central crop (at most WARM_UP px square) of the case's first photo, untimed:
    one-time costs (torch's first convolution, lazy imports, the allocator growing its heap) would otherwise land
    on the first photo's seconds."""
    if not clean_photos:
        return
    first = next(iter(clean_photos.values()))
    h, w = first.shape[:2]
    top, left = max(0, (h - WARM_UP) // 2), max(0, (w - WARM_UP) // 2)
    crop = first[top:top + WARM_UP, left:left + WARM_UP]
    obs = degrade(case, crop, 0)
    for m in names:
        try:
            if m in models:
                restore_with(m, models[m], obs, device)
            else:
                METHODS[m].fn(obs, params_for(params, case, m))
        except Exception:  # noqa: BLE001 - the timed call reports any real failure
            pass


def summarize(per_photo: dict[str, dict]) -> dict:
    """Means over photos; seconds per megapixel = summed seconds / summed megapixels (wall clock, and the
    process's CPU time: all its threads, less sensitive to other jobs on a shared machine)."""
    rows = list(per_photo.values())
    seconds, mpx = sum(r["seconds"] for r in rows), sum(r["megapixels"] for r in rows)
    cpu = sum(r["cpu_seconds"] for r in rows)
    return {"psnr": float(np.mean([r["psnr"] for r in rows])), "ssim": float(np.mean([r["ssim"] for r in rows])),
            "s_per_mpx": seconds / mpx, "cpu_s_per_mpx": cpu / mpx, "seconds": seconds, "cpu_seconds": cpu,
            "megapixels": mpx, "n": len(rows),
            "per_photo": {p: {"psnr": round(r["psnr"], 3), "ssim": round(r["ssim"], 4),
                              "s_per_mpx": round(r["seconds"] / r["megapixels"], 4)} for p, r in per_photo.items()}}


# --- report ---------------------------------------------------------------------------------------------------
def _fmt_speed(v: float) -> str:
    return f"{v:.3g}" if v >= 0.01 else f"{v:.1e}" if v > 0 else "0"


def _mpx_range(report: dict) -> str:
    mpx = [p["shape"][0] * p["shape"][1] / 1e6 for p in report.get("photos", {}).values()]
    return f"{min(mpx):.2f}-{max(mpx):.2f}" if mpx else "?"


def markdown(report: dict) -> str:
    cases = report["cases"]
    mach = report["machine"]
    load = mach.get("load_average_at_start")
    lines = [
        "# Photo restoration benchmark", "",
        "Classical restorers, BM3D and the project's photo models on the ten **test photos** (the photographs "
        "inside PyPI wheels: scikit-image's astronaut, camera, chelsea, coffee, rocket, motorcycle_left; "
        "scikit-learn's china, flower; matplotlib's grace_hopper; PyWavelets' aero), never used for training or "
        "tuning. Written by `bench/photos.py` from one run:", "",
        f"    {report['command']}", "",
        f"on {report['date'][:10]}: {mach['processor']}, {mach['cpu_count']} logical CPUs shared with other jobs "
        f"(load average {load[0] if load else '?'} at the start), torch {mach['torch_threads']} threads (its "
        f"default), {report['seconds'] / 60:.1f} minutes in all. "
        + (f"Photos downscaled to a long side of at most {report['max_side']} px" if report.get("max_side") else
           "Photos at their full size")
        + f" ({_mpx_range(report)} Mpx each). Versions: "
        + ", ".join(f"{k} {v}" for k, v in mach.get("versions", {}).items()) + ".", "",
        "**Protocol.** Grey cases use all ten photos (the luma of the colour ones, as PIL's `convert(\"L\")` "
        "stores it; the photo models get them as one channel, through the library's grey path), colour cases the "
        "eight colour photos. Noise: `febm.degradations.add_gaussian_noise`, σ in "
        "0-255 units, clipped to [0, 1] as a stored image is, the true σ given to every method. Inpainting: "
        "`scribble_mask` (smooth brush strokes 3-7 px wide, 5-15 % of the pixels) and `text_mask` (lines of "
        "text in PIL's bitmap font scaled up, about 13 %), hidden pixels white in the input, the mask given to "
        "every method. One degradation per (case, photo), seeded. TV weight, non-local-means h / patch / "
        "distance, and the wavelet and its colour space were tuned per case for mean PSNR on "
        "16 validation crops (96 px) of the held-out training photos (`python -m bench.photos --tune`, "
        "[bench/photo_params.json](../bench/photo_params.json)); BM3D (σ known), BayesShrink and the biharmonic "
        "fill need no tuning, and the Gaussian start takes the Wiener window the photo models' chains use. PSNR "
        "(dB) and SSIM (7×7, channels averaged) over the whole photo, outputs clipped to [0, 1], means over photos. s/Mpx: wall-clock seconds of the method's call per megapixel (10⁶ pixels "
        "whatever the channels), summed over photos, every method in this same run after an untimed warm-up; "
        "CPU s/Mpx counts the process's CPU time over all threads, less disturbed by other jobs.", "",
        "**Licence.** BM3D / CBM3D come from the `bm3d` package (Tampere University), free for non-commercial "
        "use only: a benchmark baseline here (in the `bench` extra), never imported by or a dependency of "
        "`febm`.", ""]
    if report["notes"]:
        lines += ["Notes:", "", *[f"- {n}" for n in report["notes"]], ""]
    lines += ["## Best per case (PSNR, dB)", "", "| case | best method | PSNR | BM3D | best other classical | PSNR "
              "| Gaussian start alone |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in cases.values():
        rows = c["methods"]

        def top(names):
            found = [m for m in names if m in rows]
            return max(found, key=lambda m: rows[m]["psnr"]) if found else None

        def db(m):
            return f"{rows[m]['psnr']:.2f}" if m in rows else "—"

        best, classical = top([m for m in rows if m != "input"]), top(CLASSICAL)
        name = (lambda m: SHORT.get(m, m.removeprefix("model:").removeprefix("reference:")) if m else "—")
        lines.append(f"| {c['title']} | {name(best)} | {db(best)} | {db('bm3d')} | {name(classical)} | "
                     f"{db(classical)} | {db('start')} |")
    lines.append("")
    methods = []
    for case in cases.values():
        methods += [m for m in case["methods"] if m not in methods]
    lines += ["## PSNR (dB) in every case, mean over photos", "",
              "| method | " + " | ".join(cases) + " |", "| --- |" + " --- |" * len(cases)]
    for m in methods:
        cells = [f"{c['methods'][m]['psnr']:.2f}" if m in c["methods"] else "" for c in cases.values()]
        lines.append(f"| {method_label(m)} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, c in cases.items():
        case = CASES[name]
        photos = c["photos"]
        lines += [f"## {c['title']} ({len(photos)} photos)", "", "| method | PSNR | SSIM | s/Mpx | CPU s/Mpx |",
                  "| --- | --- | --- | --- | --- |"]
        best = max((v["psnr"] for m, v in c["methods"].items() if m != "input"), default=None)
        for m, v in c["methods"].items():
            psnr = f"{v['psnr']:.2f}"
            lines.append(f"| {method_label(m, case)} | {'**' + psnr + '**' if v['psnr'] == best else psnr} | "
                         f"{v['ssim']:.3f} | {_fmt_speed(v['s_per_mpx'])} | {_fmt_speed(v['cpu_s_per_mpx'])} |")
        lines += ["", "<details><summary>PSNR per photo</summary>", "",
                  "| method | " + " | ".join(photos) + " |", "| --- |" + " --- |" * len(photos)]
        for m, v in c["methods"].items():
            cells = [f"{v['per_photo'][p]['psnr']:.2f}" if p in v["per_photo"] else "" for p in photos]
            lines.append(f"| {method_label(m, case)} | " + " | ".join(cells) + " |")
        lines += ["", "</details>", ""]
    if report.get("params"):
        lines += ["## Tuned parameters (validation crops)", "", "| case | wavelet | TV weight | NLM h/σ, patch, "
                  "distance | Wiener window (the chains') |", "| --- | --- | --- | --- | --- |"]
        for name, p in report["params"].items():
            w, t, n = (p.get(k, {}) for k in TUNED)
            lines.append(f"| {name} | {w.get('wavelet', '')}{' YCbCr' if w.get('ycbcr') else ''} | "
                         f"{t.get('weight', '')} | {n.get('h', '')}, {n.get('patch_size', '')}, "
                         f"{n.get('patch_distance', '')} | {wiener_window(CASES[name].sigma)} |")
        lines.append("")
    return "\n".join(lines)


def _crop_box(clean: np.ndarray, size: int) -> tuple[int, int, int]:
    """(top, left, side): the square window, on a half-window grid, with the most detail (mean squared gradient)."""
    grey = clean if clean.ndim == 2 else clean.mean(axis=2)
    h, w = grey.shape
    side = min(size, h, w)
    energy = np.zeros_like(grey)
    energy[:, 1:] += np.diff(grey, axis=1) ** 2
    energy[1:, :] += np.diff(grey, axis=0) ** 2
    best, box = -1.0, (0, 0)
    step = max(1, side // 2)
    for top in range(0, h - side + 1, step):
        for left in range(0, w - side + 1, step):
            e = float(energy[top:top + side, left:left + side].mean())
            if e > best:
                best, box = e, (top, left)
    return box[0], box[1], side


def figure(report: dict, figures: dict) -> bytes:
    """PNG: per figure case a row of zoomed crops: clean, input, BM3D, best other classical, best photo model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for name, fig in figures.items():
        methods = report["cases"][name]["methods"]
        outputs = fig["outputs"]

        def best_of(candidates):
            found = [m for m in candidates if m in outputs]
            return max(found, key=lambda m: methods[m]["psnr"]) if found else None

        cols = [("clean", None)] + [(m, m) for m in ("input", "bm3d") if m in outputs]
        for pick in (best_of(CLASSICAL), best_of([m for m in outputs if m.startswith("model:")])):
            if pick is not None:
                cols.append((pick, pick))
        rows.append((name, fig, cols))
    ncols = max((len(c) for _, _, c in rows), default=1)
    panel = 2.6
    fig_obj, axes = plt.subplots(len(rows), ncols, figsize=(panel * ncols, (panel + 0.35) * len(rows)),
                                 squeeze=False)
    for r, (name, fig, cols) in enumerate(rows):
        top, left, side = _crop_box(fig["clean"], FIGURE_CROP)
        for c in range(ncols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(cols):
                continue
            key, m = cols[c]
            image = fig["clean"] if m is None else fig["outputs"][m]
            crop = image[top:top + side, left:left + side]
            ax.imshow(crop, cmap="gray" if crop.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            if m is None:
                title = f"{report['cases'][name]['title']}\n{fig['photo']}: clean"
            else:
                p = report["cases"][name]["methods"][m]["per_photo"][fig["photo"]]["psnr"]
                label = (m.removeprefix("model:") + " (ours)" if m.startswith("model:") else
                         f"best other classical: {SHORT[m]}" if m in CLASSICAL else SHORT[m])
                title = f"{label}\n{p:.2f} dB (whole photo)"
            ax.set_title(title, fontsize=8)
    fig_obj.tight_layout()
    buf = io.BytesIO()
    fig_obj.savefig(buf, format="png", dpi=110)
    plt.close(fig_obj)
    return buf.getvalue()


# --- command line ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.photos", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tune", action="store_true", help="tune the classical parameters on the validation crops and "
                   "write them to --params (nothing else runs)")
    p.add_argument("--params", default=str(PARAMS_FILE), help="tuned parameters (JSON; default %(default)s)")
    p.add_argument("--out", help="JSON with every number")
    p.add_argument("--markdown", help="Markdown tables")
    p.add_argument("--figure", help="PNG of zoomed crops")
    p.add_argument("--from-json", metavar="PATH", help="re-render --markdown from a report written by --out "
                   "(no restoration runs)")
    p.add_argument("--photos", nargs="+", choices=list(PHOTOS), help="test photos (default: all ten)")
    p.add_argument("--cases", nargs="+", choices=list(CASES), help="cases (default: all)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), help="classical methods (default: all)")
    p.add_argument("--bm3d-cases", nargs="+", choices=list(CASES),
                   help="run BM3D in these cases only (default: every denoising case)")
    p.add_argument("--model", action="append", default=[], metavar="PATH",
                   help="a photo model folder that does not ship (repeatable)")
    p.add_argument("--no-shipped-models", action="store_true", help="only the --model folders")
    p.add_argument("--reference", action="append", default=[], metavar="RUN_DIR",
                   help="a supervised reference run folder of bench.photo_supervised (denoising; repeatable)")
    p.add_argument("--max-side", type=int, help="downscale each photo to this long side (quick runs)")
    p.add_argument("--device", default="cpu", help="device of the photo models (default: cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.max_side is not None and args.max_side < 16:
        p.error("--max-side must be at least 16")
    from bench.photo_supervised import SIDECAR

    for run in args.reference:
        if not (Path(run) / SIDECAR).is_file():
            p.error(f"--reference {run}: no exported reference there ({SIDECAR}); train one with "
                    f"python -m bench.photo_supervised --run-dir {run}")
    return args


def main_tune(args: argparse.Namespace, argv: list[str]) -> dict:
    from training.photos import validation_crops

    crops = validation_crops(TUNE_CROPS["name"], size=TUNE_CROPS["size"], n=TUNE_CROPS["n"])
    t0 = time.perf_counter()
    record = tune(crops, seed=args.seed, progress=not args.no_progress)
    record = {
        "command": " ".join(["python -m bench.photos", *argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "validation": (f"training.photos.validation_crops({TUNE_CROPS['name']!r}, size={TUNE_CROPS['size']}, "
                       f"n={TUNE_CROPS['n']}): uint8 crops of the held-out validation photos; grey cases use their "
                       "luma; noise clip(x + sigma z, 0, 1), seeds per (seed, case, crop)"),
        "objective": "mean PSNR over the crops",
        "grids": TUNE_GRIDS,
        "seconds": round(time.perf_counter() - t0, 1),
        **record,
    }
    write_atomic(args.params, json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("params", "validation_psnr", "at_edge")}, indent=1))
    return record


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.tune:
        return main_tune(args, argv)
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text("utf-8"))
        text = markdown(report)
        if args.markdown:
            write_atomic(args.markdown, text + "\n")
        print(text)
        return report
    started = time.perf_counter()
    notes: list[str] = []
    params, note = load_params(args.params)
    if note:
        notes.append(note)
        print("warning:", note, file=sys.stderr)
    missing: list[str] = []
    photos = load_test_photos(args.photos, args.max_side, missing=missing)
    notes += [f"left out: {m}" for m in missing]
    cases = [CASES[c] for c in (args.cases or CASES)]
    methods = list(args.methods or METHODS)
    for m in list(methods):
        if METHODS[m].needs and importlib.util.find_spec(METHODS[m].needs) is None:
            methods.remove(m)
            notes.append(f"{m} left out: the module {METHODS[m].needs} is not installed")
    models = photo_models(args.model, shipped=not args.no_shipped_models)
    if not models:
        notes.append("no photo model ships yet (febm.list_models() has none with image_channels) and no --model "
                     "was given: the table has no model rows")
    loaded = load_models(models, args.device, notes) + load_references(args.reference, args.device)
    results, figures = run_benchmark(photos, cases, methods, params, models=loaded, device=args.device,
                                     seed=args.seed, bm3d_cases=set(args.bm3d_cases) if args.bm3d_cases else None,
                                     figure_cases=FIGURE_ROWS if args.figure else (), progress=not args.no_progress,
                                     notes=notes)
    if "bm3d" in methods and args.bm3d_cases:
        notes.append("BM3D ran in these cases only: " + ", ".join(c for c in args.bm3d_cases
                                                                   if CASES[c].task == "denoise"))
    report = {
        "command": " ".join(["python -m bench.photos", *argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "max_side": args.max_side,
        "seed": args.seed,
        "photos": {n: {"package": PHOTOS[n][0], "shape": list(p.shape)} for n, p in photos.items()},
        "models": [{"name": n, "location": loc} for n, loc in models],
        "references": args.reference,
        "params": {c.name: {m: params_for(params, c, m) for m in TUNED}
                   for c in cases if c.task == "denoise"},
        "degradations": {"noise": "febm.degradations.add_gaussian_noise: clip(x + sigma z, 0, 1)",
                         "scribbles": "febm.degradations.scribble_mask(h, w, seed)",
                         "text": "febm.degradations.text_mask(h, w) (default text and scale)",
                         "masked_input": "hidden pixels white (1.0); every method gets the mask"},
        "cases": results,
        "notes": notes,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.out:
        write_atomic(args.out, json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    if args.markdown:
        write_atomic(args.markdown, text + "\n")
    if args.figure and figures:
        write_atomic(args.figure, figure(report, figures))
    print(text)
    return report


if __name__ == "__main__":
    main()
