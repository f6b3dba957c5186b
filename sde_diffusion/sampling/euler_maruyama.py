"""Euler–Maruyama on the reverse-time SDE dx = [f(t)x − g(t)² ∇log p_t(x)] dt + g(t) dw̄ (Anderson 1982)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.sde import SDE
from .common import Reverse, coef, randn_like
from .specs import register


def em_step(sde: SDE, x: Tensor, score: Tensor, t: Tensor, t_next: Tensor, generator: torch.Generator | None) -> Tensor:
    """One Euler–Maruyama step of the reverse SDE from t down to t_next, given the score at (x, t) (eq. 6)."""
    h = (t - t_next).to(x.dtype)
    return x - sde.reverse_drift(x, t, score) * h + coef(sde.g, t, x) * h.sqrt() * randn_like(x, generator)


@register("euler_maruyama", stochastic=True, nfe=lambda steps, o: steps, nfe_text="steps", grid="karras")
def euler_maruyama(run: Reverse, x: Tensor, t: Tensor) -> Tensor:
    """x ← x − [f x − g² ∇log p] h + g √h z, h = t_i − t_{i+1} > 0, on the grid t (Song et al. 2021, eq. 6)."""
    for i in run.steps(len(t) - 1, desc="euler_maruyama"):
        score = run.score(x, t[i])
        run.report_score(i, t[i], x, score)
        x = em_step(run.sde, x, score, t[i], t[i + 1], run.generator)
    return x
