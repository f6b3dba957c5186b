"""Time grids tuned for a model, a deterministic sampler and a budget by gradient descent through the solver in λ
(LD3, Tong et al. 2024, "Learning to Discretize Denoising Diffusion ODEs").

Why gradients rather than GITS' dynamic programming over a fine grid (Chen et al. 2024): DP adds up local
truncation errors step by step, which is exact only for single-step solvers; a multistep solver's update depends
on the previous times too, and the errors of its steps cancel or compound. Differentiating the whole solve
minimises the error that is measured (the distance to the reference at the end) over all times jointly, at the cost
of a few dozen solves on a small batch.

The interior half-log-SNRs are a cumulative softmax of free logits z over [λ(T), λ(eps)], so every z gives a strictly
decreasing grid from T to eps; the score is frozen (only z is differentiated) and the times come from
`sde.log_snr_inverse` with the implicit derivative dt/dλ = 1/λ'(t), whatever way the SDE inverts λ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..checks import check_number
from ..metrics import flow_error
from ..sde import SDE, ScoreFn
from .common import tweedie_denoise
from .sample import sample
from .specs import GRID, SAMPLERS, check_sampler
from .timesteps import SPACINGS
from .timesteps import timesteps as make_grid

BUILT_IN = tuple(s for s in SPACINGS if s != "custom")


@dataclass
class TunedGrid:
    """timesteps: the tuned grid T = t_0 > … > t_M = eps; init: the built-in spacing it started from (the best on
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
    return [name for name, spec in SAMPLERS.items() if not spec.stochastic and GRID.keys() <= spec.options.keys()]


def rk45_reference(sde: SDE, score_fn: ScoreFn, eps: float, tol: float = 1e-7) -> Callable[[Tensor], Tensor]:
    """x_T ↦ the probability-flow ODE solved by adaptive RK45 to rtol = atol = `tol`, then Tweedie's step at eps."""

    def reference(x_T: Tensor) -> Tensor:
        return sample(sde, score_fn, tuple(x_T.shape), "rk45", 1, eps, x_T=x_T, dtype=x_T.dtype, rtol=tol, atol=tol).x

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


def _grid(sde: SDE, z: Tensor, eps: float) -> Tensor:
    """T, the interior times at λ_i = λ(T) + (λ(eps) − λ(T)) Σ_{j≤i} softmax(z)_j, and eps."""
    ends = torch.tensor([sde.T, eps], dtype=torch.float64)
    lam_T, lam_eps = sde.log_snr(ends)
    lam = lam_T + (lam_eps - lam_T) * torch.cumsum(torch.softmax(z, 0), 0)[:-1]
    return torch.cat([ends[:1], _log_snr_inverse(sde, lam), ends[1:]])


def _logits(sde: SDE, t: Tensor) -> Tensor:
    """z with `_grid(sde, z, eps) = t`: the logs of the λ-increments' shares."""
    dlam = sde.log_snr(t.to(torch.float64)).diff()
    return torch.log(dlam / dlam.sum())


def optimize_timesteps(
    sde: SDE,
    score_fn: ScoreFn,
    sampler: str,
    steps: int,
    x_T: Tensor,
    reference: Callable[[Tensor], Tensor] | None = None,
    *,
    eps: float = 1e-3,
    options: Mapping[str, Any] | None = None,
    iters: int = 150,
    lr: float = 0.02,
    held_out: Tensor | None = None,
) -> TunedGrid:
    """The `steps + 1`-time grid on which `sampler` (deterministic, on a `timesteps` grid) carries the noise x_T
    closest to `reference(x_T)` in mean squared distance, after Tweedie's step at eps as `sample(denoise=True)`.

    reference: x_T ↦ the target output, e.g. `lambda x: exact_flow_map(sde, oracle, x, eps, denoise=True)`;
    None: adaptive RK45 at rtol = atol = 1e-7 (`rk45_reference`). Starts from the best built-in spacing on x_T and
    runs `iters` Adam steps on the λ-logits (LD3), the step size `lr` decaying to 0 on a cosine, keeping the best
    grid seen. `held_out`: noise on which every built-in spacing and the tuned grid are scored too. options: the
    sampler's other options (not spacing, rho or timesteps). Run it in float64 on an exact oracle.
    """
    options = dict(options or {})
    spec = check_sampler(sampler, steps=steps, eps=eps, options=options, sde_type=type(sde), T=sde.T)
    if sampler not in tunable():
        raise ValueError(f"sampler must be one of {tunable()} (deterministic, on a time grid), got {sampler!r}")
    if fixed := GRID.keys() & options.keys():
        raise ValueError(f"options={options}: {sorted(fixed)} are set by optimize_timesteps; leave them out")
    check_number("iters", iters, integer=True, ge=1)
    check_number("lr", lr, gt=0)
    reference = reference or rk45_reference(sde, score_fn, eps)

    def solve(x: Tensor, grid: Tensor) -> Tensor:
        out, t_end = spec.fn(sde, score_fn, x, steps, eps, spacing="custom", timesteps=grid.to(x.device), **options)
        return tweedie_denoise(sde, score_fn, out, t_end)

    def errors(x: Tensor, target: Tensor, grids: dict[str, Tensor]) -> dict[str, float]:
        with torch.no_grad():
            return {name: flow_error(solve(x, grid), target) for name, grid in grids.items()}

    with torch.no_grad():
        target = reference(x_T)
    grids = {s: make_grid(sde, steps, eps, s) for s in BUILT_IN}
    train = errors(x_T, target, grids)
    init = min(train, key=train.get)
    z = _logits(sde, grids[init]).requires_grad_(True)
    best_loss, best_z = train[init] ** 2, z.detach().clone()
    optimizer = torch.optim.Adam([z], lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iters)
    losses = []
    for _ in range(iters):
        with torch.enable_grad():
            loss = (solve(x_T, _grid(sde, z, eps)) - target).flatten(1).pow(2).sum(1).mean()
            (z.grad,) = torch.autograd.grad(loss, z)
        losses.append(float(loss.detach()))
        if losses[-1] < best_loss:  # the loss at z before this step
            best_loss, best_z = losses[-1], z.detach().clone()
        optimizer.step()
        decay.step()
    with torch.no_grad():
        grids["tuned"] = _grid(sde, best_z, eps)
        train["tuned"] = errors(x_T, target, {"tuned": grids["tuned"]})["tuned"]
        held = errors(held_out, reference(held_out), grids) if held_out is not None else {}
    return TunedGrid(grids["tuned"].tolist(), init, train, held, losses)
