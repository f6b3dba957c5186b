"""Explicit Euler on the probability-flow ODE dx/dt = f(t)x − ½g(t)² ∇log p_t(x) (Song et al. 2021, eq. 13)."""

from __future__ import annotations

from torch import Tensor

from .common import Reverse
from .specs import register


@register("ode_euler", stochastic=False, nfe=lambda steps, o: steps, nfe_text="steps", grid="logsnr")
def ode_euler(run: Reverse, x: Tensor, t: Tensor) -> Tensor:
    """Explicit Euler, x ← x + (t_{i+1} − t_i)·dx/dt(x, t_i), on the grid t."""
    for i in run.steps(len(t) - 1, desc="ode_euler"):
        score = run.score(x, t[i])
        run.report_score(i, t[i], x, score)
        x = x + (t[i + 1] - t[i]).to(x.dtype) * run.sde.reverse_drift(x, t[i], score, True)
    return x
