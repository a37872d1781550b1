import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Tests use tiny tensors: on this 2-core machine one thread is faster and keeps results reproducible.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """A folder:PATH photo source for the training tests: eight smooth 'photos' of varied sizes, gradients plus a
    few discs."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(8):
        h, w = 120 + 10 * i, 160 - 5 * i
        yy, xx = np.mgrid[:h, :w]
        img = np.stack([(xx / w * 200 + 30 * c) % 255 for c in range(3)], -1)
        for _ in range(3):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(5, 30)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
        Image.fromarray(img.astype(np.uint8), "RGB").save(folder / f"p{i}.jpg", quality=95)
    return f"folder:{folder}"


@pytest.fixture(scope="session")
def tiny_noise_conditional():
    """A builder of a tiny noise-conditional photo energy E(x, sigma) at its (seeded) initialisation."""
    from febm.model import EBM

    net = {"kind": "field", "width": 6, "kernel_size": 3, "dilations": [1, 2], "activation": "silu",
           "spectral_norm": False, "zero_mean_stem": True, "noise_conditional": True}

    def make() -> EBM:
        torch.manual_seed(0)
        return EBM("dsm", net, None, dataset="photos", image_channels=3, crop_size=16)

    return make
