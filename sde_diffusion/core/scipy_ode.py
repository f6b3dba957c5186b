"""The one bridge from torch to scipy's adaptive ODE solvers: a torch right-hand side stepped by scipy in float64.

scipy's solvers work on flat NumPy float64 arrays on the CPU; every evaluation here moves the state to the
input's shape, device and dtype, calls the torch function there, and brings dx/dt back. The solver is stepped by
hand, so a failure names the time it reached and long solves can show a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from scipy.integrate import DOP853, RK45
from torch import Tensor
from tqdm import tqdm

METHODS = {"RK45": RK45, "DOP853": DOP853}


@dataclass(frozen=True)
class Solver:
    """scipy's adaptive `method` (RK45: Dormand–Prince 5(4); DOP853: 8(5,3)) and its tolerances rtol, atol."""

    method: str = "RK45"
    rtol: float = 1e-5
    atol: float = 1e-5


class SolverError(RuntimeError):
    """A solver could not finish (a non-finite drift, a failed step); the message names the time reached."""


def solve(
    fn: Callable[[Tensor, float], Tensor],
    y0: Tensor,
    t0: float,
    t1: float,
    solver: Solver = Solver(),
    progress: bool = False,
    desc: str = "ode",
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[Tensor, int]:
    """y(t1) of dy/dt = fn(y, t), y(t0) = y0, by scipy's `solver.method` to its tolerances (`Solver`).

    Returns y(t1) in y0's shape, dtype and device and the number of fn evaluations. `on_step(n, t)`: before each
    accepted step n, at the time t it starts from (fn has been evaluated there: scipy's first call, or the last
    stage of the step before). A non-finite fn(y, t) or a failed step raises SolverError naming `desc`, the span and
    the time reached.
    """
    shape, dtype, device = y0.shape, y0.dtype, y0.device

    def fun(t: float, y):
        dy = fn(torch.from_numpy(y).to(device=device, dtype=dtype).view(shape), t)
        if not bool(torch.isfinite(dy).all()):
            raise FloatingPointError(f"the drift is not finite at t={t:.6g}")
        return dy.detach().flatten().to(torch.float64).cpu().numpy()

    def stopped(t: float, why: object) -> SolverError:
        return SolverError(f"{desc} stopped at t={t:.6g} (solving {t0:g} → {t1:g}): {why}")

    y = y0.detach().flatten().to(torch.float64).cpu().numpy()
    try:  # the initial-step heuristic already evaluates fn
        ivp = METHODS[solver.method](fun, t0, y, t1, rtol=solver.rtol, atol=solver.atol)
    except FloatingPointError as e:
        raise stopped(t0, e) from e
    span = f"{desc}: t {t0:g} → {t1:g}, {{percentage:3.0f}}% solved |{{bar}}| {{unit}}, {{elapsed}} elapsed"
    step = 0
    with tqdm(total=abs(t1 - t0), disable=not progress, bar_format=span, unit="0 NFE") as bar:  # words, not s/it
        while ivp.status == "running":  # scipy's step() retries a rejected step until one is accepted
            if on_step is not None:
                on_step(step, ivp.t)
            step += 1
            try:
                message = ivp.step()
            except FloatingPointError as e:
                raise stopped(ivp.t, e) from e
            if ivp.status == "failed":
                raise stopped(ivp.t, message)
            bar.unit = f"{ivp.nfev} NFE"
            bar.update(abs(ivp.t - t0) - bar.n)
    return torch.from_numpy(ivp.y).to(device=device, dtype=dtype).view(shape), ivp.nfev
