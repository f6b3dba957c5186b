"""DDIM with noise η (Song, Meng & Ermon 2021, eq. 12 and 16) in continuous time, written in λ(t) for any linear SDE.

In EDM's variables x̃ = x/α, σ̃ = σ/α = e^{−λ} (α_t = s(t), σ_t = σ(t)), DDIM's σ_η(t|s)/α_t is exactly the noise of
k-diffusion's ancestral step (`get_ancestral_step`): from s to t, with x̂₀ Tweedie's estimate at s,
  σ̃_up = η σ̃_t √(1 − σ̃_t²/σ̃_s²),  σ̃_down = √(σ̃_t² − σ̃_up²),  x̃_t = x̂₀ + (σ̃_down/σ̃_s)(x̃_s − x̂₀) + σ̃_up z.
With h = λ_t − λ_s and x = α x̃ this is x_t = (α_t/α_s) r x_s + α_t (1 − r) x̂₀ + σ_t η √(1 − e^{−2h}) z, where
r = σ̃_down/σ̃_s = e^{−h} √(1 − η²(1 − e^{−2h})): η = 0 is DPM-Solver++(1) (deterministic DDIM); η = 1 draws from the
forward posterior q(x_t | x_s, x₀ = x̂₀), DDPM's ancestral step on the continuous grid (k-diffusion's
`sample_euler_ancestral`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm import trange

from ..sde import SDE, ScoreFn
from .common import randn_like, tweedie_denoise
from .specs import GRID, Option, register
from .timesteps import timesteps as make_grid


@register("ddim", stochastic=True, nfe=lambda steps, o: steps, nfe_text="steps", eta=Option(low=0.0, high=1.0), **GRID)
def ddim(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    steps: int,
    eps: float,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    eta: float = 1.0,
    spacing: str = "logsnr",
    rho: float = 7.0,
    timesteps: Sequence[float] | None = None,
) -> tuple[Tensor, Tensor]:
    """DDIM-η (Song et al. 2021a, eq. 12): x_t = (α_t/α_s) r x_s + α_t(1 − r) x̂₀ + σ_t η √(1 − e^{−2h}) z, any steps.

    One NFE per step on the `spacing` grid; η = 0 draws no noise.
    """
    t = make_grid(sde, steps, eps, spacing, rho, x.device, timesteps)
    alpha, sigma, lam = sde.scale(t), sde.sigma(t), sde.log_snr(t)
    for i in trange(steps, disable=not progress, desc="ddim"):
        x0 = tweedie_denoise(sde, score_fn, x, t[i])
        x, std = ddim_step(x, x0, alpha[i], alpha[i + 1], sigma[i + 1], lam[i + 1] - lam[i], eta)
        if eta > 0:
            x = x + std * randn_like(x, generator)
    return x, t[-1]


def ddim_step(
    x: Tensor, x0: Tensor, alpha_s: Tensor, alpha_t: Tensor, sigma_t: Tensor, h: Tensor, eta: float
) -> tuple[Tensor, Tensor]:
    """The DDIM-η step from s to t (module docstring), h = λ_t − λ_s: its mean (α_t/α_s) r x + α_t(1 − r) x̂₀ and its
    noise std σ_t η √(1 − e^{−2h}) (a 0-d tensor in x's dtype); the float64 scalars are cast to x's dtype."""
    lost = -torch.expm1(-2 * h)  # 1 − σ̃_t²/σ̃_s²
    r = torch.exp(-h) * torch.sqrt(1 - eta**2 * lost)
    mean = (alpha_t / alpha_s * r).to(x.dtype) * x + (alpha_t * (1 - r)).to(x.dtype) * x0
    return mean, (sigma_t * eta * lost.sqrt()).to(x.dtype)
