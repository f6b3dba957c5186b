"""Explicit Euler on the probability-flow ODE dx/dt = f(t)x − ½g(t)² ∇log p_t(x) (Song et al. 2021, eq. 13)."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm import trange

from ..sde import SDE, ScoreFn
from .common import RHO, SPACING, drift
from .specs import register
from .timesteps import timesteps


@register("ode_euler", stochastic=False, nfe=lambda steps, o: steps, nfe_text="steps", spacing=SPACING, rho=RHO)
def ode_euler(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    steps: int,
    eps: float,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    spacing: str = "time_uniform",
    rho: float = 7.0,
) -> tuple[Tensor, Tensor]:
    """Explicit Euler, x ← x + (t_{i+1} − t_i)·dx/dt(x, t_i), on the `spacing` grid (see `timesteps`)."""
    t = timesteps(sde, steps, eps, spacing, rho, x.device)
    for i in trange(steps, disable=not progress, desc="ode_euler"):
        x = x + (t[i + 1] - t[i]).to(x.dtype) * drift(sde, score_fn, x, t[i], True)
    return x, t[-1]
