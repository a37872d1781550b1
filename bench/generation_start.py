"""Sample quality against where generation chains start and how long they run, on the VALIDATION split.

    python -m bench.generation_start --model fmnist-js --settings 1@200 0@200 0.5@200 0@100 0@400
    python -m bench.generation_start --model fmnist-js --start pca-mixture:32:16 --settings 0@0 0@200

Each setting RESIDUAL@STEPS generates --n samples (--seed, default 0) from the model's Gaussian start with its residual
per-pixel noise scaled by RESIDUAL (1: the distribution training restarts from, 0: its smooth principal-
subspace part), then STEPS Langevin steps with the model's sampler; prints one JSON line per setting with
FID and the pixel-PCA Fréchet distance against the val split (training.evaluate's extractors), and writes
each setting's first 64 samples to --grids. ``--start`` replaces the model's start distribution by another
one fitted to the training split (pca:K, or pca-mixture:CLUSTERS:K), the energy unchanged. This chose
febm.restore.START_RESIDUAL and the pca-mixture start (docs/recipe.md); not run by the tests.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from torchvision.utils import save_image

from febm.model import load_model
from febm.restore import generate, generation_sampler
from training.evaluate import Protocol


def parse_setting(text: str) -> tuple[float, int]:
    residual, _, steps = text.partition("@")
    try:
        return float(residual), int(steps)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RESIDUAL@STEPS such as 0@200, got {text!r}") from None


def parse_start(text: str) -> dict:
    kind, *numbers = text.split(":")
    names = {"pca": ["components"], "pca-mixture": ["clusters", "components"]}.get(kind)
    if names is None or len(numbers) != len(names) or not all(n.isdigit() for n in numbers):
        raise argparse.ArgumentTypeError(f"expected pca:K or pca-mixture:CLUSTERS:K, got {text!r}")
    return {"kind": kind, **{name: int(n) for name, n in zip(names, numbers)}}


def refit_start(model, start: dict):
    """The model with its start distribution replaced by ``start`` fitted to the training split."""
    from febm.model import EBM
    from training import data as datasets

    config = {**model.config, "start": start}
    fresh = EBM.from_config(config)
    missing, _ = fresh.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("start.")},
                                       strict=False)
    assert all(k.startswith("start.") for k in missing), missing
    fresh.start.fit(datasets.to_float(datasets.load_dataset(config["dataset"], "train").images))
    return fresh.eval()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.generation_start", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fmnist-js")
    parser.add_argument("--settings", nargs="+", type=parse_setting, default=[(1.0, 200), (0.0, 200)])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--noise", type=float, help="override the sampler's per-step noise (0: gradient descent)")
    parser.add_argument("--step-size", type=float, help="override the sampler's step size (changes its temperature)")
    parser.add_argument("--start", type=parse_start,
                        help="refit the start distribution: pca:K or pca-mixture:CLUSTERS:K")
    parser.add_argument("--seed", type=int, default=0, help="generation seed (others measure FID's jitter)")
    parser.add_argument("--grids", default="runs/generation_start", help="folder for the sample grids")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    if model.start is None:
        parser.error(f"{args.model} starts its chains from uniform noise: no residual to scale")
    if args.start:
        model = refit_start(model, args.start)
    if args.step_size is not None:
        model.config["sampler"] = {**model.config["sampler"], "step_size": args.step_size}
    tag = Path(args.model).name + ("-" + "-".join(str(v) for v in args.start.values()) if args.start else "") \
        + (f"-noise{args.noise:g}" if args.noise is not None else "") \
        + (f"-step{args.step_size:g}" if args.step_size is not None else "") \
        + (f"-seed{args.seed}" if args.seed else "")
    protocol = Protocol(model.config["dataset"], "val", None, fid=True, progress=False)
    sampler = generation_sampler(model, noise=args.noise)  # for the record: what generate runs
    for residual, steps in args.settings:
        start = time.time()
        samples = generate(model, args.n, seed=args.seed, steps=steps, start_residual=residual, noise=args.noise,
                           progress=False)
        Path(args.grids).mkdir(parents=True, exist_ok=True)
        save_image(samples[:64], Path(args.grids) / f"{tag}-residual{residual:g}-steps{steps}.png", nrow=8)
        quality = protocol.quality(protocol.features(samples))
        print(json.dumps({"model": args.model, "start": model.config["start"], "noise": sampler.noise,
                          "step_size": sampler.step_size, "start_residual": residual, "steps": steps, "samples": args.n,
                          "seed": args.seed,
                          "split": "val", **quality, "seconds": round(time.time() - start)}), flush=True)


if __name__ == "__main__":
    main()
