"""Time grids T = t_0 > … > t_M = eps for the deterministic solvers, spaced in t, in λ, or in EDM's σ.

λ(t) = log(s(t)/σ(t)) is the half-log-SNR of Lu et al. (2022); σ̃ = e^{−λ} = σ/s is the noise level of the
equivalent VE process that EDM's (Karras et al. 2022) grid is written in. Every grid is computed in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..sde import SDE

SPACINGS = ("time_uniform", "logsnr", "time_quadratic", "karras")


def timesteps(sde: SDE, steps: int, eps: float, spacing: str = "time_uniform", rho: float = 7.0, device=None) -> Tensor:
    """steps + 1 decreasing times from T to eps (DPM-Solver's `get_time_steps`; EDM eq. 5 for `karras`), on `device`.

    time_uniform: linspace(T, eps); time_quadratic: linspace(√T, √eps)²; logsnr: uniform in λ;
    karras: σ̃_i = (σ̃_max^{1/ρ} + i/M (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ, t_i = λ⁻¹(−log σ̃_i).
    """
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {list(SPACINGS)}, got {spacing!r}")
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    f64 = dict(dtype=torch.float64)
    if spacing == "time_uniform":
        t = torch.linspace(sde.T, eps, steps + 1, **f64)
    elif spacing == "time_quadratic":
        t = torch.linspace(sde.T**0.5, eps**0.5, steps + 1, **f64) ** 2
    else:
        ends = sde.log_snr(torch.tensor([sde.T, eps], **f64))
        if spacing == "logsnr":
            lam = torch.linspace(float(ends[0]), float(ends[1]), steps + 1, **f64)
        else:
            lo, hi = torch.exp(-ends / rho)
            lam = -rho * torch.log(torch.linspace(float(lo), float(hi), steps + 1, **f64))
        t = sde.log_snr_inverse(lam)
        t[0], t[-1] = sde.T, eps  # the inverse is exact only to rounding; pin the ends
    return t.to(device)
