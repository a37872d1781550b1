import json

import pytest
import torch
from torch import nn

from febm.nets import MLPEnergy, ResNetEnergy, build_net, count_parameters

SIZES = [(28, 28), (32, 32), (17, 23), (5, 3)]


def tiny_resnet(**kwargs) -> ResNetEnergy:
    return ResNetEnergy(**{"in_channels": 1, "width": 4, "stages": 3, **kwargs})


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("first_stride", [1, 2])
def test_resnet_shapes_and_input_gradients(size, first_stride):
    net = tiny_resnet(first_stride=first_stride)
    x = torch.rand(3, 1, *size, requires_grad=True)
    e = net(x)
    assert e.shape == (3,) and e.dtype == torch.float32
    (g,) = torch.autograd.grad(e.sum(), x)
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("activation", ["silu", "lrelu", "softplus", "elu"])
def test_resnet_activations_and_colour(activation):
    net = ResNetEnergy(in_channels=3, width=4, stages=2, blocks_per_stage=2, activation=activation)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2,)


def test_unknown_activation_is_an_error():
    with pytest.raises(ValueError, match="activation"):
        tiny_resnet(activation="gelu2")


def test_examples_are_independent():
    """No batch statistics anywhere: an example's energy does not depend on its batch mates."""
    net = tiny_resnet().eval()
    x = torch.rand(4, 1, 17, 23)
    torch.testing.assert_close(net(x)[:2], net(x[:2]))


def test_spectral_norm_uses_the_parametrization_api():
    net = tiny_resnet()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(torch.nn.utils.parametrize.is_parametrized(c, "weight") for c in convs)
    keys = net.state_dict().keys()
    assert any(k.endswith("parametrizations.weight.original") for k in keys)
    assert not any(k.endswith("weight_orig") for k in keys)  # the deprecated hook API's naming
    plain = tiny_resnet(spectral_norm=False)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in plain.modules())


def test_spectral_norm_bounds_the_conv_matrices():
    net = tiny_resnet().train()
    x = torch.rand(2, 1, 28, 28)
    for _ in range(20):  # power iterations run in training mode
        net(x)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            sigma = torch.linalg.matrix_norm(m.weight.flatten(1), ord=2)
            assert sigma.item() == pytest.approx(1.0, rel=0.05)


def test_residual_branches_start_small():
    net = tiny_resnet(branch_gain=0.0)
    gains = [p for n, p in net.named_parameters() if n.endswith("gain")]
    assert gains and all(g.item() == 0.0 for g in gains)


def test_bf16_autocast_forward_and_input_gradient_on_cpu():
    net = tiny_resnet()
    x = torch.rand(2, 1, 17, 23, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net.features(x).dtype == torch.bfloat16  # the convolutions really run in bf16
        e = net(x)
        (g,) = torch.autograd.grad(e.sum(), x)
    assert e.dtype == torch.float32 and torch.isfinite(e).all() and torch.isfinite(g).all()
    e32 = net(x)
    torch.testing.assert_close(e, e32, rtol=0.1, atol=0.1 * e32.abs().max().item())


def test_build_net_round_trip_through_json():
    net = build_net({"kind": "resnet", "width": 4, "stages": 2, "activation": "lrelu"})
    spec = json.loads(json.dumps(net.spec))
    assert spec["kind"] == "resnet" and spec["width"] == 4 and spec["activation"] == "lrelu"
    assert "first_stride" in spec  # defaults are recorded too
    twin = build_net(spec)
    assert twin.spec == net.spec
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    twin.load_state_dict(net.state_dict())
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(twin.eval()(x), net.eval()(x))


def test_build_net_errors():
    with pytest.raises(ValueError, match="kind"):
        build_net({"kind": "transformer"})
    with pytest.raises(ValueError, match="widht"):
        build_net({"kind": "resnet", "widht": 3})


def test_mlp_energy():
    net = build_net({"kind": "mlp", "in_features": 1, "hidden": 64, "depth": 2, "activation": "tanh"})
    assert isinstance(net, MLPEnergy)
    assert count_parameters(net) == (1 * 64 + 64) + (64 * 64 + 64) + (64 + 1)
    x = torch.randn(5, requires_grad=True)  # 1-D data as a (B,) tensor
    e = net(x)
    assert e.shape == (5,)
    (g,) = torch.autograd.grad(e.sum(), x)
    assert torch.isfinite(g).all()
    assert build_net({"kind": "mlp", "in_features": 3})(torch.randn(4, 3)).shape == (4,)


def test_count_parameters_ignores_spectral_norm_buffers():
    net = tiny_resnet()
    n_buffers = sum(b.numel() for b in net.buffers())
    assert n_buffers > 0
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("size", [(28, 28), (32, 32), (17, 23), (12, 10)])
def test_conv_energy_shapes_gradients_and_spec(size):
    from febm.nets import ConvEnergy

    net = ConvEnergy(in_channels=3, width=4, downsamples=3)
    x = torch.rand(2, 3, *size, requires_grad=True)
    e = net(x)
    assert e.shape == (2,) and e.dtype == torch.float32
    (g,) = torch.autograd.grad(e.sum(), x)
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    again = build_net(json.loads(json.dumps(net.spec)))
    again.load_state_dict(net.state_dict())
    assert torch.equal(again.eval()(x.detach()), net.eval()(x.detach()))
    # the stem sees single pixels at full resolution: changing one pixel changes the energy
    y = x.detach().clone()
    y[:, :, 0, 0] += 0.1
    assert not torch.equal(net(y), net(x.detach()))
