"""Adaptive-step reverse SDE of Jolicoeur-Martineau et al. (2021, "Gotta Go Fast…", Alg. 1).

A tried step from t forms, on the same z, Euler–Maruyama x′ = x − h·a(x, t) + g(t)√h z and the stochastic improved
Euler x″ = x − ½h·[a(x, t) + a(x′, t − h)] + ½[g(t) + g(t − h)]√h z (a = f x − g²∇log p), accepts it when the scaled
error E = ‖(x′ − x″)/δ‖₂/√D ≤ 1, δ = max(ε_abs, ε_rel·max(|x′|, |x′_prev|)), and sets h ← min(t − t_min, θ h E^{−r}).
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm import tqdm

from ..core.scipy_ode import SolverError
from ..core.sde import SDE, ScoreFn, expand_as
from .common import Reverse
from .specs import POSITIVE, Option, register

SAFETY, EXPONENT, H_INIT = 0.9, 0.9, 0.01  # θ, r and h₀/T: the paper's and its code's values


@register(
    "adaptive_sde",
    stochastic=True,
    nfe=lambda steps, o: None,
    nfe_text="adaptive: 2 per tried step",
    grid="span",
    rtol=POSITIVE,
    atol=POSITIVE,
    extrapolation=Option(choices=(True, False)),
    per_sample=Option(choices=(True, False)),
)
def adaptive_sde(
    run: Reverse,
    x: Tensor,
    t: Tensor,
    *,
    rtol: float = 0.25,
    atol: float = 0.02,
    extrapolation: bool = True,
    per_sample: bool = False,
) -> Tensor:
    """EM / stochastic improved Euler with adaptive steps to `rtol`/`atol` from t[0] = T to t[-1] = t_min
    (Jolicoeur-Martineau et al. 2021, Alg. 1).

    Two NFE per tried step, rejected ones included. With `extrapolation` an accepted step keeps x″, else x′ (x′ and
    x″ then swap roles in δ, as in the authors' code). `per_sample=True` is the authors' code: every sample has its
    own t, h and E over its own D entries, which needs D large (on 2-D data one sample's E is one or two Gaussian
    draws; docs/samplers.md); `per_sample=False` takes one t and h for the batch and E over all its entries
    (D → batch·D), stable at any D, so a sample's path depends on the rest of its batch. Every tried step is
    reported where it starts (with per_sample, t is each sample's time, shape (batch,)). A non-finite error
    estimate raises `SolverError` naming the time reached.
    """
    sde, t_min = run.sde, float(t[-1])
    t = torch.full((x.shape[0],), float(t[0]), dtype=torch.float64, device=x.device)
    h = torch.full_like(t, H_INIT * sde.T)
    x_prev, tried = x, 0
    bar = tqdm(disable=not run.progress, desc="adaptive_sde", unit="tried step")
    while bool((t > t_min).any()):
        z = run.noise(x)
        g, g_next = (expand_as(sde.g(u).to(x.dtype), x) for u in (t, t - h))
        dt = expand_as(h.to(x.dtype), x)
        score = run.score_fn(x, t.to(x.dtype))
        run.report_score(tried, t if per_sample else t[0], x, score)
        a = sde.reverse_drift(x, t, score)
        x_em = x - dt * a + g * dt.sqrt() * z
        x_heun = x - 0.5 * dt * (a + _drift(sde, run.score_fn, x_em, t - h)) + 0.5 * (g + g_next) * dt.sqrt() * z
        x_new, x_check = (x_heun, x_em) if extrapolation else (x_em, x_heun)
        delta = torch.clamp(rtol * torch.maximum(x_check.abs(), x_prev.abs()), min=atol)
        sq = ((x_em - x_heun) / delta).flatten(1).square()
        err = (sq.mean(1) if per_sample else sq.mean().expand(len(sq))).sqrt().to(torch.float64)
        if not bool(torch.isfinite(err).all()):
            raise SolverError(f"adaptive_sde stopped at t={float(t.max()):.6g}: the error estimate is not finite")
        accept = err <= 1
        keep = expand_as(accept, x)
        x, x_prev = torch.where(keep, x_new, x), torch.where(keep, x_check, x_prev)
        t = torch.where(accept, torch.where(h >= t - t_min, t_min, t - h), t)
        h = torch.minimum(t - t_min, torch.where(h > 0, SAFETY * h * err.pow(-EXPONENT), 0.0))
        tried += 1
        bar.update()
    bar.close()
    return x


def _drift(sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    """The reverse-SDE drift at per-sample float64 times t (`SDE.reverse_drift`)."""
    return sde.reverse_drift(x, t, score_fn(x, t.to(x.dtype)))
