"""Adaptive Dormand–Prince RK45 (scipy's) on the probability-flow ODE, as score_sde's ode_sampler."""

from __future__ import annotations

import torch
from torch import Tensor

from ..scipy_ode import solve
from ..sde import SDE, ScoreFn
from .common import drift
from .specs import POSITIVE, register


@register(
    "rk45",
    stochastic=False,
    nfe=lambda steps, o: None,
    nfe_text="adaptive (`steps` unused)",
    rtol=POSITIVE,
    atol=POSITIVE,
)
def rk45(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    steps: int,
    t_min: float,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> tuple[Tensor, Tensor]:
    """Adaptive RK45 from T to t_min to `rtol`/`atol` (scipy, through `scipy_ode.solve`); `steps` is unused.

    A non-finite drift or a failed step raises `SolverError` naming the time reached.
    """

    def dxdt(y: Tensor, t: float) -> Tensor:
        return drift(sde, score_fn, y, torch.tensor(t, dtype=torch.float64, device=y.device), True)

    x, _ = solve(dxdt, x, sde.T, t_min, "RK45", rtol, atol, progress=progress, desc="rk45")
    return x, torch.tensor(t_min, dtype=torch.float64, device=x.device)
