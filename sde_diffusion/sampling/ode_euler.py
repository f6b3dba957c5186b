"""Explicit Euler on the probability-flow ODE dx/dt = f(t)x − ½g(t)² ∇log p_t(x) (Song et al. 2021, eq. 13)."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm import trange

from ..sde import SDE, ScoreFn
from .common import drift
from .specs import register


@register("ode_euler", stochastic=False, nfe=lambda steps, o: steps, nfe_text="steps", spacing="time_quadratic")
def ode_euler(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    t: Tensor,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Explicit Euler, x ← x + (t_{i+1} − t_i)·dx/dt(x, t_i), on the grid t."""
    for i in trange(len(t) - 1, disable=not progress, desc="ode_euler"):
        x = x + (t[i + 1] - t[i]).to(x.dtype) * drift(sde, score_fn, x, t[i], True)
    return x
