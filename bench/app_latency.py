"""Latency of the web app's endpoints, as a client sees it (queue, upload, PNG encoding and download included).

    python -m bench.app_latency                              # the first shipped checkpoint, 20 requests each
    python -m bench.app_latency --model runs/pilot-conv16-js/model --n 50
    python -m bench.app_latency --cases photo --photo-model photo-js --n 20     # only the photo case

Starts the app on loopback (a free port), then sends --n sequential requests to /denoise (one example image,
the UI's defaults: synthetic noise sigma 0.2, the model's steps and chains) and to /generate (16 images, the
model's steps), each after one warm-up request, through gradio_client. The photo case: /denoise of a 512x512
colour photo (scikit-image's astronaut, a test photo; needs the bench extra) with a photo model's defaults
(its steps and chains, synthetic noise sigma 25 in 0-255 levels) at native resolution: the app is started with
--max-restore-pixels 512x512 so that the photo is restored, not answered with the pixel limit. The photo model
is --photo-model, else the first shipped photo model, else -- when none ships -- a tiny UNTRAINED test model
(the tests' spec), which the report says. Prints one JSON object: p50, p95, mean and min per case in seconds,
with the models, the settings, the machine and the date. Not run by the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between order statistics."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise(seconds: list[float]) -> dict:
    return {"p50": round(percentile(seconds, 50), 4), "p95": round(percentile(seconds, 95), 4),
            "mean": round(statistics.fmean(seconds), 4), "min": round(min(seconds), 4), "n": len(seconds)}


def time_requests(call, n: int) -> list[float]:
    call()  # warm-up: loads the model, fills caches
    seconds = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


PHOTO_SIZE = 512  # the photo case: a PHOTO_SIZE x PHOTO_SIZE colour photo
PHOTO_SIGMA_255 = 25.0
TINY_PHOTO_SPEC = {"kind": "field", "width": 8, "kernel_size": 3, "dilations": [1, 2, 1], "activation": "softplus"}
TINY_PHOTO_SAMPLER = {"method": "authors", "steps": 3, "step_size": 10.0, "noise": 0.005, "grad_clip": 0.01}
CASES = ("denoise", "generate", "photo")


def photo_model_key(registry, name: str | None) -> str | None:
    """The photo model to time: ``name``, else the first fully convolutional model in the registry, else None."""
    if name:
        return registry.entry(name).key
    return next((key for key, entry in registry.entries.items() if entry.fully_convolutional), None)


def save_tiny_photo_model(folder) -> str:
    """The tests' tiny photo model (untrained, seeded), saved in ``folder``: for when no photo model ships."""
    import torch

    from febm.model import EBM

    torch.manual_seed(0)
    EBM("js", TINY_PHOTO_SPEC, TINY_PHOTO_SPEC, dataset="photos", image_channels=3, crop_size=16,
        sampler=TINY_PHOTO_SAMPLER, training={"command": "bench.app_latency: tiny untrained test model"}
        ).save_pretrained(folder)
    return str(folder)


def astronaut_png(path) -> str:
    """scikit-image's astronaut (512x512 colour, public domain) as a PNG at ``path``."""
    import skimage.data
    from PIL import Image

    image = Image.fromarray(skimage.data.astronaut())
    assert image.size == (PHOTO_SIZE, PHOTO_SIZE)
    image.save(path)
    return str(path)


def model_key(registry, name: str | None) -> str:
    """The registry key of the model to time: ``name`` itself (a shipped name is its key, and an added folder or
    repo id is keyed as given), else the first shipped model. Not "the last key": a shipped name is not added."""
    return registry.entry(name).key if name else next(iter(registry.entries))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.app_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a checkpoint name, model folder or Hub repo id (default: the first "
                                        "shipped checkpoint)")
    parser.add_argument("--photo-model", help="the photo model of the photo case: a checkpoint name, model folder or "
                                              "Hub repo id (default: the first shipped photo model, else a tiny "
                                              "untrained test model)")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"the cases to time, comma-separated (default {','.join(CASES)})")
    parser.add_argument("--n", type=int, default=20, help="timed requests per case (default 20)")
    parser.add_argument("--images", type=int, default=16, help="images per /generate request (default 16)")
    args = parser.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    if not cases or set(cases) - set(CASES):
        parser.error(f"--cases takes some of {', '.join(CASES)}")

    import tempfile

    import gradio
    import torch
    from gradio_client import Client, handle_file

    from app import example_paths
    from app.handlers import Limits, step_seconds_per_pixel
    from app.models import ModelRegistry, no_models_message
    from app.screenshot import free_port
    from app.ui import build_app, launch
    from febm.restore import task_settings

    scratch = tempfile.TemporaryDirectory(prefix="app-latency-")
    extra = [m for m in (args.model, args.photo_model) if m]
    registry = ModelRegistry.discover(extra)
    tiny = False
    photo_key = photo_model_key(registry, args.photo_model) if "photo" in cases else None
    if "photo" in cases and photo_key is None:  # no photo model ships: the tests' tiny model, and the report says so
        photo_key = save_tiny_photo_model(os.path.join(scratch.name, "tiny-photo"))
        registry = ModelRegistry.discover([*extra, photo_key])
        tiny = True
    if not len(registry):
        sys.exit(f"error: {no_models_message()}")
    key = model_key(registry, args.model)
    entry = registry.entry(key)
    demo = build_app(registry, Limits(max_restore_pixels=PHOTO_SIZE * PHOTO_SIZE))
    url = launch(demo, port=free_port(), block=False, quiet=True)
    example = str(example_paths()[0])
    seconds = {}
    try:
        client = Client(url, verbose=False)
        if "denoise" in cases:
            seconds["denoise"] = time_requests(lambda: client.predict(key, handle_file(example), "add", 0.2, 0, 0, 0,
                                                                      api_name="/denoise"), args.n)
        if "generate" in cases:
            seconds["generate"] = time_requests(lambda: client.predict(key, args.images, 0, 0, False,
                                                                       api_name="/generate"), args.n)
        if "photo" in cases:
            photo = astronaut_png(os.path.join(scratch.name, "astronaut.png"))

            def photo_request():
                result = client.predict(photo_key, handle_file(photo), "add", PHOTO_SIGMA_255, 0, 0, 0,
                                        api_name="/denoise", sigma_unit="0-255")
                if result[1] is None:  # answered with the pixel limit: nothing was timed
                    raise RuntimeError(f"the photo was not restored: {result[2]}")

            seconds["photo"] = time_requests(photo_request, args.n)
    finally:
        with contextlib.redirect_stdout(sys.stderr):  # gradio prints "Closing server": keep stdout JSON
            demo.close()
    sampler = entry.config.get("sampler") or {}
    denoise_defaults = task_settings(registry.get(key), "denoise", 0.2)  # what the timed requests ran
    report = {
        "command": " ".join(["python -m bench.app_latency", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "gradio": gradio.__version__, "python": platform.python_version()},
        "model": {"name": entry.key, "divergence": entry.divergence, "method": sampler.get("method"),
                  "generate_steps": sampler.get("steps"),
                  "denoise_steps": denoise_defaults["steps"], "denoise_chains": denoise_defaults["chains"]},
        "settings": {"denoise": f"one example ({os.path.basename(example)}), sigma 0.2 added, seed 0, "
                                "the model's steps and chains",
                     "generate": f"{args.images} images, the model's steps, seed 0, no rejection",
                     "requests": "sequential, one warm-up request first, client-side wall time"},
        "seconds": {case: summarise(values) for case, values in seconds.items()},
    }
    if "photo" in cases:
        photo_model = registry.get(photo_key)
        settings = task_settings(photo_model, "denoise", PHOTO_SIGMA_255 / 255)
        steps, chains, descent = settings["steps"], settings["chains"], settings.get("descent", 0)
        evaluations = (chains if steps else 1) * (steps + descent)  # gradient evaluations per pixel
        estimate = PHOTO_SIZE * PHOTO_SIZE * max(1, evaluations) * step_seconds_per_pixel(photo_model)
        report["photo_model"] = {
            "name": "tiny untrained test model (no photo model ships)" if tiny else photo_key,
            "energy": photo_model.config["energy"], "steps": steps, "chains": chains, "descent": descent,
            "estimated_seconds": round(estimate, 2),  # app.handlers' cost model, behind the automatic pixel limit
        }
        report["settings"]["photo"] = (f"scikit-image's astronaut, {PHOTO_SIZE}x{PHOTO_SIZE} RGB, sigma "
                                       f"{PHOTO_SIGMA_255:g}/255 added, seed 0, the photo model's steps and chains, "
                                       f"native resolution (--max-restore-pixels {PHOTO_SIZE * PHOTO_SIZE})")
    scratch.cleanup()
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
