"""Explicit Euler on the probability-flow ODE dx/dt = f(t)x − ½g(t)² ∇log p_t(x) (Song et al. 2021, eq. 13)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm import trange

from ..sde import SDE, ScoreFn
from .common import drift
from .specs import GRID, register
from .timesteps import timesteps as make_grid


@register("ode_euler", stochastic=False, nfe=lambda steps, o: steps, nfe_text="steps", **GRID)
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
    timesteps: Sequence[float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Explicit Euler, x ← x + (t_{i+1} − t_i)·dx/dt(x, t_i), on the `spacing` grid (see `timesteps`)."""
    t = make_grid(sde, steps, eps, spacing, rho, x.device, timesteps)
    for i in trange(steps, disable=not progress, desc="ode_euler"):
        x = x + (t[i + 1] - t[i]).to(x.dtype) * drift(sde, score_fn, x, t[i], True)
    return x, t[-1]
