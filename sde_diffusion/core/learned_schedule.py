"""A learned β(t): VDM's monotone network for the log-SNR (Kingma et al. 2021, §3.4 and App. H), as a BetaSchedule.

VDM learns γ(t) = −log SNR(t) = −2λ(t) on [0, 1] with γ(t) = γ₀ + (γ₁ − γ₀)γ̃(t), γ̃ = (net(t) − net(0))/(net(1) −
net(0)) and net(t) = l₁(t) + l₃(sigmoid(l₂(l₁(t)))) built from linear layers with positive weights, so γ̃ increases
from 0 to 1. A VP SDE here starts at the data (B(0) = 0, λ(0) = ∞), so its own log-SNR is taken as
−2λ(t) = γ(t) + log ρ(t) with ρ = t/(t + t₀): λ runs to ∞ within the first few t₀ (default 1e-7·T, below any t_min
used here) and is VDM's −γ/2 after, so w = −dλ/dt stays bounded on [t_min, T] as in VDM. σ²/s² = e^{B} − 1 = ρe^{γ}:

    B(t) = log(1 + ρ(t) e^{γ(t)}),    β(t) = (ρ γ'(t) + ρ'(t)) / (e^{−γ(t)} + ρ),    ρ' = t₀/(t + t₀)²,

and λ(T) = −(γ₁ + log ρ(T))/2. γ₀, γ₁ (the endpoints) and the shape parameters are an nn.Module's parameters: a
ScoreModel registers the schedule of its SDE, so checkpoints carry them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from .checks import ArgumentError
from .schedules import BetaSchedule


class LearnedBeta(nn.Module, BetaSchedule):
    """β(t) of the learned −2λ = γ(t) + log ρ(t) (module docstring); `hidden` sigmoid units (VDM: 1024). The defaults
    put λ at linear β's (0.1 → 20) at t = 1e-5 and T; `seed` draws the initial shape. Frozen unless `trainable`:
    then its objective is VDM's split gradients (endpoints on E[L], shape on E[L²]), objectives.LearnedScheduleELBO."""

    label = "learned"

    def __init__(
        self,
        gamma_0: float = -13.81,
        gamma_1: float = 10.05,
        hidden: int = 64,
        t_zero: float = 1e-7,
        T: float = 1.0,
        seed: int = 0,
        trainable: bool = False,
    ):
        super().__init__()
        if not gamma_1 > gamma_0:
            raise ArgumentError("gamma_1", gamma_1, f"> gamma_0={gamma_0}")
        if hidden < 1:
            raise ArgumentError("hidden", hidden, ">= 1")
        if not T > 0:
            raise ArgumentError("T", T, "> 0")
        if not 0 < t_zero < T:
            raise ArgumentError("t_zero", t_zero, f"in (0, T={T})")
        self.T, self.t_zero = float(T), float(t_zero)
        gen = torch.Generator().manual_seed(seed)
        self.gamma_0 = nn.Parameter(torch.tensor(float(gamma_0), dtype=torch.float64))
        self.gamma_1 = nn.Parameter(torch.tensor(float(gamma_1), dtype=torch.float64))
        # raw weights; the layers use softplus(raw) > 0 (VDM takes |w|)
        self.w1 = nn.Parameter(torch.tensor(0.5413, dtype=torch.float64))  # softplus⁻¹(1)
        self.b1 = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.w2 = nn.Parameter(torch.randn(hidden, generator=gen, dtype=torch.float64))
        self.b2 = nn.Parameter(torch.randn(hidden, generator=gen, dtype=torch.float64))
        self.w3 = nn.Parameter(torch.randn(hidden, generator=gen, dtype=torch.float64) - 3)
        self.requires_grad_(trainable)
        self.validate(self.T)

    def endpoint_parameters(self) -> list[nn.Parameter]:
        return [self.gamma_0, self.gamma_1]

    def shape_parameters(self) -> list[nn.Parameter]:
        return [self.w1, self.b1, self.w2, self.b2, self.w3]

    def _net(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """net(u) and dnet/du for u of any shape: l₁ = w₁u + b₁, net = l₁ + Σ_h w₃_h sigmoid(w₂_h l₁ + b₂_h)."""
        w1, w2, w3 = (softplus(p).to(u.dtype) for p in (self.w1, self.w2, self.w3))
        l1 = w1 * u + self.b1.to(u.dtype)
        h = torch.sigmoid(l1.unsqueeze(-1) * w2 + self.b2.to(u.dtype))
        return l1 + (h * w3).sum(-1), w1 * (1 + (h * (1 - h) * w2 * w3).sum(-1))

    def gamma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """γ(t) = γ₀ + (γ₁ − γ₀)γ̃(t/T) and γ'(t)."""
        u = t / self.T
        net, dnet = self._net(u)
        ends, _ = self._net(torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device))
        g0, g1 = self.gamma_0.to(t.dtype), self.gamma_1.to(t.dtype)
        scale = (g1 - g0) / (ends[1] - ends[0])
        return g0 + scale * (net - ends[0]), scale * dnet / self.T

    def beta(self, t: Tensor) -> Tensor:
        g, dg = self.gamma(t)
        rho, drho = t / (t + self.t_zero), self.t_zero / (t + self.t_zero) ** 2
        return (rho * dg + drho) / (torch.exp(-g) + rho)

    def integral(self, t: Tensor) -> Tensor:
        """B(t) = log(1 + ρ(t)e^{γ(t)}), B(0) = 0 exactly."""
        return torch.log1p(t / (t + self.t_zero) * torch.exp(self.gamma(t)[0]))


def trainable_schedule(sde: object) -> LearnedBeta | None:
    """`sde`'s β(t) if it is a LearnedBeta built with `trainable` (its objective is then
    objectives.LearnedScheduleELBO), else None."""
    schedule = getattr(sde, "schedule", None)
    if isinstance(schedule, LearnedBeta) and any(p.requires_grad for p in schedule.parameters()):
        return schedule
    return None
