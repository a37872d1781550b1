"""Langevin samplers for an energy E(x) (low energy = likely) and the replay buffer used in training.

Three update rules, one driver:

- ``authors``: the f-EBM/IGEBM training sampler. x += N(0, noise^2); g = clip(grad E, +-grad_clip);
  x = clamp(x - step_size * g). Step size and noise are decoupled: noisy gradient descent, not a
  calibrated sampler, but what the authors trained with.
- ``ula``: unadjusted Langevin, Eq. 5 of the paper, on E/T: x = x - (eps/2) grad E / T + sqrt(eps) z.
- ``mala``: ULA proposals with a Metropolis-Hastings correction, exact for exp(-E/T) at any eps (in the clamp
  box: proposals are reflected at its walls, and the correction uses the reflected proposal's density).

All take a ``known_mask`` (1 = observed: those entries never change), a ``torch.Generator`` for
reproducibility (or one per row of the batch: each row then draws its own stream, so that its chain does not
depend on the rest of the batch), and can return the whole chain.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence, Union

import torch
from torch import Tensor, nn

EnergyFn = Callable[[Tensor], Tensor]  # (B, ...) -> (B,)
Generators = Union[torch.Generator, Sequence[torch.Generator], None]  # one for the batch, or one per row
StartFn = Callable[[int, "torch.Generator | None"], Tensor]  # (n, generator) -> n starting points

METHODS = ("authors", "ula", "mala")
MALA_MARGIN = 0.01  # MALA starts at least this fraction of the clamp box away from its walls (see run)
NOISE_FLOOR = 1e-10  # PCAGaussian.posterior: observation variance, (1e-5)^2, far below 8-bit resolution


@contextlib.contextmanager
def frozen(energy: EnergyFn):
    """Switch off parameter gradients while sampling: autograd then only differentiates w.r.t. x."""
    params = [p for p in energy.parameters() if p.requires_grad] if isinstance(energy, nn.Module) else []
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def energy_and_grad(energy: EnergyFn, x: Tensor) -> tuple[Tensor, Tensor]:
    """E(x) per sample, shape (B,), and grad_x E, computed in one forward/backward pass."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy(x)
        if e.numel() != x.shape[0]:
            raise ValueError(f"the energy must return one energy per sample, ({x.shape[0]},); got {tuple(e.shape)}")
        e = e.reshape(x.shape[0])  # (B, 1) -> (B,): never broadcast against per-sample terms
        (g,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), g


def random_like(x: Tensor, generator, kind: str = "normal", shape: tuple[int, ...] | None = None) -> Tensor:
    """Standard normal (or uniform) draws of ``shape`` (default x's), x's device and dtype, from ``generator``:
    one generator for the whole batch, or a sequence of one per row, each drawing its row's values."""
    shape = tuple(x.shape) if shape is None else tuple(shape)
    draw = torch.randn if kind == "normal" else torch.rand
    if generator is None or isinstance(generator, torch.Generator):
        return draw(shape, generator=generator, device=x.device, dtype=x.dtype)
    if len(generator) != shape[0]:
        raise ValueError(f"one generator per row: got {len(generator)} for a batch of {shape[0]}")
    return torch.cat([draw((1, *shape[1:]), generator=g, device=x.device, dtype=x.dtype) for g in generator])


def _per_sample(v: Tensor) -> Tensor:
    """(B, ...) -> (B, n): also for 1-D batches (B,) of scalars."""
    return v[:, None] if v.dim() == 1 else v.flatten(1)


@dataclass
class LangevinOutput:
    x: Tensor
    chain: Tensor | None = None  # (steps + 1, B, ...) when requested
    grad_norm: float = 0.0  # mean L2 norm of grad_x E per sample, averaged over steps
    acceptance: float | None = None  # MALA only


@dataclass
class LangevinSampler:
    """Settings of a Langevin chain; call it on an energy and a starting batch.

    ``step_size`` is eps for ula/mala and the gradient multiplier for ``authors``; ``noise`` is the
    authors' per-step noise std (ula/mala use sqrt(eps)). ``clamp`` keeps samples in the data range.
    ``temperature``: ula/mala sample exp(-E/T) with this T (None: 1); the authors' sampler has none to set,
    its T follows from its step and noise (:attr:`target_temperature`).
    """

    method: str = "authors"
    steps: int = 60
    step_size: float = 10.0
    noise: float = 0.005
    grad_clip: float | None = 0.01
    clamp: tuple[float, float] | None = (0.0, 1.0)
    temperature: float | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown sampler {self.method!r}; valid: {', '.join(METHODS)}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if not self.step_size > 0:
            raise ValueError(f"step_size must be > 0, got {self.step_size}")
        if self.clamp is not None:
            self.clamp = tuple(float(v) for v in self.clamp)
        if self.temperature is not None:
            if self.method == "authors":
                raise ValueError("the authors' sampler has no temperature to set: it samples exp(-E/T) with "
                                 "T = noise^2 / (2 step_size)")
            if not self.temperature > 0:
                raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @property
    def target_temperature(self) -> float:
        """T such that the chain draws from exp(-E/T).

        The authors' x <- x - s grad E + n z is ULA with eps = n^2 on E/T for T = n^2 / (2 s) (exactly so
        without gradient clipping and clamping, and as s -> 0; for s = 10, n = 0.005, T = 1.25e-6).
        """
        if self.method == "authors":
            return self.noise ** 2 / (2.0 * self.step_size)
        return 1.0 if self.temperature is None else float(self.temperature)

    def to_dict(self) -> dict:
        settings = asdict(self)
        if settings["temperature"] is None:  # unset: records and evaluation cache keys stay as before it existed
            del settings["temperature"]
        return settings

    def __call__(self, energy: EnergyFn, x: Tensor, **kwargs) -> Tensor:
        return self.run(energy, x, **kwargs).x

    def run(
        self,
        energy: EnergyFn,
        x: Tensor,
        *,
        known_mask: Tensor | None = None,
        generator: Generators = None,
        return_chain: bool = False,
        progress: bool | Callable[[], object] = False,
    ) -> LangevinOutput:
        """Run the chain from ``x``. ``generator``: one for the batch, or one per row (see :func:`random_like`).
        ``progress``: True for a progress bar of its own, or a function called after every step (e.g. the
        ``update`` of a bar over a longer job)."""
        x0 = x.detach()
        known = None if known_mask is None else known_mask.to(device=x.device).bool().expand_as(x0)
        fix = (lambda v: v) if known is None else (lambda v: torch.where(known, x0, v))
        x = x0.clone()
        if self.method == "mala" and self.clamp is not None and self.steps > 0:
            # a pixel on a wall where E falls outwards (a black background) sits at the peak of the target in
            # the box: every reflected proposal moves it uphill, and with hundreds of such pixels none is
            # accepted (fmnist-js: 14 % accepted from clamped starts, 50 % from 1 % inside)
            lo, hi = self.clamp
            x = fix(x.clamp(lo + MALA_MARGIN * (hi - lo), hi - MALA_MARGIN * (hi - lo)))
        chain = [x] if return_chain else None
        grad_norm, accepted = 0.0, 0.0
        step = getattr(self, f"_{self.method}_step")
        steps = range(self.steps)
        on_step = progress if callable(progress) else None
        if progress is True:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=f"Langevin ({self.method})", leave=False)
        with frozen(energy):
            # only MALA carries the gradient from step to step; the others evaluate it where they need it
            e, g = energy_and_grad(energy, x) if self.method == "mala" and self.steps > 0 else (None, None)
            for _ in steps:
                x, e, g, acc = step(energy, x, e, g, known, fix, generator)
                grad_norm = grad_norm + _per_sample(g).norm(dim=1).mean()  # tensors: no GPU sync per step
                accepted = accepted + acc
                if return_chain:
                    chain.append(x)
                if on_step is not None:
                    on_step()
        n = max(self.steps, 1)
        return LangevinOutput(
            x=x,
            chain=torch.stack(chain) if return_chain else None,
            grad_norm=float(grad_norm) / n,
            acceptance=float(accepted) / n if self.method == "mala" else None,
        )

    # --- one step of each rule: (x, E(x), grad E(x)) -> (x', E(x'), grad E(x'), acceptance) ------------
    # ``fix`` puts the observed entries back before the energy is evaluated; the returned gradient is
    # the raw (unclipped) one, for statistics.
    def _noise(self, x: Tensor, generator) -> Tensor:
        return random_like(x, generator)

    def _clamp(self, x: Tensor) -> Tensor:
        return x if self.clamp is None else x.clamp(*self.clamp)

    def _authors_step(self, energy, x, e, g, known, fix, generator):
        x = fix(x + self.noise * self._noise(x, generator))
        e, g = energy_and_grad(energy, x)
        clipped = g if self.grad_clip is None else g.clamp(-self.grad_clip, self.grad_clip)
        return fix(self._clamp(x - self.step_size * clipped)), e, g, 0.0

    def _ula_step(self, energy, x, e, g, known, fix, generator):
        eps = self.step_size
        e, g = energy_and_grad(energy, x)
        x = fix(self._clamp(x - 0.5 * eps / self.target_temperature * g + math.sqrt(eps) * self._noise(x, generator)))
        return x, e, g, 0.0

    def _mala_step(self, energy, x, e, g, known, fix, generator):
        eps, t = self.step_size, self.target_temperature
        drift = 0.5 * eps / t
        free = None if known is None else (~known).to(x.dtype)
        prop = fix(self._reflect(x - drift * g + math.sqrt(eps) * self._noise(x, generator)))
        e_prop, g_prop = energy_and_grad(energy, prop)

        def log_q(to, frm, g_frm):  # log density of proposing ``to`` from ``frm``, free entries only
            lq = self._log_proposal(to, frm - drift * g_frm, eps)
            return _per_sample(lq if free is None else lq * free).sum(1)

        # the target is exp(-E/T) restricted to the box; reflected proposals never leave it
        log_alpha = (e - e_prop) / t + log_q(x, prop, g_prop) - log_q(prop, x, g)
        u = random_like(x, generator, "uniform", log_alpha.shape)
        accept = torch.log(u) < log_alpha
        view = (-1,) + (1,) * (x.dim() - 1)
        x = torch.where(accept.view(view), prop, x)
        e = torch.where(accept, e_prop, e)
        g = torch.where(accept.view(view), g_prop, g)
        return x, e, g, accept.float().mean()  # a tensor: summed over steps, read once at the end

    def _reflect(self, y: Tensor) -> Tensor:
        """Fold y into the clamp box by reflecting at its walls (period twice the width)."""
        if self.clamp is None:
            return y
        lo, hi = self.clamp
        t = torch.remainder(y - lo, 2 * (hi - lo))
        return lo + torch.where(t > hi - lo, 2 * (hi - lo) - t, t)

    def _log_proposal(self, to: Tensor, mean: Tensor, eps: float) -> Tensor:
        """log density of N(mean, eps) folded into the box at ``to``, per entry, up to a constant.

        Every point to + 2 k w and 2 lo - to + 2 k w (w the width) folds onto ``to``; the three of each kind
        nearest the mean are summed, the others lie over 3 w away and weigh less than exp(-4 w^2 / eps).
        """
        if self.clamp is None:
            return -(to - mean).pow(2) / (2 * eps)
        lo, hi = self.clamp
        period = 2 * (hi - lo)
        terms = []
        for pre in (to, 2 * lo - to):
            k = torch.round((mean - pre) / period)
            terms += [-(pre + period * (k + j) - mean).pow(2) / (2 * eps) for j in (-1, 0, 1)]
        return torch.logsumexp(torch.stack(terms), dim=0)


class PCAGaussian(nn.Module):
    """Where chains start: a Gaussian fitted to the training data in its top-k principal subspace.

    x = clamp(mean + (z * scale) @ basis + residual * e), z, e ~ N(0, I). Uniform noise is far from data
    such as Fashion-MNIST (black backgrounds, centred objects): chains from it need many steps and tend to
    collapse onto a few shapes. Blurry, diverse, data-shaped starting points let the chains spend their steps
    on detail (an "informative initialisation", Nijkamp et al. 2020). Stored in the model (a few hundred KB)
    so that training restarts and test-time chains start from the same distribution.
    """

    def __init__(self, shape: tuple[int, ...], components: int = 32, data_range: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        dim = math.prod(shape)
        if not 1 <= components <= dim:
            raise ValueError(f"components must be in [1, {dim}], got {components}")
        self.shape, self.data_range = tuple(shape), tuple(float(v) for v in data_range)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("basis", torch.zeros(components, dim))
        self.register_buffer("scale", torch.zeros(components))
        self.register_buffer("residual", torch.zeros(()))

    @torch.no_grad()
    def fit(self, images: Tensor) -> "PCAGaussian":
        """Mean, top-k eigenvectors and their standard deviations, and the residual std per pixel."""
        x = images.double().flatten(1)
        mean = x.mean(0)
        cov = torch.cov((x - mean).T)
        eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
        k = self.basis.shape[0]
        top = eigvals.flip(0).clamp(min=0)
        self.mean.copy_(mean.reshape(self.shape))
        self.basis.copy_(eigvecs.flip(1)[:, :k].T)
        self.scale.copy_(top[:k].sqrt())
        self.residual.copy_((top[k:].sum() / x.shape[1]).sqrt())
        return self

    def sample(self, n: int, generator: torch.Generator | None = None, residual_scale: float = 1.0) -> Tensor:
        """n draws; ``residual_scale`` multiplies the residual noise (0: the smooth principal-subspace part)."""
        dev = self.mean.device
        z = torch.randn((n, self.basis.shape[0]), generator=generator, device=dev)
        e = torch.randn((n, *self.shape), generator=generator, device=dev)
        x = self.mean + ((z * self.scale) @ self.basis).reshape(n, *self.shape) + residual_scale * self.residual * e
        return x.clamp(*self.data_range)

    def _condition(self, observed: Tensor, sigma: Tensor, known: Tensor | None):
        """The pieces of conditioning on y = x + N(0, sigma^2) at the ``known`` pixels, in the k-dim z-space.

        The Gaussian is x = mean + U z + r e with U = basis^T diag(scale); given z, an observed pixel has
        variance r^2 + sigma^2 ("noise", floored because it is 0 for exact observations of a start without
        residual, components == dim, where conditioning on exact values is the limit). The posterior of z is
        N(prec^-1 U^T W y / noise, prec^-1), prec = I + U^T W U / noise (k x k per image)."""
        b = observed.shape[0]
        y = (observed - self.mean).flatten(1).double()
        w = torch.ones_like(y) if known is None else known.expand_as(observed).flatten(1).double()
        noise = (self.residual.double() ** 2 + sigma.double().view(b, 1) ** 2).clamp(min=NOISE_FLOOR)
        u = (self.basis.T * self.scale).double()  # (D, k)
        prec = torch.eye(u.shape[1], dtype=torch.double, device=y.device) + torch.einsum("di,bd,dj->bij", u, w / noise, u)
        proj = (w * y / noise) @ u  # U^T W y / noise, (B, k)
        return y, w, noise, u, torch.linalg.cholesky(prec), proj

    def log_evidence(self, observed: Tensor, sigma: Tensor, known: Tensor | None = None) -> Tensor:
        """log p(y) of the observed pixels under this Gaussian plus the noise, (B,): the marginal likelihood
        by which a mixture weighs its components (Woodbury identity and determinant lemma, k x k work)."""
        return self._log_evidence(self._condition(observed, sigma, known))

    @staticmethod
    def _log_evidence(conditioned: tuple) -> Tensor:
        y, w, noise, _, chol, proj = conditioned
        explained = (proj.unsqueeze(-1) * torch.cholesky_solve(proj.unsqueeze(-1), chol)).sum((1, 2))
        quad = (w * y * y / noise).sum(1) - explained
        n_obs = w.sum(1)
        logdet = n_obs * noise.squeeze(1).log() + 2 * torch.diagonal(chol, dim1=1, dim2=2).log().sum(1)
        return (-0.5 * (quad + logdet + n_obs * math.log(2 * math.pi))).float()

    def posterior(self, observed: Tensor, sigma: Tensor, known: Tensor | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
        """Samples of x given y = x + N(0, sigma^2) on the ``known`` pixels (all when None), in closed form.

        Conditioning happens in the k-dim z-space (``_condition``), then the residual e follows exactly. sigma
        (B,) may be 0 (exact observations: inpainting returns the known pixels unchanged). ``generator=None``
        gives the mean.
        """
        return self._posterior(self._condition(observed, sigma, known), observed, sigma, known, generator)

    def _posterior(self, conditioned: tuple, observed: Tensor, sigma: Tensor, known: Tensor | None,
                   generator: torch.Generator | None) -> Tensor:
        b = observed.shape[0]
        y, w, noise, u, chol, proj = conditioned
        r2 = self.residual.double() ** 2
        z = torch.cholesky_solve(proj.unsqueeze(-1), chol).squeeze(-1)
        if generator is not None:
            eps = torch.randn((b, u.shape[1], 1), generator=generator, device=y.device).double()
            z = z + torch.linalg.solve_triangular(chol.mT, eps, upper=True).squeeze(-1)
        low_rank = z @ u.T
        gain = w * r2 / noise  # the residual's share of what z does not explain, observed pixels only
        x = low_rank + gain * (y - low_rank)
        if generator is not None:
            res_var = torch.where(w > 0, r2 * (1 - r2 / noise), r2)
            x = x + res_var.clamp(min=0).sqrt() * torch.randn(x.shape, generator=generator, device=y.device).double()
        x = x.float().reshape(observed.shape) + self.mean
        return _keep_exact(x, observed, sigma, known).clamp(*self.data_range)


class PCAMixture(nn.Module):
    """Where chains start: a mixture of ``PCAGaussian``s, one per cluster of the training data.

    One Gaussian over all of Fashion-MNIST blends shirts with shoes and crosses its principal components
    into plaid; a mixture of probabilistic PCA (Tipping & Bishop 1999) keeps each start within one kind of
    image. Fitted by k-means in the data's top principal subspace, then a PCAGaussian per cluster, weighted by
    cluster size (the hard-assignment fit). Sampling picks a component by weight; conditioning on an
    observation weighs the components by their evidence for it, so restoration keeps an exact posterior.
    """

    def __init__(self, shape: tuple[int, ...], clusters: int = 32, components: int = 16,
                 data_range: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        if clusters < 1:
            raise ValueError(f"clusters must be >= 1, got {clusters}")
        self.shape, self.data_range = tuple(shape), tuple(float(v) for v in data_range)
        self.parts = nn.ModuleList(PCAGaussian(shape, components, data_range) for _ in range(clusters))
        self.register_buffer("log_weight", torch.full((clusters,), -math.log(clusters)))

    @torch.no_grad()
    def fit(self, images: Tensor, features: int = 64, iterations: int = 30, seed: int = 0) -> "PCAMixture":
        """k-means (k-means++ start, fixed seed: the same fit on every rank) on the top ``features`` principal
        coordinates, then one PCAGaussian per cluster."""
        x = images.flatten(1).double()
        k = len(self.parts)
        if x.shape[0] < k * (self.parts[0].basis.shape[0] + 1):
            raise ValueError(f"{x.shape[0]} images are too few for {k} clusters of "
                             f"{self.parts[0].basis.shape[0]} components")
        coords = PCAGaussian(self.shape, min(features, x.shape[1])).fit(images).basis.double()
        z = (x - x.mean(0)) @ coords.T
        assign = _kmeans(z, k, iterations, torch.Generator().manual_seed(seed))
        for i, part in enumerate(self.parts):
            part.fit(images[assign == i])
        counts = torch.bincount(assign, minlength=k).double()
        self.log_weight.copy_((counts / counts.sum()).log())
        return self

    def sample(self, n: int, generator: torch.Generator | None = None, residual_scale: float = 1.0) -> Tensor:
        which = torch.multinomial(self.log_weight.exp().cpu(), n, replacement=True, generator=generator)
        x = torch.empty((n, *self.shape), device=self.log_weight.device)
        for i in which.unique().tolist():
            rows = (which == i).nonzero().squeeze(1)
            x[rows.to(x.device)] = self.parts[i].sample(len(rows), generator, residual_scale)
        return x

    def posterior(self, observed: Tensor, sigma: Tensor, known: Tensor | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
        """As PCAGaussian.posterior, for the mixture: ``generator=None`` gives the posterior mean (the
        components' posterior means weighted by their responsibilities), else a sample (a component drawn
        by responsibility, then its posterior sample)."""
        log_post, means = [], []
        for log_weight, part in zip(self.log_weight, self.parts):  # one conditioning (Cholesky) per component
            conditioned = part._condition(observed, sigma, known)
            log_post.append(log_weight + PCAGaussian._log_evidence(conditioned))
            if generator is None:
                means.append(part._posterior(conditioned, observed, sigma, known, None))
        resp = torch.softmax(torch.stack(log_post, dim=1), dim=1)  # (B, K)
        if generator is None:
            means = torch.stack(means, dim=1)
            x = torch.einsum("bk,bk...->b...", resp.to(means.dtype), means).clamp(*self.data_range)
            return _keep_exact(x, observed, sigma, known)  # the weights sum to 1 only up to rounding
        which = torch.multinomial(resp.cpu(), 1, generator=generator).squeeze(1)
        x = torch.empty_like(observed)
        for i in which.unique().tolist():
            rows = (which == i).nonzero().squeeze(1).to(observed.device)
            part_known = None if known is None else known[rows] if known.shape[0] == observed.shape[0] else known
            x[rows] = self.parts[i].posterior(observed[rows], sigma[rows], part_known, generator)
        return x


def _keep_exact(x: Tensor, observed: Tensor, sigma: Tensor, known: Tensor | None) -> Tensor:
    """x with the exactly observed pixels (known, sigma 0) set to their observed values."""
    if known is None:
        return x
    return torch.where(known.expand_as(x).bool() & (sigma.view(-1, *[1] * (x.dim() - 1)) == 0), observed, x)


def _kmeans(z: Tensor, k: int, iterations: int, generator: torch.Generator) -> Tensor:
    """Cluster labels (N,) of the rows of z: k-means++ seeding, then Lloyd's iterations."""
    centres = z[torch.randint(len(z), (1,), generator=generator)]
    for _ in range(1, k):
        d2 = torch.cdist(z, centres).min(1).values ** 2
        centres = torch.cat([centres, z[torch.multinomial(d2.float() / d2.sum(), 1, generator=generator)]])
    for _ in range(iterations):
        assign = torch.cdist(z, centres).argmin(1)
        for i in range(k):
            members = z[assign == i]
            if len(members):
                centres[i] = members.mean(0)
    return torch.cdist(z, centres).argmin(1)


def uniform_start(shape: tuple[int, ...], data_range: tuple[float, float] = (0.0, 1.0)) -> StartFn:
    """Uniform noise over the data range: the classic start of EBM chains."""
    lo, hi = data_range

    def sample(n: int, generator: torch.Generator | None = None) -> Tensor:
        return lo + (hi - lo) * torch.rand((n, *shape), generator=generator)

    return sample


def corrupted_data_start(data: Tensor, start: StartFn, max_sigma: float = 0.5) -> StartFn:
    """Training images corrupted the ways restoration meets them, as chain starts.

    Half get Gaussian noise of a std drawn from U(0, max_sigma] (then clamped to [0, 1]); half get a hole,
    a random box or a random 20-90 % of the pixels, filled from ``start``. Chains started there teach the
    energy what noise and holes look like, which chains from ``start`` alone never show it.
    ``data``: uint8 (N, C, H, W) or float in [0, 1].
    """
    shape = tuple(data.shape[1:])

    def sample(n: int, generator: torch.Generator | None = None) -> Tensor:
        x = data[torch.randint(len(data), (n,), generator=generator)]
        x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
        noisy = torch.rand(n, generator=generator) < 0.5
        sigma = max_sigma * (1 - torch.rand(n, generator=generator))  # (0, max_sigma]
        noise = sigma.view(-1, *[1] * len(shape)) * torch.randn((n, *shape), generator=generator)
        holes = _random_holes(n, shape[-2:], generator).unsqueeze(1)
        filled = torch.where(holes, start(n, generator), x)
        return torch.where(noisy.view(-1, *[1] * len(shape)), (x + noise).clamp(0, 1), filled)

    return sample


def _random_holes(n: int, size: tuple[int, int], generator: torch.Generator | None) -> Tensor:
    """(n, H, W) bool, True = hole: half are a box of 1/4 to 3/4 of each side, half random 20-90 % of pixels."""
    h, w = size
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    bh = (h * (0.25 + 0.5 * torch.rand(n, generator=generator))).long().clamp(min=1)
    bw = (w * (0.25 + 0.5 * torch.rand(n, generator=generator))).long().clamp(min=1)
    top = (torch.rand(n, generator=generator) * (h - bh + 1)).long()
    left = (torch.rand(n, generator=generator) * (w - bw + 1)).long()
    box = ((rows >= top.view(-1, 1, 1)) & (rows < (top + bh).view(-1, 1, 1))
           & (cols >= left.view(-1, 1, 1)) & (cols < (left + bw).view(-1, 1, 1)))
    fraction = 0.2 + 0.7 * torch.rand(n, 1, 1, generator=generator)
    pixels = torch.rand(n, h, w, generator=generator) < fraction
    return torch.where((torch.rand(n, generator=generator) < 0.5).view(-1, 1, 1), box, pixels)


def mixed_start(first: StartFn, second: StartFn, second_fraction: float) -> StartFn:
    """Each starting point from ``second`` with probability ``second_fraction``, else from ``first``."""
    if not 0.0 <= second_fraction <= 1.0:
        raise ValueError(f"second_fraction must be in [0, 1], got {second_fraction}")

    def sample(n: int, generator: torch.Generator | None = None) -> Tensor:
        pick = torch.rand(n, generator=generator) < second_fraction
        x = first(n, generator)
        k = int(pick.sum())
        if k:
            x[pick] = second(k, generator)
        return x

    return sample


class ReplayBuffer:
    """Persistent chains for training (Du & Mordatch 2019): start Langevin from past samples.

    Filled from ``start`` (default: uniform noise over ``data_range``) at creation; each draw restarts a
    fraction ``restart_prob`` of the chains from fresh ``start`` samples so that the buffer keeps exploring.
    """

    def __init__(
        self,
        capacity: int,
        shape: tuple[int, ...],
        restart_prob: float = 0.05,
        data_range: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
        start: StartFn | None = None,
    ):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if not 0.0 <= restart_prob <= 1.0:
            raise ValueError(f"restart_prob must be in [0, 1], got {restart_prob}")
        self.capacity, self.shape = capacity, tuple(shape)
        self.restart_prob, self.data_range = restart_prob, tuple(data_range)
        self.start = start or uniform_start(self.shape, self.data_range)
        self.samples = self.start(capacity, generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n starting points and their buffer indices (give both back to ``update``)."""
        idx = torch.randint(self.capacity, (n,), generator=generator)
        x = self.samples[idx].clone()
        restart = torch.rand(n, generator=generator) < self.restart_prob
        x[restart] = self.start(int(restart.sum()), generator)
        return x, idx

    def update(self, idx: Tensor, x: Tensor) -> None:
        self.samples[idx] = x.detach().to(self.samples.device, self.samples.dtype)

    def state_dict(self) -> dict:
        return {"samples": self.samples.clone()}

    def load_state_dict(self, state: dict) -> None:
        samples = state["samples"]
        if tuple(samples.shape) != (self.capacity, *self.shape):
            raise ValueError(f"buffer shape {tuple(samples.shape)} does not match {(self.capacity, *self.shape)}")
        self.samples = samples.clone()
