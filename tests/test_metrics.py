"""Metrics against closed forms."""

from pathlib import Path

import numpy as np
import pytest
import torch

from febm.metrics import PCAFeatures, frechet_distance, gaussian_stats, psnr


def test_frechet_distance_closed_form():
    # diagonal Gaussians: ||mu1 - mu2||^2 + sum (s1 - s2)^2 with s the standard deviations
    mu1, mu2 = np.array([0.0, 1.0]), np.array([1.0, 3.0])
    s1, s2 = np.diag([1.0, 4.0]), np.diag([4.0, 9.0])
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(5.0 + (1 - 2) ** 2 + (2 - 3) ** 2)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_pca_fd_separates_noise_from_data():
    g = torch.Generator().manual_seed(0)
    proto = torch.rand(5, 64, generator=g)
    data = (proto[torch.randint(5, (2000,), generator=g)] + 0.05 * torch.randn(2000, 64, generator=g)).view(-1, 1, 8, 8)
    more = (proto[torch.randint(5, (2000,), generator=g)] + 0.05 * torch.randn(2000, 64, generator=g)).view(-1, 1, 8, 8)
    noise = torch.rand(2000, 1, 8, 8, generator=g)
    pca = PCAFeatures(data, dim=8)
    ref = gaussian_stats(pca(data))
    assert frechet_distance(*gaussian_stats(pca(more)), *ref) < 0.1 * frechet_distance(*gaussian_stats(pca(noise)), *ref)


def test_psnr_known_value_and_errors():
    x = torch.zeros(2, 1, 4, 4)
    y = x + 0.1
    assert torch.allclose(psnr(y, x), torch.full((2,), 20.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(x, torch.zeros(2, 1, 4, 5))


FID_WEIGHTS = Path(torch.hub.get_dir()) / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"


@pytest.mark.skipif(not FID_WEIGHTS.exists(), reason="FID Inception weights not in torch hub's cache (setup copies them)")
def test_inception_fid_zero_for_same_set_and_large_for_noise():
    from febm.metrics import InceptionFeatures

    g = torch.Generator().manual_seed(0)
    blobs = torch.zeros(12, 1, 28, 28)
    for i in range(12):
        blobs[i, :, 4 + i % 6 : 20 + i % 5, 6:22] = 0.8
    extractor = InceptionFeatures(batch_size=12)
    feats = extractor(blobs)
    assert feats.shape == (12, 2048)
    noise = extractor(torch.rand(12, 1, 28, 28, generator=g))
    same = frechet_distance(*gaussian_stats(feats), *gaussian_stats(feats))
    assert abs(same) < 1e-3
    assert frechet_distance(*gaussian_stats(noise), *gaussian_stats(feats)) > 50
