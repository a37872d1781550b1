"""One f-EBM training step vs one contrastive-divergence step, same network and sampler, one run.

    python bench/train_step.py                       # the fmnist-cpu preset's settings
    python bench/train_step.py --preset tiny --steps 3

Times full training iterations (Langevin chain from the replay buffer + parameter updates) of
training.loop.Trainer for --div js and --div cd, and reports the ratio f-EBM / CD (goal <= 1.2: the critic
should cost little next to Langevin), steps per second, and the resident memory.

Both trainers are built first and their steps are timed in turn (cd, js, cd, js, ...), so that a busy machine
slows them alike; seconds per step are the median and the best of the timed steps. Memory: the process's peak
RSS (ru_maxrss) after building the CD trainer, after its warm-up step, and with both trainers built and stepped;
and the current RSS at the end (both trainers alive; Linux only).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time

import torch

from training.loop import Trainer, TrainConfig
from training.run import PRESETS


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fmnist-cpu", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per objective")
    parser.add_argument("--dataset", help="override the preset's data set (e.g. folder:PATH)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = {**PRESETS[args.preset], **({"dataset": args.dataset} if args.dataset else {})}
    result = {"preset": args.preset, "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads",
              "torch": torch.__version__, "steps_timed": args.steps}
    divs = ("cd", "js")
    with tempfile.TemporaryDirectory() as tmp:
        trainers, rss = {}, {}
        for div in divs:
            run_dir = f"{tmp}/{div}"
            cfg = TrainConfig.from_dict({**base, "div": div, "run_dir": run_dir})
            trainers[div] = Trainer(cfg, run_dir, progress=False)
            rss[f"{div}_built"] = peak_rss_mb()
            trainers[div].train_step()  # warm-up
            rss[f"{div}_stepped"] = peak_rss_mb()
        times = {div: [] for div in divs}
        for _ in range(args.steps):
            for div in divs:
                t = time.perf_counter()
                trainers[div].train_step()
                times[div].append(time.perf_counter() - t)
        current = current_rss_mb()
    for div in divs:
        med, best = statistics.median(times[div]), min(times[div])
        result[div] = {"seconds_per_step": med, "steps_per_second": 1.0 / med, "best_seconds_per_step": best}
    result["febm_over_cd"] = result["js"]["seconds_per_step"] / result["cd"]["seconds_per_step"]
    result["febm_over_cd_best"] = result["js"]["best_seconds_per_step"] / result["cd"]["best_seconds_per_step"]
    result["peak_rss_mb"] = {"cd_trainer_built": rss["cd_built"], "cd_trainer_stepped": rss["cd_stepped"],
                             "both_trainers_stepped": rss["js_stepped"], "end_of_run": peak_rss_mb()}
    result["current_rss_mb_at_end"] = current
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
