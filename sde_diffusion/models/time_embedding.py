"""Features of the network's time input τ ∈ [0, 1] (ScoreModel feeds τ = t/T): Fourier or sinusoidal."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core.checks import ArgumentError


class GaussianFourierFeatures(nn.Module):
    """[sin 2πWτ, cos 2πWτ] with fixed W ~ N(0, scale²) (Tancik et al. 2020; score_sde's NCSN++ embedding)."""

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ArgumentError("dim", dim, "an even number >= 2 (time features)")
        self.register_buffer("W", torch.randn(dim // 2) * scale)

    def forward(self, tau: Tensor) -> Tensor:
        angle = 2 * math.pi * tau[:, None] * self.W
        return torch.cat([angle.sin(), angle.cos()], -1)


class SinusoidalFeatures(nn.Module):
    """Transformer position features of 1000τ, periods up to 10⁴ (Vaswani et al. 2017; DDPM's step embedding)."""

    def __init__(self, dim: int, max_period: float = 10_000.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ArgumentError("dim", dim, "an even number >= 2 (time features)")
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / half))

    def forward(self, tau: Tensor) -> Tensor:
        angle = 1000 * tau[:, None] * self.freqs
        return torch.cat([angle.sin(), angle.cos()], -1)


TIME_FEATURES = {"fourier": GaussianFourierFeatures, "sinusoidal": SinusoidalFeatures}


def time_features(kind: str, dim: int) -> nn.Module:
    """The time-feature module named `kind` (one of TIME_FEATURES) with `dim` outputs."""
    if kind not in TIME_FEATURES:
        raise ArgumentError("time_features", kind, f"one of {sorted(TIME_FEATURES)}")
    return TIME_FEATURES[kind](dim)
