"""One f-EBM training step vs one contrastive-divergence step, same network and sampler, one run.

    python bench/train_step.py                       # the fmnist-cpu preset's settings
    python bench/train_step.py --preset tiny --steps 3

Times full training iterations (Langevin chain from the replay buffer + parameter updates) of
training.loop.Trainer for --div js and --div cd, and reports the ratio f-EBM / CD (goal <= 1.2: the critic
should cost little next to Langevin), steps per second, and the peak resident memory of each.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

import torch

from training.loop import Trainer, TrainConfig
from training.run import PRESETS


def time_steps(cfg: TrainConfig, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(TrainConfig.from_dict({**vars(cfg), "run_dir": tmp}), tmp, progress=False)
        trainer.train_step()  # warm-up
        t = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        return (time.perf_counter() - t) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fmnist-cpu", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dataset", help="override the preset's data set (e.g. folder:PATH)")
    args = parser.parse_args()
    base = {**PRESETS[args.preset], **({"dataset": args.dataset} if args.dataset else {})}
    result = {"preset": args.preset, "threads": torch.get_num_threads(), "steps_timed": args.steps}
    for div in ("cd", "js"):
        seconds = time_steps(TrainConfig.from_dict({**base, "div": div}), args.steps)
        result[div] = {"seconds_per_step": seconds, "steps_per_second": 1.0 / seconds}
    result["febm_over_cd"] = result["js"]["seconds_per_step"] / result["cd"]["seconds_per_step"]
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
