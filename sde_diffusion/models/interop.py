"""Interop with EDM / k-diffusion denoisers D(x̃; σ̃) (Karras et al. 2022), in both directions: x̃ = x_t/s(t) =
x₀ + σ̃ε with σ̃ = σ(t)/s(t) = e^{−λ(t)} is the variance-exploding form they sample in (EDM eq. 4 with s divided out),
and Tweedie's formula (EDM eq. 3) links D to the score. On [t_min, T], k-diffusion's sigma_min and sigma_max are
e^{−λ(t_min)} and e^{−λ(T)} (`torch.exp(-sde.log_snr(t))`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..core.sde import SDE, ScoreFn, expand_as

Denoiser = Callable[[Tensor, Tensor], Tensor]


def as_denoiser(score_fn: ScoreFn, sde: SDE) -> Denoiser:
    """D(x̃, σ̃) = x̃ + σ̃² s ∇log p_t(s x̃) at t = λ⁻¹(−log σ̃) (EDM eq. 3, as p̃(x̃; σ̃) = s^D p_t(s x̃)): a k-diffusion
    `model(x, sigma)`.

    σ̃ is a (batch,) tensor (k-diffusion passes sigma * s_in) or a 0-d one, within [0, e^{−λ(T)}].
    """
    sigma_max = float(torch.exp(-sde.log_snr(torch.tensor([sde.T], dtype=torch.float64))))

    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        sigma = sigma.reshape(-1).expand(x.shape[0])
        inside = (sigma >= 0) & (sigma <= sigma_max * (1 + 1e-4))  # float32 rounding of e^{−λ(T)} passes
        if not bool(inside.all()):
            raise ValueError(
                f"sigma={sigma[~inside][0].item():.6g} is outside this SDE's range [0, {sigma_max:.6g}] "
                "(σ(t)/s(t) for t in [0, T])"
            )
        t = sde.log_snr_inverse(-torch.log(sigma)).clamp(0, sde.T)
        s = expand_as(sde.scale(t).to(x.dtype), x)
        return x + expand_as(sigma.to(x.dtype), x) ** 2 * s * score_fn(s * x, t)

    return denoiser


def score_fn_from_denoiser(denoiser: Denoiser, sde: SDE) -> ScoreFn:
    """∇_x log p_t(x) = (s D(x/s, σ/s) − x)/σ² (EDM eq. 3 mapped back through x = s x̃) for any D(x̃, σ̃)."""

    def score(x: Tensor, t: Tensor) -> Tensor:
        t = t.reshape(-1).expand(x.shape[0])
        s, sigma = sde.scale(t), sde.sigma(t)
        d = denoiser(x / expand_as(s.to(x.dtype), x), (sigma / s).to(x.dtype))
        return (expand_as(s.to(x.dtype), x) * d - x) / expand_as(sigma.to(x.dtype), x) ** 2

    return score
