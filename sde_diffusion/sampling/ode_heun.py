"""Heun's method on the probability-flow ODE (Karras et al. 2022, Alg. 1, written in t)."""

from __future__ import annotations

from torch import Tensor

from .common import Reverse, drift
from .specs import register


@register("ode_heun", stochastic=False, nfe=lambda steps, o: 2 * steps, nfe_text="2·steps", grid="karras")
def ode_heun(run: Reverse, x: Tensor, t: Tensor) -> Tensor:
    """Heun's method (Karras et al. 2022, Alg. 1, in t): Euler predictor, trapezoidal corrector, on the grid t."""
    for i in run.steps(len(t) - 1, desc="ode_heun"):
        h = (t[i + 1] - t[i]).to(x.dtype)
        score = run.score(x, t[i])
        run.report_score(i, t[i], x, score)
        d = run.sde.reverse_drift(x, t[i], score, True)
        d_next = drift(run.sde, run.score_fn, x + h * d, t[i + 1], True)
        x = x + 0.5 * h * (d + d_next)
    return x
