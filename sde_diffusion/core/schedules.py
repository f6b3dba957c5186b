"""Noise schedules β(t) of the VP and sub-VP SDEs and their integrals B(t) = ∫₀ᵗ β(s) ds.

Every schedule maps a tensor of times (any shape, float32 or float64) to a tensor of the same shape and
dtype, differentiably. A subclass only has to give `beta`; `integral` then falls back to Gauss–Legendre
quadrature and `integral_inverse` to bisection, and the built-in schedules override them in closed form where one
exists. Every schedule checks its β on [0, T] when built, and the VP / sub-VP SDE again on its own [0, T].
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .checks import ArgumentError

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(64)


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ArgumentError(name, value, "> 0")
    return float(value)


class BetaSchedule(ABC):
    """β(t) > 0, the rate of the VP-SDE dx = −½β(t)x dt + √β(t) dw (Song et al. 2021, eq. 11). `label` and `shown`
    (the attributes that shape β(t)) make its `name` for figure titles."""

    label = "β(t)"
    shown: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The schedule as a person names it, e.g. "cosine (s = 0.008)", "linear (β_min = 0.1, β_max = 20)" (and
        T when it is not 1)."""
        keys = [*self.shown, *(["T"] if getattr(self, "T", 1.0) != 1.0 else [])]
        args = ", ".join(f"{_SYMBOLS.get(k, k)} = {getattr(self, k):g}" for k in keys)
        return f"{self.label} ({args})" if args else self.label

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

    def validate(self, T: float) -> None:
        """Raise a ValueError naming the first time where β < 0 or β is not finite, on a 10 001-point grid of [0, T]."""
        t = torch.linspace(0, T, 10_001, dtype=torch.float64)
        b = self.beta(t)
        if not isinstance(b, Tensor) or b.shape != t.shape:
            got = f"shape {tuple(b.shape)}" if isinstance(b, Tensor) else type(b).__name__
            raise ValueError(
                f"beta(t) must map a tensor of times of shape {tuple(t.shape)} to one of that shape, got {got}"
            )
        bad = (~torch.isfinite(b) | (b < 0)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"beta(t) must be finite and >= 0 on [0, T={T:g}], got beta({t[i]:.6g}) = {b[i]:.6g}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class LinearBeta(BetaSchedule):
    """β(t) = β_min + (t/T)(β_max − β_min) (Song et al. 2021, App. B; DDPM's linear schedule in the limit)."""

    label, shown = "linear", ("beta_min", "beta_max")

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        self.beta_min = _positive("beta_min", beta_min)
        self.beta_max = float(beta_max)
        self.T = _positive("T", T)
        if self.beta_max < self.beta_min:
            raise ArgumentError("beta_max", beta_max, f">= beta_min={beta_min}")
        self.validate(self.T)

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

    label, shown = "constant", ("beta_value",)

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

    label, shown = "cosine", ("s",)

    def __init__(self, s: float = 0.008, beta_max: float = 100.0, T: float = 1.0):
        self.s = _positive("s", s)
        self.beta_max = _positive("beta_max", beta_max)
        self.T = _positive("T", T)
        self._rate = math.pi / (self.T * (1 + self.s))  # dφ/dt times 2
        self._phi0 = self.s / (1 + self.s) * math.pi / 2
        if self.beta_max <= self._rate * math.tan(self._phi0):
            raise ArgumentError("beta_max", beta_max, "above the cosine schedule's β(0)")
        phi_c = math.atan(self.beta_max / self._rate)
        self.t_clip = self.T * (phi_c * 2 / math.pi * (1 + self.s) - self.s)
        self._b_clip = -2 * math.log(math.cos(phi_c) / math.cos(self._phi0))
        self.validate(self.T)

    def _phi(self, t: Tensor) -> Tensor:
        return (t / self.T + self.s) / (1 + self.s) * math.pi / 2

    def beta(self, t: Tensor) -> Tensor:
        tc = torch.minimum(t, torch.full_like(t, self.t_clip))
        return torch.where(t < self.t_clip, self._rate * torch.tan(self._phi(tc)), self.beta_max)

    def integral(self, t: Tensor) -> Tensor:
        """B = −2 log(cos φ(t)/cos φ(0)) = −2 log1p(−2 sin²(Δ/2) − tan φ(0) sin Δ), Δ = φ(t) − φ(0): no cancellation
        near t = 0, so float32 keeps B's relative precision there."""
        tc = torch.minimum(t, torch.full_like(t, self.t_clip))
        delta = tc / (self.T * (1 + self.s)) * (math.pi / 2)
        cosine = -2 * torch.log1p(-2 * torch.sin(delta / 2) ** 2 - math.tan(self._phi0) * torch.sin(delta))
        return torch.where(t < self.t_clip, cosine, self._b_clip + self.beta_max * (t - self.t_clip))

    def integral_inverse(self, b: Tensor) -> Tensor:
        bc = torch.minimum(b, torch.full_like(b, self._b_clip))
        phi = torch.arccos(math.cos(self._phi0) * torch.exp(-bc / 2))
        cosine = self.T * (phi * 2 / math.pi * (1 + self.s) - self.s)
        return torch.where(b < self._b_clip, cosine, self.t_clip + (b - self._b_clip) / self.beta_max)


class PolynomialBeta(BetaSchedule):
    """β(t) = β_min + (β_max − β_min)(t/T)^p: LinearBeta at p = 1; p > 1 holds β low for longer and adds noise late."""

    label, shown = "polynomial", ("beta_min", "beta_max", "p")

    def __init__(self, beta_min: float = 0.1, beta_max: float = 30.0, p: float = 2.0, T: float = 1.0):
        self.beta_min = _positive("beta_min", beta_min)
        self.beta_max = float(beta_max)
        self.p = _positive("p", p)
        self.T = _positive("T", T)
        if self.beta_max < self.beta_min:
            raise ArgumentError("beta_max", beta_max, f">= beta_min={beta_min}")
        self.validate(self.T)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + (self.beta_max - self.beta_min) * (t / self.T) ** self.p

    def integral(self, t: Tensor) -> Tensor:
        """B(t) = β_min t + (β_max − β_min) T/(p + 1)·(t/T)^{p+1}; B⁻¹ has no closed form for general p: bisection."""
        c = (self.beta_max - self.beta_min) * self.T / (self.p + 1)
        return self.beta_min * t + c * (t / self.T) ** (self.p + 1)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _softplus(x: Tensor) -> Tensor:
    """log(1 + eˣ), exact (torch's softplus is linear above 20)."""
    return torch.logaddexp(x, torch.zeros_like(x))


class SigmoidBeta(BetaSchedule):
    """Chen's (2023, Alg. 1) sigmoid schedule in continuous time, β clipped at β_max.

    ᾱ(t) = (σ(e) − σ(u))/(σ(e) − σ(s)) with σ the logistic function, s = start/τ, e = end/τ and u(t) = s + (e − s)t/T,
    so B(t) = −log ᾱ = softplus(u) − softplus(s) − log(1 − e^{u−e}) + log(1 − e^{s−e}) (a form free of cancellation)
    and β(t) = k(σ(u) + 1/(e^{e−u} − 1)), k = (e − s)/T. β increases to ∞ at t = T, where ᾱ(T) = 0 (Chen clips ᾱ at
    1e-9 instead). As in CosineBeta, β = β_max from the time t_c where it reaches β_max, and B = B(t_c) + β_max(t − t_c)
    after it. Near T, β ≈ 1/(T − t): t_c ≈ T − 1/β_max, and s(T)² = e^{−B(T)} shrinks like 1/β_max.
    """

    label, shown = "sigmoid", ("start", "end", "tau")

    def __init__(
        self, start: float = -3.0, end: float = 3.0, tau: float = 1.0, beta_max: float = 1000.0, T: float = 1.0
    ):
        if not end > start:
            raise ArgumentError("end", end, f"> start={start}")
        self.start, self.end = float(start), float(end)
        self.tau = _positive("tau", tau)
        self.beta_max = _positive("beta_max", beta_max)
        self.T = _positive("T", T)
        self._s, self._e = self.start / self.tau, self.end / self.tau
        self._k = (self._e - self._s) / self.T  # du/dt
        self._dv = _sigmoid(self._e) - _sigmoid(self._s)  # σ(e) − σ(s) > 0
        beta0 = self._k * (_sigmoid(self._s) + 1 / math.expm1(self._e - self._s))
        if self.beta_max <= beta0:
            raise ValueError(
                f"beta_max={beta_max} must exceed the sigmoid schedule's β(0) = {beta0:.4g}; raise beta_max"
            )
        # β = β_max ⇔ k q² + (β_max − k) q − β_max σ(−e) = 0 for q = 1 − σ(u): its one positive root, cancellation-free
        d, c = self.beta_max - self._k, 4 * self._k * self.beta_max * _sigmoid(-self._e)
        root = math.sqrt(d * d + c)
        q = c / (2 * self._k * (d + root)) if d > 0 else (root - d) / (2 * self._k)
        self.t_clip = (math.log1p(-q) - math.log(q) - self._s) / self._k
        self._b_clip = float(self._integral(torch.tensor(self.t_clip, dtype=torch.float64)))
        self.validate(self.T)

    def _u(self, t: Tensor) -> Tensor:
        return self._s + self._k * torch.minimum(t, torch.full_like(t, self.t_clip))

    def _integral(self, t: Tensor) -> Tensor:
        """B for t ≤ t_c in terms of d = u − s, free of cancellation near t = 0: softplus(s + d) − softplus(s) =
        log1p(σ(s)·expm1(d)) and (1 − e^{u−e})/(1 − e^{s−e}) = 1 − expm1(d)/expm1(e − s)."""
        em = torch.expm1(self._k * torch.minimum(t, torch.full_like(t, self.t_clip)))
        return torch.log1p(_sigmoid(self._s) * em) - torch.log1p(-em / math.expm1(self._e - self._s))

    def beta(self, t: Tensor) -> Tensor:
        u = self._u(t)
        return torch.where(t < self.t_clip, self._k * (torch.sigmoid(u) + 1 / torch.expm1(self._e - u)), self.beta_max)

    def integral(self, t: Tensor) -> Tensor:
        return torch.where(t < self.t_clip, self._integral(t), self._b_clip + self.beta_max * (t - self.t_clip))

    def integral_inverse(self, b: Tensor) -> Tensor:
        """σ(u) = σ(s) − (σ(e) − σ(s))·expm1(−b) and 1 − σ(u) = σ(−e) + (σ(e) − σ(s))e^{−b}, so u = logit σ(u)."""
        bc = torch.minimum(b, torch.full_like(b, self._b_clip))
        sigma_u = _sigmoid(self._s) - self._dv * torch.expm1(-bc)
        u = torch.log(sigma_u) - torch.log(_sigmoid(-self._e) + self._dv * torch.exp(-bc))
        return torch.where(b < self._b_clip, (u - self._s) / self._k, self.t_clip + (b - self._b_clip) / self.beta_max)


class LogSNRLinearBeta(BetaSchedule):
    """The VP β(t) whose log-SNR is the line λ(t) = λ_max − (λ_max − λ_min)t/T (VDM's fixed linear γ = −2λ, Kingma
    et al. 2021), shifted so that ᾱ(0) = 1.

    ᾱ = sigmoid(2λ(t)) alone would give B(0) = softplus(−2λ_max) > 0, but a VP SDE starts at the data, B(0) = 0. So
    B(t) = softplus(−2λ(t)) − softplus(−2λ_max), ᾱ(t) = sigmoid(2λ(t))/sigmoid(2λ_max) and β(t) = 2Δλ/T·sigmoid(−2λ(t)),
    Δλ = λ_max − λ_min: smooth, bounded, with a closed-form B⁻¹. The SDE's own log-SNR λ̂(t) = log(s/σ) then has the
    line's noise-to-signal ratio less its value at t = 0 (as VESDE's σ(t)² − σ_min²):
    e^{−2λ̂} = (e^{−2λ} − e^{−2λ_max})/(1 + e^{−2λ_max}), so 0 ≤ λ̂ − λ ≤ e^{−2Δλ t/T} + e^{−2λ_max}/2 once
    e^{−2Δλ t/T} ≤ ¾. So λ̂ is the line up to e^{−2Δλ t/T}, and `logsnr` time steps are uniform in t wherever that is
    negligible. No VP schedule with B(0) = 0 and a finite β(0) does better near t = 0, where λ̂ ≈ −½ log(β(0)t) → ∞;
    this shift keeps β smooth, while a λ̂ exactly linear on all of (0, T] would need a jump of B (a delta in β) at 0.
    """

    label, shown = "log-SNR linear", ("lambda_max", "lambda_min")

    def __init__(self, lambda_max: float = 6.65, lambda_min: float = -5.0, T: float = 1.0):
        if not (math.isfinite(lambda_max) and math.isfinite(lambda_min) and lambda_max > lambda_min):
            raise ArgumentError("lambda_max", lambda_max, f"finite and > lambda_min={lambda_min} (finite)")
        self.lambda_max, self.lambda_min = float(lambda_max), float(lambda_min)
        self.T = _positive("T", T)
        self._slope = (self.lambda_max - self.lambda_min) / self.T
        self._b0 = float(_softplus(torch.tensor(-2 * self.lambda_max, dtype=torch.float64)))
        self.validate(self.T)

    def _lambda(self, t: Tensor) -> Tensor:
        return self.lambda_max - self._slope * t

    def beta(self, t: Tensor) -> Tensor:
        return 2 * self._slope * torch.sigmoid(-2 * self._lambda(t))

    def integral(self, t: Tensor) -> Tensor:
        """softplus(a + d) − softplus(a) = log1p(σ(a)·expm1(d)) with a = −2λ_max, d = 2Δλ t/T: no cancellation."""
        return torch.log1p(_sigmoid(-2 * self.lambda_max) * torch.expm1(2 * self._slope * t))

    def integral_inverse(self, b: Tensor) -> Tensor:
        """−2λ = softplus⁻¹(b + softplus(−2λ_max)), with softplus⁻¹(y) = y + log(1 − e^{−y})."""
        y = b + self._b0
        return (self.lambda_max + 0.5 * (y + torch.log(-torch.expm1(-y)))) / self._slope


class EDMBeta(BetaSchedule):
    """EDM's ρ-interpolation of the noise level (Karras et al. 2022, eq. 5) as a VP β(t), rising from σ_min to σ_max.

    σ̃(t) = (σ_min^{1/ρ} + (t/T)(σ_max^{1/ρ} − σ_min^{1/ρ}))^ρ is EDM's step-i noise level with i/N read backwards as
    t/T. A VP SDE at noise-to-signal ratio σ̃ has ᾱ = 1/(1 + σ̃²); shifted so that ᾱ(0) = 1, B(t) = log(1 + σ̃(t)²) −
    log(1 + σ_min²) and β = 2σ̃σ̃'/(1 + σ̃²). The SDE's own noise-to-signal ratio is then √((σ̃² − σ_min²)/(1 + σ_min²)),
    as VESDE's σ(t)² − σ_min², and ᾱ(T) = (1 + σ_min²)/(1 + σ_max²).
    """

    label, shown = "EDM", ("sigma_min", "sigma_max", "rho")

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, T: float = 1.0):
        self.sigma_min = _positive("sigma_min", sigma_min)
        if not sigma_max > sigma_min:
            raise ArgumentError("sigma_max", sigma_max, f"> sigma_min={sigma_min}")
        self.sigma_max = float(sigma_max)
        self.rho = _positive("rho", rho)
        self.T = _positive("T", T)
        self._a = self.sigma_min ** (1 / self.rho)
        self._slope = (self.sigma_max ** (1 / self.rho) - self._a) / self.T  # of σ̃^{1/ρ} in t
        self.validate(self.T)

    def _root(self, t: Tensor) -> Tensor:
        return self._a + self._slope * t  # σ̃^{1/ρ}

    def beta(self, t: Tensor) -> Tensor:
        r = self._root(t)
        return 2 * self.rho * self._slope * r ** (2 * self.rho - 1) / (1 + r ** (2 * self.rho))

    def integral(self, t: Tensor) -> Tensor:
        """B = log1p((σ̃² − σ_min²)/(1 + σ_min²)) with σ̃² − σ_min² = σ_min²·expm1(2ρ log1p(slope·t/σ_min^{1/ρ})): no
        cancellation near t = 0."""
        growth = torch.expm1(2 * self.rho * torch.log1p(self._slope / self._a * t))
        return torch.log1p(self.sigma_min**2 / (1 + self.sigma_min**2) * growth)

    def integral_inverse(self, b: Tensor) -> Tensor:
        """σ̃² = (1 + σ_min²)e^b − 1 = expm1(b) + σ_min² e^b, then t = (σ̃^{1/ρ} − σ_min^{1/ρ})/slope."""
        sigma2 = torch.expm1(b) + self.sigma_min**2 * torch.exp(b)
        return (sigma2 ** (0.5 / self.rho) - self._a) / self._slope


class CallableBeta(BetaSchedule):
    """A user-defined β(t) from any callable tensor → tensor, checked on [0, T]; B(t) and its inverse by quadrature."""

    label, shown = "callable", ()

    def __init__(self, beta_fn: Callable[[Tensor], Tensor], T: float = 1.0):
        if not callable(beta_fn):
            raise ArgumentError("beta_fn", beta_fn, "callable")
        self.beta_fn = beta_fn
        self.T = _positive("T", T)
        self.validate(self.T)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_fn(t)


_SYMBOLS = {
    "beta_min": "β_min",
    "beta_max": "β_max",
    "beta_value": "β",
    "tau": "τ",
    "lambda_max": "λ_max",
    "lambda_min": "λ_min",
    "sigma_min": "σ_min",
    "sigma_max": "σ_max",
    "rho": "ρ",
}
