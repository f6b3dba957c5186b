"""EDM's stochastic sampler (Karras et al. 2022, Alg. 2): churn, then a Heun step of dx̃/dσ̃ = (x̃ − D(x̃, σ̃))/σ̃.

Written in x̃ = x/s(t), σ̃ = σ(t)/s(t) = e^{−λ(t)}, where every linear SDE here is EDM's x̃ = x₀ + σ̃ε and D is
Tweedie's E[x₀ | x̃] at t = λ⁻¹(−log σ̃). Alg. 2's last, plain Euler step to σ̃ = 0 is the Tweedie step that
`sample(denoise=True)` adds.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm import trange

from ..sde import SDE, ScoreFn
from .common import at, randn_like
from .specs import Option, register

NONNEGATIVE = Option(low=0.0)


def _denoise(sde: SDE, score_fn: ScoreFn, x: Tensor, sigma: Tensor) -> Tensor:
    """D(x̃, σ̃): Tweedie's x̂₀ at the time with σ(t)/s(t) = σ̃ (float64 scalar σ̃), for x̃ in x's dtype."""
    t = sde.log_snr_inverse(-torch.log(sigma).reshape(1)).clamp(0, sde.T)[0]
    s = sde.scale(t.reshape(1))[0].to(x.dtype)
    return sde.tweedie(s * x, t, score_fn(s * x, at(t, x)))


@register(
    "edm",
    stochastic=True,
    nfe=lambda steps, o: 2 * steps,
    nfe_text="2·steps",
    s_churn=NONNEGATIVE,
    s_tmin=NONNEGATIVE,
    s_tmax=NONNEGATIVE,
    s_noise=NONNEGATIVE,
    spacing="karras",
)
def edm(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    t: Tensor,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    s_churn: float = 2.0,
    s_tmin: float = 0.05,
    s_tmax: float = 50.0,
    s_noise: float = 1.0,
) -> Tensor:
    """EDM's Alg. 2 (Karras et al. 2022) on the grid t in σ̃ = σ/s: from σ̃_i raise the noise to σ̂ = (1 + γ)σ̃_i
    (γ = min(s_churn/N, √2 − 1) for σ̃_i in [s_tmin, s_tmax], else 0; σ̂ ≤ σ̃(T)), then a Heun step to σ̃_{i+1};
    s_churn = 0 is the deterministic Heun sampler of Alg. 1."""
    steps = len(t) - 1
    sigma = torch.exp(-sde.log_snr(t))
    gamma_max = min(s_churn / steps, math.sqrt(2) - 1)
    x = x / sde.scale(t[:1])[0].to(x.dtype)
    for i in trange(steps, disable=not progress, desc="edm"):
        gamma = gamma_max if s_tmin <= float(sigma[i]) <= s_tmax else 0.0
        sigma_hat = torch.minimum(sigma[i] * (1 + gamma), sigma[0])
        if sigma_hat > sigma[i]:
            x = x + ((sigma_hat**2 - sigma[i] ** 2).sqrt() * s_noise).to(x.dtype) * randn_like(x, generator)
        h = (sigma[i + 1] - sigma_hat).to(x.dtype)
        d = (x - _denoise(sde, score_fn, x, sigma_hat)) / sigma_hat.to(x.dtype)
        x_next = x + h * d
        d_next = (x_next - _denoise(sde, score_fn, x_next, sigma[i + 1])) / sigma[i + 1].to(x.dtype)
        x = x + h * 0.5 * (d + d_next)
    return sde.scale(t[-1:])[0].to(x.dtype) * x
