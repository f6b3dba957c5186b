"""Densities p(λ) of the training noise level λ = log(s/σ) = −log σ̃ (the SDE's half log-SNR, `SDE.log_snr`), each
truncated to the SDE's range [λ(T), λ(t_min)] and drawn by its inverse CDF from uniforms u, so that stratified
draws are stratified in λ and every draw comes from the caller's generator.

For every linear SDE dλ/dt = f − (dσ²/dt)/(2σ²) = −g²/(2σ²), since g² = dσ²/dt − 2fσ² (Song et al. 2021, eq. 29);
so t ~ U(t_min, T) has the density p(λ) = 2σ²/(g²(T − t_min)) in λ, and λ uniform is t with density ∝ g²/σ²:
Song et al. (2021b)'s importance sampling of the likelihood weighting, for any β(t).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from .sde import SDE


class NoiseLevels(ABC):
    """A density of λ on [lam_min, lam_max] = [λ(T), λ(t_min)]: `t(u)` maps uniforms to times, `pdf(t, lam)` is the
    density of λ at the drawn (t, λ) pairs."""

    def __init__(self, sde: SDE, t_min: float):
        self.sde, self.t_min = sde, float(t_min)
        ends = sde.log_snr(torch.tensor([sde.T, t_min], dtype=torch.float64))
        self.lam_min, self.lam_max = float(ends[0]), float(ends[1])

    def t(self, u: Tensor) -> Tensor:
        """Times whose λ has this density, from uniforms u on [0, 1)."""
        return self.sde.log_snr_inverse(self.lam(u)).clamp(self.t_min, self.sde.T)

    @abstractmethod
    def lam(self, u: Tensor) -> Tensor:
        """λ from uniforms u on [0, 1): the inverse CDF."""

    @abstractmethod
    def pdf(self, t: Tensor, lam: Tensor) -> Tensor:
        """The density of λ at (t, λ(t)) pairs."""


class ScheduleLevels(NoiseLevels):
    """t ~ U(t_min, T) under the SDE's own β(t): p(λ) = 2σ(t)²/(g(t)²(T − t_min)) (today's draws)."""

    def t(self, u: Tensor) -> Tensor:
        return self.t_min + (self.sde.T - self.t_min) * u

    def lam(self, u: Tensor) -> Tensor:
        return self.sde.log_snr(self.t(u))

    def pdf(self, t: Tensor, lam: Tensor) -> Tensor:
        return 2 * (self.sde.sigma(t) / self.sde.g(t)) ** 2 / (self.sde.T - self.t_min)


class NormalLevels(NoiseLevels):
    """log σ̃ = −λ ~ N(p_mean, p_std²), truncated: EDM's log-normal σ (Karras et al. 2022, P_mean, P_std); also the
    logit-normal t of Esser et al. (2024), whose t = σ/(s + σ) on the rectified-flow path has logit t = log σ̃."""

    def __init__(self, sde: SDE, t_min: float, p_mean: float, p_std: float):
        super().__init__(sde, t_min)
        self.p_mean, self.p_std = float(p_mean), float(p_std)
        z = torch.tensor([-self.lam_max, -self.lam_min], dtype=torch.float64).sub(p_mean).div(p_std)
        self._cdf_lo, self._cdf_hi = (float(c) for c in torch.special.ndtr(z))

    def lam(self, u: Tensor) -> Tensor:
        z = torch.special.ndtri(self._cdf_lo + (self._cdf_hi - self._cdf_lo) * u)
        return -(self.p_mean + self.p_std * z).clamp(-self.lam_max, -self.lam_min)

    def pdf(self, t: Tensor, lam: Tensor) -> Tensor:
        z = (-lam - self.p_mean) / self.p_std
        return torch.exp(-0.5 * z**2) / (self.p_std * math.sqrt(2 * math.pi) * (self._cdf_hi - self._cdf_lo))


class UniformLevels(NoiseLevels):
    """λ ~ U(lo, hi) inside the SDE's range (lo, hi default to its ends)."""

    def __init__(self, sde: SDE, t_min: float, lo: float | None = None, hi: float | None = None):
        super().__init__(sde, t_min)
        self.lo = self.lam_min if lo is None else max(float(lo), self.lam_min)
        self.hi = self.lam_max if hi is None else min(float(hi), self.lam_max)
        if not self.hi > self.lo:
            raise ValueError(f"lam_min/lam_max must leave a range inside [{self.lam_min:.3g}, {self.lam_max:.3g}]")

    def lam(self, u: Tensor) -> Tensor:
        return self.lo + (self.hi - self.lo) * u

    def pdf(self, t: Tensor, lam: Tensor) -> Tensor:
        return torch.full_like(lam, 1 / (self.hi - self.lo))


class PiecewiseLevels(NoiseLevels):
    """A density constant on each of `cells` equal λ-cells of the range, with masses `masses` (any positive numbers,
    normalised here; `set_masses` replaces them). Exact inverse CDF: the cell by the cumulative masses, then
    uniform within it."""

    def __init__(self, sde: SDE, t_min: float, masses: Tensor):
        super().__init__(sde, t_min)
        self.set_masses(masses)

    def centres(self) -> Tensor:
        """λ at the centre of each cell (float64)."""
        k = len(self.masses)
        return self.lam_min + (self.lam_max - self.lam_min) * (torch.arange(k, dtype=torch.float64) + 0.5) / k

    def set_masses(self, masses: Tensor) -> None:
        masses = masses.to(torch.float64)
        if not bool(torch.isfinite(masses).all() & (masses > 0).all()):
            raise ValueError("the piecewise density's masses must be finite and > 0")
        self.masses = masses / masses.sum()
        self._cdf = torch.cat([torch.zeros(1, dtype=torch.float64), self.masses.cumsum(0)])
        self._cdf[-1] = 1.0
        self._cast: dict = {}  # (device, dtype) -> (cdf, masses) in the draws' dtype, made once per set_masses

    def _in(self, like: Tensor) -> tuple[Tensor, Tensor]:
        key = (like.device, like.dtype)
        if key not in self._cast:
            self._cast[key] = self._cdf.to(like.device, like.dtype), self.masses.to(like.device, like.dtype)
        return self._cast[key]

    def lam(self, u: Tensor) -> Tensor:
        k, width = len(self.masses), (self.lam_max - self.lam_min) / len(self.masses)
        cdf, masses = self._in(u)
        cell = torch.searchsorted(cdf[1:-1], u, right=True).clamp(max=k - 1)
        within = ((u - cdf[cell]) / masses[cell]).clamp(0, 1)
        return self.lam_min + width * (cell + within)

    def pdf(self, t: Tensor, lam: Tensor) -> Tensor:
        k, width = len(self.masses), (self.lam_max - self.lam_min) / len(self.masses)
        cell = ((lam - self.lam_min) / width).floor().long().clamp(0, k - 1)
        return self._in(lam)[1][cell] / width
