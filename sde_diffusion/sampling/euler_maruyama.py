"""Euler–Maruyama on the reverse-time SDE dx = [f(t)x − g(t)² ∇log p_t(x)] dt + g(t) dw̄ (Anderson 1982)."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm import trange

from ..sde import SDE, ScoreFn
from .common import coef, drift, randn_like
from .specs import register


@register("euler_maruyama", stochastic=True, nfe=lambda steps, o: steps, nfe_text="steps", spacing="time_uniform")
def euler_maruyama(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    t: Tensor,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """x ← x − [f x − g² ∇log p] h + g √h z, h = t_i − t_{i+1} > 0, on the grid t (Song et al. 2021, eq. 6)."""
    for i in trange(len(t) - 1, disable=not progress, desc="euler_maruyama"):
        h = (t[i] - t[i + 1]).to(x.dtype)
        x = x - drift(sde, score_fn, x, t[i], False) * h + coef(sde.g, t[i], x) * h.sqrt() * randn_like(x, generator)
    return x
