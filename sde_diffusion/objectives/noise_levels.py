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

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ..core.checks import ArgumentError
from ..core.sde import SDE


class NoiseLevels(ABC):
    """A density of λ on [lam_min, lam_max] = [λ(T), λ(t_min)]: `t(u)` maps uniforms to times, `draw(u)` gives the
    draws' λ and density as well, `pdf(t, lam)` is the density of λ at any (t, λ) pairs."""

    def __init__(self, sde: SDE, t_min: float):
        self.sde, self.t_min = sde, float(t_min)
        self.lam_min, self.lam_max = sde.log_snr_range(t_min)

    def t(self, u: Tensor) -> Tensor:
        """Times whose λ has this density, from uniforms u on [0, 1)."""
        return self.draw(u)[0]

    def draw(self, u: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(t, λ, p(λ)) from uniforms u on [0, 1): λ by the inverse CDF, t = λ⁻¹(λ) in [t_min, T]; λ and p are None
        where the draw does not give them for free (then λ = λ(t) and `pdf` are the caller's to compute)."""
        lam = self.lam(u)
        return self.times(lam), lam, None

    def times(self, lam: Tensor) -> Tensor:
        """t with λ(t) = lam, clamped to [t_min, T] (SDE.log_snr_inverse: closed form or bisection)."""
        return self.sde.log_snr_inverse(lam).clamp(self.t_min, self.sde.T)

    def update(self, lam: Tensor, loss: Tensor) -> None:  # noqa: B027 (a fixed density ignores it)
        """After a training step: its per-sample losses drawn at λ, which an adaptive density follows (a no-op for a
        fixed one)."""

    def state_dict(self) -> dict:
        """What resume must restore (an adaptive density's EMA; {} for a fixed one)."""
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027 (a fixed density has no state)
        """Restore a `state_dict()` (nothing for a fixed density)."""

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

    def draw(self, u: Tensor) -> tuple[Tensor, None, None]:
        """Today's draws are t itself: λ(t) and p are left to the weightings that need them."""
        return self.t(u), None, None

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
            allowed = f"bounds leaving a range inside [{self.lam_min:.3g}, {self.lam_max:.3g}]"
            raise ArgumentError("lo/hi", (lo, hi), allowed)

    def lam(self, u: Tensor) -> Tensor:
        return self.lo + (self.hi - self.lo) * u

    def pdf(self, t: Tensor, lam: Tensor) -> Tensor:
        return torch.full_like(lam, 1 / (self.hi - self.lo))


class PiecewiseLevels(NoiseLevels):
    """A density constant on each of `cells` equal λ-cells of the range, with masses `masses` (any positive numbers,
    normalised here; `set_masses` replaces them). Exact inverse CDF: the cell by the cumulative masses, then
    uniform within it; a draw's density is its cell's mass / width. The masses are host-side float64 bookkeeping in
    numpy (on arrays this small a numpy call costs less than a torch one); the draws read them as one table, cast to
    their device and dtype once per set of masses."""

    def __init__(self, sde: SDE, t_min: float, masses: Tensor):
        super().__init__(sde, t_min)
        self.width = (self.lam_max - self.lam_min) / len(masses)
        self._lowest = self.lam_min + self.width * np.arange(len(masses))  # each cell's lowest λ
        self.set_masses(masses)

    def centres(self) -> Tensor:
        """λ at the centre of each cell (float64)."""
        k = len(self.masses)
        return self.lam_min + (self.lam_max - self.lam_min) * (torch.arange(k, dtype=torch.float64) + 0.5) / k

    def set_masses(self, masses: Tensor) -> None:
        masses = masses.detach().to(torch.float64).cpu().numpy()
        if masses.shape != self._lowest.shape or not (np.isfinite(masses).all() and (masses > 0).all()):
            raise ValueError(f"the piecewise density needs {len(self._lowest)} masses, finite and > 0")
        self._store(masses / masses.sum())

    def _store(self, masses: np.ndarray) -> None:
        """Normalised masses (float64, > 0); the draws' table has one column per cell: the cumulative mass below it,
        its mass, its lowest λ and its density mass / width."""
        self.masses = masses
        below = np.concatenate([[0.0], np.cumsum(masses[:-1])])
        self._edges = below[1:]  # the cells' inner boundaries in u
        self._table = np.stack([below, masses, self._lowest, masses / self.width])
        self._cast: dict = {}  # (device, dtype) -> (edges, table) in the draws' dtype, made once per set of masses

    def _in(self, like: Tensor) -> tuple[Tensor, Tensor]:
        key = (like.device, like.dtype)
        if key not in self._cast:
            self._cast[key] = tuple(torch.from_numpy(a).to(like.device, like.dtype) for a in (self._edges, self._table))
        return self._cast[key]

    def lam(self, u: Tensor) -> Tensor:
        return self._invert(u)[0]

    def draw(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """λ by `lam`, and p(λ) = mass / width of the cell it was drawn in."""
        lam, pdf = self._invert(u)
        return self.times(lam), lam, pdf

    def _invert(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """λ of u: the cell c with cdf[c] <= u < cdf[c + 1], then uniform within it; and the cell's density."""
        edges, table = self._in(u)
        cell = torch.searchsorted(edges, u, right=True)  # in 0 .. cells − 1 for any u
        below, mass, lowest, pdf = table.index_select(1, cell)
        return torch.add(lowest, ((u - below) / mass).clamp_(0, 1), alpha=self.width), pdf

    def pdf(self, t: Tensor, lam: Tensor) -> Tensor:
        cell = ((lam - self.lam_min) / self.width).long().clamp(0, len(self.masses) - 1)  # truncation: the floor here
        return self._in(lam)[1][3].index_select(0, cell)


class AdaptiveLevels(PiecewiseLevels):
    """p(λ) on equal λ-cells ∝ √EMA[(w(λ)·ℓ)²] per cell, mixed with `mix` of uniform: the variance-minimising proposal
    for the loss seen so far (Nichol & Dhariwal 2021, §3.3, over λ-cells instead of steps). It starts as the
    importance density ∝ w, from w at the cells' centres (`w_centres`, one per cell). `update` folds in one step's
    per-sample losses (summed over the processes under DDP); its state (`state_dict`) is the EMA, which resume
    restores bitwise."""

    def __init__(self, sde: SDE, t_min: float, w_centres: Tensor, decay: float, mix: float):
        self.decay, self.mix = float(decay), float(mix)
        self.ema = w_centres.detach().to(torch.float64).square().cpu().numpy()
        super().__init__(sde, t_min, torch.from_numpy(self._masses()))

    def _masses(self) -> np.ndarray:
        root = np.sqrt(self.ema)
        return (1 - self.mix) / root.sum() * root + self.mix / len(root)

    @torch.no_grad()
    def update(self, lam: Tensor, loss: Tensor) -> None:
        """Fold in one step's per-sample losses w/p·ℓ drawn at λ, as w(λ)·ℓ = loss·p(λ) with p of λ's cell. On the
        host in float64 (one transfer), like the masses, where the per-cell sums are deterministic: bitwise resume."""
        k = len(self.ema)
        lam, loss = torch.stack([lam, loss]).double().cpu().numpy()
        cell = np.minimum(((lam - self.lam_min) / self.width).astype(np.intp), k - 1)  # λ >= lam_min: as in `pdf`
        total, count = np.bincount(cell, (loss * self._table[3][cell]) ** 2, k), np.bincount(cell, minlength=k)
        if dist.is_available() and dist.is_initialized():
            sums = torch.from_numpy(np.stack([total, count]))
            dist.all_reduce(sums)
            total, count = sums.numpy()
        if not np.isfinite(total.sum()):  # terms >= 0: finite iff each one is
            return
        mean = np.maximum(total / np.maximum(count, 1), 1e-30)
        np.copyto(self.ema, self.decay * self.ema + (1 - self.decay) * mean, where=count > 0)  # unseen: kept
        self._store(self._masses())  # > 0 (mix > 0) and normalised

    def state_dict(self) -> dict:
        return {"ema": torch.from_numpy(self.ema.copy())}

    def load_state_dict(self, state: dict) -> None:
        self.ema = state["ema"].to(torch.float64).cpu().numpy().copy()
        self.set_masses(torch.from_numpy(self._masses()))
