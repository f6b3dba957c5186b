"""Heun's method on the probability-flow ODE (Karras et al. 2022, Alg. 1, written in t)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm import trange

from ..sde import SDE, ScoreFn
from .common import drift
from .specs import GRID, register
from .timesteps import timesteps as make_grid


@register("ode_heun", stochastic=False, nfe=lambda steps, o: 2 * steps, nfe_text="2·steps", **GRID)
def ode_heun(
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
    """Heun's method (Karras et al. 2022, Alg. 1, in t): Euler predictor, trapezoidal corrector, on `spacing`."""
    t = make_grid(sde, steps, eps, spacing, rho, x.device, timesteps)
    for i in trange(steps, disable=not progress, desc="ode_heun"):
        h = (t[i + 1] - t[i]).to(x.dtype)
        d = drift(sde, score_fn, x, t[i], True)
        d_next = drift(sde, score_fn, x + h * d, t[i + 1], True)
        x = x + 0.5 * h * (d + d_next)
    return x, t[-1]
