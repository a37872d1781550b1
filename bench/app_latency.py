"""Latency of the web app's endpoints, as a client sees it (queue, upload, PNG encoding and download included).

    python -m bench.app_latency                              # the first shipped checkpoint, 20 requests each
    python -m bench.app_latency --model runs/pilot-conv16-js/model --n 50

Starts the app on loopback (a free port), then sends --n sequential requests to /denoise (one example image,
the UI's defaults: synthetic noise sigma 0.2, the model's steps and chains) and to /generate (16 images, the
model's steps), each after one warm-up request, through gradio_client. Prints one JSON object: p50, p95, mean
and min per endpoint in seconds, with the model, the settings, the machine and the date. Not run by the tests.
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


def model_key(registry, name: str | None) -> str:
    """The registry key of the model to time: ``name`` itself (a shipped name is its key, and an added folder or
    repo id is keyed as given), else the first shipped model. Not "the last key": a shipped name is not added."""
    return registry.entry(name).key if name else next(iter(registry.entries))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.app_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a checkpoint name, model folder or Hub repo id (default: the first "
                                        "shipped checkpoint)")
    parser.add_argument("--n", type=int, default=20, help="timed requests per endpoint (default 20)")
    parser.add_argument("--images", type=int, default=16, help="images per /generate request (default 16)")
    args = parser.parse_args(argv)

    import gradio
    import torch
    from gradio_client import Client, handle_file

    from app import example_paths
    from app.models import ModelRegistry, no_models_message
    from app.screenshot import free_port
    from app.ui import build_app, launch

    registry = ModelRegistry.discover([args.model] if args.model else [])
    if not len(registry):
        sys.exit(f"error: {no_models_message()}")
    key = model_key(registry, args.model)
    entry = registry.entry(key)
    demo = build_app(registry)
    url = launch(demo, port=free_port(), block=False, quiet=True)
    example = str(example_paths()[0])
    try:
        client = Client(url, verbose=False)
        denoise = time_requests(lambda: client.predict(key, handle_file(example), "add", 0.2, 0, 0, 0,
                                                       api_name="/denoise"), args.n)
        generate = time_requests(lambda: client.predict(key, args.images, 0, 0, False, api_name="/generate"),
                                 args.n)
    finally:
        with contextlib.redirect_stdout(sys.stderr):  # gradio prints "Closing server": keep stdout JSON
            demo.close()
    sampler = entry.config.get("sampler") or {}
    denoise_defaults = (entry.config.get("restoration") or {}).get("denoise") or {}
    report = {
        "command": " ".join(["python -m bench.app_latency", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "gradio": gradio.__version__, "python": platform.python_version()},
        "model": {"name": entry.key, "divergence": entry.divergence, "method": sampler.get("method"),
                  "generate_steps": sampler.get("steps"),
                  "denoise_steps": denoise_defaults.get("steps", sampler.get("steps")),
                  "denoise_chains": denoise_defaults.get("chains", 1)},
        "settings": {"denoise": f"one example ({os.path.basename(example)}), sigma 0.2 added, seed 0, "
                                "the model's steps and chains",
                     "generate": f"{args.images} images, the model's steps, seed 0, no rejection",
                     "requests": "sequential, one warm-up request first, client-side wall time"},
        "seconds": {"denoise": summarise(denoise), "generate": summarise(generate)},
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
