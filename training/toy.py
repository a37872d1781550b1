"""The paper's 1-D experiment (Sec. 6.1): fit a Gaussian EBM to a mixture of two Gaussians.

    python -m training.toy --div js                  # learned (mu, sigma) beside the exact optimum
    python -m training.toy --div js --rejection      # + Wasserstein-1 before/after rejection sampling
    python -m training.toy --div all --figures docs  # every objective, table + figures (docs/toy.md)

Data p = 0.33 N(-1, 0.25^2) + 0.67 N(2, 2). Model q(x) ~ exp(-E(x)), E(x) = (x - mu)^2 / (2 sigma^2),
initialised at (0, 1). The model is trained as a general EBM: the gradient (Eq. 18) never uses the
partition function. Model batches are exact draws from N(mu, sigma^2) (the role Langevin plays for
images). Critic H: the paper's MLP 1-64-64-1 with tanh, plus a learned quadratic a x + b x^2 (ToyCritic
says why). Algorithm 1 (training.step.febm_step), batch 1000 data + 1000 model samples, Adam lr 0.01,
200 critic-only warm-up steps, 4000 steps whose last 2000 decay the lr to 10% and are averaged; chi2
departs from this (DIVERGENCE_SETTINGS). The exact minimiser of D_f(p || q_{mu,sigma}) is found by
quadrature on a fine grid and Nelder-Mead.
"""

from __future__ import annotations

import argparse
import functools
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
from febm.nets import MLPEnergy
from febm.objectives import Objective
from febm.rejection import rejection_sample
from training.step import febm_step

TOY_DIVERGENCES = ("kl", "rkl", "js", "sh", "chi2", "neyman", "cd")
WEIGHTS, MEANS, STDS = (0.33, 0.67), (-1.0, 2.0), (0.25, math.sqrt(2.0))


# --- the data distribution ------------------------------------------------------------------------------
def log_p(x: torch.Tensor) -> torch.Tensor:
    comps = [math.log(w) + log_gauss(x, m, s) for w, m, s in zip(WEIGHTS, MEANS, STDS)]
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


@functools.lru_cache(maxsize=None)
def exact_optimum(div_name: str) -> tuple[float, float]:
    """argmin over (mu, sigma) of D_f(p || q_{mu,sigma}), the better of two Nelder-Mead runs: from the
    initial (0, 1), and from near moment matching, where every divergence here is finite."""
    objective = lambda v: divergence_to_gaussian(div_name, v[0], math.exp(v[1]))  # noqa: E731
    best = None
    for start in [(0.0, 0.0), (1.0, 0.5)]:
        res = optimize.minimize(objective, start, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10})
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


class _Tanh(torch.autograd.Function):
    """tanh computed as 2 sigmoid(2x) - 1: the same function, about twice as fast as torch.tanh on CPU."""

    @staticmethod
    def forward(ctx, x):
        y = torch.sigmoid(2 * x).mul_(2).sub_(1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class FastTanh(nn.Module):
    def forward(self, x):
        return _Tanh.apply(x)


class ToyCritic(nn.Module):
    """H(x) = MLP(x) + a x + b x^2: the paper's 1-64-64-1 tanh MLP plus a quadratic skip term (a = b = 0 at init).

    The optimal critic is H* = log p(x) + log Z_theta (r = H + E = log p/q), quadratic in the tails. A tanh
    MLP extrapolates flat, so without the skip term the estimated ratio exp(H + E) grows like exp(E) away
    from the data: chi2 and Neyman chi2, which weigh the tails heavily, then end biased or diverge
    (docs/toy.md, ablation).
    """

    def __init__(self, hidden: int = 64, quadratic: bool = True):
        super().__init__()
        self.mlp = MLPEnergy(1, hidden=hidden, depth=2, activation="tanh")
        self.mlp.net = nn.Sequential(*(FastTanh() if isinstance(m, nn.Tanh) else m for m in self.mlp.net))
        self.skip = nn.Parameter(torch.zeros(2)) if quadratic else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1)
        h = self.mlp(x)
        return h if self.skip is None else h + self.skip[0] * x + self.skip[1] * x * x


@dataclass
class ToyConfig:
    div: str = "js"
    steps: int = 4000
    batch: int = 1000
    lr: float = 0.01  # the paper's; the last `average_last` steps decay it linearly to 10% and average the iterates
    average_last: int = 2000
    betas: tuple[float, float] = (0.9, 0.99)  # beta2 0.99: Adam forgets an early gradient spike in ~100 steps
    warmup: int = 200  # critic-only steps before the energy moves
    clip: float | None = None  # gradient-norm clip for both networks during the first `clip_steps` steps
    clip_steps: int = 0
    quadratic: bool = True  # ToyCritic's skip term (False = the plain MLP, for the ablation)
    seed: int = 0


#: Per-divergence departures from ToyConfig. chi2(p || q) is infinite at the initial (0, 1) (p's N(2, 2)
#: component has heavier tails than q), so its critic has no maximiser there: no warm-up, and clipped
#: gradients until the model is wide enough for the estimator's variance to be finite. Clipping biases
#: the fixed point, hence only early. Neyman chi2 needs the warm-up: with a cold critic the first
#: energy steps head for sigma > 2, where it is infinite.
DIVERGENCE_SETTINGS = {"chi2": {"warmup": 0, "clip": 1.0, "clip_steps": 1000}}


def config_for(div: str, **overrides) -> ToyConfig:
    return ToyConfig(div=div, **{**DIVERGENCE_SETTINGS.get(div, {}), **overrides})


def train(cfg: ToyConfig) -> tuple[GaussianEnergy, ToyCritic, dict]:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    energy, critic = GaussianEnergy(), ToyCritic(quadratic=cfg.quadratic)
    objective = Objective(cfg.div)
    opt_e = torch.optim.Adam(energy.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_h = torch.optim.Adam(critic.parameters(), lr=cfg.lr, betas=cfg.betas)
    draw = lambda: (sample_p(cfg.batch, gen), energy.sample(cfg.batch, gen))  # noqa: E731

    for _ in range(cfg.warmup if objective.uses_critic else 0):
        febm_step(energy, critic, objective, *draw(), opt_e, opt_h, update_energy=False)
    decay_from = cfg.steps - cfg.average_last
    mu_sum = sigma_sum = 0.0
    for step in range(cfg.steps):
        if step >= decay_from:  # linear decay to 10% over the averaging window
            for group in opt_e.param_groups + opt_h.param_groups:
                group["lr"] = cfg.lr * (1.0 - 0.9 * (step - decay_from) / cfg.average_last)
        clip = cfg.clip if step < cfg.clip_steps else None
        febm_step(energy, critic, objective, *draw(), opt_e, opt_h, max_grad_norm=clip)
        if step >= decay_from:
            mu_sum += energy.mu.item()
            sigma_sum += energy.sigma.item()
    with torch.no_grad():  # the averaged iterate is the reported model
        energy.mu.fill_(mu_sum / cfg.average_last)
        energy.log_sigma.fill_(math.log(sigma_sum / cfg.average_last))
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


def run(div: str, *, seed: int = 0, rejection: bool = False, rejection_samples: int = 20000, **overrides) -> dict:
    """Train one objective (settings: ToyConfig + DIVERGENCE_SETTINGS + overrides) and compare with the optimum."""
    start = time.time()
    cfg = config_for(div, seed=seed, **overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads cost more than they give (and other jobs share the CPU)
    try:
        energy, critic, learned = train(cfg)
    finally:
        torch.set_num_threads(threads)
    mu_star, sigma_star = exact_optimum(div)
    out = {"div": div, **learned, "mu_star": mu_star, "sigma_star": sigma_star, "steps": cfg.steps, "seed": seed}
    if rejection and div != "cd":  # contrastive divergence has no critic, hence no density ratio
        out.update(rejection_distances(energy, critic, rejection_samples, seed))
    out["seconds"] = round(time.time() - start, 1)
    out["_model"] = (energy, critic)
    return out


# --- figures and table ----------------------------------------------------------------------------------
XS = torch.linspace(-4, 7, 800, dtype=torch.float64)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fits(results: list[dict], path: Path) -> None:
    """Paper Fig. 1: the data density, the exact optimum and the learned model, one panel per objective."""
    plt = _pyplot()
    cols, rows = 4, math.ceil(len(results) / 4)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, res in zip(axes.flat, results):
        ax.plot(XS, log_p(XS).exp(), color="tab:blue", lw=2, label="data p")
        optimum = log_gauss(XS, res["mu_star"], res["sigma_star"]).exp()
        ax.plot(XS, optimum, color="tab:orange", lw=2, label="exact optimum")
        ax.plot(XS, log_gauss(XS, res["mu"], res["sigma"]).exp(), "r--", lw=2, label="learned (f-EBM)")
        ax.set_title(res["div"])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rejection(res: dict, path: Path) -> None:
    """Paper Fig. 2: model samples before (pink) and after (green) rejection with exp(H + E), data density (blue)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    bins = np.linspace(-4, 7, 90)
    ax.hist(res["_samples"].numpy(), bins=bins, density=True, alpha=0.45, color="tab:pink", label="model samples")
    ax.hist(res["_accepted"].numpy(), bins=bins, density=True, alpha=0.45, color="tab:green", label="after rejection")
    ax.plot(XS, log_p(XS).exp(), color="tab:blue", lw=2, label="data p")
    ax.set_title(f"{res['div']}: W1 to data {res['distance_before']:.3f} -> {res['distance_after']:.3f}, "
                 f"acceptance {res['acceptance_rate']:.0%}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(results: list[dict]) -> str:
    lines = ["| objective | mu | mu* (exact) | sigma | sigma* (exact) | max error | seconds |", "|---" * 7 + "|"]
    for r in results:
        err = max(abs(r["mu"] - r["mu_star"]), abs(r["sigma"] - r["sigma_star"]))
        lines.append(f"| {r['div']} | {r['mu']:.4f} | {r['mu_star']:.4f} | {r['sigma']:.4f} | {r['sigma_star']:.4f} "
                     f"| {err:.4f} | {r['seconds']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.toy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--div", default="js", choices=(*TOY_DIVERGENCES, "all"), help="objective (default js), or all")
    parser.add_argument("--steps", type=int, help=f"training iterations (default {ToyConfig.steps}; half are averaged)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rejection", action="store_true", help="W1 to the data before/after rejection sampling")
    parser.add_argument("--figures", type=Path, help="write toy_fits.png, toy_rejection.png here (implies --rejection)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per objective as the last line(s)")
    args = parser.parse_args(argv)
    if args.div == "cd" and args.rejection:
        parser.error("--rejection needs a critic (the density ratio exp(H + E)); 'cd' has none")

    overrides = {} if args.steps is None else {"steps": args.steps, "average_last": args.steps // 2}
    rejection = args.rejection or args.figures is not None  # skipped for cd
    results = []
    for div in TOY_DIVERGENCES if args.div == "all" else (args.div,):
        res = run(div, seed=args.seed, rejection=rejection, **overrides)
        results.append(res)
        if not args.json:
            print(f"{div:7s} learned mu={res['mu']:+.4f} sigma={res['sigma']:.4f} | exact mu*={res['mu_star']:+.4f} "
                  f"sigma*={res['sigma_star']:.4f} | {res['seconds']}s", flush=True)
            if "distance_before" in res:
                print(f"        W1 to data: {res['distance_before']:.4f} before, {res['distance_after']:.4f} after "
                      f"rejection (acceptance {res['acceptance_rate']:.1%})", flush=True)
    if args.figures is not None:
        args.figures.mkdir(parents=True, exist_ok=True)
        plot_fits(results, args.figures / "toy_fits.png")
        shown = [r for r in results if "_samples" in r]
        if shown:  # js when it ran, else the first objective with a critic
            shown = next((r for r in shown if r["div"] == "js"), shown[0])
            plot_rejection(shown, args.figures / "toy_rejection.png")
        print(markdown_table(results))
    for res in results if args.json else ():
        print(json.dumps({k: v for k, v in res.items() if not k.startswith("_")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
