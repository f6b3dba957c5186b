"""Heun's method on the probability-flow ODE (Karras et al. 2022, Alg. 1, written in t)."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm import trange

from ..sde import SDE, ScoreFn
from .common import drift
from .specs import register


@register("ode_heun", stochastic=False, nfe=lambda steps, o: 2 * steps, nfe_text="2·steps", spacing="time_quadratic")
def ode_heun(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    t: Tensor,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Heun's method (Karras et al. 2022, Alg. 1, in t): Euler predictor, trapezoidal corrector, on the grid t."""
    for i in trange(len(t) - 1, disable=not progress, desc="ode_heun"):
        h = (t[i + 1] - t[i]).to(x.dtype)
        d = drift(sde, score_fn, x, t[i], True)
        d_next = drift(sde, score_fn, x + h * d, t[i + 1], True)
        x = x + 0.5 * h * (d + d_next)
    return x
