"""The public restoration API: generate (and, as they land, denoise / inpaint) with a trained EBM."""

from __future__ import annotations

import torch
from torch import Tensor

from .model import EBM
from .sampling import LangevinSampler


def model_sampler(model: EBM, **overrides) -> LangevinSampler:
    """The model's default Langevin settings (from its config), with ``overrides`` (None = keep)."""
    settings = {**model.config.get("sampler", {}), **{k: v for k, v in overrides.items() if v is not None}}
    settings.setdefault("clamp", model.config.get("data_range", (0.0, 1.0)))
    return LangevinSampler(**settings)


@torch.no_grad()
def generate(
    model: EBM,
    n: int = 16,
    *,
    seed: int | None = 0,
    steps: int | None = None,
    method: str | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """n samples (n, C, H, W) in the data range: Langevin chains from uniform noise on the model's energy."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    sampler = model_sampler(model, steps=steps, method=method)
    device = next(model.parameters()).device
    gen = torch.Generator(device)
    gen.manual_seed(seed if seed is not None else torch.seed())
    lo, hi = model.config.get("data_range", (0.0, 1.0))
    shape = tuple(model.config["image_shape"])
    model.eval()
    out = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        x = lo + (hi - lo) * torch.rand((m, *shape), generator=gen, device=device)
        out.append(sampler.run(model.energy, x, generator=gen, progress=progress).x)
    return torch.cat(out)
