"""Time grids T = t_0 > … > t_M = t_min that the grid samplers walk, spaced in t, in λ, or in EDM's σ̃ (eq. 5).

λ(t) = log(s(t)/σ(t)) is the half-log-SNR of Lu et al. (2022); σ̃ = e^{−λ} = σ/s is the noise level of the
equivalent VE process that EDM's (Karras et al. 2022) grid is written in. Every grid is computed in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..core.sde import SDE

SPACINGS = ("time_uniform", "logsnr", "time_quadratic", "karras", "custom")


def timesteps(
    sde: SDE,
    steps: int,
    t_min: float,
    spacing: str = "time_uniform",
    rho: float = 7.0,
    device: torch.device | str | None = None,
    custom: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """steps + 1 decreasing times from T to t_min (DPM-Solver's `get_time_steps`; EDM eq. 5 for `karras`), on `device`.

    time_uniform: linspace(T, t_min); time_quadratic: linspace(√T, √t_min)²; logsnr: uniform in λ;
    karras: σ̃_i = (σ̃_max^{1/ρ} + i/M (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ, t_i = λ⁻¹(−log σ̃_i); custom: the grid
    `custom` itself (e.g. tuned by `optimize_timesteps`), which must run strictly down from T to t_min in steps + 1
    times; a Tensor keeps its autograd graph, so a solver can be differentiated in its times.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"spacing={spacing!r}: one of {list(SPACINGS)}")
    if not rho > 0:
        raise ValueError(f"rho={rho}: a number > 0")
    if (spacing == "custom") != (custom is not None):
        raise ValueError(f"timesteps={custom!r} with spacing={spacing!r}: give both spacing='custom' and timesteps")
    f64 = dict(dtype=torch.float64)
    if spacing == "custom":
        t = custom.to(**f64) if isinstance(custom, Tensor) else torch.as_tensor(list(custom), **f64)
        ends = len(t) == steps + 1 and abs(t[0] - sde.T) < 1e-9 and abs(t[-1] - t_min) < 1e-9
        if not (ends and bool((t[1:] < t[:-1]).all())):
            raise ValueError(
                f"timesteps={t.tolist()}: {steps + 1} strictly decreasing times from T={sde.T:g} to "
                f"t_min={t_min:g} (steps={steps})"
            )
    elif spacing == "time_uniform":
        t = torch.linspace(sde.T, t_min, steps + 1, **f64)
    elif spacing == "time_quadratic":
        t = torch.linspace(sde.T**0.5, t_min**0.5, steps + 1, **f64) ** 2
    else:
        ends = sde.log_snr_range(t_min)  # the noise-level densities' λ-range too (noise_levels)
        if spacing == "logsnr":
            lam = torch.linspace(*ends, steps + 1, **f64)
        else:
            lo, hi = torch.exp(-torch.tensor(ends, **f64) / rho)
            lam = -rho * torch.log(torch.linspace(float(lo), float(hi), steps + 1, **f64))
        t = sde.log_snr_inverse(lam)
        t[0], t[-1] = sde.T, t_min  # the inverse is exact only to rounding; pin the ends
    return t.to(device)
