"""Evaluate a trained model: ``python -m training.evaluate MODEL`` prints one JSON object.

    python -m training.evaluate checkpoints/fmnist-js --fid-samples 5000
    python -m training.evaluate runs/.../model --fid-samples 1000 --steps 200 --no-fid

Reports FID (pytorch-fid, Inception pool3) between generated samples and the data set's test split,
a fast in-domain Fréchet distance (pixel-PCA features, see febm.metrics.PCAFeatures), the mean energy
of test images and of samples, and the sampler settings used. Grayscale images are replicated to three
channels; Inception resizes them to 299x299 itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from febm.metrics import InceptionFeatures, PCAFeatures, frechet_distance, gaussian_stats
from febm.model import load_model
from febm.restore import generate, model_sampler
from training import data as datasets


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


def evaluate(model_name: str, *, fid_samples: int = 1000, steps: int | None = None, split: str = "test",
             seed: int = 0, fid: bool = True, data_root: str | None = None, progress: bool = True,
             samples_png: str | None = None) -> dict:
    model = load_model(model_name)
    dataset = model.config["dataset"]
    test = datasets.to_float(datasets.load_dataset(dataset, split, data_root).images)
    train = datasets.to_float(datasets.load_dataset(dataset, "train", data_root).images)
    start = time.time()
    samples = generate(model, fid_samples, seed=seed, steps=steps, progress=progress)
    sample_seconds = time.time() - start
    pca = PCAFeatures(train[:20000])
    result = {
        "model": str(model_name), "divergence": model.config["divergence"], "dataset": dataset, "split": split,
        "samples": fid_samples, "seed": seed, "sampler": model_sampler(model, steps=steps).to_dict(),
        "sampling_seconds": round(sample_seconds, 1),
        "pca_fd": frechet_distance(*gaussian_stats(pca(samples)), *gaussian_stats(pca(test))),
        "energy_test": mean_energy(model, test[:2000]), "energy_samples": mean_energy(model, samples),
    }
    if fid:
        extractor = InceptionFeatures()
        ref = reference_inception_stats(dataset, split, test, extractor, progress)
        result["fid"] = frechet_distance(*gaussian_stats(extractor(samples, progress=progress)), *ref)
        result["fid_reference"] = f"{split} split, {test.shape[0]} images"
    if samples_png:
        from torchvision.utils import save_image

        save_image(samples[:64], samples_png, nrow=8)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a name under checkpoints/, a model folder, or a Hub repo id")
    parser.add_argument("--fid-samples", type=int, default=1000, help="number of generated samples (default 1000)")
    parser.add_argument("--steps", type=int, help="Langevin steps (default: the model's)")
    parser.add_argument("--split", default="test", choices=["val", "test"], help="reference split (default test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fid", action="store_true", help="skip Inception FID (fast checks)")
    parser.add_argument("--data-root", help="folder holding the data set (default: system / cache)")
    parser.add_argument("--samples-png", help="also write a grid of the first 64 samples here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.fid_samples < 2:
        parser.error("--fid-samples must be >= 2")
    result = evaluate(args.model, fid_samples=args.fid_samples, steps=args.steps, split=args.split, seed=args.seed,
                      fid=not args.no_fid, data_root=args.data_root, progress=not args.no_progress,
                      samples_png=args.samples_png)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
