"""febm.degradations: noise and masks, seeded, in the project's conventions."""

import pytest
import torch

from febm.degradations import (SCRIBBLE_FRACTION, add_gaussian_noise, add_synthetic_noise, as_generator,
                               masked_fraction, scribble_mask, synthetic_noise_generator, text_mask)


def test_noise_shape_range_and_seed():
    x = torch.rand(2, 3, 17, 23, generator=torch.Generator().manual_seed(1))
    a = add_gaussian_noise(x, 0.1, 5)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, add_gaussian_noise(x, 0.1, torch.Generator().manual_seed(5)))  # int seed = generator
    assert not torch.equal(a, add_gaussian_noise(x, 0.1, 6))
    g = torch.Generator().manual_seed(5)
    first, second = add_gaussian_noise(x, 0.1, g), add_gaussian_noise(x, 0.1, g)
    assert torch.equal(first, a) and not torch.equal(first, second)  # a generator advances


def test_noise_statistics():
    x = torch.full((1, 1, 256, 256), 0.5)
    noise = add_gaussian_noise(x, 25 / 255, 0) - x  # no clipping happens 5 sigma away from the bounds
    assert abs(float(noise.mean())) < 2e-3
    assert float(noise.std()) == pytest.approx(25 / 255, rel=0.02)
    unclipped = add_gaussian_noise(torch.zeros(1, 1, 128, 128), 0.2, 0, clip=False)
    assert unclipped.min() < 0 and float(unclipped.std()) == pytest.approx(0.2, rel=0.03)
    clipped = add_gaussian_noise(torch.zeros(1, 1, 128, 128), 0.2, 0)
    assert clipped.min() == 0 and float((clipped == 0).float().mean()) == pytest.approx(0.5, abs=0.02)


def test_synthetic_noise_has_its_own_stream():
    """The noise added to test a run seeded with s is not what the chains draw first (a generator seeded with s)."""
    x = torch.full((1, 3, 40, 50), 0.5)
    for seed in (0, 5, -3, 2**63):
        noise = add_synthetic_noise(x, 0.1, seed) - x
        chains = 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        assert not torch.allclose(noise, chains, atol=1e-3)
        assert abs(float(torch.corrcoef(torch.stack([noise.flatten(), chains.flatten()]))[0, 1])) < 0.1
        rule = add_gaussian_noise(x, 0.1, synthetic_noise_generator(seed))
        assert torch.equal(add_synthetic_noise(x, 0.1, seed), rule)
    assert torch.equal(add_synthetic_noise(x, 0.1, 5), add_synthetic_noise(x, 0.1, 5))  # seeded
    assert not torch.equal(add_synthetic_noise(x, 0.1, 5), add_synthetic_noise(x, 0.1, 6))


def test_noise_per_image_sigma_and_errors():
    x = torch.full((2, 1, 64, 64), 0.5)
    y = add_gaussian_noise(x, torch.tensor([0.0, 0.1]), 0)
    assert torch.equal(y[0], x[0]) and float((y[1] - x[1]).std()) == pytest.approx(0.1, rel=0.05)
    with pytest.raises(ValueError):
        add_gaussian_noise(x, -0.1, 0)
    with pytest.raises(ValueError):
        add_gaussian_noise(x, torch.tensor([0.1, 0.1, 0.1]), 0)
    with pytest.raises(TypeError):
        add_gaussian_noise(x, 0.1, None)
    with pytest.raises(TypeError):
        add_gaussian_noise(x[0], 0.1, 0)


@pytest.mark.parametrize("size", [(96, 96), (61, 130), (300, 451)])
def test_scribble_mask_shape_fraction_seed(size):
    h, w = size
    fractions = []
    for seed in range(4):
        m = scribble_mask(h, w, seed)
        assert m.shape == (1, 1, h, w) and m.dtype == torch.bool
        assert torch.equal(m, scribble_mask(h, w, torch.Generator().manual_seed(seed)))
        fractions.append(masked_fraction(m))
    assert all(SCRIBBLE_FRACTION[0] <= f <= SCRIBBLE_FRACTION[1] for f in fractions), fractions
    assert len(set(fractions)) > 1  # different seeds, different masks


def test_scribbles_are_strokes_not_dust():
    m = ~scribble_mask(128, 128, 3)[0, 0]
    # a brush a few px wide: most hidden pixels have a hidden neighbour on both sides in some direction
    inner = m[1:-1, 1:-1] & ((m[:-2, 1:-1] & m[2:, 1:-1]) | (m[1:-1, :-2] & m[1:-1, 2:]))
    assert float(inner.sum()) > 0.5 * float(m.sum())


def test_scribble_mask_custom_range_and_errors():
    m = scribble_mask(200, 200, 0, fraction=(0.2, 0.25), width=(5, 5))
    assert 0.2 <= masked_fraction(m) <= 0.25
    with pytest.raises(ValueError):
        scribble_mask(0, 10, 0)
    with pytest.raises(ValueError):
        scribble_mask(10, 10, 0, fraction=(0.3, 0.1))
    with pytest.raises(TypeError):
        scribble_mask(10, 10, "seed")


def test_text_mask_deterministic_and_in_range():
    m = text_mask(427, 640)
    assert m.shape == (1, 1, 427, 640) and m.dtype == torch.bool
    assert torch.equal(m, text_mask(427, 640))
    assert 0.05 <= masked_fraction(m) <= 0.25
    big = text_mask(100, 200, scale=3)
    assert 0.05 <= masked_fraction(big) <= 0.25
    assert not torch.equal(text_mask(100, 200, "abc"), text_mask(100, 200, "xyz"))
    assert masked_fraction(text_mask(200, 200, line_spacing=4)) < masked_fraction(text_mask(200, 200))
    with pytest.raises(ValueError):
        text_mask(10, 10, "  ")
    with pytest.raises(ValueError):
        text_mask(10, 10, scale=0)


def test_text_scale_makes_blocks():
    m = ~text_mask(66, 99, scale=3)[0, 0]
    blocks = m.view(22, 3, 33, 3)
    assert torch.equal(blocks.all(dim=(1, 3)), blocks.any(dim=(1, 3)))  # each 3x3 block all hidden or all shown


def test_generator_helper():
    g = torch.Generator()
    assert as_generator(g) is g
    expected = torch.rand(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.rand(3, generator=as_generator(7)), expected)
    with pytest.raises(TypeError):
        as_generator(True)
