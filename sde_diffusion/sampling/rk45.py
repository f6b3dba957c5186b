"""Adaptive Dormand–Prince RK45 (scipy's) on the probability-flow ODE, as score_sde's ode_sampler."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.scipy_ode import Solver, solve
from .common import Reverse
from .specs import POSITIVE, register


@register(
    "rk45", stochastic=False, nfe=lambda steps, o: None, nfe_text="adaptive", grid="span", rtol=POSITIVE, atol=POSITIVE
)
def rk45(run: Reverse, x: Tensor, t: Tensor, *, rtol: float = 1e-5, atol: float = 1e-5) -> Tensor:
    """Adaptive RK45 from t[0] = T to t[-1] = t_min to `rtol`/`atol` (scipy, through `scipy_ode.solve`).

    Each accepted step is reported at the time it starts from, with the score scipy evaluated there (its first
    call, then the last stage of the step before: Dormand–Prince is first-same-as-last). A non-finite drift or a
    failed step raises `SolverError` naming the time reached.
    """
    seen: dict[float, tuple[Tensor, Tensor, Tensor]] = {}  # time → (t, x, score) of the last evaluation there

    def dxdt(y: Tensor, s: float) -> Tensor:
        u = torch.tensor(s, dtype=torch.float64, device=y.device)
        score = run.score(y, u)
        if run.callback is not None:
            seen[s] = u, y, score
        return run.sde.reverse_drift(y, u, score, True)

    def on_step(n: int, s: float) -> None:
        run.report_score(n, *seen[s])
        seen.clear()

    watch = on_step if run.callback is not None else None
    x, _ = solve(dxdt, x, float(t[0]), float(t[-1]), Solver("RK45", rtol, atol), run.progress, "rk45", on_step=watch)
    return x
