"""EDM's stochastic sampler (Karras et al. 2022, Alg. 2): churn, then a Heun step of dx̃/dσ̃ = (x̃ − D(x̃, σ̃))/σ̃.

Written in x̃ = x/s(t), σ̃ = σ(t)/s(t) = e^{−λ(t)}, where every linear SDE here is EDM's x̃ = x₀ + σ̃ε and D is
Tweedie's E[x₀ | x̃] at t = λ⁻¹(−log σ̃). Alg. 2's last, plain Euler step to σ̃ = 0 is the Tweedie step that
`sample(denoise=True)` adds.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .common import Reverse
from .specs import Option, register

NONNEGATIVE = Option(low=0.0)


def _denoise(run: Reverse, x: Tensor, sigma: Tensor, step: int | None = None) -> Tensor:
    """D(x̃, σ̃): Tweedie's x̂₀ at the time with σ(t)/s(t) = σ̃ (float64 scalar σ̃), for x̃ in x's dtype; reported as
    `step` (at that time and x = s x̃) if given."""
    sde = run.sde
    t = sde.log_snr_inverse(-torch.log(sigma).reshape(1)).clamp(0, sde.T)[0]
    s = sde.scale(t.reshape(1))[0].to(x.dtype)
    x0 = sde.tweedie(s * x, t, run.score(s * x, t))
    if step is not None:
        run.report(step, t, s * x, x0)
    return x0


@register(
    "edm",
    stochastic=True,
    nfe=lambda steps, o: 2 * steps,
    nfe_text="2·steps",
    s_churn=NONNEGATIVE,
    s_tmin=NONNEGATIVE,
    s_tmax=NONNEGATIVE,
    s_noise=NONNEGATIVE,
    grid="karras",
)
def edm(
    run: Reverse,
    x: Tensor,
    t: Tensor,
    *,
    s_churn: float = 2.0,
    s_tmin: float = 0.05,
    s_tmax: float = 50.0,
    s_noise: float = 1.0,
) -> Tensor:
    """EDM's Alg. 2 (Karras et al. 2022) on the grid t in σ̃ = σ/s: from σ̃_i raise the noise to σ̂ = (1 + γ)σ̃_i
    (γ = min(s_churn/N, √2 − 1) for σ̃_i in [s_tmin, s_tmax], else 0; σ̂ ≤ σ̃(T)), then a Heun step to σ̃_{i+1};
    s_churn = 0 is the deterministic Heun sampler of Alg. 1. Each step is reported at the raised noise level σ̂, the
    time λ⁻¹(−log σ̂) ≥ t_i (t_i itself to rounding where γ = 0)."""
    sde, steps = run.sde, len(t) - 1
    sigma = torch.exp(-sde.log_snr(t))
    gamma_max = min(s_churn / steps, math.sqrt(2) - 1)
    x = x / sde.scale(t[:1])[0].to(x.dtype)
    for i in run.steps(steps, desc="edm"):
        gamma = gamma_max if s_tmin <= float(sigma[i]) <= s_tmax else 0.0
        sigma_hat = torch.minimum(sigma[i] * (1 + gamma), sigma[0])
        if sigma_hat > sigma[i]:
            x = x + ((sigma_hat**2 - sigma[i] ** 2).sqrt() * s_noise).to(x.dtype) * run.noise(x)
        h = (sigma[i + 1] - sigma_hat).to(x.dtype)
        d = (x - _denoise(run, x, sigma_hat, i)) / sigma_hat.to(x.dtype)
        x_next = x + h * d
        d_next = (x_next - _denoise(run, x_next, sigma[i + 1])) / sigma[i + 1].to(x.dtype)
        x = x + h * 0.5 * (d + d_next)
    return sde.scale(t[-1:])[0].to(x.dtype) * x
