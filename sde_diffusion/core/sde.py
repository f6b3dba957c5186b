"""The forward SDEs dx = f(t)x dt + g(t) dw of Song et al. (2021): VP, sub-VP and VE, behind one interface.

A linear drift keeps the marginal Gaussian, p_{0t}(x_t | x_0) = N(s(t)x_0, σ(t)²I) (eq. 29). A subclass gives f(t),
g(t), s(t) and σ(t) of a (batch,) time tensor; the reverse drift (eqs. 6, 13) and Tweedie's E[x₀ | x_t] are derived
here once, for points or images.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import ArgumentError
from .schedules import BetaSchedule, LinearBeta

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def expand_as(c: Tensor, x: Tensor) -> Tensor:
    """Reshape a (batch,) coefficient to (batch, 1, …, 1) so that it broadcasts against x."""
    return c.reshape(-1, *([1] * (x.ndim - 1)))


class SDE(ABC):
    """A linear forward SDE on [0, T] with a Gaussian prior N(0, prior_std² I)."""

    def __init__(self, T: float = 1.0):
        if not T > 0:
            raise ArgumentError("T", T, "> 0")
        self.T = float(T)

    @abstractmethod
    def f(self, t: Tensor) -> Tensor:
        """Drift coefficient: the drift is f(t)·x."""

    @abstractmethod
    def g(self, t: Tensor) -> Tensor:
        """Diffusion coefficient g(t)."""

    @abstractmethod
    def scale(self, t: Tensor) -> Tensor:
        """s(t): the marginal mean is s(t)·x₀ (√ᾱ(t) for VP)."""

    @abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """σ(t): the marginal standard deviation (√(1 − ᾱ(t)) for VP)."""

    @property
    @abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the prior p_T that sampling starts from."""

    def log_snr(self, t: Tensor) -> Tensor:
        """λ(t) = log(s(t)/σ(t)), the half-log signal-to-noise ratio of Lu et al. (2022, eq. 3.3)."""
        return torch.log(self.scale(t)) - torch.log(self.sigma(t))

    def perturb(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = s(t)·x₀ + σ(t)·ε, a draw of p_{0t}(x_t | x₀) (eq. 29) for ε ~ N(0, I); t of shape (batch,)."""
        return expand_as(self.scale(t), x0) * x0 + expand_as(self.sigma(t), x0) * noise

    def log_snr_range(self, t_min: float) -> tuple[float, float]:
        """(λ(T), λ(t_min)): the λ-range of [t_min, T] as numbers, in float64 and without a graph (also for a
        learned β(t)); the ends of every λ-grid and λ-density."""
        with torch.no_grad():
            ends = self.log_snr(torch.tensor([self.T, t_min], dtype=torch.float64))
        return float(ends[0]), float(ends[1])

    def log_snr_inverse(self, lam: Tensor) -> Tensor:
        """t with λ(t) = lam, by bisection on [0, T] (λ decreases in t)."""
        lo, hi = torch.zeros_like(lam), torch.full_like(lam, self.T)
        for _ in range(100 if lam.dtype == torch.float64 else 50):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > lam
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def prior_sampling(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """x_T ~ N(0, prior_std² I)."""
        return self.prior_std * torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def prior_logp(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_std² I), summed over all but the batch dimension: shape (batch,)."""
        d = z[0].numel()
        sq = z.pow(2).flatten(1).sum(1)
        return -0.5 * d * math.log(2 * math.pi * self.prior_std**2) - 0.5 * sq / self.prior_std**2

    def reverse_drift(self, x: Tensor, t: Tensor, score: Tensor, probability_flow: bool = False) -> Tensor:
        """f(t)x − g(t)² ∇log p_t(x) (reverse SDE, Anderson 1982; Song et al. 2021, eq. 6), or with ½g(t)² the
        probability-flow ODE (eq. 13): the dx/dt both are solved with from T down. t is 0-d or (batch,); its
        coefficients are computed in t's dtype and device and moved to x's. Every sampler, likelihood and flow map
        calls this."""
        t = t.reshape(-1)
        f, g2 = (expand_as(c.to(x.device, x.dtype), x) for c in (self.f(t), self.g(t) ** 2))
        return f * x - (0.5 if probability_flow else 1.0) * g2 * score

    def tweedie(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """E[x₀ | x_t] = (x_t + σ(t)² ∇log p_t(x_t)) / s(t) (Tweedie's formula; Efron 2011, eq. 1.4)."""
        t = t.reshape(-1)
        sigma, s = (expand_as(c.to(x.device, x.dtype), x) for c in (self.sigma(t), self.scale(t)))
        return (x + sigma**2 * score) / s

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class PriorMismatchWarning(UserWarning):
    """N(0, I) is visibly not the law of a VP / sub-VP x_T, whose mean keeps s(T)x₀: s(T)² = e^{−B(T)} > 1e-3."""


class _BetaSDE(SDE):
    def __init__(self, schedule: BetaSchedule | None = None, T: float = 1.0):
        super().__init__(T)
        self.schedule = schedule if schedule is not None else LinearBeta()
        self.schedule.validate(self.T)  # on this SDE's [0, T], which may reach past the schedule's own T
        b_T = float(self.schedule.integral(torch.tensor(self.T, dtype=torch.float64)).detach())
        if b_T < -math.log(1e-3):
            warnings.warn(
                f"prior mismatch: x_T keeps s(T) = {math.exp(-b_T / 2):.3g} of x₀, s(T)² = e^(−B(T)) ="
                f" {math.exp(-b_T):.3g} > 1e-3 (KL of p(x_T | x₀) to N(0, I) ≈ ½s(T)²‖x₀‖²); raise beta_max or T until"
                f" B(T) = ∫₀ᵀ β dt ≥ 6.91 (now {b_T:.3g})",
                PriorMismatchWarning,
                stacklevel=2,
            )

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self.schedule.beta(t)

    def scale(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self.schedule.integral(t))

    @property
    def prior_std(self) -> float:
        return 1.0


class VPSDE(_BetaSDE):
    """Variance preserving: dx = −½β(t)x dt + √β(t) dw (Song et al. 2021, eq. 11); σ² = 1 − e^{−B(t)}."""

    def g(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.schedule.beta(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(-self.schedule.integral(t)))

    def log_snr_inverse(self, lam: Tensor) -> Tensor:
        """Closed form: ᾱ = 1/(1 + e^{−2λ}), so B(t) = softplus(−2λ) and t = B⁻¹(softplus(−2λ))."""
        return self.schedule.integral_inverse(torch.nn.functional.softplus(-2 * lam))

    def discretize(self, N: int = 1000) -> DDPMSchedule:
        """The discrete DDPM chain this SDE is the limit of (Song et al. 2021, App. B; Ho et al. 2020).

        t_i = i·T/(N−1) and β_i = β(t_i)·T/N (score_sde's convention), so for LinearBeta(0.1, 20) and
        N = 1000, β_i = linspace(1e-4, 0.02, 1000): DDPM's schedule. The forward kernel
        q(x_i | x_{i−1}) = N(√(1−β_i) x_{i−1}, β_i I) (seed eq. 13.7) composes to
        q(x_i | x_0) = N(√ᾱ_i x_0, (1 − ᾱ_i) I), ᾱ_i = ∏_{j≤i}(1 − β_j) (eqs. 13.9–13.11). Since
        −log(1 − β_j) = β_j + O(β_j²) and Σ_{j≤i} β_j is a Riemann sum of ∫β, log ᾱ_i = −∫₀^{t_i} β ds up to
        O(T·max β/N + Σ β_j²): the continuous marginal s(t)² = e^{−B(t)} is the N → ∞ limit of ᾱ_i.
        """
        if N < 2:
            raise ArgumentError("N", N, ">= 2")
        t = torch.linspace(0, self.T, N, dtype=torch.float64)
        betas = self.schedule.beta(t) * self.T / N
        if not bool((betas < 1).all()):
            raise ArgumentError(
                "N", N, f"large enough for this schedule that β_i = β(t_i)·T/N < 1 (it reaches {betas.max():.3g})"
            )
        alphas = 1 - betas
        return DDPMSchedule(t=t, betas=betas, alphas=alphas, alphas_cumprod=torch.cumprod(alphas, 0))


class SubVPSDE(_BetaSDE):
    """Sub-VP: dx = −½β(t)x dt + √(β(t)(1 − e^{−2B(t)})) dw (Song et al. 2021, eq. 12); σ = 1 − e^{−B(t)}."""

    def g(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.schedule.beta(t) * -torch.expm1(-2 * self.schedule.integral(t)))

    def sigma(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self.schedule.integral(t))


class VESDE(SDE):
    """Variance exploding: dx = σ(t)√(2 log(σ_max/σ_min)) dw with σ(t) = σ_min(σ_max/σ_min)^{t/T} (eq. 9).

    The marginal variance of x_t given x_0 is exactly σ(t)² − σ_min² (the SDE adds no noise at t = 0);
    score_sde rounds it to σ(t)², which this class does not.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0):
        super().__init__(T)
        if not sigma_min > 0:
            raise ArgumentError("sigma_min", sigma_min, "> 0")
        if not sigma_max > sigma_min:
            raise ArgumentError("sigma_max", sigma_max, f"> sigma_min={sigma_min}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def _sigma_geometric(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(t / self.T * self._log_ratio)

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def g(self, t: Tensor) -> Tensor:
        return self._sigma_geometric(t) * math.sqrt(2 * self._log_ratio / self.T)

    def scale(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.sqrt(torch.expm1(2 * t / self.T * self._log_ratio))

    def log_snr_inverse(self, lam: Tensor) -> Tensor:
        """Closed form: σ(t)² = σ_min²(e^{2tL/T} − 1) = e^{−2λ}, L = log(σ_max/σ_min)."""
        return self.T * torch.log1p(torch.exp(-2 * lam) / self.sigma_min**2) / (2 * self._log_ratio)

    @property
    def prior_std(self) -> float:
        return math.sqrt(self.sigma_max**2 - self.sigma_min**2)


@dataclass
class DDPMSchedule:
    """The discrete chain of Ho et al. (2020): β_i, α_i = 1 − β_i, ᾱ_i = ∏_{j≤i} α_j at times t_i."""

    t: Tensor
    betas: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor


class RectifiedFlowSDE(SDE):
    """The linear interpolant x_t = (1 − t)x₀ + tε of rectified flow (Liu et al. 2023; Lipman et al. 2023): s = 1 − t,
    σ = t, so f = d log s/dt = −1/(1 − t) and g² = dσ²/dt − 2fσ² = 2t/(1 − t) (Song et al. 2021, eq. 29 inverted).

    f and g blow up at t = 1 where s = 0, so T < 1: the prior is N(0, T²I), which misses x_T's mean (1 − T)x₀ by
    a KL of ½((1 − T)/T)²‖x₀‖² (1e-6‖x₀‖² at T = 0.999). Flow matching is this SDE with t ~ U and the loss
    ‖û − u‖² on the velocity u = ε − x₀ = dx_t/dt, which is the ε-MSE times 1/(1 − t)² (objectives' "flow").
    """

    def __init__(self, T: float = 0.999):
        super().__init__(T)
        if not T < 1:
            raise ArgumentError("T", T, "< 1 for the rectified-flow path (s(1) = 0)")

    def f(self, t: Tensor) -> Tensor:
        return -1 / (1 - t)

    def g(self, t: Tensor) -> Tensor:
        return torch.sqrt(2 * t / (1 - t))

    def scale(self, t: Tensor) -> Tensor:
        return 1 - t

    def sigma(self, t: Tensor) -> Tensor:
        return t.clone()

    def log_snr_inverse(self, lam: Tensor) -> Tensor:
        """Closed form: λ = log((1 − t)/t), so t = sigmoid(−λ)."""
        return torch.sigmoid(-lam)

    @property
    def prior_std(self) -> float:
        return self.T
