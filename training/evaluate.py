"""Evaluate a trained model: ``python -m training.evaluate MODEL`` prints one JSON object.

    python -m training.evaluate checkpoints/fmnist-js --fid-samples 5000
    python -m training.evaluate runs/.../model --fid-samples 1000 --steps 200 --no-fid
    python -m training.evaluate --all --fid-samples 5000 --rejection --restoration 500 \
        --out docs/results.json --markdown docs/results.md --grids docs/samples --write-cards

Reports FID (pytorch-fid, Inception pool3) between generated samples and the data set's test split,
a fast in-domain Fréchet distance (pixel-PCA features, see febm.metrics.PCAFeatures), the mean energy
of test images and of samples, and the sampler settings used. Grayscale images are replicated to three
channels; Inception resizes them to 299x299 itself. With ``--all`` every shipped model is evaluated with
one protocol (same reference data, seeds and extractors), optionally with rejection sampling (FID of the
accepted samples and the acceptance rate) and restoration PSNRs (denoising at sigma 0.2, centre-box
inpainting), into one JSON file and one Markdown table.

Rejection sampling is scored on the same samples: the accepted ones against a random subset of the same
size (FID depends on the sample count, so only equal sizes compare). Each model's report is cached under
$FEBM_EVAL_CACHE (default ~/.cache/febm/eval), keyed by its weights, its config and the protocol, so an
interrupted ``--all`` resumes where it stopped and several processes can share the work; ``--no-cache``
recomputes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from torchvision.utils import save_image

from febm.files import write_atomic
from febm.degradations import add_gaussian_noise
from febm.imageio import preset_mask
from febm.rejection import rejection_sample
from febm.metrics import InceptionFeatures, PCAFeatures, frechet_distance, gaussian_stats, psnr
from febm.model import list_models, load_model, resolve_model
from febm.restore import denoise, generate, generation_sampler, inpaint, start_residual_of
from training import data as datasets
from training.checkpoint import load_state, save_state


def _cache_path(dataset: str, split: str, n: int) -> Path:
    key = hashlib.sha1(f"{dataset}|{split}|{n}".encode()).hexdigest()[:12]
    return datasets.cache_dir() / "fid_stats" / f"{key}.npz"


def reference_inception_stats(dataset: str, split: str, images: torch.Tensor, extractor, progress: bool):
    """Inception mean/covariance of a data split, cached on disk (the same every evaluation)."""
    path = _cache_path(dataset, split, images.shape[0])
    if path.exists():
        stats = np.load(path)
        return stats["mu"], stats["sigma"]
    mu, sigma = gaussian_stats(extractor(images, progress=progress))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=mu, sigma=sigma)
    return mu, sigma


@torch.no_grad()
def mean_energy(model, images: torch.Tensor, batch_size: int = 500) -> float:
    return float(torch.cat([model.energy(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]).mean())


class Protocol:
    """The data and feature extractors shared by every model evaluated on one data set (loaded once)."""

    def __init__(self, dataset: str, split: str, data_root: str | None, fid: bool, progress: bool):
        self.dataset, self.split, self.progress = dataset, split, progress
        self.reference = datasets.to_float(datasets.load_dataset(dataset, split, data_root).images)
        train = datasets.to_float(datasets.load_dataset(dataset, "train", data_root).images)
        self.pca = PCAFeatures(train[:20000])
        self.pca_ref = gaussian_stats(self.pca(self.reference))
        self.inception = InceptionFeatures() if fid else None
        self.fid_ref = reference_inception_stats(dataset, split, self.reference, self.inception, progress) if fid else None

    def features(self, samples: torch.Tensor) -> dict[str, np.ndarray]:
        """Per-sample features, keyed by the metric they feed ("pca_fd", and "fid" unless skipped)."""
        out = {"pca_fd": self.pca(samples)}
        if self.inception is not None:
            out["fid"] = self.inception(samples, progress=self.progress)
        return out

    def quality(self, features: dict[str, np.ndarray], index: np.ndarray | None = None) -> dict:
        """Fréchet distances of the samples (or the subset ``index``) to the reference split."""
        reference = {"pca_fd": self.pca_ref, "fid": self.fid_ref}
        return {name: frechet_distance(*gaussian_stats(f if index is None else f[index]), *reference[name])
                for name, f in features.items()}


@torch.no_grad()
def rejection_quality(model, samples: torch.Tensor, features: dict, protocol: Protocol, seed: int,
                      batch_size: int = 500) -> dict:
    """Rejection sampling on the evaluated samples (M = their largest log-ratio): acceptance rate, quality
    of the accepted samples, and of a random subset of the same size as the baseline."""
    r = torch.cat([model.log_ratio(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)])
    gen = torch.Generator().manual_seed(seed)
    accepted = np.flatnonzero(rejection_sample(samples, r, generator=gen).accepted.numpy())
    out = {"acceptance_rate": len(accepted) / len(samples), "samples": len(accepted)}
    if len(accepted) < 2:
        return out  # no covariance from fewer than two samples
    baseline = np.sort(torch.randperm(len(samples), generator=gen)[: len(accepted)].numpy())
    return {**out, **protocol.quality(features, accepted), "same_size_random": protocol.quality(features, baseline)}


def restoration_psnr(model, clean: torch.Tensor, *, seed: int, sigma: float = 0.2, mask: str = "center",
                     batch_size: int = 100) -> dict:
    """Mean PSNR of denoising (noise sigma, known) and inpainting (a preset mask) with the model's defaults."""
    noisy = add_gaussian_noise(clean, sigma, seed)
    known = preset_mask(mask, tuple(clean.shape[1:]), seed=seed)
    den, inp = [], []
    for i in range(0, len(clean), batch_size):
        den.append(denoise(model, noisy[i : i + batch_size], sigma, seed=seed + i, progress=False))
        inp.append(inpaint(model, clean[i : i + batch_size], known, seed=seed + i, progress=False))
    return {f"denoise_psnr_{sigma:g}": psnr(torch.cat(den), clean).mean().item(),
            f"denoise_input_psnr_{sigma:g}": psnr(noisy, clean).mean().item(),
            f"inpaint_psnr_{mask}": psnr(torch.cat(inp), clean).mean().item(),
            "restoration_images": len(clean)}


def generation_settings(model, steps: int | None = None) -> dict:
    """The Langevin settings and start used to generate, as recorded with every report."""
    return {**generation_sampler(model, steps=steps).to_dict(), "start_residual": start_residual_of(model)}


def samples_and_features(model, protocol: Protocol, stages: Path | None, *, n: int, seed: int,
                         steps: int | None, progress: bool) -> tuple[torch.Tensor, float, dict]:
    """The generated samples, the seconds they took and their features, each stage stored in ``stages`` (a
    state file of training.checkpoint, written atomically) once done and read back if a previous run did it."""
    saved = _load_stages(stages)
    if "samples" not in saved:
        start = time.time()
        samples = generate(model, n, seed=seed, steps=steps, progress=progress)
        saved = {"samples": samples, "sampling_seconds": round(time.time() - start, 1)}
        _save_stages(stages, saved)
    if "features" not in saved:
        saved["features"] = {k: torch.from_numpy(v) for k, v in protocol.features(saved["samples"]).items()}
        _save_stages(stages, saved)
    return saved["samples"], saved["sampling_seconds"], {k: v.numpy() for k, v in saved["features"].items()}


def _load_stages(path: Path | None) -> dict:
    if path is None or not path.exists():
        return {}
    try:
        return load_state(path)
    except ValueError:  # not a stages file this code wrote: start the model again
        print(f"warning: ignoring {path}, not a stages file of this version", file=sys.stderr)
        return {}


def _save_stages(path: Path | None, state: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_state(path, state)


def evaluate(model_name: str, *, fid_samples: int = 1000, steps: int | None = None, split: str = "test",
             seed: int = 0, fid: bool = True, data_root: str | None = None, progress: bool = True,
             samples_png: str | None = None, rejection: bool = False, restoration_images: int = 0,
             protocol: Protocol | None = None, model=None, stages: Path | None = None) -> dict:
    """One model's report; ``rejection`` adds FID with rejection sampling, ``restoration_images`` PSNRs.
    ``model`` passes the already loaded ``model_name`` (saves loading it again); ``stages`` is a file that
    keeps the samples and their features, so that a killed evaluation resumes after its last stage."""
    model = model if model is not None else load_model(model_name)
    dataset = model.config["dataset"]
    protocol = protocol or Protocol(dataset, split, data_root, fid, progress)
    samples, sampling_seconds, features = samples_and_features(
        model, protocol, stages, n=fid_samples, seed=seed, steps=steps, progress=progress)
    result = {
        "model": str(model_name), "divergence": model.config["divergence"], "dataset": dataset, "split": split,
        "samples": fid_samples, "seed": seed, "sampler": generation_settings(model, steps),
        "sampling_seconds": sampling_seconds, **protocol.quality(features),
        "energy_test": mean_energy(model, protocol.reference[:2000]), "energy_samples": mean_energy(model, samples),
    }
    if fid:
        result["fid_reference"] = f"{split} split, {protocol.reference.shape[0]} images"
    if rejection and model.has_critic:
        result["rejection"] = rejection_quality(model, samples, features, protocol, seed)
    if restoration_images:
        result.update(restoration_psnr(model, protocol.reference[:restoration_images], seed=seed))
    if samples_png:
        Path(samples_png).parent.mkdir(parents=True, exist_ok=True)
        save_image(samples[:64], samples_png, nrow=8)
    return result


def evaluate_all(names: list[str], *, out: str | None, markdown: str | None, grids: str | None,
                 write_cards: bool, progress: bool, cache: bool = True, samples_png: str | None = None,
                 keep: list[dict] | None = None, **kwargs) -> list[dict]:
    """Every model with one protocol (same data, extractors, seeds); JSON, a Markdown table, grids.
    Reports found in the evaluation cache are reused unless ``cache`` is false. ``samples_png``: a copy of
    the (one) model's sample grid. ``keep``: earlier results (same protocol) of other models, listed first in
    the table (``--merge``: add models to a table without evaluating the others again)."""
    results, protocol, dataset = [], None, None
    for name in names:
        model = load_model(name)
        dataset = dataset or model.config["dataset"]
        if model.config["dataset"] != dataset:
            raise SystemExit(f"error: {name} was trained on {model.config['dataset']}, not {dataset}: "
                             "evaluate one data set at a time")
        report = _cache_file(model, kwargs)
        if cache and report.exists():
            result = {**json.loads(report.read_text(encoding="utf-8")), "model": str(name)}
            print(f"{name}: reusing the cached evaluation {report}", file=sys.stderr)
        else:
            protocol = protocol or Protocol(dataset, kwargs["split"], kwargs.get("data_root"), kwargs["fid"],
                                            progress)
            stages = report.with_suffix(".stages.safetensors")
            if not cache:
                stages.unlink(missing_ok=True)
            result = evaluate(name, samples_png=str(report.with_suffix(".png")), protocol=protocol,
                              progress=progress, model=model, stages=stages, **kwargs)
            result["training_steps"] = (model.config.get("training") or {}).get("steps")
            _write_atomic(report, json.dumps(result, indent=2) + "\n")  # written last: marks the grid complete
            stages.unlink(missing_ok=True)  # tens of MB, no longer needed
        results.append(result)
        print(json.dumps(result), flush=True)
        if grids:
            Path(grids).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(report.with_suffix(".png"), Path(grids) / f"{Path(name).name}.png")
        if samples_png:
            Path(samples_png).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(report.with_suffix(".png"), samples_png)
        if write_cards:
            write_card_metrics(name, result, model)
    evaluated = {Path(r["model"]).name for r in results}
    results = [r for r in keep or [] if Path(r["model"]).name not in evaluated] + results
    if out:
        _write_atomic(Path(out), json.dumps(results, indent=2) + "\n")
    if markdown:
        _write_atomic(Path(markdown), results_table(results))
    return results


EVAL_VERSION = 2  # bump when a code change alters what the protocol measures: invalidates cached reports


def eval_cache_dir() -> Path:
    return Path(os.environ.get("FEBM_EVAL_CACHE") or "~/.cache/febm/eval").expanduser()


def _cache_file(model, protocol: dict) -> Path:
    """Where this model's report under this protocol is cached: a hash of weights, config and protocol."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    config = {k: v for k, v in model.config.items() if k != "metrics"}  # the metrics are what we compute
    settings = {k: v for k, v in protocol.items() if k != "data_root"}
    settings["generation"] = generation_settings(model, protocol.get("steps"))  # library defaults count too
    digest.update(json.dumps([EVAL_VERSION, config, settings], sort_keys=True, default=str).encode())
    return eval_cache_dir() / f"{digest.hexdigest()[:24]}.json"


CARD_METRICS = ("fid", "pca_fd", "samples", "split")


def write_card_metrics(name: str, result: dict, model=None) -> None:
    """Store the headline numbers in the model folder's config.json and regenerate its card."""
    kind, location = resolve_model(name)
    if kind == "hub":
        return
    model = model if model is not None else load_model(location)
    metrics = {k: result[k] for k in CARD_METRICS if k in result}
    metrics.update({k: v for k, v in result.items() if k.startswith(("denoise_psnr", "inpaint_psnr"))})
    if "rejection" in result:
        metrics["rejection"] = result["rejection"]
    metrics["sampler"] = result["sampler"]
    model.update_config({"metrics": metrics})
    model.save_pretrained(location)


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _chain(sampler: dict) -> str:
    """A report's generation chain for the table: its Langevin steps and per-step noise."""
    if "steps" not in sampler:
        return "–"
    return f"{sampler['steps']}" + (f" ({sampler['noise']:g})" if "noise" in sampler else "")


def results_table(results: list[dict]) -> str:
    """A Markdown table, one row per model."""
    rows = ["| model | objective | training steps | Langevin steps (noise) | FID | pixel-PCA FD | acceptance "
            "| FID accepted (random subset, same size) | denoise PSNR σ=0.2 (input) | inpaint PSNR centre box |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        rej = r.get("rejection") or {}
        den = next((k for k in r if k.startswith("denoise_psnr_")), None)
        inp = next((k for k in r if k.startswith("inpaint_psnr_")), None)
        den_in = r.get(den.replace("denoise_psnr", "denoise_input_psnr")) if den else None
        accepted = (f"{_fmt(rej.get('fid'))} ({_fmt((rej.get('same_size_random') or {}).get('fid'))})"
                    if rej.get("fid") is not None else "–")
        rows.append(
            f"| {Path(r['model']).name} | {r['divergence']} | {r.get('training_steps') or '–'} "
            f"| {_chain(r.get('sampler') or {})} | {_fmt(r.get('fid'))} "
            f"| {_fmt(r['pca_fd'], 3)} | {_fmt(100 * rej['acceptance_rate'], 0) + '%' if rej else '–'} "
            f"| {accepted} | {_fmt(r.get(den), 2)} ({_fmt(den_in, 2)}) | {_fmt(r.get(inp), 2)} |")
    first = results[0] if results else {}
    reference = first.get("fid_reference") or f"{first.get('split')} split"
    samplers = {json.dumps({k: v for k, v in (r.get("sampler") or {}).items() if k not in ("steps", "noise")})
                for r in results}
    sampler = (f"sampler (each model's own Langevin steps and noise): `{samplers.pop()}`" if len(samplers) == 1
               else "each model's own sampler (its `config.json`)")
    notes = (f"\n{first.get('samples')} samples per model; reference: the {reference}; {sampler}; "
             f"rejection sampling keeps each of those samples with probability min(1, exp(r - max r)); "
             f"restoration on the first {first.get('restoration_images', 0)} {first.get('split')} images.\n")
    return "\n".join(rows) + "\n" + notes + objective_table(results)


def objective_table(results: list[dict]) -> str:
    """Per objective and recipe (training steps and sampler), over its models (seeds): mean FID and the range;
    empty when each has one model. Models of one objective trained or sampled differently are not averaged."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["divergence"], r.get("training_steps"), json.dumps(r.get("sampler"))), []).append(r)
    if all(len(v) == 1 for v in groups.values()):
        return ""
    rows = ["", "Per objective (mean over its seeds of one recipe, range in brackets):", "",
            "| objective | training steps | Langevin steps (noise) | models | FID | pixel-PCA FD |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    rank = "fid" if all(r.get("fid") is not None for r in results) else "pca_fd"
    for (div, steps, _), rs in sorted(groups.items(), key=lambda kv: np.mean([r[rank] for r in kv[1]])):
        cells = []
        for key, digits in (("fid", 1), ("pca_fd", 3)):
            values = [r[key] for r in rs if r.get(key) is not None]
            spread = f" [{_fmt(min(values), digits)}, {_fmt(max(values), digits)}]" if len(values) > 1 else ""
            cells.append(f"{_fmt(float(np.mean(values)), digits)}{spread}" if values else "–")
        chain = _chain(rs[0].get("sampler") or {})
        rows.append(f"| {div} | {steps or '–'} | {chain} | {len(rs)} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="names under checkpoints/, model folders, or Hub repo ids")
    parser.add_argument("--all", action="store_true",
                        help="every fixed-size model in the checkpoints folder (photo models have no FID protocol)")
    parser.add_argument("--dataset", help="with --all: only the models of this data set")
    parser.add_argument("--merge", metavar="RESULTS_JSON",
                        help="keep the results in this file (same protocol) for the models not evaluated now")
    parser.add_argument("--fid-samples", type=int, default=1000, help="number of generated samples (default 1000)")
    parser.add_argument("--steps", type=int, help="Langevin steps (default: the model's)")
    parser.add_argument("--split", default="test", choices=["val", "test"], help="reference split (default test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fid", action="store_true", help="skip Inception FID (fast checks)")
    parser.add_argument("--rejection", action="store_true", help="also FID and acceptance rate with rejection sampling")
    parser.add_argument("--restoration", type=int, default=0, metavar="N",
                        help="also denoising (sigma 0.2) and inpainting (centre box) PSNR on N images of the split")
    parser.add_argument("--data-root", help="folder holding the data set (default: system / cache)")
    parser.add_argument("--samples-png", help="one model: also write a grid of its first 64 samples here")
    parser.add_argument("--grids", metavar="DIR", help="write each model's sample grid to DIR/<name>.png")
    parser.add_argument("--out", help="write the list of results as JSON here")
    parser.add_argument("--markdown", help="write a Markdown results table here")
    parser.add_argument("--write-cards", action="store_true",
                        help="store the metrics in each local model folder's config.json and model card")
    parser.add_argument("--no-cache", action="store_true",
                        help="recompute reports found in the evaluation cache ($FEBM_EVAL_CACHE)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.fid_samples < 2:
        parser.error("--fid-samples must be >= 2")
    names = [m["name"] for m in list_models() if m["image_shape"] and args.dataset in (None, m["dataset"])] \
        if args.all else args.models
    if not names:
        parser.error("name a model, or use --all for every model in the checkpoints folder")
    common = dict(fid_samples=args.fid_samples, steps=args.steps, split=args.split, seed=args.seed,
                  fid=not args.no_fid, data_root=args.data_root, rejection=args.rejection,
                  restoration_images=args.restoration)
    if args.samples_png and len(names) != 1:
        parser.error("--samples-png takes one model; use --grids DIR for several")
    keep = None
    if args.merge:
        keep = json.loads(Path(args.merge).read_text(encoding="utf-8"))
        mismatched = [r["model"] for r in keep if (r.get("samples"), r.get("split"), r.get("seed", args.seed))
                      != (args.fid_samples, args.split, args.seed)]
        if mismatched:
            parser.error(f"--merge: {', '.join(mismatched)} in {args.merge} used another protocol "
                         "(--fid-samples / --split / --seed)")
    evaluate_all(names, out=args.out, markdown=args.markdown, grids=args.grids, write_cards=args.write_cards,
                 samples_png=args.samples_png, progress=not args.no_progress, cache=not args.no_cache, keep=keep,
                 **common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
