"""bench.gradient_spectrum: the high-frequency share of an image batch's power, on closed-form images."""

import math

import pytest
import torch

from bench.gradient_spectrum import high_frequency_share


def _cosine(period: float, size: int = 28) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64)
    return torch.cos(2 * math.pi * x / period).view(1, 1, 1, size).expand(2, 1, size, size)


def test_a_checkerboard_is_all_high_frequency_and_a_slow_wave_none():
    assert high_frequency_share(_cosine(2)) == pytest.approx(1.0)  # Nyquist
    assert high_frequency_share(_cosine(28)) == pytest.approx(0.0, abs=1e-12)
    assert high_frequency_share(torch.ones(1, 1, 8, 8)) == pytest.approx(0.0, abs=1e-12)


def test_equal_power_at_a_low_and_a_high_frequency_splits_evenly():
    both = _cosine(28) + _cosine(28 / 12)  # 1/28 and 12/28 cycles per pixel: the two sides of 0.25
    assert high_frequency_share(both) == pytest.approx(0.5)
