"""The Gradio app through its API, as a client sees it: a server on loopback with tiny models, gradio_client."""

import json
import re
import os
import shutil
import threading
import time
import urllib.request

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from app import PHOTO_EXAMPLES_DIR, example_paths, photo_example_paths  # noqa: E402
from app.__main__ import build_parser  # noqa: E402
from app.handlers import MIN_AUTO_PIXELS, Handlers, Limits, chain_strip, pixel_limit  # noqa: E402
from app.models import ModelEntry, ModelRegistry  # noqa: E402
from app.screenshot import free_port  # noqa: E402
from app.ui import SIGMA_LABELS, build_app, convert_sigma, launch, show_view, sigma_unit_of  # noqa: E402
from febm import restore  # noqa: E402
from febm.imageio import fitted_size  # noqa: E402
from febm.model import EBM  # noqa: E402

# gradio's queue uses pandas options that pandas 3 deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

NET = {"kind": "conv", "in_channels": 1, "width": 4, "downsamples": 2}
SAMPLER = {"method": "authors", "steps": 3, "step_size": 10.0, "noise": 0.005, "grad_clip": 0.01}
SIZE = (28, 28)
FAST = {"steps": 2, "chains": 1, "seed": 0}  # the sampling arguments of a quick request


FIELD = {"kind": "field", "width": 8, "kernel_size": 3, "dilations": [1, 2, 1], "activation": "softplus"}


def make_model(divergence: str) -> EBM:
    return EBM(divergence, energy=NET, critic=None if divergence == "cd" else NET, dataset="fashion-mnist",
               image_shape=[1, *SIZE], sampler=SAMPLER, metrics={"fid": 300.5, "samples": 5000, "split": "test"},
               training={"command": f"python -m training.run --div {divergence} --preset tiny", "steps": 10})


def make_photo_model() -> EBM:
    """A tiny fully convolutional colour model: restores photos of any size at their own resolution."""
    return EBM("js", FIELD, FIELD, dataset="photos", image_channels=3, crop_size=16, sampler=SAMPLER)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    for divergence in ("js", "cd"):
        make_model(divergence).save_pretrained(folder / f"tiny-{divergence}")
    make_photo_model().save_pretrained(folder / "tiny-photo")
    return folder


def serve(registry: ModelRegistry):
    demo = build_app(registry, Limits())
    return demo, launch(demo, port=free_port(), block=False, quiet=True)


@pytest.fixture(scope="module")
def server(checkpoints):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEBM_CHECKPOINTS", str(checkpoints))
        registry = ModelRegistry.discover()
    demo, url = serve(registry)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def example():
    return str(example_paths()[0])


def save(image: Image.Image, path, **kwargs) -> str:
    image.save(path, **kwargs)
    return str(path)


def open_png(path) -> Image.Image:
    image = Image.open(path)
    assert image.format == "PNG"
    image.load()
    return image


def denoise(client, image, mode="add", sigma=0.2, model="tiny-js", sigma_unit=None, **sampling):
    args = {**FAST, **sampling}
    unit = {} if sigma_unit is None else {"sigma_unit": sigma_unit}  # None: the API's default unit
    return client.predict(model, handle_file(image), mode, sigma, args["steps"], args["chains"], args["seed"],
                          api_name="/denoise", **unit)


def inpaint(client, background, mask="center", layers=(), model="tiny-js", **sampling):
    args = {**FAST, **sampling}
    editor = {"background": handle_file(background), "layers": [handle_file(p) for p in layers], "composite": None}
    return client.predict(model, editor, mask, args["steps"], args["chains"], args["seed"], api_name="/inpaint")


def square_mask(path, mode: str) -> str:
    """A 28x28 mask painted (white, or opaque on transparent) in rows/columns 10-17."""
    a = np.zeros(SIZE, np.uint8)
    a[10:18, 10:18] = 255
    if mode == "L":
        return save(Image.fromarray(a), path)
    rgba = np.zeros((*SIZE, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, a  # a red stroke on a transparent layer, as the editor sends
    return save(Image.fromarray(rgba), path)


# --- the endpoints -----------------------------------------------------------------------------------------------
def test_generate_returns_pngs_and_the_chain(client):
    gallery, chain, info = client.predict("tiny-js", 5, 0, 7, False, api_name="/generate")
    assert len(gallery) == 5
    assert all(open_png(item["image"]).size == SIZE for item in gallery)
    frames = SAMPLER["steps"] + 1  # every step, as there are fewer than 10
    assert open_png(chain).size == (frames * 30 + 2, 5 * 30 + 2)  # 28-pixel tiles, 2-pixel gaps
    assert "5 samples" in info and "3 Langevin steps" in info and "seed 7" in info


def test_generate_with_rejection_reports_the_acceptance_rate(client):
    gallery, _, info = client.predict("tiny-js", 4, 2, 0, True, api_name="/generate")
    assert len(gallery) == 4 and "acceptance rate" in info


def test_generate_is_reproducible_by_seed(client):
    first = client.predict("tiny-js", 2, 2, 3, False, api_name="/generate")[0]
    again = client.predict("tiny-js", 2, 2, 3, False, api_name="/generate")[0]
    assert [np.asarray(open_png(a["image"])).tolist() for a in first] == \
           [np.asarray(open_png(b["image"])).tolist() for b in again]


def test_denoise_with_synthetic_noise_reports_psnr(client, example):
    noisy, result, info = denoise(client, example)
    assert open_png(noisy).size == SIZE and open_png(result).size == SIZE
    assert open_png(result).mode == "L"
    assert "σ = 0.200 (given)" in info and "PSNR" in info


def test_denoise_already_noisy_estimates_sigma(client, example):
    noisy, result, info = denoise(client, example, mode="noisy", sigma=0)
    assert np.array_equal(np.asarray(open_png(noisy)), np.asarray(Image.open(example)))  # the input, unchanged
    assert open_png(result).size == SIZE
    assert "(estimated)" in info and "PSNR" not in info


def test_inpaint_with_a_preset_mask(client, example):
    masked, result, info = inpaint(client, example, "left-half")
    shown, filled, original = (np.asarray(open_png(p)) for p in (masked, result, example))
    assert (shown[:, :14] == 128).all() and np.array_equal(shown[:, 14:], original[:, 14:])
    assert np.array_equal(filled[:, 14:], original[:, 14:])  # observed pixels are kept exactly
    assert "filled 50%" in info


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_inpaint_fills_the_painted_pixels(client, example, tmp_path, mode):
    masked, result, _ = inpaint(client, example, "painted", [square_mask(tmp_path / "mask.png", mode)])
    shown, filled, original = (np.asarray(open_png(p)) for p in (masked, result, example))
    painted = np.zeros(SIZE, bool)
    painted[10:18, 10:18] = True
    assert (shown[painted] == 128).all() and np.array_equal(shown[~painted], original[~painted])
    assert np.array_equal(filled[~painted], original[~painted]) and filled.shape == SIZE


@pytest.mark.parametrize("mode", ["RGBA", "P", "I;16", "CMYK", "LA", "1", "RGB"])
def test_any_image_mode_is_converted(client, example, tmp_path, mode):
    gray = Image.open(example)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    else:
        image = gray.convert(mode)
    path = save(image, tmp_path / ("image.jpg" if mode == "CMYK" else "image.png"))
    assert Image.open(path).mode == mode
    _, result, _ = denoise(client, path)
    assert open_png(result).size == SIZE
    _, filled, _ = inpaint(client, path)
    assert open_png(filled).size == SIZE


def test_a_large_image_is_resized_to_the_model(client, example, tmp_path):
    big = save(Image.open(example).resize((300, 200)), tmp_path / "big.png")  # also a ResolutionWarning
    noisy, result, _ = denoise(client, big)
    assert open_png(noisy).size == SIZE and open_png(result).size == SIZE


# --- bad input -------------------------------------------------------------------------------------------------
def corrupt_file(tmp_path):
    return save_bytes(tmp_path / "corrupt.png", b"\x89PNG\r\n\x1a\n this is not an image")


def truncated_png(tmp_path):
    data = (tmp_path / "whole.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(data)
    return save_bytes(tmp_path / "truncated.png", data.read_bytes()[:200])


def huge_image(tmp_path):
    return save(Image.new("L", (8000, 8000)), tmp_path / "huge.png")  # 64 M pixels > the 40 M limit


def save_bytes(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


BAD_INPUTS = {  # name: (request(client, example, tmp_path), a fragment of the expected message)
    "corrupt file": (lambda c, e, t: denoise(c, corrupt_file(t)), "not a readable image"),
    "truncated file": (lambda c, e, t: denoise(c, truncated_png(t)), "not a readable image"),
    "text file": (lambda c, e, t: denoise(c, save_bytes(t / "notes.txt", b"hello")), "not a readable image"),
    "huge image": (lambda c, e, t: denoise(c, huge_image(t)), "too many pixels"),
    "huge image to inpaint": (lambda c, e, t: inpaint(c, huge_image(t)), "too many pixels"),
    "corrupt mask layer": (lambda c, e, t: inpaint(c, e, "painted", [corrupt_file(t)]), "not a readable image"),
    "no image": (lambda c, e, t: c.predict("tiny-js", None, "add", 0.2, 2, 1, 0, api_name="/denoise"),
                 "No image"),
    "no paint": (lambda c, e, t: inpaint(c, e, "painted"), "Nothing is painted"),
    "empty paint layer": (lambda c, e, t: inpaint(c, e, "painted", [save(Image.new("RGBA", SIZE), t / "m.png")]),
                          "Nothing is painted"),
    "mask covers everything": (
        lambda c, e, t: inpaint(c, e, "painted", [save(Image.new("L", SIZE, 255), t / "m.png")]),
        "covers the whole image"),
    "too many steps": (lambda c, e, t: denoise(c, e, steps=5000), "steps must be a whole number from 0 to 1000"),
    "negative steps": (lambda c, e, t: inpaint(c, e, steps=-1), "steps must be"),
    "steps for generate": (lambda c, e, t: c.predict("tiny-js", 2, 1001, 0, False, api_name="/generate"),
                           "steps must be"),
    "sigma above 1": (lambda c, e, t: denoise(c, e, sigma=1.5), "σ must be in (0, 1]"),
    "sigma 0 for synthetic noise": (lambda c, e, t: denoise(c, e, sigma=0), "σ must be in (0, 1]"),
    "negative sigma": (lambda c, e, t: denoise(c, e, mode="noisy", sigma=-0.1), "σ must be in (0, 1]"),
    "bad seed": (lambda c, e, t: denoise(c, e, seed=-5), "seed must be"),
    "too many images": (lambda c, e, t: c.predict("tiny-js", 65, 2, 0, False, api_name="/generate"), "64"),
    "too many chains": (lambda c, e, t: denoise(c, e, chains=17), "16"),
    "rejection without a critic": (lambda c, e, t: c.predict("tiny-cd", 2, 2, 0, True, api_name="/generate"),
                                   "no critic"),
    "unknown model": (lambda c, e, t: denoise(c, e, model="no-such-model"), "no-such-model"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_a_clear_error_and_the_server_carries_on(client, example, tmp_path, case):
    request, message = BAD_INPUTS[case]
    with pytest.raises(AppError) as error:
        request(client, example, tmp_path)
    assert message in str(error.value)
    _, result, _ = denoise(client, example)  # the next request works
    assert open_png(result).size == SIZE


def test_the_pixel_limit_is_configurable(checkpoints, example, monkeypatch):
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(checkpoints))
    handlers = Handlers(ModelRegistry.discover(), Limits(max_pixels=27 * 28))
    with pytest.raises(gr.Error, match="too many pixels: 28x28 = 784 > max_pixels = 756"):
        handlers.denoise("tiny-js", example, "add", 0.2, 2, 1, 0)


def test_the_chain_is_shown_as_about_ten_frames():
    strip = chain_strip(torch.rand(61, 12, 1, *SIZE))  # 60 steps, 12 images
    assert strip.size == (10 * 30 + 2, 8 * 30 + 2)  # 10 frames of the first 8 images


# --- load -------------------------------------------------------------------------------------------------------
def test_concurrent_denoise_requests_all_succeed(client, example):
    jobs = [client.submit("tiny-js", handle_file(example), "add", 0.2, 3, 2, seed, api_name="/denoise")
            for seed in range(8)]
    results = [job.result(timeout=120) for job in jobs]
    assert len(results) == 8
    assert all(open_png(result).size == SIZE for _, result, _ in results)
    assert len({info for _, _, info in results}) == 8  # one answer per request (seeds 0-7)


def test_concurrent_clients(server, example):
    errors = []

    def one_client():
        try:
            denoise(Client(server, verbose=False), example)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one_client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, [repr(e) for e in errors]  # the exceptions themselves, should this ever fail again


# --- models -----------------------------------------------------------------------------------------------------
def test_the_app_starts_without_models_and_says_so(tmp_path, monkeypatch, example):
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(tmp_path))
    registry = ModelRegistry.discover()
    assert len(registry) == 0
    demo, url = serve(registry)
    try:
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        assert "No models" in page and "--model" in page
        with pytest.raises(AppError, match="No models"):
            Client(url, verbose=False).predict(None, handle_file(example), "add", 0.2, 2, 1, 0, api_name="/denoise")
    finally:
        demo.close()


def test_models_added_with_model_are_labelled_and_summarised(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(tmp_path))  # no shipped models
    folder = str(checkpoints / "tiny-cd")
    registry = ModelRegistry.discover([folder])
    assert registry.choices() == [(f"CD · fashion-mnist ({folder})", folder)]
    entry = registry.entry(folder)
    card = entry.card_summary()
    assert "FID 300.50" in card and "trained 10 steps" in card and "5,000 samples against the test split" in card
    assert "python -m training.run --div cd --preset tiny" in card and "no critic" in card
    assert registry.get(folder) is registry.get(folder)  # loaded once
    assert "It continued" not in card


def test_a_later_stage_model_says_what_it_continued(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(tmp_path / "none"))
    folder = tmp_path / "stage-2"
    shutil.copytree(checkpoints / "tiny-cd", folder)
    config = json.loads((folder / "config.json").read_text())
    config["training"]["warm_started_from"] = {"model": "runs/a/model", "steps": 3000, "divergence": "cd",
                                               "command": "python -m training.run --preset fmnist-cpu --div cd"}
    (folder / "config.json").write_text(json.dumps(config))
    card = ModelRegistry.discover([str(folder)]).entry(str(folder)).card_summary()
    assert ("It continued a model trained 3,000 steps by contrastive divergence (cd) with "
            "`python -m training.run --preset fmnist-cpu --div cd`") in card


def test_shipped_models_are_labelled_by_divergence_and_data(checkpoints, monkeypatch):
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(checkpoints))
    labels = dict(ModelRegistry.discover().choices())
    assert labels == {"CD · fashion-mnist (tiny-cd)": "tiny-cd", "JS · fashion-mnist (tiny-js)": "tiny-js",
                      "JS · photos (tiny-photo)": "tiny-photo"}


def test_command_line_defaults():
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.share, args.model) == ("127.0.0.1", 7860, False, [])
    assert (args.max_pixels, args.max_steps, args.max_restore_pixels) == (40e6, 1000, None)
    args = build_parser().parse_args(["--model", "a", "--model", "user/b", "--max-pixels", "1e6",
                                      "--max-restore-pixels", "2.5e5"])
    assert args.model == ["a", "user/b"] and args.max_pixels == 1e6 and args.max_restore_pixels == 2.5e5


# --- photo models: native resolution -------------------------------------------------------------------------------
PHOTO = (200, 150)  # (width, height)


def photo_file(path, size=PHOTO, mode="RGBA", seed=0) -> str:
    """A noisy colour photo of ``size``; RGBA with a random alpha channel."""
    width, height = size
    a = np.random.default_rng(seed).integers(0, 256, (height, width, 4 if mode == "RGBA" else 3), dtype=np.uint8)
    return save(Image.fromarray(a, mode), path)


def test_photo_denoise_returns_native_size_pngs_with_the_alpha(client, tmp_path):
    path = photo_file(tmp_path / "photo.png")
    noisy, result, info = denoise(client, path, sigma=25, model="tiny-photo", steps=1, sigma_unit="0-255")
    alpha = np.asarray(Image.open(path))[..., 3]
    for output in (noisy, result):
        image = open_png(output)
        assert image.size == PHOTO and image.mode == "RGBA"
        assert np.array_equal(np.asarray(image)[..., 3], alpha)  # carried through untouched
    assert info.startswith("200×150 · σ = 0.098 (given) = 25.0/255") and "PSNR" in info
    assert "photo-noisy.png" in noisy and "photo-denoised.png" in result  # named after the upload, for the download


def test_photo_sigma_in_0_255_levels_is_sigma_in_0_1_units_times_255(client, tmp_path):
    path = photo_file(tmp_path / "photo.png", mode="RGB")
    levels = denoise(client, path, sigma=25.5, model="tiny-photo", steps=1, sigma_unit="0-255")
    units = denoise(client, path, sigma=0.1, model="tiny-photo", steps=1, sigma_unit="0-1")
    default = denoise(client, path, sigma=0.1, model="tiny-photo", steps=1)  # the API's unit is [0, 1] by default
    arrays = [np.asarray(open_png(r[1])) for r in (levels, units, default)]
    assert np.array_equal(arrays[0], arrays[1]) and np.array_equal(arrays[1], arrays[2])
    assert all("σ = 0.100 (given) = 25.5/255" in r[2] for r in (levels, units, default))


def test_the_api_keeps_sigma_in_0_1_units_by_default(client):
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/denoise"]
    parameters = {p["parameter_name"]: p for p in endpoint["parameters"]}
    assert parameters["sigma_unit"]["parameter_default"] == "0-1"
    assert parameters["downscale"]["parameter_default"] is False
    assert list(parameters)[:7] == ["model", "image", "noise_mode", "sigma", "steps", "chains", "seed"]
    assert parameters["sigma"]["label"].startswith("σ (noise std) in [0, 1] units")
    assert "'0-1' (the default: a fraction of the [0, 1] pixel range" in endpoint["description"]
    assert "'0-255' (levels of an 8-bit image" in endpoint["description"]


def test_photo_inpaint_fills_the_painted_pixels_at_native_size(client, tmp_path):
    path = photo_file(tmp_path / "photo.png", mode="RGB")
    layer = np.zeros((PHOTO[1], PHOTO[0], 4), np.uint8)
    layer[40:90, 60:140] = (255, 0, 255, 255)  # the editor's paint layer, at the photo's size
    masked, result, info = inpaint(client, path, "painted", [save(Image.fromarray(layer), tmp_path / "layer.png")],
                                   model="tiny-photo", steps=1)
    source, shown, filled = (np.asarray(open_png(p)) for p in (path, masked, result))
    painted = layer[..., 3] > 0
    assert filled.shape == shown.shape == source.shape
    assert np.array_equal(filled[~painted], source[~painted]) and (shown[painted] == 128).all()
    assert info.startswith("200×150 · filled 13% of the pixels")


def test_photo_preset_mask(client, tmp_path):
    _, result, info = inpaint(client, photo_file(tmp_path / "p.png"), "center", model="tiny-photo", steps=1)
    assert open_png(result).size == PHOTO and open_png(result).mode == "RGBA" and "filled 25%" in info


def test_a_photo_above_the_pixel_limit_is_answered_with_the_limit_then_downscaled_to_fit(checkpoints, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(checkpoints))
    handlers = Handlers(ModelRegistry.discover(), Limits(max_restore_pixels=5000))
    path = photo_file(tmp_path / "big.png")
    before, after, info, view = handlers.denoise("tiny-photo", path, "add", 25, 1, 1, 0, "0-255")
    assert before is None and after is None and view["over_limit"]
    assert "This photo is 200×150 = 30,000 pixels" in info and "5,000 pixels" in info
    assert "--max-restore-pixels" in info
    assert "Downscale to fit" in info and "81×61" in info and fitted_size(PHOTO, 5000) == (81, 61)
    before, after, info, view = handlers.denoise("tiny-photo", path, "add", 25, 1, 1, 0, "0-255", True)
    assert Image.open(after).size == (81, 61) and view["after"] == after and not view.get("over_limit")
    assert "downscaled from 200×150 to fit the pixel limit (5,000 pixels)" in info
    layer = np.zeros((150, 200), np.uint8)
    layer[50:100, 50:100] = 255
    editor = {"background": path, "layers": [save(Image.fromarray(layer), tmp_path / "layer.png")]}
    assert handlers.inpaint("tiny-photo", editor, "painted", 1, 1, 0)[3]["over_limit"]
    _, filled, info, _ = handlers.inpaint("tiny-photo", editor, "painted", 1, 1, 0, True)
    assert Image.open(filled).size == (81, 61) and "downscaled" in info


def test_the_automatic_pixel_limit_follows_the_work_asked_for(checkpoints):
    model = EBM.from_pretrained(str(checkpoints / "tiny-photo"))
    limits = Limits()
    few, many = pixel_limit(model, 3, 1, limits), pixel_limit(model, 30, 1, limits)
    assert few > many >= MIN_AUTO_PIXELS and abs(few / many - 10) < 0.01
    assert pixel_limit(model, 30, 2, limits) == many // 2 or pixel_limit(model, 30, 2, limits) == many // 2 + 1
    assert pixel_limit(model, 100_000, 16, limits) == MIN_AUTO_PIXELS
    assert pixel_limit(model, 0, 1, Limits(max_pixels=1000)) == 1000
    assert pixel_limit(model, 3, 1, Limits(max_restore_pixels=1234)) == 1234


def test_a_fashion_mnist_model_says_when_the_upload_is_not_like_its_data(client, example, tmp_path):
    _, result, info = denoise(client, photo_file(tmp_path / "photo.jpg", mode="RGB"))
    assert open_png(result).size == SIZE
    assert "**Note:** the upload is 200×150 pixels and in colour" in info and "28×28 grey thumbnail" in info
    assert "pick a photo model" in info
    _, _, info = inpaint(client, save(Image.new("RGB", (40, 30), (200, 30, 30)), tmp_path / "red.png"))
    assert "the upload is in colour" in info and "converted to grey" in info
    _, _, info = denoise(client, example)  # a Fashion-MNIST image: no note
    assert "Note" not in info


def stopped(client, monkeypatch, module, name: str, *request, api_name: str) -> list[str]:
    """Submit ``request``, cancel it once its progress bar moves: what ``module.name`` (the library call) raised."""
    outcome = []
    real = getattr(module, name)

    def recorded(*args, **kwargs):
        try:
            return real(*args, **kwargs)
        except BaseException as e:
            outcome.append(type(e).__name__)
            raise

    monkeypatch.setattr(module, name, recorded)
    job = client.submit(*request, api_name=api_name)
    deadline = time.monotonic() + 60
    while not (job.status().progress_data or time.monotonic() > deadline):  # running: the progress bar moves
        time.sleep(0.2)
    job.cancel()
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.2)
    return outcome


def test_stop_ends_the_restoration(client, tmp_path, monkeypatch):
    path = photo_file(tmp_path / "photo.png", size=(128, 128), mode="RGB")
    outcome = stopped(client, monkeypatch, restore, "denoise", "tiny-photo", handle_file(path), "add", 0.1, 1000, 1, 0,
                      api_name="/denoise")
    assert outcome == ["Cancelled"]
    _, result, _ = denoise(client, path, model="tiny-photo", steps=1)  # the server carries on
    assert open_png(result).size == (128, 128)


def test_sigma_field_units():
    assert SIGMA_LABELS["0-255"].startswith("σ (noise std) in 0–255 levels")
    assert SIGMA_LABELS["0-1"].startswith("σ (noise std) in [0, 1] units")
    assert convert_sigma("0-255", 0.1).value == 25.5 and convert_sigma("0-255", 0.1).label == SIGMA_LABELS["0-255"]
    assert convert_sigma("0-1", 25.5).value == 0.1 and convert_sigma("0-1", 25.5).label == SIGMA_LABELS["0-1"]
    assert convert_sigma("0-1", None).value == 0.2


def test_photo_models_show_sigma_in_levels_and_a_slider(checkpoints, monkeypatch):
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(checkpoints))
    registry = ModelRegistry.discover()
    assert sigma_unit_of(registry.entry("tiny-photo")) == "0-255" and sigma_unit_of(registry.entry("tiny-js")) == "0-1"
    assert "photos of any size at their own resolution, colour" in registry.entry("tiny-photo").card_summary()
    assert "FID not measured" in registry.entry("tiny-photo").card_summary()  # not tuned
    tuned = ModelEntry("p", "p", {**registry.entry("tiny-photo").config, "restoration": {
        "denoise": {"val_psnr": 29.123, "sigmas": [15 / 255, 25 / 255, 50 / 255]}}})
    assert "denoising 29.12 dB on validation crops at σ = 15/25/50 (0-255 levels)" in tuned.card_summary()
    slider, download, fit = show_view({"photo": True, "before": "a.png", "after": "b.png"})
    assert slider == ("a.png", "b.png") and download.value["orig_name"] == "b.png" and download.visible
    assert not fit.visible
    slider, download, fit = show_view({"photo": True, "over_limit": True})
    assert slider is None and not download.visible and fit.visible
    assert not show_view({"photo": False})[2].visible


def test_photo_examples_ship_with_their_licence():
    paths = photo_example_paths()
    assert [p.name for p in paths] == ["astronaut-256x256.png", "chelsea-320x240.png", "coffee-320x240.png"]
    for p in paths:
        with Image.open(p) as image:
            assert image.mode == "RGB" and image.width * image.height <= 320 * 256
    readme = (PHOTO_EXAMPLES_DIR / "README.md").read_text()
    assert "public domain" in readme and readme.count("CC0") >= 2 and "never use" in readme


# --- issue 27 ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["tiny-js", "tiny-photo"])
def test_added_noise_is_not_the_chains_first_draw(checkpoints, tmp_path, monkeypatch, model):
    """"Add synthetic noise" draws from its own stream, not the chains' seed (whose first Langevin draw would then
    be exactly the noise just added)."""
    seen = {}

    def recorded(ebm, noisy, sigma, **kwargs):
        seen.update(noisy=noisy.clone(), seed=kwargs["seed"])
        raise ValueError("stop here")

    monkeypatch.setenv("FEBM_CHECKPOINTS", str(checkpoints))
    monkeypatch.setattr(restore, "denoise", recorded)
    handlers = Handlers(ModelRegistry.discover(), Limits())
    path = save(Image.new("L", (64, 48), 128), tmp_path / "mid.png")
    with pytest.raises(gr.Error, match="stop here"):
        handlers.denoise(model, path, "add", 0.05, 1, 1, 5)
    noise = seen["noisy"] - 128 / 255  # no clipping 10 sigma away from 0 and 1
    assert seen["seed"] == 5 and noise.std().item() == pytest.approx(0.05, rel=0.1)
    first = 0.05 * torch.randn(noise.shape, generator=torch.Generator().manual_seed(5))
    assert not torch.allclose(noise, first, atol=1e-3)
    assert abs(np.corrcoef(noise.flatten().numpy(), first.flatten().numpy())[0, 1]) < 0.2


def test_downscale_below_the_smallest_side_is_a_clear_error(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(checkpoints))
    handlers = Handlers(ModelRegistry.discover(), Limits(max_restore_pixels=500))
    path = photo_file(tmp_path / "big.png")
    with pytest.raises(gr.Error, match="downscaled to fit 500 pixels, this 200x150 photo would be 25x19, below the "
                                       "32 px a side photo models need: crop it first"):
        handlers.denoise("tiny-photo", path, "add", 25, 1, 1, 0, "0-255", True)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_a_16_bit_photo_keeps_its_16_bits(checkpoints, tmp_path, monkeypatch, channels):
    """16-bit grey + alpha, RGB and RGBA uploads are read at 16 bits (PIL alone reads 8) and shown at 16 bits."""
    from febm.png16 import png16_bytes, read_png16

    monkeypatch.setenv("FEBM_CHECKPOINTS", str(checkpoints))
    handlers = Handlers(ModelRegistry.discover(), Limits())
    a = np.random.default_rng(0).integers(0, 65536, (40, 48, channels), dtype=np.uint16)
    path = tmp_path / "deep.png"
    path.write_bytes(png16_bytes(a))
    before, after, info, _ = handlers.denoise("tiny-photo", str(path), "noisy", 0.1, 1, 1, 0)
    assert np.array_equal(read_png16(before), a)  # the input as read, written back
    assert read_png16(after).shape == a.shape


def test_the_card_gives_each_tasks_default_steps(checkpoints, monkeypatch):
    """A photo model's card said "200 steps by default" (its generation chains) while its denoising runs 10."""
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(checkpoints))
    config = {**ModelRegistry.discover().entry("tiny-photo").config, "sampler": {**SAMPLER, "steps": 200},
              "restoration": {"denoise": {"steps": 10, "chains": 2}, "inpaint": {"steps": 0}}}
    summary = ModelEntry("p", "p", config).card_summary()
    assert "sampler authors: generation 200 steps, denoising 10 steps × 2 chains, inpainting 0 steps" in summary
    assert "by default" not in summary
    untuned = ModelEntry("p", "p", {**config, "restoration": {}}).card_summary()
    assert "generation 200 steps, denoising 200 steps, inpainting 200 steps" in untuned


def test_the_shipped_photo_models_cards_give_their_tuned_steps(monkeypatch):
    monkeypatch.delenv("FEBM_CHECKPOINTS", raising=False)
    registry = ModelRegistry.discover()
    for key in ("photo-js", "photo-cd"):
        entry = registry.entry(key)
        steps = entry.config["restoration"]["denoise"]["steps"]
        assert f"denoising {steps} steps" in entry.card_summary()


# --- issue 28: deblur and upscale (photo models) --------------------------------------------------------------------
def deblur(client, image, kernel="gaussian", size=1.6, angle=0, kernel_image=None, blur_first=True, sigma=2,
           model="tiny-photo", steps=1, seed=0, **extra):
    kernel_file = None if kernel_image is None else handle_file(kernel_image)
    return client.predict(model, handle_file(image), kernel, size, angle, kernel_file, blur_first, sigma, steps, seed,
                          api_name="/deblur", **extra)


def upscale(client, image, factor=2, shrink_first=False, sigma=0, model="tiny-photo", steps=1, seed=0, **extra):
    return client.predict(model, handle_file(image), factor, shrink_first, sigma, steps, seed, api_name="/upscale",
                          **extra)


def test_deblur_blurs_first_then_restores_at_native_size_with_psnr(client, tmp_path):
    path = photo_file(tmp_path / "photo.png")
    blurred, result, info = deblur(client, path)
    alpha = np.asarray(Image.open(path))[..., 3]
    for output in (blurred, result):
        image = open_png(output)
        assert image.size == PHOTO and image.mode == "RGBA"
        assert np.array_equal(np.asarray(image)[..., 3], alpha)
    assert info.startswith("200×150 · kernel 15×15 · σ = 0.008 (added) = 2.0/255 · seed 0 · PSNR "), info
    assert "(Wiener start: " in info and "blurred input: " in info
    assert "photo-blurred.png" in blurred and "photo-deblurred.png" in result


def test_deblur_a_blurred_photo_with_a_motion_kernel_or_a_kernel_image(client, tmp_path):
    path = photo_file(tmp_path / "photo.png", mode="RGB")
    before, result, info = deblur(client, path, kernel="motion", size=9, angle=30, blur_first=False, sigma=0)
    assert np.array_equal(np.asarray(open_png(before)), np.asarray(Image.open(path)))  # the upload as it is
    assert open_png(result).size == PHOTO and "kernel 9×7 · σ = " in info and "(estimated)" in info
    assert "PSNR" not in info
    box = np.zeros((9, 9), np.uint8)
    box[2:7, 2:7] = 255
    kernel_image = save(Image.fromarray(box), tmp_path / "box.png")
    from_image = deblur(client, path, kernel="image", kernel_image=kernel_image, blur_first=False)
    from_preset = deblur(client, path, kernel="box", size=5, blur_first=False)
    assert np.array_equal(np.asarray(open_png(from_image[1])), np.asarray(open_png(from_preset[1])))
    assert "kernel 5×5" in from_image[2]


def test_upscale_enlarges_with_the_alpha_or_shrinks_first_and_gives_psnr(client, tmp_path):
    path = photo_file(tmp_path / "photo.png")
    small, big, info = upscale(client, path, factor=2)
    alpha = np.asarray(Image.open(path))[..., 3]
    assert open_png(small).size == PHOTO
    with open_png(big) as image:
        assert image.size == (400, 300) and image.mode == "RGBA"
        assert np.array_equal(np.asarray(image)[..., 3], alpha.repeat(2, 0).repeat(2, 1))
    assert info.startswith("200×150 → 400×300 (×2) · σ = ") and "PSNR" not in info and "photo-x2.png" in big
    small, big, info = upscale(client, photo_file(tmp_path / "odd.png", size=(199, 151), mode="RGB"), factor=3,
                               shrink_first=True, sigma=1)
    assert open_png(small).size == (66, 50) and open_png(big).size == (198, 150)  # cut to a multiple of 3
    assert info.startswith("66×50 → 198×150 (×3) · σ = 0.004 (given) = 1.0/255") and "(bicubic start: " in info


BAD_INVERSE = {  # name: (request(client, path, tmp_path), a fragment of the expected message)
    "fashion-mnist model": (lambda c, p, t: deblur(c, p, model="tiny-js"),
                            "Deblurring needs a photo model (tiny-photo): this model restores only 28×28"),
    "upscale fashion-mnist": (lambda c, p, t: upscale(c, p, model="tiny-js"), "Upscaling needs a photo model"),
    "bad kernel size": (lambda c, p, t: deblur(c, p, kernel="box", size=2.5), "the box size must be a whole number"),
    "bad kernel kind": (lambda c, p, t: deblur(c, p, kernel="disc"), "disc is not in the list of choices"),
    "no kernel image": (lambda c, p, t: deblur(c, p, kernel="image"), "No kernel image: upload one"),
    "kernel not an image": (lambda c, p, t: deblur(c, p, kernel="image", kernel_image=save_bytes(t / "k.png", b"no")),
                            "the kernel image 'k.png' is not a readable image"),
    "kernel larger than the photo": (lambda c, p, t: deblur(c, p, size=40),
                                     "the blur kernel (321x321) is larger than the image (150x200)"),
    "blur first without noise": (lambda c, p, t: deblur(c, p, sigma=0), "σ must be in (0, 255]"),
    "factor 5": (lambda c, p, t: upscale(c, p, factor=5), "5 (type: <class 'int'>) is not in the list of choices"),
}


@pytest.mark.parametrize("case", BAD_INVERSE)
def test_deblur_and_upscale_bad_input_is_a_clear_error(client, tmp_path, case):
    request, message = BAD_INVERSE[case]
    with pytest.raises(AppError, match=re.escape(message)):
        request(client, photo_file(tmp_path / "photo.png", mode="RGB"), tmp_path)


def test_upscale_counts_the_pixel_limit_on_its_result(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(checkpoints))
    handlers = Handlers(ModelRegistry.discover(), Limits(max_restore_pixels=50_000))
    path = photo_file(tmp_path / "photo.png")  # 30,000 pixels: ×2 is 120,000
    before, after, info, view = handlers.upscale("tiny-photo", path, 2, False, 0, 1, 0)
    assert before is None and after is None and view["over_limit"]
    assert info.startswith("**This photo is 200×150: upscaled ×2 it would be 400×300 = 120,000 pixels**, more than "
                           "the 50,000 pixels"), info
    assert "upscale it from 129×96 to 258×192" in info
    _, after, info, view = handlers.upscale("tiny-photo", path, 2, False, 0, 1, 0, True)
    assert Image.open(after).size == (258, 192) and view["after"] == after
    _, after, _, _ = handlers.upscale("tiny-photo", path, 2, True, 0, 1, 0)  # shrink first: the upload counts
    assert Image.open(after).size == PHOTO
    assert handlers.deblur("tiny-photo", path, "box", 3, 0, None, True, 2, 1, 0)[3].get("over_limit") is None
    with pytest.raises(gr.Error, match="factor must be a whole number from 2 to 4, got 5"):  # a direct call
        handlers.upscale("tiny-photo", path, 5, False, 0, 1, 0)


def test_the_deblur_and_upscale_endpoints_name_their_parameters(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    deblur_parameters = [p["parameter_name"] for p in endpoints["/deblur"]["parameters"]]
    assert deblur_parameters == ["model", "image", "kernel", "kernel_size", "kernel_angle", "kernel_image",
                                 "blur_first", "sigma", "steps", "seed", "downscale"]
    upscale_parameters = [p["parameter_name"] for p in endpoints["/upscale"]["parameters"]]
    assert upscale_parameters == ["model", "image", "factor", "shrink_first", "sigma", "steps", "seed", "downscale"]
    assert "0-255 levels" in endpoints["/deblur"]["description"] and "result" in endpoints["/upscale"]["description"]


def test_stop_ends_an_upscale(client, tmp_path, monkeypatch):
    from febm import inverse

    path = photo_file(tmp_path / "photo.png", size=(64, 64), mode="RGB")
    outcome = stopped(client, monkeypatch, inverse, "restore", "tiny-photo", handle_file(path), 2, False, 0, 1000, 0,
                      api_name="/upscale")
    assert outcome == ["Cancelled"]
    assert open_png(upscale(client, path)[1]).size == (128, 128)  # the server carries on


def test_a_score_matching_model_is_labelled_so_and_restores_from_its_gradient_step(tmp_path):
    """A noise-conditional energy (--div dsm): labelled as score matching (not an f-divergence), its denoising
    runs its tuned steps (0 Langevin steps by default, not a sampler's), generation is refused with the reason."""
    nc = {**FIELD, "activation": "silu", "spectral_norm": False, "noise_conditional": True}
    EBM("dsm", nc, None, dataset="photos", image_channels=3, crop_size=16).save_pretrained(tmp_path / "dsm")
    registry = ModelRegistry.discover([str(tmp_path / "dsm")])
    entry = registry.entry(str(tmp_path / "dsm"))
    assert "score matching" in entry.label and entry.noise_conditional
    assert "no generation" in entry.steps_summary()
    handlers = Handlers(registry)
    from app.handlers import restore_settings

    assert restore_settings(registry.get(entry.key), "denoise", None, None) == (0, 1)
    with pytest.raises(gr.Error, match="does not generate"):
        handlers.generate(entry.key, 2, 0, 0, False)


def test_an_unrolled_model_says_it_was_not_trained_by_a_divergence(tmp_path):
    nc = {**FIELD, "activation": "silu", "spectral_norm": False, "noise_conditional": True}
    EBM("unrolled", nc, None, dataset="photos", image_channels=3, crop_size=16).save_pretrained(tmp_path / "unrolled")
    entry = ModelRegistry.discover([str(tmp_path / "unrolled")]).entry(str(tmp_path / "unrolled"))
    assert entry.label.startswith("Unrolled (trained through its restoration, not a divergence)")
    assert entry.noise_conditional and "no generation" in entry.steps_summary()
