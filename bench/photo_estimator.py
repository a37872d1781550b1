"""Which estimator should photo denoising return? Measured on validation crops, per noise level.

    python -m bench.photo_estimator photo-js --out /tmp/estimator-js.json    # 37 minutes on the shared CPU
    python -m bench.photo_estimator photo-cd --out /tmp/estimator-cd.json
    python -m bench.photo_estimator --markdown /tmp/estimator-js.json /tmp/estimator-cd.json   # the docs table

The crops, noise and seeds of ``training.tune``'s photo protocol (the first ``--n`` fixed 80-px crops of the
validation photos, noise seed per sigma), at sigma = 2, 5, 10, 15, 25, 50 (/255). Every estimator restores with
``febm.denoise`` (the posterior exp(-E/(T s) - ||x - y||^2 / (2 sigma^2)), ULA with its step fitted to the
posterior's curvature, no gradient clipping) and is scored at its best temperature scale s:

- ``start``: the local Wiener filter alone (the chains' start);
- ``descent d``: d noise-free steps (each Newton-sized on the stiffest curvature) from the start, d = 1, 2, 3, 5,
  10; the best d and its scale come from the half-decade grid of scales (0.1 to 1e4);
- ``MAP``: 60 such steps (the posterior mode, as far as plain descent reaches it in 60 steps);
- ``last chain state``: the state after ``--steps`` Langevin steps (10), one chain (a posterior sample);
- ``mean of 4 / 8 / 16 chains``: the average of that many chains' last states (seeds 0..k-1);
- ``final noise-free step``: one chain's last state plus one descent step; ``mean of 16 + final step``: the same
  for 16 chains, averaged.

The MAP row is run at the scale that won for descent and its two half-decade neighbours, the chain rows (the
costly part) at the scale that won for descent. Prints (and with ``--out`` writes) JSON; ``--markdown`` renders reports as the table of
docs/photos.md ("The estimator").
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from bench.reports import save, stamped

SIGMAS_255 = (2, 5, 10, 15, 25, 50)
SCALES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4)
DESCENTS = (1, 2, 3, 5, 10)
MAP_STEPS = 60
CHAINS = 16


def measure(model_name: str, *, n: int = 8, steps: int = 10, sigmas_255=SIGMAS_255, log=print) -> dict:
    """PSNR of every estimator (its best scale) per sigma, with the scale and, for descent, the step count."""
    from febm import denoise
    from febm.degradations import add_gaussian_noise
    from febm.metrics import psnr
    from febm.model import load_model
    from training import data as datasets
    from training.photos import validation_crops
    from training.tune import PHOTO_CROP, measure_prior_curvature

    model = load_model(model_name)
    clean = datasets.to_float(validation_crops(model.config["dataset"], PHOTO_CROP, n))
    curvature = measure_prior_curvature(model, clean)
    model.config.setdefault("restoration", {}).setdefault("denoise", {})["prior_curvature"] = curvature

    def score(x):
        return round(psnr(x, clean).mean().item(), 3)

    results = {}
    for i, s255 in enumerate(sigmas_255):
        sigma = s255 / 255
        noisy = add_gaussian_noise(clean, sigma, 100 + i)

        def run(scale, **kw):
            return denoise(model, noisy, sigma, temperature_scale=scale, return_chain=True, details=True,
                           progress=False, **kw)

        rows = {"input": {"psnr": score(noisy)},
                "start": {"psnr": score(run(1.0, steps=0, descent=0).images)}}
        curves = {scale: run(scale, steps=0, descent=max(DESCENTS), seed=0).chain for scale in SCALES}
        best = max(((scale, d, score(curves[scale][d])) for scale in SCALES for d in DESCENTS), key=lambda r: r[2])
        rows["descent"] = {"psnr": best[2], "temperature_scale": best[0], "descent": best[1]}
        for d in DESCENTS:
            top = max(((scale, score(curves[scale][d])) for scale in SCALES), key=lambda r: r[1])
            rows[f"descent {d}"] = {"psnr": top[1], "temperature_scale": top[0]}
        k = SCALES.index(best[0])
        candidates: dict[str, list] = {}
        for scale in SCALES[max(0, k - 1):k + 2]:
            descent_path = run(scale, steps=0, descent=MAP_STEPS, seed=0).chain
            candidates.setdefault("MAP", []).append((scale, score(descent_path[-1])))
        for scale in (best[0],):  # the chains are the costly part: at the scale where descent won
            last, final = [], []
            for seed in range(CHAINS):
                path = run(scale, steps=steps, descent=1, chains=1, seed=seed).chain
                last.append(path[-2])
                final.append(path[-1])
            candidates.setdefault("last chain state", []).append((scale, score(last[0])))
            for m in (4, 8, 16):
                candidates.setdefault(f"mean of {m} chains", []).append((scale, score(torch.stack(last[:m]).mean(0))))
            candidates.setdefault("final noise-free step", []).append((scale, score(final[0])))
            candidates.setdefault(f"mean of {CHAINS} + final step", []).append(
                (scale, score(torch.stack(final).mean(0))))
        for name, values in candidates.items():
            scale, value = max(values, key=lambda r: r[1])
            rows[name] = {"psnr": value, "temperature_scale": scale}
        results[str(s255)] = rows
        log(json.dumps({"sigma_255": s255, **{k: v["psnr"] for k, v in rows.items()}}))
    return {"model": model_name, "prior_curvature": curvature, "crops": f"{n} fixed {PHOTO_CROP}-px validation crops",
            "chain_steps": steps, "results": results}


ROWS = ("input", "start", "descent", "MAP", "last chain state", "mean of 4 chains", "mean of 8 chains",
        "mean of 16 chains", "final noise-free step", "mean of 16 + final step")


def markdown(reports: list[dict]) -> str:
    """One table: a row per estimator, a column per (model, sigma)."""
    sigmas = list(reports[0]["results"])
    head = "| estimator | " + " | ".join(f"{r['model']} σ = {s}" for r in reports for s in sigmas) + " |"
    lines = [head, "| --- |" + " ---: |" * (len(sigmas) * len(reports))]
    for row in ROWS:
        cells = []
        for r in reports:
            for s in sigmas:
                entry = r["results"][s].get(row)
                best = max(v["psnr"] for k, v in r["results"][s].items() if k != "input")
                value = "" if entry is None else f"{entry['psnr']:.2f}"
                cells.append(f"**{value}**" if entry is not None and entry["psnr"] == best else value)
        label = {"descent": "noise-free descent from the start (best steps)"}.get(row, row)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.photo_estimator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="a photo model (name or folder)")
    parser.add_argument("--n", type=int, default=8, help="validation crops (default 8, as the tuning)")
    parser.add_argument("--steps", type=int, default=10, help="Langevin steps of the chain rows (default 10)")
    parser.add_argument("--sigmas", type=int, nargs="+", default=list(SIGMAS_255), help="noise levels (/255)")
    parser.add_argument("--out", help="write the JSON report here")
    parser.add_argument("--markdown", nargs="+", metavar="REPORT", help="render these JSON reports as the table")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown([json.loads(open(path, encoding="utf-8").read()) for path in args.markdown]))
        return 0
    if not args.model:
        parser.error("give a model, or --markdown REPORTS")
    started = time.perf_counter()
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    report = measure(args.model, n=args.n, steps=args.steps, sigmas_255=args.sigmas, log=log)
    report = stamped(report, "bench.photo_estimator", argv, started)
    save(report, args.out)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
