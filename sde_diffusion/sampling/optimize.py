"""Time grids tuned for a model, a deterministic sampler and a budget by gradient descent through the solver in λ
(LD3, Tong et al. 2024, "Learning to Discretize Denoising Diffusion ODEs").

The interior half-log-SNRs are a cumulative softmax of free logits z over [λ(T), λ(t_min)], so every z gives a strictly
decreasing grid; the score is frozen and the times come from `sde.log_snr_inverse` with dt/dλ = 1/λ'(t). Gradients
through the whole solve rather than GITS' dynamic programming (Chen et al. 2024), whose sum of local errors is exact
only for single-step solvers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..core.checks import ArgumentError, check_number
from ..core.metrics import flow_error
from ..core.sde import SDE, ScoreFn
from .common import Reverse, tweedie_denoise
from .sample import SampleSetup, sample
from .specs import GRID, SAMPLERS, check_sampler
from .timesteps import SPACINGS, timesteps

BUILT_IN = tuple(s for s in SPACINGS if s != "custom")


@dataclass
class TunedGrid:
    """timesteps: the tuned grid T = t_0 > … > t_M = t_min; init: the built-in spacing it started from (the best on
    the training batch); train / held_out: flow error (RMS distance to the reference, Tweedie step included) of each
    built-in spacing and of "tuned", on the training batch and on the held-out noise (empty without it); losses: the
    training batch's mean squared distance at each iteration."""

    timesteps: list[float]
    init: str
    train: dict[str, float]
    held_out: dict[str, float] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)


def tunable() -> list[str]:
    """The samplers whose grid `optimize_timesteps` tunes: the deterministic ones that take `timesteps`."""
    return [name for name, spec in SAMPLERS.items() if not spec.stochastic and spec.spacing]


def rk45_reference(sde: SDE, score_fn: ScoreFn, t_min: float, tol: float = 1e-7) -> Callable[[Tensor], Tensor]:
    """x_T ↦ the probability-flow ODE solved by adaptive RK45 to rtol = atol = `tol`, then Tweedie's step at t_min."""

    def reference(x_T: Tensor) -> Tensor:
        tols = {"rtol": tol, "atol": tol}
        return sample(
            sde, score_fn, tuple(x_T.shape), "rk45", t_min=t_min, setup=SampleSetup(x_T=x_T, dtype=x_T.dtype), **tols
        ).x

    return reference


def _log_snr_inverse(sde: SDE, lam: Tensor) -> Tensor:
    """t(λ) by `sde.log_snr_inverse`, plus one Newton step that carries the implicit derivative dt/dλ = 1/λ'(t)."""
    with torch.no_grad():
        t0 = sde.log_snr_inverse(lam.detach())
    with torch.enable_grad():
        t0.requires_grad_(True)
        lam0 = sde.log_snr(t0)
        slope = torch.autograd.grad(lam0.sum(), t0)[0]
    return t0.detach() + (lam - lam0.detach()) / slope


def _grid(sde: SDE, z: Tensor, t_min: float) -> Tensor:
    """T, the interior times at λ_i = λ(T) + (λ(t_min) − λ(T)) Σ_{j≤i} softmax(z)_j, and t_min."""
    ends = torch.tensor([sde.T, t_min], dtype=torch.float64)
    lam_T, lam_min = sde.log_snr(ends)
    lam = lam_T + (lam_min - lam_T) * torch.cumsum(torch.softmax(z, 0), 0)[:-1]
    return torch.cat([ends[:1], _log_snr_inverse(sde, lam), ends[1:]])


def _logits(sde: SDE, t: Tensor) -> Tensor:
    """z with `_grid(sde, z, t_min) = t`: the logs of the λ-increments' shares."""
    dlam = sde.log_snr(t.to(torch.float64)).diff()
    return torch.log(dlam / dlam.sum())


def _descend(solve: Callable[[Tensor], Tensor], z: Tensor, best: float, iters: int, lr: float):
    """`iters` Adam steps on the logits z of the loss `solve(z)`, the step size decaying to 0 on a cosine: the
    best z seen (its loss below `best`, else z itself) and every iteration's loss."""
    z, best_z = z.clone().requires_grad_(True), z.detach().clone()
    optimizer = torch.optim.Adam([z], lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iters)
    losses = []
    for _ in range(iters):
        with torch.enable_grad():
            loss = solve(z)
            (z.grad,) = torch.autograd.grad(loss, z)
        losses.append(float(loss.detach()))
        if losses[-1] < best:  # the loss at z before this step
            best, best_z = losses[-1], z.detach().clone()
        optimizer.step()
        decay.step()
    return best_z, losses


def optimize_timesteps(
    sde: SDE,
    score_fn: ScoreFn,
    sampler: str,
    steps: int,
    x_T: Tensor,
    reference: Callable[[Tensor], Tensor] | None = None,
    *,
    t_min: float = 1e-3,
    options: Mapping[str, Any] | None = None,
    iters: int = 150,
    lr: float = 0.02,
    held_out: Tensor | None = None,
) -> TunedGrid:
    """The `steps + 1`-time grid on which `sampler` (deterministic, on a time grid) carries the noise x_T closest to
    `reference(x_T)` in mean squared distance, after Tweedie's step at t_min as `sample(denoise=True)`.

    reference: x_T ↦ the target output, e.g. `lambda x: exact_flow_map(sde, oracle, x, t_min, denoise=True)`;
    None: adaptive RK45 at rtol = atol = 1e-7 (`rk45_reference`). Starts from the best built-in spacing on x_T and
    runs `iters` Adam steps on the λ-logits (LD3), keeping the best grid seen. `held_out`: noise on which every
    built-in spacing and the tuned grid are scored too. options: the sampler's other options (not spacing, rho or
    timesteps; the rest default as in `sample` at `steps`). Run it in float64 on an exact oracle.
    """
    options = dict(options or {})
    if sampler not in tunable():
        raise ArgumentError("sampler", sampler, f"one of {tunable()} (deterministic, on a time grid)")
    spec = check_sampler(sampler, steps=steps, t_min=t_min, options=options, sde_type=type(sde), T=sde.T)
    if fixed := {k for k, v in options.items() if k in GRID and v is not None}:
        raise ValueError(f"options={options}: {sorted(fixed)} are set by optimize_timesteps; leave them out")
    check_number("iters", iters, integer=True, ge=1)
    check_number("lr", lr, gt=0)
    options = {k: v for k, v in spec.resolve(steps, options).items() if k not in GRID}
    reference = reference or rk45_reference(sde, score_fn, t_min)

    def solve(x: Tensor, grid: Tensor) -> Tensor:
        return tweedie_denoise(sde, score_fn, spec.fn(Reverse(sde, score_fn), x, grid, **options), grid[-1])

    def errors(x: Tensor, target: Tensor, grids: dict[str, Tensor]) -> dict[str, float]:
        with torch.no_grad():
            return {name: flow_error(solve(x, grid), target) for name, grid in grids.items()}

    with torch.no_grad():
        target = reference(x_T)
    grids = {s: timesteps(sde, steps, t_min, s) for s in BUILT_IN}
    train = errors(x_T, target, grids)
    init = min(train, key=train.get)
    loss = lambda z: (solve(x_T, _grid(sde, z, t_min)) - target).flatten(1).pow(2).sum(1).mean()  # noqa: E731
    best_z, losses = _descend(loss, _logits(sde, grids[init]), train[init] ** 2, iters, lr)
    with torch.no_grad():
        grids["tuned"] = _grid(sde, best_z, t_min)
        train["tuned"] = errors(x_T, target, {"tuned": grids["tuned"]})["tuned"]
        held = errors(held_out, reference(held_out), grids) if held_out is not None else {}
    return TunedGrid(grids["tuned"].tolist(), init, train, held, losses)
