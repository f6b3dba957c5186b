"""Solvers of the probability-flow ODE dx/dt = f(t)x − ½g(t)² ∇log p_t(x) (Song et al. 2021, eq. 13), T → eps."""

from __future__ import annotations

import numpy as np
import torch
from scipy.integrate import RK45
from torch import Tensor
from tqdm import tqdm, trange

from ..sde import SDE, ScoreFn
from .common import SamplingError, pf_drift
from .timesteps import timesteps


def ode_euler(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    steps: int,
    eps: float,
    generator=None,
    progress=False,
    *,
    spacing: str = "time_uniform",
    rho: float = 7.0,
) -> tuple[Tensor, Tensor]:
    """Explicit Euler, x ← x + (t_{i+1} − t_i)·dx/dt(x, t_i), on the `spacing` grid (see `timesteps`); NFE = steps."""
    t = timesteps(sde, steps, eps, spacing, rho, x.device)
    for i in trange(steps, disable=not progress, desc="ode_euler"):
        x = x + (t[i + 1] - t[i]).to(x.dtype) * pf_drift(sde, score_fn, x, t[i])
    return x, t[-1]


def ode_heun(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    steps: int,
    eps: float,
    generator=None,
    progress=False,
    *,
    spacing: str = "time_uniform",
    rho: float = 7.0,
) -> tuple[Tensor, Tensor]:
    """Heun's method (Karras et al. 2022, Alg. 1, in t): Euler predictor, trapezoidal corrector; NFE = 2·steps."""
    t = timesteps(sde, steps, eps, spacing, rho, x.device)
    for i in trange(steps, disable=not progress, desc="ode_heun"):
        h = (t[i + 1] - t[i]).to(x.dtype)
        d = pf_drift(sde, score_fn, x, t[i])
        d_next = pf_drift(sde, score_fn, x + h * d, t[i + 1])
        x = x + 0.5 * h * (d + d_next)
    return x, t[-1]


def rk45(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    steps: int,
    eps: float,
    generator=None,
    progress=False,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> tuple[Tensor, Tensor]:
    """Adaptive Dormand–Prince RK45 (scipy's, as score_sde's solve_ivp ode_sampler); `steps` is unused.

    The state crosses to NumPy (float64) for scipy and back to x's device and dtype at every evaluation.
    A non-finite drift or a failed step raises `SamplingError` naming the time reached.
    """
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    shape, dtype, device = x.shape, x.dtype, x.device

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(y).to(device=device, dtype=dtype).view(shape)
        d = pf_drift(sde, score_fn, xt, torch.tensor(t, dtype=torch.float64, device=device))
        if not bool(torch.isfinite(d).all()):
            raise FloatingPointError(f"the probability-flow drift is not finite at t={t:.6g}")
        return d.flatten().to(torch.float64).cpu().numpy()

    def stopped(t: float, why: object) -> SamplingError:
        return SamplingError(f"rk45 stopped at t={t:.6g} (solving T={sde.T} → eps={eps}): {why}")

    try:  # RK45's initial-step heuristic already evaluates the drift
        solver = RK45(fun, sde.T, x.flatten().to(torch.float64).cpu().numpy(), eps, rtol=rtol, atol=atol)
    except FloatingPointError as e:
        raise stopped(sde.T, e) from e
    with tqdm(total=sde.T - eps, disable=not progress, desc="rk45") as bar:
        while solver.status == "running":
            try:
                message = solver.step()
            except FloatingPointError as e:
                raise stopped(solver.t, e) from e
            if solver.status == "failed":
                raise stopped(solver.t, message)
            bar.update(bar.total - (solver.t - eps) - bar.n)
    x = torch.from_numpy(solver.y).to(device=device, dtype=dtype).view(shape)
    return x, torch.tensor(eps, dtype=torch.float64, device=device)
