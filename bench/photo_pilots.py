"""Photo energies trained on noisy observations, side by side on the validation crops (issue 29's pilots).

    python -m bench.photo_pilots runs/photo-dsm/snapshots/s1500 runs/pilot-js/model runs/pilot-cd/model \\
        --estimators step chains:4x5 chains:4x5+1 --out docs/photo_pilots.json

Every model (a folder with a noise-conditional energy: ``--div dsm`` or ``--posterior`` runs, or
``python -m training.export``'s snapshots) restores the 16 fixed 96-px validation crops
(``training.photos.validation_crops("photos", 96, 16)``, colour) at each sigma with each estimator, on the same
noise draws (``training.photos.validation_psnr``):

- ``step``: the energy's gradient step y - sigma^2 grad E(y, sigma) (Tweedie's posterior mean for a
  score-matching energy), one forward and backward pass;
- ``chains:KxS``: the mean of K posterior chains of S ULA steps from that step (febm.posterior.posterior_mean, the
  prior at the model's ``prior_fraction`` of sigma);
  ``chains:KxS+F`` ends each chain with F noise-free steps.

Seconds per megapixel are measured beside each (one thread unless OMP_NUM_THREADS says otherwise). The JSON
records the models' training records (steps, minutes, command) so a pilot table says what each cost.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

from febm.files import write_atomic
from febm.model import load_model
from febm.posterior import PRIOR_FRACTION, gradient_step, posterior_mean
from training import data as datasets
from training import photos

SIGMAS = (2, 5, 15, 25, 50)


def estimator(energy, spec: str, seed: int, prior_fraction: float = PRIOR_FRACTION, start_energy=None):
    """A denoiser (noisy, sigma) -> estimate from a spec: step | chains:KxS[+F]. ``start_energy``: the chains
    start from its gradient step instead (a ``--frozen-start`` run's warm start)."""
    if spec == "step":
        return lambda y, s: gradient_step(energy, y, s)
    match = re.fullmatch(r"chains:(\d+)x(\d+)(?:\+(\d+))?", spec)
    if not match:
        raise ValueError(f"unknown estimator {spec!r}: use step or chains:KxS[+F]")
    k, steps, final = int(match[1]), int(match[2]), int(match[3] or 0)
    return lambda y, s: posterior_mean(energy, y, s, prior_fraction=prior_fraction, chains=k, steps=steps,
                                       final_steps=final, generator=torch.Generator().manual_seed(seed),
                                       start=None if start_energy is None else gradient_step(start_energy, y, s))


def run(models: list[str], estimators: list[str], sigmas=SIGMAS, seed: int = 0, start_model: str | None = None
        ) -> dict:
    crops = datasets.to_float(photos.validation_crops("photos", 96, 16))
    megapixels = crops.shape[0] * crops.shape[-1] * crops.shape[-2] / 1e6
    rows = []
    start_energy = load_model(start_model).eval().energy if start_model else None
    for folder in models:
        model = load_model(folder).eval()
        if getattr(model.energy, "noise_bias", None) is None:
            raise ValueError(f"{folder}: not a noise-conditional photo energy")
        training = model.config.get("training", {})
        for spec in estimators:
            t0 = time.perf_counter()
            fraction = (model.config.get("posterior") or {}).get("prior_fraction", PRIOR_FRACTION)
            denoiser = estimator(model.energy, spec, seed, fraction, start_energy)
            psnr = photos.validation_psnr(model.energy, crops, sigmas, seed, denoiser=denoiser)
            seconds = time.perf_counter() - t0
            rows.append({"model": str(folder), "divergence": model.divergence, "estimator": spec,
                         "steps": training.get("steps"), "minutes": training.get("wall_time_minutes"),
                         "psnr": psnr, "s_per_mpx": round(seconds / (len(sigmas) * megapixels), 2)})
            print(json.dumps(rows[-1]), flush=True)
    return {"protocol": "training.photos.validation_crops('photos', 96, 16), colour, noise clipped, seeds per sigma",
            "threads": torch.get_num_threads(), "start_model": start_model, "rows": rows}


def _short(model: str) -> str:
    """A model folder's name; a run's by the run (RUN/model -> RUN, RUN/snapshots/step_N -> RUN/step_N)."""
    path = Path(model)
    if path.parent.name == "snapshots":
        return f"{path.parent.parent.name}/{path.name}"
    return path.parent.name if path.name == "model" else path.name


def markdown(result: dict) -> str:
    sigmas = list(result["rows"][0]["psnr"]) if result["rows"] else []
    head = "| model | objective | steps | estimator | " + " | ".join(s.replace("val_psnr_", "σ=") for s in sigmas)
    lines = [f"Validation PSNR (dB) from `{result['command']}`" if result.get("command") else "Validation PSNR (dB)",
             "", f"Protocol: {result['protocol']}; {result['threads']} torch thread(s)"
             + (f"; chains start from the gradient step of {result['start_model']}" if result.get("start_model") else "")
             + ".", "", head + " | s/Mpx |", "|" + " --- |" * (len(sigmas) + 5)]
    for r in result["rows"]:
        cells = " | ".join(f"{r['psnr'][s]:.2f}" for s in sigmas)
        lines.append(f"| {_short(r['model'])} | {r['divergence']} | {r['steps']} | {r['estimator']} | {cells} | "
                     f"{r['s_per_mpx']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--estimators", nargs="+", default=["step"])
    p.add_argument("--sigmas", nargs="+", type=int, default=list(SIGMAS), help="noise levels in 0-255 levels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file (a Markdown table goes beside it, .md)")
    p.add_argument("--start-model", help="chains start from this model's gradient step (a --frozen-start run's warm "
                   "start); the step estimator is unchanged")
    args = p.parse_args(argv)
    for spec in args.estimators:
        estimator(None, spec, 0)  # fail on a bad spec before any model runs
    result = run(args.models, args.estimators, tuple(args.sigmas), args.seed, args.start_model)
    result["command"] = "python -m bench.photo_pilots " + " ".join(sys.argv[1:] if argv is None else argv)
    print(markdown(result))
    if args.out:
        write_atomic(args.out, json.dumps(result, indent=2) + "\n")
        write_atomic(Path(args.out).with_suffix(".md"), markdown(result))


if __name__ == "__main__":
    main()
