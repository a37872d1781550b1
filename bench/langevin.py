"""Langevin sampling speed: the project's sampler vs the common reference loop vs the floor.

    python bench/langevin.py                      # Fashion-MNIST nets (resnet + conv) and the 32x32 RGB resnet
    python bench/langevin.py --steps 40 --batch 64 --repeats 3

(a) ours: febm.sampling.LangevinSampler("ula") (parameters frozen, channels_last where it pays);
(b) reference: the loop most EBM repositories use, parameters still requiring grad:
        x.requires_grad_(True); g = torch.autograd.grad(model(x).sum(), x)[0]; x = (x - a*g + b*noise).detach()
(c) floor: one forward + input-gradient backward of the same network, timed alone (x steps).
Prints one JSON object: image-steps per second for each, speedup_vs_reference = a/b (throughput), and
overhead_vs_floor = time(a)/time(c). Both samplers draw the same noise, and the outputs are compared.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch

from febm.nets import ConvEnergy, ResNetEnergy
from febm.sampling import LangevinSampler, energy_and_grad, frozen


def reference_loop(model, x, steps, eps, generator):
    a, b = 0.5 * eps, math.sqrt(eps)
    for _ in range(steps):
        x.requires_grad_(True)
        g = torch.autograd.grad(model(x).sum(), x)[0]
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = (x - a * g + b * noise).detach()
    return x


def timed(fn, repeats):
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench(name, make_net, shape, args):
    eps = 1e-3
    x0 = torch.rand(args.batch, *shape, generator=torch.Generator().manual_seed(0))
    ref_net = make_net().eval()
    ours_net = make_net().eval()
    ours_net.load_state_dict(ref_net.state_dict())
    if args.channels_last:
        ours_net = ours_net.to(memory_format=torch.channels_last)
    x_ours = x0.contiguous(memory_format=torch.channels_last) if args.channels_last else x0
    sampler = LangevinSampler("ula", steps=args.steps, step_size=eps, clamp=None)

    def run_ref():
        return reference_loop(ref_net, x0.clone(), args.steps, eps, torch.Generator().manual_seed(1))

    def run_ours():
        return sampler(ours_net, x_ours, generator=torch.Generator().manual_seed(1))

    def run_floor():
        with frozen(ours_net):
            for _ in range(args.steps):
                energy_and_grad(ours_net, x_ours)

    run_ref(), run_ours(), run_floor()  # warm-up
    t_ref, out_ref = timed(run_ref, args.repeats)
    t_ours, out_ours = timed(run_ours, args.repeats)
    t_floor, _ = timed(run_floor, args.repeats)
    img_steps = args.batch * args.steps
    return {
        "net": name, "image_steps_per_s": {"ours": img_steps / t_ours, "reference": img_steps / t_ref,
                                           "floor": img_steps / t_floor},
        "speedup_vs_reference": t_ref / t_ours, "overhead_vs_floor": t_ours / t_floor,
        "max_abs_difference_vs_reference": (out_ours - out_ref).abs().max().item(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nets = [
        ("fmnist resnet w32", lambda: ResNetEnergy(1, width=32, stages=3), (1, 28, 28)),
        ("fmnist conv w16", lambda: ConvEnergy(1, width=16, downsamples=3), (1, 28, 28)),
        ("32x32 RGB resnet w32", lambda: ResNetEnergy(3, width=32, stages=3), (3, 32, 32)),
    ]
    results = [bench(name, make, shape, args) for name, make, shape in nets]
    print(json.dumps({"machine": f"{platform.processor() or platform.machine()}, {args.threads} threads",
                      "torch": torch.__version__, "steps": args.steps, "batch": args.batch,
                      "channels_last": args.channels_last, "results": results}, indent=1))


if __name__ == "__main__":
    main()
