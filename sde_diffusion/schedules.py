"""Noise schedules β(t) of the VP and sub-VP SDEs and their integrals B(t) = ∫₀ᵗ β(s) ds.

Every schedule maps a tensor of times (any shape, float32 or float64) to a tensor of the same shape and
dtype, differentiably. A subclass only has to give `beta`; `integral` then falls back to Gauss–Legendre
quadrature and `integral_inverse` to bisection, and the built-in schedules override both in closed form.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(64)


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


class BetaSchedule(ABC):
    """β(t) > 0, the rate of the VP-SDE dx = −½β(t)x dt + √β(t) dw (Song et al. 2021, eq. 11)."""

    @abstractmethod
    def beta(self, t: Tensor) -> Tensor:
        """β(t)."""

    def integral(self, t: Tensor) -> Tensor:
        """B(t) = ∫₀ᵗ β(s) ds by 64-point Gauss–Legendre quadrature (exact for polynomials of degree ≤ 127)."""
        nodes = torch.as_tensor(_GL_NODES, dtype=t.dtype, device=t.device)
        weights = torch.as_tensor(_GL_WEIGHTS, dtype=t.dtype, device=t.device)
        s = 0.5 * t.unsqueeze(-1) * (nodes + 1)
        return 0.5 * t * (self.beta(s) * weights).sum(-1)

    def integral_inverse(self, b: Tensor) -> Tensor:
        """t such that B(t) = b, by bisection (B is increasing because β > 0)."""
        lo = torch.zeros_like(b)
        hi = torch.ones_like(b)
        while bool((self.integral(hi) < b).any()):
            hi = torch.where(self.integral(hi) < b, 2 * hi, hi)
        for _ in range(100 if b.dtype == torch.float64 else 50):
            mid = 0.5 * (lo + hi)
            below = self.integral(mid) < b
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class LinearBeta(BetaSchedule):
    """β(t) = β_min + (t/T)(β_max − β_min) (Song et al. 2021, App. B; DDPM's linear schedule in the limit)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        self.beta_min = _positive("beta_min", beta_min)
        self.beta_max = float(beta_max)
        self.T = _positive("T", T)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be >= beta_min, got beta_max={beta_max} < beta_min={beta_min}")

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t / self.T * (self.beta_max - self.beta_min)

    def integral(self, t: Tensor) -> Tensor:
        """B(t) = β_min t + ½(β_max − β_min) t²/T."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2 / self.T

    def integral_inverse(self, b: Tensor) -> Tensor:
        """The positive root of ½(Δβ/T) t² + β_min t − b = 0, in the cancellation-free form 2b / (β_min + √·)."""
        slope = (self.beta_max - self.beta_min) / self.T
        return 2 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * slope * b))


class ConstantBeta(BetaSchedule):
    """β(t) = β: the Ornstein–Uhlenbeck process."""

    def __init__(self, beta: float = 5.0):
        self.beta_value = _positive("beta", beta)

    def beta(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.beta_value)

    def integral(self, t: Tensor) -> Tensor:
        return self.beta_value * t

    def integral_inverse(self, b: Tensor) -> Tensor:
        return b / self.beta_value


class CosineBeta(BetaSchedule):
    """Continuous form of Nichol & Dhariwal's (2021, eq. 17) cosine schedule, clipped at β_max.

    ᾱ(t) = cos²(φ(t)) / cos²(φ(0)) with φ(t) = (t/T + s)/(1 + s)·π/2, so B(t) = −log ᾱ(t) and
    β(t) = dB/dt = π/(T(1 + s))·tan φ(t). That rate is infinite at t = T, so it is clipped: β(t) = β_max
    from the time t_c where the cosine rate reaches β_max, and B(t) = B(t_c) + β_max (t − t_c) after it.
    β and B stay exactly consistent (B is the integral of the clipped β), and ᾱ(T) = e^{−B(T)} > 0.
    """

    def __init__(self, s: float = 0.008, beta_max: float = 100.0, T: float = 1.0):
        self.s = _positive("s", s)
        self.beta_max = _positive("beta_max", beta_max)
        self.T = _positive("T", T)
        self._rate = math.pi / (self.T * (1 + self.s))  # dφ/dt times 2
        self._phi0 = self.s / (1 + self.s) * math.pi / 2
        if self.beta_max <= self._rate * math.tan(self._phi0):
            raise ValueError(f"beta_max={beta_max} is below the cosine schedule's β(0); raise beta_max")
        phi_c = math.atan(self.beta_max / self._rate)
        self.t_clip = self.T * (phi_c * 2 / math.pi * (1 + self.s) - self.s)
        self._b_clip = -2 * math.log(math.cos(phi_c) / math.cos(self._phi0))

    def _phi(self, t: Tensor) -> Tensor:
        return (t / self.T + self.s) / (1 + self.s) * math.pi / 2

    def beta(self, t: Tensor) -> Tensor:
        tc = torch.minimum(t, torch.full_like(t, self.t_clip))
        return torch.where(t < self.t_clip, self._rate * torch.tan(self._phi(tc)), self.beta_max)

    def integral(self, t: Tensor) -> Tensor:
        tc = torch.minimum(t, torch.full_like(t, self.t_clip))
        cosine = -2 * torch.log(torch.cos(self._phi(tc)) / math.cos(self._phi0))
        return torch.where(t < self.t_clip, cosine, self._b_clip + self.beta_max * (t - self.t_clip))

    def integral_inverse(self, b: Tensor) -> Tensor:
        bc = torch.minimum(b, torch.full_like(b, self._b_clip))
        phi = torch.arccos(math.cos(self._phi0) * torch.exp(-bc / 2))
        cosine = self.T * (phi * 2 / math.pi * (1 + self.s) - self.s)
        return torch.where(b < self._b_clip, cosine, self.t_clip + (b - self._b_clip) / self.beta_max)


class CallableBeta(BetaSchedule):
    """A user-defined β(t) from any callable tensor → tensor; B(t) and its inverse come by quadrature."""

    def __init__(self, beta_fn: Callable[[Tensor], Tensor]):
        if not callable(beta_fn):
            raise ValueError(f"beta_fn must be callable, got {type(beta_fn).__name__}")
        self.beta_fn = beta_fn

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_fn(t)
