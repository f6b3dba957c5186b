"""Adaptive-step reverse SDE of Jolicoeur-Martineau et al. (2021, "Gotta Go Fast…", Alg. 1).

One tried step from t draws z and forms, on the same z,
  x′ = x − h·a(x, t) + g(t)√h z                                  (Euler–Maruyama),
  x″ = x − ½h·[a(x, t) + a(x′, t − h)] + ½[g(t) + g(t − h)]√h z   (stochastic improved Euler),
a = f x − g²∇log p the reverse drift (dx/dt, solved from T down). Its error is the paper's scaled ℓ2 norm
E = ‖(x′ − x″)/δ‖₂/√D with δ = max(ε_abs, ε_rel·max(|x′|, |x′_prev|)) entrywise, x′_prev the last accepted x′.
The step is accepted when E ≤ 1 (then x ← x″ with `extrapolation`, else x′; without it x′ and x″ swap roles in δ
and x′_prev, as in the authors' code), and h ← min(t − eps, θ h E^{−r}) either way, with the paper's θ = 0.9,
r = 0.9 and h₀ = 0.01·T.

`per_sample=True` is the authors' code: every sample has its own t and h, E is taken over its own D entries, and
the batch runs (evaluating every sample) until its slowest sample reaches eps. That needs D large (their images:
D = 3072+): on 2-D data one sample's E is the size of one or two Gaussian draws, a near-zero draw multiplies h by
hundreds, and the samples come out too spread (a 1-D Gaussian of variance 0.30 came out at 0.70 with ε_rel =
0.05, ε_abs = 1e-3).
`per_sample=False` (the default) takes one t and h for the batch and E over all its entries — the same norm with
D → batch·D — which is stable at any D; a sample's path then depends on the rest of its batch.
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm import tqdm

from ..scipy_ode import SolverError
from ..sde import SDE, ScoreFn, expand_as
from .common import randn_like
from .specs import POSITIVE, Option, register

SAFETY, EXPONENT, H_INIT = 0.9, 0.9, 0.01  # θ, r and h₀/T: the paper's and its code's values


def _drift(sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    """The reverse-SDE drift at per-sample float64 times t (`SDE.reverse_drift`)."""
    return sde.reverse_drift(x, t, score_fn(x, t.to(x.dtype)))


@register(
    "adaptive_sde",
    stochastic=True,
    nfe=lambda steps, o: None,
    nfe_text="adaptive: 2 per tried step (`steps` unused)",
    rtol=POSITIVE,
    atol=POSITIVE,
    extrapolation=Option(choices=(True, False)),
    per_sample=Option(choices=(True, False)),
)
def adaptive_sde(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    steps: int,
    eps: float,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    rtol: float = 0.25,
    atol: float = 0.02,
    extrapolation: bool = True,
    per_sample: bool = False,
) -> tuple[Tensor, Tensor]:
    """EM / stochastic improved Euler with adaptive steps to `rtol`/`atol` (Jolicoeur-Martineau et al. 2021, Alg. 1).

    Two NFE per tried step, rejected ones included; `steps` is unused.

    A non-finite error estimate raises `SolverError` naming the time reached.
    """
    t = torch.full((x.shape[0],), sde.T, dtype=torch.float64, device=x.device)
    h = torch.full_like(t, H_INIT * sde.T)
    x_prev = x
    bar = tqdm(disable=not progress, desc="adaptive_sde", unit="tried step")
    while bool((t > eps).any()):
        z = randn_like(x, generator)
        g, g_next = (expand_as(sde.g(u).to(x.dtype), x) for u in (t, t - h))
        dt = expand_as(h.to(x.dtype), x)
        a = _drift(sde, score_fn, x, t)
        x_em = x - dt * a + g * dt.sqrt() * z
        x_heun = x - 0.5 * dt * (a + _drift(sde, score_fn, x_em, t - h)) + 0.5 * (g + g_next) * dt.sqrt() * z
        x_new, x_check = (x_heun, x_em) if extrapolation else (x_em, x_heun)
        delta = torch.clamp(rtol * torch.maximum(x_check.abs(), x_prev.abs()), min=atol)
        sq = ((x_em - x_heun) / delta).flatten(1).square()
        err = (sq.mean(1) if per_sample else sq.mean().expand(len(sq))).sqrt().to(torch.float64)
        if not bool(torch.isfinite(err).all()):
            raise SolverError(f"adaptive_sde stopped at t={float(t.max()):.6g}: the error estimate is not finite")
        accept = err <= 1
        keep = expand_as(accept, x)
        x, x_prev = torch.where(keep, x_new, x), torch.where(keep, x_check, x_prev)
        t = torch.where(accept, torch.where(h >= t - eps, eps, t - h), t)
        h = torch.minimum(t - eps, torch.where(h > 0, SAFETY * h * err.pow(-EXPONENT), 0.0))
        bar.update()
    bar.close()
    return x, torch.tensor(eps, dtype=torch.float64, device=x.device)
