"""A supervised reference restorer for bench/restoration.py: what a plain network trained on pairs reaches.

    python -m bench.supervised --out bench/weights/supervised.safetensors            # 15 minutes
    python -m bench.supervised --match fmnist-js --cpu-minutes 357.1                  # the shipped EBM's training time
    python -m bench.supervised --out /tmp/sup.safetensors --steps 20 --match runs/pilot-conv16-js/model

One fully-convolutional network for every corruption, like the EBM: it sees the corrupted image (unknown
pixels 0), the known mask and a constant sigma map (0 for masks), and predicts the clean image as a residual
on its input. The body is IRCNN-like (Zhang et al., CVPR 2017): 3x3 convolutions with dilations
1-2-3-4-8-4-3-2-1, whose receptive field (57 px) covers a whole 28x28 image, so it can fill the left half.
Its width is chosen to match the EBM energy network's parameter count (``--match``) or given (``--width``).
Trained on the training split only, with random corruptions from the benchmark's families (Gaussian noise,
sigma ~ U[0.05, 0.55], clipped; boxes of half size at random places; one random half; random pixels with
30-90% unknown), MSE, Adam, seeded. Saved as safetensors plus a JSON sidecar (same stem) describing it. ``--cpu-minutes``
budgets the process's CPU time (one thread: one core's time, fair however loaded the machine is). A run
writes its state to OUT's stem + ``.state.safetensors`` every 250 steps and at its end: the same command
resumes a killed run, and a larger budget continues a finished one (a reference at several budgets).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from febm.files import atomic_path, write_atomic
from febm.model import load_model
from training.checkpoint import load_state, save_state
from training.data import batches, load_dataset, to_float

DILATIONS = (1, 2, 3, 4, 8, 4, 3, 2, 1)
SIGMA_RANGE = (0.05, 0.55)


class Restorer(nn.Module):
    """(corrupted, known mask, sigma) -> clean estimate; channels = image channels."""

    def __init__(self, channels: int = 1, width: int = 48, dilations: tuple[int, ...] = DILATIONS):
        super().__init__()
        sizes = [channels + 2] + [width] * (len(dilations) - 1) + [channels]
        layers = []
        for i, d in enumerate(dilations):
            layers += [nn.Conv2d(sizes[i], sizes[i + 1], 3, padding=d, dilation=d), nn.ReLU()]
        self.body = nn.Sequential(*layers[:-1])  # no ReLU after the last convolution
        self.channels, self.width, self.dilations = channels, width, tuple(dilations)

    def forward(self, y: Tensor, known: Tensor, sigma: Tensor) -> Tensor:
        """y (B, C, H, W); known (B, 1, H, W) 1 = observed; sigma (B,) noise std (0 for masks)."""
        sigma_map = sigma.view(-1, 1, 1, 1).expand(-1, 1, *y.shape[2:])
        return y + self.body(torch.cat([y, known, sigma_map], dim=1))


def width_for(params: int, channels: int = 1, dilations: tuple[int, ...] = DILATIONS) -> int:
    """The width whose Restorer has about ``params`` parameters (root of the count's quadratic in width)."""
    inner = len(dilations) - 2
    a, b = 9 * inner, 9 * (channels + 2) + 1 + inner + 9 * channels  # count = a w^2 + b w + channels
    return max(1, round((-b + math.sqrt(b * b + 4 * a * (params - channels))) / (2 * a)))


@torch.no_grad()
def restore(net: Restorer, y: Tensor, known: Tensor, sigma: Tensor | float) -> Tensor:
    """The network's estimate in [0, 1], observed pixels of masked images kept exactly (as the EBM does)."""
    sigma = torch.as_tensor(sigma, dtype=y.dtype, device=y.device).expand(y.shape[0])
    out = net(y * known, known, sigma).clamp(0, 1)
    return torch.where((known > 0) & (sigma.view(-1, 1, 1, 1) == 0), y, out)


# --- training data --------------------------------------------------------------------------------------------
def random_masks(n: int, h: int, w: int, gen: torch.Generator) -> Tensor:
    """(n, 1, h, w) known masks: a half-size box anywhere, one random half, or 30-90% random pixels unknown."""
    masks = torch.ones(n, 1, h, w)
    kinds = torch.randint(3, (n,), generator=gen)
    for i, kind in enumerate(kinds.tolist()):
        if kind == 0:
            top = int(torch.randint(h - h // 2 + 1, (1,), generator=gen))
            left = int(torch.randint(w - w // 2 + 1, (1,), generator=gen))
            masks[i, :, top:top + h // 2, left:left + w // 2] = 0
        elif kind == 1:
            side = int(torch.randint(4, (1,), generator=gen))
            half = [(slice(None), slice(0, w // 2)), (slice(None), slice(w - w // 2, w)),
                    (slice(0, h // 2), slice(None)), (slice(h - h // 2, h), slice(None))][side]
            masks[i, :, half[0], half[1]] = 0
        else:
            fraction = 0.3 + 0.6 * float(torch.rand((), generator=gen))
            masks[i, 0] = (torch.rand(h, w, generator=gen) >= fraction).float()
    return masks


def random_corruption(x: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Half the batch noisy (clipped, as a PNG holds it), half masked: (y, known, sigma)."""
    b, _, h, w = x.shape
    noisy = torch.rand(b, generator=gen) < 0.5
    sigma = torch.where(noisy, SIGMA_RANGE[0] + (SIGMA_RANGE[1] - SIGMA_RANGE[0]) * torch.rand(b, generator=gen),
                        torch.zeros(b))
    known = torch.where(noisy.view(-1, 1, 1, 1), torch.ones(b, 1, h, w), random_masks(b, h, w, gen))
    y = (x + sigma.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=gen)).clamp(0, 1) * known
    return y, known, sigma


def train_step(net: Restorer, opt: torch.optim.Optimizer, x: Tensor, gen: torch.Generator) -> float:
    """One Adam step of MSE on a freshly corrupted batch; returns the loss before the step."""
    y, known, sigma = (t.to(x.device) for t in random_corruption(x.cpu(), gen))
    loss = (net(y, known, sigma) - x).pow(2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


# --- files ----------------------------------------------------------------------------------------------------
def sidecar(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def save(net: Restorer, path: str | os.PathLike, info: dict) -> None:
    """Weights and sidecar, each written to a temp file then renamed, so a killed run leaves no torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"arch": "ircnn", "channels": net.channels, "width": net.width, "dilations": list(net.dilations),
            "parameters": sum(p.numel() for p in net.parameters()), **info}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    write_atomic(sidecar(path), json.dumps(meta, indent=2) + "\n")


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Restorer, dict]:
    meta = json.loads(sidecar(path).read_text())
    net = Restorer(meta["channels"], meta["width"], tuple(meta["dilations"]))
    net.load_state_dict(load_file(str(path)))
    return net.to(device).eval(), meta


# --- command line ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="bench/weights/supervised.safetensors")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--match", metavar="MODEL", help="width to match this EBM's energy-network parameter count")
    p.add_argument("--width", type=int, default=52, help="used when --match is not given (52: ~172 k parameters)")
    p.add_argument("--minutes", type=float, help="wall-time budget (default 15 when no other budget is given)")
    p.add_argument("--cpu-minutes", type=float, help="budget in this process's CPU time (fair under load)")
    p.add_argument("--steps", type=int, help="stop after this many steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.minutes is not None and args.cpu_minutes is not None:
        p.error("give --minutes (wall time) or --cpu-minutes, not both")
    minutes = args.minutes if {args.minutes, args.cpu_minutes, args.steps} != {None} else 15.0
    budget, clock = (60 * args.cpu_minutes, time.process_time) if args.cpu_minutes else \
        (60 * minutes if minutes else math.inf, time.perf_counter)

    data = load_dataset(args.dataset, "train")
    channels = data.images.shape[1]
    target = None
    if args.match:
        target = sum(p.numel() for p in load_model(args.match).energy.parameters())
    width = width_for(target, channels) if target else args.width
    torch.manual_seed(args.seed)
    net = Restorer(channels, width).to(args.device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    stream = batches(data.images, args.batch_size, generator=gen)
    state_path = Path(args.out).with_suffix(".state.safetensors")
    step, spent, losses = 0, 0.0, []
    if state_path.exists():  # resume a killed run, or continue a finished one
        state = load_state(state_path)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        stream.load_state_dict(state["stream"])
        step, spent, losses = state["step"], state["spent"], state["losses"]
        print(f"resuming {state_path} at step {step}", file=sys.stderr)
    started = clock() - spent

    def save_progress() -> None:
        save_state(state_path, {"net": net.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                                "stream": stream.state_dict(), "step": step, "spent": clock() - started,
                                "losses": losses})

    bar = tqdm(total=args.steps, initial=step, desc="supervised", unit="step")
    while (args.steps is None or step < args.steps) and clock() - started < budget:
        losses = [*losses[-49:], train_step(net, opt, to_float(next(stream)).to(args.device), gen)]
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{sum(losses) / len(losses):.5f}")
        if step % 250 == 0:
            save_progress()
    bar.close()
    save_progress()
    elapsed = clock() - started
    save(net, args.out, {"steps": step, ("cpu_minutes" if args.cpu_minutes else "minutes"): round(elapsed / 60, 2),
                         "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "dataset": args.dataset,
                         "split": "train", "matched_model": args.match, "matched_parameters": target,
                         "final_loss": sum(losses) / max(1, len(losses)), "device": str(args.device),
                         "command": " ".join(["python -m bench.supervised", *(argv or sys.argv[1:])])})
    print(f"saved {args.out} ({step} steps, {elapsed / 60:.1f} min, loss {losses[-1] if losses else float('nan'):.5f})")


if __name__ == "__main__":
    main()
