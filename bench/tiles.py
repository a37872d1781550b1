"""Tile size against speed and memory: one energy gradient of a shipped photo model on a photo-sized image.

    python -m bench.tiles                                  # photo-dsm, a 400 x 600 colour image, tiles 256-1024
    python -m bench.tiles --model photo-js --size 768 1024 --tiles 256 512 --repeats 5

Every tile's cores partition the image and read a halo of twice the receptive radius (febm.tiling), so the
gradient is the same whatever the tile (checked here: the max abs difference against one whole-image pass) and
only the cost changes: small tiles re-read their halos, large ones hold more activations. The tile sizes are
timed in turn, one gradient each per round, so that a busy machine slows them alike; per tile: the median seconds
per gradient, its ratio to the first tile size's (``vs_first``; < 1 is faster) and, from one child process per
tile size, the peak resident memory of a process that loads the model and takes one gradient.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

import torch

from febm import load_model
from febm.inverse import _noise_conditional_grad


def gradient_fn(model_name: str, tile: int):
    model = load_model(model_name)
    model.eval()
    grad = _noise_conditional_grad(model, tile)
    return lambda x: grad(x, 25 / 255)


def peak_memory_mb(model: str, size: tuple[int, int], tile: int) -> float:
    """Peak resident memory of a fresh process that loads the model and takes one gradient at this tile size."""
    code = ("import resource, sys, torch; from bench.tiles import gradient_fn; torch.set_num_threads(1); "
            f"gradient_fn({model!r}, {tile})(torch.rand(1, 3, {size[0]}, {size[1]})); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="photo-dsm", help="a photo model (default photo-dsm)")
    p.add_argument("--size", type=int, nargs=2, default=(400, 600), metavar=("H", "W"))
    p.add_argument("--tiles", type=int, nargs="+", default=[256, 384, 512, 1024])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    # first, while this process is small: Linux keeps a parent's peak resident memory across fork and exec
    memory = {t: round(peak_memory_mb(args.model, tuple(args.size), t)) for t in args.tiles}
    x = torch.rand(1, 3, *args.size, generator=torch.Generator().manual_seed(0))
    grads = {t: gradient_fn(args.model, t) for t in args.tiles}
    whole = gradient_fn(args.model, max(args.size))(x)
    diff = {t: float((g(x) - whole).abs().max()) for t, g in grads.items()}  # also the untimed warm-up
    seconds = {t: [] for t in args.tiles}
    for _ in range(args.repeats):
        for t, g in grads.items():
            start = time.process_time()
            g(x)
            seconds[t].append(time.process_time() - start)
    first = statistics.median(seconds[args.tiles[0]])
    rows = {t: {"seconds_per_gradient": round(statistics.median(s), 3),
                "vs_first": round(statistics.median(s) / first, 3),
                "peak_memory_mb": memory[t],
                "max_abs_diff_vs_whole": diff[t]} for t, s in seconds.items()}
    print(json.dumps({"model": args.model, "size": list(args.size), "threads": 1, "repeats": args.repeats,
                      "machine": f"{platform.machine()}, torch {torch.__version__}", "tiles": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
