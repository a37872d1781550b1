"""Energies of whole photos, computed in tiles: bounded memory, the same result as one pass.

A fully convolutional energy E(x) = sum_i e(x)_i has local energies that see only the pixels within its
receptive radius rho. Cut the image into tiles, read each with a halo of 2 rho around it, and keep the tile's
core: its local energies are exact (they see only pixels inside the read window), and so is the gradient on
its core, since d E / d x_i sums the local energies within rho of i, each of which reads pixels within 2 rho
of i. Tiles that touch the image border read up to it, where the network's own reflect padding applies as in
a single pass. So the Langevin chain stays global and only E and grad E are computed per tile.

    plan = plan_tiles(height, width, tile=256, halo=2 * rho)   # computed once, applied to every step
    energy = TiledEnergy(model.energy, tile=256)               # drop-in: E(x) (B,), autograd gives grad_x E
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

# core side: with photo-dsm's halo of 2 x 23 px a side, 512 px tiles take 0.76x the time of 256 px ones for a
# 400 x 600 photo (less halo re-read) at 1.5x the peak memory (python -m bench.tiles, docs/performance.md)
DEFAULT_TILE = 512


@dataclass(frozen=True)
class Tile:
    """Where one tile reads (``read``), and which part of what it read is its core (``core`` in image
    coordinates, ``inner`` the same pixels in the read window's coordinates). Slices as (rows, cols)."""

    read: tuple[slice, slice]
    core: tuple[slice, slice]
    inner: tuple[slice, slice]


def _spans(length: int, tile: int, halo: int) -> list[tuple[slice, slice, slice]]:
    """1-D (read, core, inner) slices covering [0, length) with cores of at most ``tile``."""
    out = []
    for start in range(0, length, tile):
        stop = min(start + tile, length)
        lo, hi = max(0, start - halo), min(length, stop + halo)
        out.append((slice(lo, hi), slice(start, stop), slice(start - lo, stop - lo)))
    return out


def plan_tiles(height: int, width: int, tile: int = DEFAULT_TILE, halo: int = 0) -> list[Tile]:
    """The tiles of an image, row by row; their cores partition the image exactly."""
    if tile < 1 or halo < 0:
        raise ValueError(f"need tile >= 1 and halo >= 0, got tile={tile}, halo={halo}")
    return [Tile((r_read, c_read), (r_core, c_core), (r_in, c_in))
            for r_read, r_core, r_in in _spans(height, tile, halo)
            for c_read, c_core, c_in in _spans(width, tile, halo)]


def _windows(x: Tensor, plan: list[Tile]):
    for t in plan:
        yield t, x[..., t.read[0], t.read[1]]


def tiled_energy(net: nn.Module, x: Tensor, plan: list[Tile]) -> Tensor:
    """E(x) per image, (B,): the sum over tiles of the local energies on each tile's core."""
    dtype = torch.promote_types(x.dtype, torch.float32)  # sums of many local energies: at least float32
    total = x.new_zeros(x.shape[0], dtype=dtype)
    for t, window in _windows(x, plan):
        total = total + net.energy_map(window)[..., t.inner[0], t.inner[1]].to(dtype).sum(dim=(1, 2, 3))
    return total


def tiled_energy_and_grad(net: nn.Module, x: Tensor, plan: list[Tile]) -> tuple[Tensor, Tensor]:
    """E(x) per image and grad_x E(x), from one forward and one backward pass per tile (the gradient is
    exact on each tile's core when the plan's halo is >= 2 rho)."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    total, grad = x.new_zeros(x.shape[0], dtype=dtype), torch.zeros_like(x)
    with torch.enable_grad():
        for t, window in _windows(x.detach(), plan):
            window = window.clone().requires_grad_(True)
            local = net.energy_map(window)
            total = total + local.detach()[..., t.inner[0], t.inner[1]].to(dtype).sum(dim=(1, 2, 3))
            (g,) = torch.autograd.grad(local.sum(), window)
            grad[..., t.core[0], t.core[1]] = g[..., t.inner[0], t.inner[1]]
    return total, grad


class _TiledEnergyFn(torch.autograd.Function):
    """E(x) whose backward returns the gradient computed alongside it (samplers always ask for both)."""

    @staticmethod
    def forward(ctx, x: Tensor, net: nn.Module, tile: int) -> Tensor:
        plan = plan_tiles(x.shape[-2], x.shape[-1], tile, 2 * net.receptive_radius)
        energy, grad = tiled_energy_and_grad(net, x, plan)
        ctx.save_for_backward(grad)
        return energy

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out.view(-1, *[1] * (grad.dim() - 1)).to(grad.dtype), None, None


class TiledEnergy(nn.Module):
    """A fully convolutional energy evaluated tile by tile; autograd gives grad_x E, also by tiles.

    Only the input's gradient is available (the parameters get none): this is for sampling and restoration,
    where the network is frozen. Images that fit in one tile take a single ordinary pass.
    """

    def __init__(self, net: nn.Module, tile: int = DEFAULT_TILE):
        super().__init__()
        if not hasattr(net, "energy_map"):
            raise TypeError(f"tiling needs a fully convolutional energy with energy_map, got {type(net).__name__}")
        self.net, self.tile = net, int(tile)

    @property
    def receptive_radius(self) -> int:
        return self.net.receptive_radius

    def energy_map(self, x: Tensor) -> Tensor:
        return self.net.energy_map(x)

    def forward(self, x: Tensor) -> Tensor:
        if max(x.shape[-2:]) <= self.tile:
            return self.net(x)
        if not (torch.is_grad_enabled() and x.requires_grad):  # the energy alone: no gradient to compute
            return tiled_energy(self.net, x, plan_tiles(*x.shape[-2:], self.tile, 2 * self.net.receptive_radius))
        return _TiledEnergyFn.apply(x, self.net, self.tile)
