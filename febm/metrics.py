"""Image-quality metrics: Fréchet distances (FID and a fast in-domain variant), PSNR.

FID uses pytorch-fid's Inception network (pool3, 2048-d). pytorch-fid downloads its weights on first
use into torch hub's cache ($TORCH_HOME/hub/checkpoints); offline machines place the file there.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg
from torch import Tensor


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians."""
    diff = mu1 - mu2
    with warnings.catch_warnings():  # a singular product is handled below
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():  # regularise as pytorch-fid does
            offset = np.eye(sigma1.shape[0]) * 1e-6
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    return features.mean(0), np.cov(features, rowvar=False)


class InceptionFeatures:
    """pool3 features of pytorch-fid's InceptionV3 for images (B, C, H, W) in [0, 1]; gray -> 3 channels."""

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 100):
        from pytorch_fid.inception import InceptionV3

        self.device, self.batch_size = torch.device(device), batch_size
        # channels-last convolutions: 1.5x faster on CPU, the same features to about 1e-6
        self.net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(self.device).eval()
        self.net.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def __call__(self, images: Tensor, progress: bool = False) -> np.ndarray:
        chunks = range(0, images.shape[0], self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="Inception features", leave=False)
        out = []
        for i in chunks:
            x = images[i : i + self.batch_size].to(self.device, torch.float32)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            out.append(self.net(x)[0].flatten(1).cpu().numpy())  # the net resizes to 299 itself
        return np.concatenate(out)


class PCAFeatures:
    """A fast in-domain feature space: the top principal components of the training images' pixels.

    Fréchet distance there is no substitute for FID, but it is cheap (no Inception pass), in-domain, and
    ranks gross failures (noise, blobs, mode collapse) the same way.
    """

    def __init__(self, reference: Tensor, dim: int = 64):
        x = reference.flatten(1).double()
        self.mean = x.mean(0)
        _, _, v = torch.linalg.svd(x - self.mean, full_matrices=False)
        self.basis = v[:dim].T  # (D, dim)

    def __call__(self, images: Tensor) -> np.ndarray:
        return ((images.flatten(1).double() - self.mean) @ self.basis).numpy()


def psnr(estimate: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image (dB) for batches (B, C, H, W)."""
    if estimate.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(estimate.shape)} vs {tuple(target.shape)}")
    mse = (estimate.double() - target.double()).flatten(1).pow(2).mean(1).clamp_min(1e-20)
    return 10.0 * torch.log10(data_range**2 / mse)
