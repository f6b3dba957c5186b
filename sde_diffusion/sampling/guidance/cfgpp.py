"""CFG++ (Chung et al. 2024, "CFG++: manifold-constrained classifier free guidance for diffusion models",
arXiv:2406.08070): DDIM whose Tweedie estimate uses the guided ε̂_λ = ε̂_∅ + λ(ε̂_c − ε̂_∅), λ ∈ [0, 1], and whose
re-noising uses the unconditional ε̂_∅: x_t = α_t x̂₀(ε̂_λ) + σ_t ε̂_∅ (η = 0). It is defined for the DDIM-η step of
`sampling.ddim.ddim_step` (in λ(t), any linear SDE), which it reuses: the step is DDIM's, taken from
x_s + σ_s²·λ(s_c − s_∅) = α_s x̂₀(ε̂_λ) + σ_s ε̂_∅ towards x̂₀(ε̂_λ). Not a score transform: the re-noising term is
O(1) per step, so it is CFG at a scale that depends on the step size (at h = λ_t − λ_s, x̂₀ = x̂₀_∅ +
λ/(1 − e^{−h})·(x̂₀_c − x̂₀_∅) in DDIM's own update).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm import trange

from ...core.checks import ArgumentError
from ...core.sde import SDE, ScoreFn
from .. import SampleResult, timesteps
from ..common import at, randn_like
from ..ddim import ddim_step
from .conditional import PairFn
from .interval import check_interval, in_interval


def cfgpp_ddim(
    sde: SDE,
    pair: PairFn,
    cond: ScoreFn,
    lam: float,
    x: Tensor,
    t: Tensor,
    *,
    eta: float = 0.0,
    interval: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """CFG++ on the grid t (Chung et al. 2024's DDIM with CFG++ for η = 0; with η > 0 DDIM-η's noise replaces part
    of the re-noising ε̂_∅). `pair(x, t)` -> (s_c, s_∅) (`guidance.cond_uncond`); with `interval` (in λ) the steps
    outside it are plain conditional DDIM steps with `cond` (one network evaluation instead of two)."""
    alpha, sigma, log_snr = sde.scale(t), sde.sigma(t), sde.log_snr(t)
    for i in trange(len(t) - 1, disable=not progress, desc="cfgpp"):
        x_from, x0 = cfgpp_target(sde, pair, cond, lam, x, t[i], interval)
        x, std = ddim_step(x_from, x0, alpha[i], alpha[i + 1], sigma[i + 1], log_snr[i + 1] - log_snr[i], eta)
        if eta > 0:
            x = x + std * randn_like(x, generator)
    return x


def cfgpp_target(
    sde: SDE, pair: PairFn, cond: ScoreFn, lam: float, x: Tensor, t: Tensor, interval: tuple | None
) -> tuple[Tensor, Tensor]:
    """One CFG++ step's start and target (x_s + σ_s²·λ(s_c − s_∅), x̂₀(ε̂_λ)) at the scalar time t, or DDIM's own
    (x, x̂₀(ε̂_c)) outside `interval`."""
    tt = at(t, x)
    if interval is not None and not bool(in_interval(sde, t, interval).all()):
        return x, sde.tweedie(x, tt, cond(x, tt))
    s_c, s_u = pair(x, tt)
    guided = s_u + lam * (s_c - s_u)
    shift = (sde.sigma(t.reshape(1)) ** 2).to(x.dtype).reshape(()) * (guided - s_u)
    return x + shift, sde.tweedie(x, tt, guided)


def cfgpp_sample(
    sde: SDE,
    pair: PairFn,
    cond: ScoreFn,
    lam: float,
    x_T: Tensor,
    steps: int,
    *,
    t_min: float = 1e-3,
    denoise: bool = True,
    eta: float = 0.0,
    spacing: str = "logsnr",
    interval: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> SampleResult:
    """CFG++ samples from x_T on `steps` steps of the `spacing` grid (DDIM's default, uniform in λ) down to t_min,
    finishing with Tweedie's x̂₀(ε̂_λ) at t_min if `denoise`. `nfe` counts the steps' score calls, as `sampling.sample`
    does: each is a (conditional, unconditional) pair, two network evaluations, or one outside `interval`."""
    if isinstance(lam, bool) or not isinstance(lam, int | float) or not math.isfinite(lam):
        raise ArgumentError("lam", lam, "a finite number (the paper's range is [0, 1])")
    if not 0 <= eta <= 1:
        raise ArgumentError("eta", eta, "in [0, 1]")
    interval = None if interval is None else check_interval(interval)
    t = timesteps(sde, steps, t_min, spacing)
    with torch.no_grad():
        x = cfgpp_ddim(sde, pair, cond, lam, x_T, t, eta=eta, interval=interval, generator=generator, progress=progress)
        if denoise:
            x = cfgpp_target(sde, pair, cond, lam, x, t[-1], interval)[1]
    return SampleResult(x=x, nfe=steps + int(denoise))
