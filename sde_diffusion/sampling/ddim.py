"""DDIM with noise η (Song, Meng & Ermon 2021, eq. 12 and 16) in continuous time, in λ(t) for any linear SDE.

With h = λ_t − λ_s, x̂₀ Tweedie's estimate at s and r = e^{−h} √(1 − η²(1 − e^{−2h})) one step is
x_t = (α_t/α_s) r x_s + α_t (1 − r) x̂₀ + σ_t η √(1 − e^{−2h}) z: k-diffusion's ancestral step in x̃ = x/α; η = 0 is
DPM-Solver++(1), η = 1 draws from the forward posterior q(x_t | x_s, x₀ = x̂₀) (DDPM's ancestral step).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .common import Reverse, tweedie_denoise
from .specs import Option, register


@register(
    "ddim", stochastic=True, nfe=lambda steps, o: steps, nfe_text="steps", grid="logsnr", eta=Option(low=0.0, high=1.0)
)
def ddim(run: Reverse, x: Tensor, t: Tensor, *, eta: float = 1.0) -> Tensor:
    """DDIM-η (Song et al. 2021a, eq. 12): x_t = (α_t/α_s) r x_s + α_t(1 − r) x̂₀ + σ_t η √(1 − e^{−2h}) z, any steps.

    One NFE per step on the grid t; η = 0 draws no noise.
    """
    sde = run.sde
    alpha, sigma, lam = sde.scale(t), sde.sigma(t), sde.log_snr(t)
    for i in run.steps(len(t) - 1, desc="ddim"):
        x0 = tweedie_denoise(sde, run.score_fn, x, t[i])
        run.report(i, t[i], x, x0)
        x, std = ddim_step(x, x0, alpha[i], alpha[i + 1], sigma[i + 1], lam[i + 1] - lam[i], eta)
        if eta > 0:
            x = x + std * run.noise(x)
    return x


def ddim_step(
    x: Tensor, x0: Tensor, alpha_s: Tensor, alpha_t: Tensor, sigma_t: Tensor, h: Tensor, eta: float
) -> tuple[Tensor, Tensor]:
    """The DDIM-η step from s to t (module docstring), h = λ_t − λ_s: its mean (α_t/α_s) r x + α_t(1 − r) x̂₀ and its
    noise std σ_t η √(1 − e^{−2h}) (a 0-d tensor in x's dtype); the float64 scalars are cast to x's dtype."""
    lost = -torch.expm1(-2 * h)  # 1 − σ̃_t²/σ̃_s²
    r = torch.exp(-h) * torch.sqrt(1 - eta**2 * lost)
    mean = (alpha_t / alpha_s * r).to(x.dtype) * x + (alpha_t * (1 - r)).to(x.dtype) * x0
    return mean, (sigma_t * eta * lost.sqrt()).to(x.dtype)
