"""Energy and critic networks.

Every network maps a batch to one scalar per example: images (B, C, H, W) in [0, 1], or vectors (B, D),
to (B,). The f-EBM energy E_theta and the critic H_omega use the same architectures (DESIGN section 3).
Fully convolutional ("field") networks are sums of local energies: they also expose the per-pixel map
``energy_map(x) -> (B, 1, H, W)`` and their ``receptive_radius``, and score images of any size.

Networks are built from JSON-able specs so that a model's config.json fully describes its architecture:

    net = build_net({"kind": "resnet", "width": 32, "stages": 3})
    build_net(net.spec)  # same architecture; net.spec lists every argument, defaults included
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

ACTIVATIONS = {
    # Leaky ReLU 0.2 is the authors' choice; the smooth ones give Langevin a smooth gradient field.
    "lrelu": lambda: nn.LeakyReLU(0.2),
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
}


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; spectral-norm buffers (u, v) are not parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class SpecMixin:
    """Records the constructor arguments so that ``build_net(net.spec)`` rebuilds the same network."""

    kind: str = ""

    def _record_spec(self, frame_locals: dict) -> None:
        params = inspect.signature(type(self).__init__).parameters
        self._spec = {"kind": self.kind, **{name: frame_locals[name] for name in params if name != "self"}}

    @property
    def spec(self) -> dict:
        """Every constructor argument, defaults included (JSON-able), plus ``kind``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._spec.items()}


def _conv(c_in: int, c_out: int, stride: int, sn: bool) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1)
    # The parametrization API (not the deprecated torch.nn.utils.spectral_norm hook): its state-dict keys
    # are `parametrizations.weight.original` + `parametrizations.weight.0._u/_v`, saved with the model.
    return _spectral_norm(conv) if sn else conv


class ResBlock(nn.Module):
    """x + gain * conv(act(conv(act(x)))), no normalisation layers (they break the per-example energy).

    The branch starts near zero through a learnable scalar ``gain`` (initialised at ``branch_gain``), not by
    zero-initialising the last convolution: spectral normalisation divides a weight by its largest singular
    value, which is 0/0 for a zero weight.
    """

    def __init__(self, channels: int, activation: str, sn: bool, branch_gain: float):
        super().__init__()
        self.act1, self.act2 = make_activation(activation), make_activation(activation)
        self.conv1 = _conv(channels, channels, 1, sn)
        self.conv2 = _conv(channels, channels, 1, sn)
        self.gain = nn.Parameter(torch.tensor(float(branch_gain)))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.gain * self.conv2(self.act2(self.conv1(self.act1(x))))


class ResNetEnergy(SpecMixin, nn.Module):
    """IGEBM-style ResNet energy: image (B, C, H, W) in [0, 1] -> (B,) scalar.

    Layout: a 3x3 convolution at full resolution (``first_stride=1``: an energy that never looks at single
    pixels makes pixel noise almost free, DESIGN section 3), then ``stages`` groups of ``blocks_per_stage``
    residual blocks with a 2x2 average pool between groups, then activation, global sum-pool and a linear head.

    Width: stage s has ``width * width_growth**s`` channels, changed by a 1x1 convolution after each pool.
    The default doubling keeps the cost of every stage about equal (twice the channels, a quarter of the
    pixels); ``width_growth=1`` keeps the width constant, as in the authors' CIFAR ResNet.

    Odd sizes work (17x23, 28x28...): pooling uses ``ceil_mode`` so no border row or column is dropped.
    Under ``torch.autocast`` the sum-pool and the head run in float32: summing hundreds of pixel features is
    where bfloat16 would lose the energy's precision.
    """

    kind = "resnet"

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 64,
        stages: int = 3,
        blocks_per_stage: int = 1,
        activation: str = "silu",
        spectral_norm: bool = True,
        first_stride: int = 1,
        width_growth: int = 2,
        branch_gain: float = 0.1,
    ):
        super().__init__()
        self._record_spec(locals())
        if stages < 1 or blocks_per_stage < 0 or first_stride not in (1, 2):
            raise ValueError("need stages >= 1, blocks_per_stage >= 0, first_stride in (1, 2)")
        make_activation(activation)  # validate early
        self.first = _conv(in_channels, width, first_stride, spectral_norm)
        self.stages = nn.ModuleList()
        channels = width
        for s in range(stages):
            layers: list[nn.Module] = []
            if s > 0:
                layers.append(nn.AvgPool2d(2, ceil_mode=True))
                out = width * width_growth**s
                if out != channels:
                    conv = nn.Conv2d(channels, out, kernel_size=1)
                    layers.append(_spectral_norm(conv) if spectral_norm else conv)
                    channels = out
            layers += [ResBlock(channels, activation, spectral_norm, branch_gain) for _ in range(blocks_per_stage)]
            self.stages.append(nn.Sequential(*layers))
        self.final_act = make_activation(activation)
        self.head = nn.Linear(channels, 1)
        self.out_channels = channels

    def features(self, x: Tensor) -> Tensor:
        """(B, C', H', W') feature map before the pooling and the head."""
        h = self.first(2.0 * x - 1.0)  # centre [0, 1] data; zero padding then means mid-grey
        for stage in self.stages:
            h = stage(h)
        return self.final_act(h)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            pooled = h.to(self.head.weight.dtype).sum(dim=(2, 3))
            return self.head(pooled).squeeze(-1)


class ConvEnergy(SpecMixin, nn.Module):
    """A small, fast energy for CPU training: a full-resolution 3x3 stem, then strided convolutions.

    stem (C -> width, stride 1) -> act -> [conv 4x4 stride 2, doubling the width -> act] x ``downsamples``
    -> global sum-pool -> linear. The stem looks at every pixel through a nonlinearity (an energy that never
    does makes pixel noise almost free, DESIGN section 3) but costs only C x width x 9 multiply-adds per
    pixel; the rest runs at 1/4, 1/16, ... of the pixels. About 5x cheaper per Langevin step than
    ``ResNetEnergy`` at the same width.
    """

    kind = "conv"

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 16,
        downsamples: int = 3,
        activation: str = "silu",
        spectral_norm: bool = True,
    ):
        super().__init__()
        self._record_spec(locals())
        if downsamples < 1:
            raise ValueError("need downsamples >= 1")
        layers: list[nn.Module] = [_conv(in_channels, width, 1, spectral_norm), make_activation(activation)]
        channels = width
        for _ in range(downsamples):
            conv = nn.Conv2d(channels, 2 * channels, kernel_size=4, stride=2, padding=1)
            layers += [_spectral_norm(conv) if spectral_norm else conv, make_activation(activation)]
            channels *= 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(2.0 * x - 1.0)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.head(h.to(self.head.weight.dtype).sum(dim=(2, 3))).squeeze(-1)


class MLPEnergy(SpecMixin, nn.Module):
    """Small MLP: vectors (B, D) -> (B,); a (B,) input is read as D = 1 (the paper's 1-D experiment).

    The paper's 1-D critic is ``MLPEnergy(1, hidden=64, depth=2, activation="tanh")``.
    """

    kind = "mlp"

    def __init__(
        self,
        in_features: int = 2,
        hidden: int = 64,
        depth: int = 2,
        activation: str = "tanh",
        spectral_norm: bool = False,
    ):
        super().__init__()
        self._record_spec(locals())
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            linear = nn.Linear(width, hidden)
            layers += [_spectral_norm(linear) if spectral_norm else linear, make_activation(activation)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        return self.net(x.flatten(1)).squeeze(-1)


class FieldEnergy(SpecMixin, nn.Module):
    """A fully convolutional energy for photos: E(x) = sum over pixels i of a local energy e(x)_i.

    stem (k x k, C -> width) -> act -> [3x3 conv width -> width, dilated by ``dilations[j]``, -> act] with
    residual connections -> 1x1 conv -> the per-pixel map e(x). No pooling and no head over the whole image,
    so one model scores, samples and restores images of any size, and e(x)_i depends only on the pixels
    within ``receptive_radius`` of i (reflect padding at the image border keeps the map's size).
    ``depth=0`` is a Fields-of-Experts-like energy: one bank of k x k filters, a smooth expert function
    each (the activation), weighted by the 1x1 head.
    ``zero_mean_stem``: the stem's filters sum to zero over their window, as Fields of Experts' do, so the
    energy ignores a constant offset of a channel and grad_x E is high-pass. Without it, photo energies
    trained by CD learned brightness and colour first: the denoising cosine (bench.photo_prior) stayed
    near 0 where it reached 0.7 with it (docs/photos.md).

    Smooth activations keep grad_x E smooth for Langevin. Under autocast the map's sum runs in float32.
    """

    kind = "field"

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 32,
        kernel_size: int = 3,
        dilations: tuple[int, ...] = (1, 2, 1),
        activation: str = "softplus",
        spectral_norm: bool = True,
        branch_gain: float = 1.0,
        output_gain: float = 1.0,
        zero_mean_stem: bool = False,
        noise_conditional: bool = False,
    ):
        super().__init__()
        dilations = tuple(int(d) for d in dilations)
        self._record_spec(locals())
        if kernel_size < 1 or kernel_size % 2 == 0 or any(d < 1 for d in dilations):
            raise ValueError("need an odd kernel_size >= 1 and dilations >= 1")
        make_activation(activation)
        sn = _spectral_norm if spectral_norm else (lambda m: m)
        self.stem = nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2, padding_mode="reflect")
        if zero_mean_stem:
            parametrize.register_parametrization(self.stem, "weight", _ZeroMean())
        self.stem = sn(self.stem)  # after the zero mean: a rescaled zero-mean filter keeps its zero mean
        self.act = make_activation(activation)
        self.blocks = nn.ModuleList(
            sn(nn.Conv2d(width, width, 3, padding=d, dilation=d, padding_mode="reflect")) for d in dilations
        )
        self.acts = nn.ModuleList(make_activation(activation) for _ in dilations)
        self.gains = nn.Parameter(torch.full((len(dilations),), float(branch_gain)))
        self.head = sn(nn.Conv2d(width, 1, 1))
        # a learnable scale of the local energies: started small, the first chains barely move and the energy
        # grows only as far as training asks (softplus features are positive, so the map starts far from 0)
        self.output_gain = nn.Parameter(torch.tensor(float(output_gain)))
        self.receptive_radius = kernel_size // 2 + sum(dilations)
        # noise-conditional: every layer's pre-activation gets a bias that depends on log(sigma) (zero at start)
        self.noise_bias = nn.Linear(NOISE_FEATURES, width * (1 + len(dilations))) if noise_conditional else None
        if self.noise_bias is not None:
            nn.init.zeros_(self.noise_bias.weight)
            nn.init.zeros_(self.noise_bias.bias)

    def energy_map(self, x: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        """(B, C, H, W) -> (B, 1, H, W): the local energies; E(x) is their sum.

        ``sigma``: the noise level the energy is asked at, a number or one per image ([0, 1] units). A
        noise-conditional net needs it: its E(x, sigma) is the energy of photos seen through Gaussian noise of std
        sigma, scaled by 1/sigma so that the gradient step x - sigma^2 grad E has a unit-scale network output
        (the noise estimate) at every level. Other nets ignore it.
        """
        if min(x.shape[-2:]) <= self.receptive_radius:  # reflect padding needs more pixels than its pad
            raise ValueError(f"images must be larger than {self.receptive_radius} px a side for this network, "
                             f"got {tuple(x.shape[-2:])}")
        e = self.output_gain * self.head(self.features(x, sigma))
        return e if self.noise_bias is None else e / _per_image(sigma, x).to(e.dtype)

    def features(self, x: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        """(B, width, H, W): the last layer's features, before the 1x1 head."""
        biases = self._noise_biases(sigma, x)
        h = self.stem(2.0 * x - 1.0)  # centre [0, 1] data
        h = self.act(h if biases is None else h + biases[0])
        for i, (conv, act, gain) in enumerate(zip(self.blocks, self.acts, self.gains)):
            pre = conv(h)
            h = h + gain * act(pre if biases is None else pre + biases[i + 1])
        return h

    def _noise_biases(self, sigma, x: Tensor) -> list[Tensor] | None:
        if self.noise_bias is None:
            return None
        if sigma is None:
            raise ValueError("this energy is noise-conditional: give the noise level sigma (a number or one per image)")
        features = noise_features(_per_image(sigma, x).flatten())
        return list(self.noise_bias(features.to(x.dtype)).view(x.shape[0], -1, 1, 1).chunk(1 + len(self.blocks), 1))

    def forward(self, x: Tensor, per_position: bool = False, sigma: float | Tensor | None = None) -> Tensor:
        """E(x), (B,); ``per_position=True`` returns the map (through DDP's forward, unlike energy_map)."""
        e = self.energy_map(x, sigma)
        if per_position:
            return e
        with torch.autocast(device_type=x.device.type, enabled=False):
            return e.to(torch.promote_types(e.dtype, torch.float32)).sum(dim=(1, 2, 3))


NOISE_FEATURES = 2
SIGMA_REF = 25.0 / 255.0  # the middle of the noise levels photos are restored at


def noise_features(sigma: Tensor) -> Tensor:
    """(B,) noise levels -> (B, NOISE_FEATURES): log(sigma / SIGMA_REF) and its square (scaled), so that a
    linear map gives each layer a smooth, curved bias over the decades of sigma."""
    if not torch.isfinite(sigma).all() or (sigma <= 0).any():
        raise ValueError(f"noise levels must be finite and > 0, got {sigma.tolist()}")
    level = torch.log(sigma / SIGMA_REF)
    return torch.stack([level, level.pow(2) / 4.0], dim=1)


def _per_image(sigma: float | Tensor, x: Tensor) -> Tensor:
    """sigma as (B, 1, 1, 1) on x's device: a number for the batch or one value per image."""
    s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).flatten()
    if s.numel() == 1:
        s = s.expand(x.shape[0])
    if s.numel() != x.shape[0]:
        raise ValueError(f"sigma must be a number or one value per image ({x.shape[0]}), got {s.numel()} values")
    return s.view(-1, 1, 1, 1)


class AtNoiseLevel(nn.Module):
    """A field energy asked at fixed noise levels: E(x) = net(x, sigma=sigma), the one-argument energy that
    samplers and tiling call. ``sigma``: a number or one value per image of the batches it will see."""

    def __init__(self, net: nn.Module, sigma: float | Tensor):
        super().__init__()
        self.net, self.sigma = net, sigma

    @property
    def receptive_radius(self) -> int:
        return self.net.receptive_radius

    def energy_map(self, x: Tensor) -> Tensor:
        return self.net.energy_map(x, self.sigma)

    def forward(self, x: Tensor, per_position: bool = False) -> Tensor:
        return self.net(x, per_position, sigma=self.sigma)


class _ZeroMean(nn.Module):
    """Weight parametrization: each (output, input) filter minus its mean over the window."""

    def forward(self, w: Tensor) -> Tensor:
        return w - w.mean(dim=(2, 3), keepdim=True)


NETS: dict[str, type[nn.Module]] = {"resnet": ResNetEnergy, "conv": ConvEnergy, "mlp": MLPEnergy, "field": FieldEnergy}


def is_field(net: nn.Module) -> bool:
    """True for fully convolutional energies (a sum of local energies: any image size)."""
    return hasattr(getattr(net, "module", net), "energy_map")


def build_net(spec: dict) -> nn.Module:
    """Build a network from a JSON-able spec ``{"kind": <name in NETS>, **constructor arguments}``."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in NETS:
        raise ValueError(f"unknown network kind {kind!r}; choose one of {sorted(NETS)}")
    cls = NETS[kind]
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"unknown arguments {sorted(unknown)} for {kind!r}; allowed: {sorted(allowed)}")
    return cls(**spec)
