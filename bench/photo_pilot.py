"""A minimal CD loop for quick photo-energy probes (minutes, not the hours of training.run).

    python -m bench.photo_pilot --zero-mean --map-l2 0.001 --langevin 10 --clip 0.01 --steps 400

Trains a FieldEnergy (width 24, dilations 1-2-4-2, as photo-cpu) by contrastive divergence on 40-px crops of
the training photos, batch 32: negatives are fresh crops plus noise of a std drawn from U[0, sigma], then
``--langevin`` steps of the authors' sampler (noise, then a step against the clipped gradient). Every
``--eval-every`` steps it prints the checks of bench.photo_prior on the raw weights: the denoising cosine and
MAP denoising by Adam. No critic, no EMA, no checkpoint: use training.run for anything kept. These probes chose
the zero-mean stem (docs/photos.md).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench.photo_prior import cosine, map_estimate
from febm.nets import FieldEnergy
from training.photos import PhotoCrops, load_photos, noisy_crop_start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.photo_pilot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--langevin", type=int, default=0, help="sampler steps from the noisy crops (0: none)")
    p.add_argument("--step", type=float, default=1.0)
    p.add_argument("--noise", type=float, default=0.005)
    p.add_argument("--clip", type=float, default=None)
    p.add_argument("--zero-mean", action="store_true", help="FieldEnergy(zero_mean_stem=True)")
    p.add_argument("--map-l2", type=float, default=0.01, help="weight of the summed squared local energies")
    p.add_argument("--sigma", type=float, default=0.2, help="noise std of the negatives' starts, up to")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--save", help="save the energy's weights here at each evaluation")
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--kernel", type=int, default=3, help="the stem's kernel size")
    p.add_argument("--dilations", type=int, nargs="*", default=[1, 2, 4, 2],
                   help="residual 3x3 blocks (none: a Fields-of-Experts-like energy, one filter bank)")
    p.add_argument("--minutes", type=float, help="stop after this much training time (then evaluate)")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    net = FieldEnergy(3, a.width, a.kernel, tuple(a.dilations), "softplus", output_gain=0.1, zero_mean_stem=a.zero_mean)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr, betas=(0.0, 0.999))
    photos, gen = load_photos("photos", "train"), torch.Generator().manual_seed(0)
    crops, start = PhotoCrops(photos, 40, 32, gen), noisy_crop_start(photos, 40, a.sigma)
    t0, trained = time.time(), 0.0
    for step in range(1, a.steps + 1):
        tick = time.time()
        x = next(crops).float() / 255
        neg = start(32, gen)
        for _ in range(a.langevin):
            neg = (neg + a.noise * torch.randn_like(neg)).requires_grad_(True)
            (g,) = torch.autograd.grad(net(neg).sum(), neg)
            g = g.clamp(-a.clip, a.clip) if a.clip else g
            neg = (neg - a.step * g).clamp(0, 1).detach()
        maps = net(torch.cat([x, neg]), per_position=True)
        e = maps.sum(dim=(1, 2, 3))
        loss = e[:32].mean() - e[32:].mean() + a.map_l2 * maps.pow(2).sum(dim=(1, 2, 3)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        trained += time.time() - tick
        last = a.minutes is not None and trained >= 60 * a.minutes
        if step % a.eval_every == 0 or last:
            net.eval().requires_grad_(False)
            probe = type("Probe", (), {"energy": staticmethod(net)})
            report = {"step": step, "seconds": round(time.time() - t0), "training_seconds": round(trained), "gap": round((e[32:] - e[:32]).mean().item(), 1),
                      "cosine": cosine(probe), "map": map_estimate(probe)}
            print(json.dumps(report), flush=True)
            net.train().requires_grad_(True)
            if a.save:
                torch.save(net.state_dict(), a.save)
        if last:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
