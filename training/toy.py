"""The paper's 1-D experiment (Sec. 6.1): fit a Gaussian EBM to a mixture of two Gaussians.

    python -m training.toy --div js                  # learned (mu, sigma) beside the exact optimum
    python -m training.toy --div js --rejection      # + Wasserstein-1 before/after rejection sampling
    python -m training.toy --div all --figures docs  # every divergence, table + figures

Data p = 0.33 N(-1, 0.25^2) + 0.67 N(2, 2). Model q(x) ~ exp(-E(x)), E(x) = (x - mu)^2 / (2 sigma^2),
initialised at (0, 1); critic H an MLP 1-64-64-1 with tanh. The model is trained as a general EBM:
the gradient (Eq. 18) never uses the partition function. Model batches are exact draws from
N(mu, sigma^2) (the role Langevin plays for images). The exact minimiser of D_f(p || q_{mu,sigma}) is
found by quadrature on a fine grid and Nelder-Mead.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import optimize, stats
from torch import nn

from febm.divergences import get_divergence
from febm.objectives import Objective
from febm.rejection import rejection_sample
from training.step import febm_step

TOY_DIVERGENCES = ("kl", "rkl", "js", "sh", "chi2", "neyman", "cd")
WEIGHTS, MEANS, STDS = (0.33, 0.67), (-1.0, 2.0), (0.25, math.sqrt(2.0))


# --- the data distribution ------------------------------------------------------------------------------
def log_p(x: torch.Tensor) -> torch.Tensor:
    comps = [math.log(w) - 0.5 * ((x - m) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi)) for w, m, s in zip(WEIGHTS, MEANS, STDS)]
    return torch.logsumexp(torch.stack(comps), dim=0)


def sample_p(n: int, generator: torch.Generator) -> torch.Tensor:
    comp = (torch.rand(n, generator=generator) < WEIGHTS[0]).long()  # 1 -> first component
    mean = torch.where(comp == 1, MEANS[0], MEANS[1])
    std = torch.where(comp == 1, STDS[0], STDS[1])
    return mean + std * torch.randn(n, generator=generator)


def log_gauss(x: torch.Tensor, mu: float, sigma: float) -> torch.Tensor:
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))


# --- the exact optimum by quadrature ----------------------------------------------------------------------
GRID = torch.linspace(-12.0, 12.0, 6001, dtype=torch.float64)  # rectangle rule: spectrally accurate here
DX = float(GRID[1] - GRID[0])
LOG_P_GRID = None  # filled on first use


def divergence_to_gaussian(div_name: str, mu: float, sigma: float) -> float:
    """D_f(p || N(mu, sigma^2)) by the rectangle rule on GRID (float64); 'cd' means KL."""
    global LOG_P_GRID
    if LOG_P_GRID is None:
        LOG_P_GRID = log_p(GRID)
    div = get_divergence("kl" if div_name == "cd" else div_name)
    value = div.value(LOG_P_GRID, log_gauss(GRID, mu, sigma), DX).item()
    return value if math.isfinite(value) else math.inf


def exact_optimum(div_name: str) -> tuple[float, float]:
    """argmin over (mu, sigma) of D_f(p || q_{mu,sigma}), best of several Nelder-Mead starts."""
    objective = lambda v: divergence_to_gaussian(div_name, v[0], math.exp(v[1]))  # noqa: E731
    best = None
    for start in [(0.0, 0.0), (2.0, 0.3), (-1.0, -1.0)]:
        res = optimize.minimize(objective, start, method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-12, "maxiter": 4000})
        if best is None or res.fun < best.fun:
            best = res
    return float(best.x[0]), float(math.exp(best.x[1]))


# --- the model ------------------------------------------------------------------------------------------
class GaussianEnergy(nn.Module):
    """E(x) = (x - mu)^2 / (2 sigma^2); sigma is stored as log sigma to stay positive."""

    def __init__(self, mu: float = 0.0, sigma: float = 1.0):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(float(mu)))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.squeeze(-1) - self.mu) ** 2 / (2 * self.sigma**2)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.mu + self.sigma * torch.randn(n, generator=generator)


class MLPCritic(nn.Module):
    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.view(-1, 1)).squeeze(-1)


@dataclass
class ToyConfig:
    div: str = "js"
    steps: int = 6000
    batch: int = 1000
    lr: float = 0.01
    average_last: int = 2000  # report the mean of the last iterates (the lr decays over them too)
    seed: int = 0


def train(cfg: ToyConfig) -> tuple[GaussianEnergy, MLPCritic, dict]:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    energy, critic = GaussianEnergy(), MLPCritic()
    objective = Objective(cfg.div)
    opt_e = torch.optim.Adam(energy.parameters(), lr=cfg.lr)
    opt_h = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    decay_from = cfg.steps - cfg.average_last

    def lr_factor(step):  # constant, then linear decay to 10% over the averaging window
        return 1.0 if step < decay_from else 1.0 - 0.9 * (step - decay_from) / max(cfg.average_last, 1)

    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lr_factor) for o in (opt_e, opt_h)]
    mu_sum = sigma_sum = 0.0
    for step in range(cfg.steps):
        x_pos, x_neg = sample_p(cfg.batch, gen), energy.sample(cfg.batch, gen)
        febm_step(energy, critic, objective, x_pos, x_neg, opt_e, opt_h)
        for s in scheds:
            s.step()
        if step >= decay_from:
            mu_sum += energy.mu.item()
            sigma_sum += energy.sigma.item()
    n_avg = max(cfg.steps - decay_from, 1)
    with torch.no_grad():  # the averaged iterate is the reported model
        energy.mu.fill_(mu_sum / n_avg)
        energy.log_sigma.fill_(math.log(sigma_sum / n_avg))
    return energy, critic, {"mu": energy.mu.item(), "sigma": energy.sigma.item()}


def rejection_distances(energy, critic, n: int, seed: int) -> dict:
    """W1(model samples, data) before and after rejection sampling with exp(H + E)."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        x = energy.sample(n, gen)
        r = critic(x) + energy(x)
    result = rejection_sample(x, r, generator=gen)
    data = sample_p(n, gen).numpy()
    return {
        "distance_before": float(stats.wasserstein_distance(x.numpy(), data)),
        "distance_after": float(stats.wasserstein_distance(result.samples.numpy(), data)),
        "acceptance_rate": result.acceptance_rate,
        "_samples": x,
        "_accepted": result.samples,
    }


def run(div: str, *, steps: int, seed: int, rejection: bool, rejection_samples: int = 20000) -> dict:
    start = time.time()
    energy, critic, learned = train(ToyConfig(div=div, steps=steps, seed=seed, average_last=min(2000, steps // 3)))
    mu_star, sigma_star = exact_optimum(div)
    out = {"div": div, **learned, "mu_star": mu_star, "sigma_star": sigma_star, "steps": steps, "seed": seed}
    if rejection and div != "cd":
        out.update(rejection_distances(energy, critic, rejection_samples, seed))
    out["seconds"] = round(time.time() - start, 1)
    out["_model"] = (energy, critic)
    return out


# --- figures --------------------------------------------------------------------------------------------
def plot_fits(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = torch.linspace(-4, 7, 800, dtype=torch.float64)
    p = log_p(xs).exp().numpy()
    cols = 4
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, res in zip(axes.flat, results):
        ax.plot(xs, p, color="tab:blue", lw=2, label="data p")
        ax.plot(xs, log_gauss(xs, res["mu_star"], res["sigma_star"]).exp(), color="tab:orange", lw=2, label="exact optimum")
        ax.plot(xs, log_gauss(xs, res["mu"], res["sigma"]).exp(), "r--", lw=2, label="learned (f-EBM)")
        ax.set_title(res["div"])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rejection(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = torch.linspace(-4, 7, 800, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    bins = np.linspace(-4, 7, 90)
    ax.hist(res["_samples"].numpy(), bins=bins, density=True, alpha=0.45, color="tab:pink", label="model samples")
    ax.hist(res["_accepted"].numpy(), bins=bins, density=True, alpha=0.45, color="tab:green", label="after rejection")
    ax.plot(xs, log_p(xs).exp(), color="tab:blue", lw=2, label="data p")
    ax.set_title(f"{res['div']}: W1 {res['distance_before']:.3f} -> {res['distance_after']:.3f}, "
                 f"acceptance {res['acceptance_rate']:.0%}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(results: list[dict]) -> str:
    lines = ["| objective | mu (learned) | mu* (exact) | sigma (learned) | sigma* (exact) | max error |", "|---|---|---|---|---|---|"]
    for r in results:
        err = max(abs(r["mu"] - r["mu_star"]), abs(r["sigma"] - r["sigma_star"]))
        lines.append(f"| {r['div']} | {r['mu']:.3f} | {r['mu_star']:.3f} | {r['sigma']:.3f} | {r['sigma_star']:.3f} | {err:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.toy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--div", default="js", help=f"one of {', '.join(TOY_DIVERGENCES)}, or 'all'")
    parser.add_argument("--steps", type=int, default=6000, help="training iterations (default 6000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rejection", action="store_true", help="also report W1 to the data before/after rejection sampling")
    parser.add_argument("--figures", type=Path, help="write toy_fits.png (and toy_rejection.png) into this folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object per run as the last line(s)")
    args = parser.parse_args(argv)

    divs = TOY_DIVERGENCES if args.div == "all" else (args.div,)
    for d in divs:
        if d not in TOY_DIVERGENCES:
            parser.error(f"--div must be one of {', '.join(TOY_DIVERGENCES)} or 'all', got {d!r}")
    torch.set_num_threads(1)  # tiny tensors: threads cost more than they give
    results = []
    for d in divs:
        res = run(d, steps=args.steps, seed=args.seed, rejection=args.rejection or args.figures is not None)
        results.append(res)
        public = {k: v for k, v in res.items() if not k.startswith("_")}
        if not args.json:
            print(f"{d:7s} learned mu={res['mu']:+.4f} sigma={res['sigma']:.4f} | exact mu*={res['mu_star']:+.4f} "
                  f"sigma*={res['sigma_star']:.4f} | {res['seconds']}s", flush=True)
            if "distance_before" in res:
                print(f"        W1 to data: {res['distance_before']:.4f} before, {res['distance_after']:.4f} after "
                      f"rejection (acceptance {res['acceptance_rate']:.1%})", flush=True)
    if args.figures is not None:
        args.figures.mkdir(parents=True, exist_ok=True)
        plot_fits(results, args.figures / "toy_fits.png")
        js = next((r for r in results if r["div"] == "js"), None) or next((r for r in results if "_samples" in r), None)
        if js is not None:
            plot_rejection(js, args.figures / "toy_rejection.png")
        print(markdown_table(results))
    if args.json:
        for res in results:
            print(json.dumps({k: v for k, v in res.items() if not k.startswith("_")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
