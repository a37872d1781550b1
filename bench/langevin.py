"""Langevin sampling speed: the project's sampler vs the common reference loop vs the floor.

    python bench/langevin.py                      # Fashion-MNIST nets (resnet + conv) and the 32x32 RGB resnet
    python bench/langevin.py --steps 40 --batch 64 --repeats 3
    python bench/langevin.py --nets conv --no-channels-last   # bit-for-bit check against the reference
    python bench/langevin.py --nets conv --compile            # torch.compile'd network inside our sampler
    python bench/langevin.py --nets conv --variants           # ways of computing one gradient, vs the floor

(a) ours: febm.sampling.LangevinSampler("ula") (parameters frozen, channels_last where it pays);
(b) reference: the loop most EBM repositories use, parameters still requiring grad:
        x.requires_grad_(True); g = torch.autograd.grad(model(x).sum(), x)[0]; x = (x - a*g + b*noise).detach()
(c) floor: one forward + input-gradient backward of the same network, timed alone (x steps).
Prints one JSON object: image-steps per second for each, speedup_vs_reference = a/b (throughput), and
overhead_vs_floor = time(a)/time(c). Both samplers draw the same noise, and the outputs are compared
(max abs difference, and whether they are bit-for-bit equal).

The three are timed in turn, (a), (b), (c), (a), (b), (c)..., so that a busy machine slows them alike; the
figures use the best of the repeats, and the ratios of the medians are printed too (``median``).
``--compile`` runs (a) with ``torch.compile(network)`` (parameters frozen, as always in the sampler); the first
call, compilation included, is timed separately (``compile_seconds``) and kept out of the steady-state figures,
and the eager sampler is timed in the same rounds (``compiled_vs_eager``: time eager / time compiled).

``--variants`` times, instead, other ways of computing E(x) and grad_x E (``--steps`` evaluations per round, all
in turn, in a new random order each round) against the floor (c): the reference's (parameters requiring grad),
contiguous vs channels_last, spectral-norm weights cached for the chain (torch.nn.utils.parametrize.cached),
torch.func.grad_and_value, torch.compile of the module or of the gradient function, oneDNN switched off, and for
ConvEnergy the 4x4 stride-2 convolutions rewritten as pad + pixel_unshuffle + 2x2 convolutions (the same
function, other kernels).
Each row: image-steps/s (best round) and time(floor) / time(variant) (median of the per-round ratios; > 1 is
faster than the floor), the first call's seconds (compilation), and the max abs difference of the gradient.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from febm.nets import ConvEnergy, ResNetEnergy
from febm.sampling import LangevinSampler, energy_and_grad, frozen


NETS = {  # key: (name, constructor, image shape)
    "resnet": ("fmnist resnet w32", lambda: ResNetEnergy(1, width=32, stages=3), (1, 28, 28)),
    "conv": ("fmnist conv w16", lambda: ConvEnergy(1, width=16, downsamples=3), (1, 28, 28)),
    "rgb": ("32x32 RGB resnet w32", lambda: ResNetEnergy(3, width=32, stages=3), (3, 32, 32)),
}


def reference_loop(model, x, steps, eps, generator):
    a, b = 0.5 * eps, math.sqrt(eps)
    for _ in range(steps):
        x.requires_grad_(True)
        g = torch.autograd.grad(model(x).sum(), x)[0]
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = (x - a * g + b * noise).detach()
    return x


def timed_in_turn(fns: dict, repeats: int) -> tuple[dict, dict, dict]:
    """Time each function once per round, in turn: best and median seconds, and the last outputs."""
    times = {k: [] for k in fns}
    outs = {}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}, {k: statistics.median(v) for k, v in times.items()}, outs


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
    sampled_net = torch.compile(ours_net, mode=args.compile_mode) if args.compile else ours_net

    def run_ref():
        return reference_loop(ref_net, x0.clone(), args.steps, eps, torch.Generator().manual_seed(1))

    def run_ours():
        return sampler(sampled_net, x_ours, generator=torch.Generator().manual_seed(1))

    def run_floor():  # always the eager network: what one step costs without any sampler around it
        with frozen(ours_net):
            for _ in range(args.steps):
                energy_and_grad(ours_net, x_ours)

    t = time.perf_counter()
    run_ours()  # warm-up (and compilation)
    first_call = time.perf_counter() - t
    run_ref(), run_floor()
    fns = {"ours": run_ours, "reference": run_ref, "floor": run_floor}
    if args.compile:  # the same sampler on the eager network, timed in the same rounds
        fns["ours_eager"] = lambda: sampler(ours_net, x_ours, generator=torch.Generator().manual_seed(1))
        fns["ours_eager"]()
    best, median, outs = timed_in_turn(fns, args.repeats)
    img_steps = args.batch * args.steps
    out_ours, out_ref = outs["ours"], outs["reference"]
    result = {
        "net": name, "image_steps_per_s": {k: img_steps / best[k] for k in fns},
        "speedup_vs_reference": best["reference"] / best["ours"], "overhead_vs_floor": best["ours"] / best["floor"],
        "median": {"speedup_vs_reference": median["reference"] / median["ours"],
                   "overhead_vs_floor": median["ours"] / median["floor"]},
        "max_abs_difference_vs_reference": (out_ours - out_ref).abs().max().item(),
        "bit_identical_to_reference": torch.equal(out_ours, out_ref),
    }
    if args.compile:
        result["compile_seconds"] = first_call - best["ours"]  # first call minus one steady-state call
        result["compiled_vs_eager"] = {"best": best["ours_eager"] / best["ours"],
                                       "median": median["ours_eager"] / median["ours"]}
        result["max_abs_difference_compiled_vs_eager"] = (out_ours - outs["ours_eager"]).abs().max().item()
    return result


def space_to_depth_conv_energy(net: ConvEnergy):
    """ConvEnergy's function with each 4x4 stride-2 convolution as pad + pixel_unshuffle(2) + 2x2 convolution.

    Weights are read once (a snapshot: fine for a benchmark, not for training)."""
    with torch.no_grad():
        convs = [m for m in net.body if isinstance(m, torch.nn.Conv2d)]
        stem = (convs[0].weight.clone(), convs[0].bias.clone())
        rewritten = []
        for conv in convs[1:]:
            w = conv.weight.contiguous()
            o, c = w.shape[:2]  # w[o, c, 2a + p, 2b + q] -> w2[o, 4c + 2p + q, a, b]
            w2 = w.view(o, c, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(o, 4 * c, 2, 2)
            rewritten.append((w2.contiguous(memory_format=torch.channels_last), conv.bias.clone()))
        head = (net.head.weight.clone(), net.head.bias.clone())

    def energy(x):
        h = F.silu(F.conv2d(2.0 * x - 1.0, *stem, padding=1))
        for w2, b in rewritten:
            n = h.shape[-1]
            extra = n % 2  # pixel_unshuffle needs an even size; the extra row/column only feeds a cropped output
            h = F.conv2d(F.pixel_unshuffle(F.pad(h, (1, 1 + extra, 1, 1 + extra)), 2), w2, b)
            out = (n - 2) // 2 + 1
            h = F.silu(h[..., :out, :out])
        return F.linear(h.sum(dim=(2, 3)), *head).squeeze(-1)

    return energy


def variants(name, make_net, shape, args):
    x0 = torch.rand(args.batch, *shape, generator=torch.Generator().manual_seed(0))
    x_cl = x0.contiguous(memory_format=torch.channels_last)
    ref_net = make_net().eval()

    def copy(memory_format):
        net = make_net().eval()
        net.load_state_dict(ref_net.state_dict())
        return net.to(memory_format=memory_format).requires_grad_(False)

    contig, cl = copy(torch.contiguous_format), copy(torch.channels_last)

    def reference_grad(x):
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(ref_net(x).sum(), x)[0]

    def func_grad(net):
        value_and_grad = torch.func.grad_and_value(lambda x: (lambda e: (e.sum(), e))(net(x)), has_aux=True)
        return lambda x: value_and_grad(x)[0]

    def cached(x):
        with parametrize.cached():
            return energy_and_grad(cl, x)[1]

    def no_onednn(x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a note about TF32 on Intel GPUs
            with torch.backends.mkldnn.flags(enabled=False):
                return energy_and_grad(cl, x)[1]

    grads = {  # name: (gradient function, input)
        "floor: frozen, channels_last": (lambda x: energy_and_grad(cl, x)[1], x_cl),
        "reference: parameters require grad, contiguous": (reference_grad, x0),
        "frozen, contiguous": (lambda x: energy_and_grad(contig, x)[1], x0),
        "frozen, channels_last, spectral norm cached": (cached, x_cl),
        "torch.func.grad_and_value, channels_last": (func_grad(cl), x_cl),
        "torch.compile(module), channels_last": (lambda x, m=torch.compile(cl): energy_and_grad(m, x)[1], x_cl),
        "torch.compile(module), contiguous": (lambda x, m=torch.compile(contig): energy_and_grad(m, x)[1], x0),
        "torch.compile(grad_and_value), channels_last": (torch.compile(func_grad(cl)), x_cl),
        "oneDNN off, channels_last": (no_onednn, x_cl),
    }
    if isinstance(ref_net, ConvEnergy):
        s2d = space_to_depth_conv_energy(cl)
        grads["4x4/2 convs as pixel_unshuffle + 2x2, channels_last"] = (lambda x: energy_and_grad(s2d, x)[1], x_cl)
    g_ref = reference_grad(x0)
    rows = {}
    for key, (fn, x) in grads.items():
        t = time.perf_counter()
        g = fn(x)  # warm-up, compilation
        rows[key] = {"first_call_seconds": time.perf_counter() - t,
                     "max_abs_grad_difference_vs_reference": (g - g_ref).abs().max().item()}

    def run(fn, x):
        for _ in range(args.steps):
            fn(x)

    rounds = {k: [] for k in grads}
    order = list(grads)
    shuffle = random.Random(0).shuffle
    for _ in range(args.repeats):  # one evaluation of each per round, in a new random order every round
        shuffle(order)
        t, _, _ = timed_in_turn({k: (lambda fn=grads[k][0], x=grads[k][1]: run(fn, x)) for k in order}, 1)
        for k, v in t.items():
            rounds[k].append(v)
    floor = rounds["floor: frozen, channels_last"]
    for k, times in rounds.items():
        rows[k] = {"image_steps_per_s": args.batch * args.steps / min(times),
                   "floor_over_variant": statistics.median(f / v for f, v in zip(floor, times)), **rows[k]}
    return {"net": name, "variants": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--nets", nargs="+", choices=sorted(NETS), default=list(NETS),
                        help="which networks (default: all)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network sampled by (a)")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--variants", action="store_true", help="time ways of computing the gradient instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [(variants if args.variants else bench)(*NETS[key], args) for key in args.nets]
    print(json.dumps({"machine": f"{platform.processor() or platform.machine()}, {args.threads} threads",
                      "torch": torch.__version__, "steps": args.steps, "batch": args.batch,
                      "repeats": args.repeats, "channels_last": args.channels_last,
                      "compile": args.compile and (args.compile_mode or "default"), "variants": args.variants,
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
