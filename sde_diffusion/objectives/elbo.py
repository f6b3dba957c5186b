"""The continuous-time variational bound on −log p(x) (Kingma et al. 2021, VDM eq. 17; Song et al. 2021b, Thm. 1).

For x_t = s(t)x + σ(t)ε with λ(t) = log(s/σ), the model (prior π at T, the reverse SDE with score s_θ, and at t_min the
decoder p(x | x_tmin) = N(x_tmin/s, σ²/s² I)) has −log p(x) ≤ L(x) = L_prior + L_diffusion + L_reconstruction:

    L_prior          = KL(N(s_T x, σ_T² I) ‖ π)                                       (closed form)
    L_diffusion      = ∫_{t_min}^T w(t) E_ε‖ε + σ(t) s_θ(x_t, t)‖² dt,   w = g²/(2σ²) = −dλ/dt
                     = ∫_{λ(T)}^{λ(t_min)} E_ε‖ε + σ s_θ‖² dλ                         (VDM eq. 17 with ε̂ = −σ s_θ)
    L_reconstruction = E[−log N(x; x_tmin/s, σ²/s² I)] = D/2·log(2πe) − D·λ(t_min)     (closed form)

w = −dλ/dt holds for every SDE here (VP: g²/σ² = β/(1 − e^{−B}); sub-VP and VE alike), so L_diffusion is Song et al.'s
½∫g²‖s_θ − ∇log p_{0t}(x_t | x)‖² dt (their likelihood weighting). With t_min → 0 and s(0) = 1, L is Song et al.
(2021b)'s Thm. 1 bound; it differs from it by −D log s(t_min) for t_min > 0, the Jacobian of the decoder's 1/s.
`importance` draws λ uniformly on [λ(T), λ(t_min)] (t ∝ w(t), so every draw weighs Δλ), else t uniformly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.checks import ArgumentError
from ..core.sde import SDE, ScoreFn, expand_as
from .noise_levels import UniformLevels


@dataclass
class ELBO:
    """−ELBO per sample in nats (`nll` = prior + diffusion + reconstruction) with the MC standard error `sem` of the
    diffusion term (the only random one), `nfe` score calls per sample. `log_p` = −nll bounds log p(x) from below."""

    nll: Tensor
    prior: Tensor
    diffusion: Tensor
    reconstruction: Tensor
    sem: Tensor
    nfe: int

    @property
    def log_p(self) -> Tensor:
        return -self.nll


def prior_kl(sde: SDE, x: Tensor) -> Tensor:
    """KL(N(s_T x, σ_T² I) ‖ N(0, σ_π² I)) = ½Σ_d [σ_T²/σ_π² + s_T² x_d²/σ_π² − 1 − log(σ_T²/σ_π²)], shape (batch,)."""
    T = torch.full((x.shape[0],), sde.T, dtype=x.dtype, device=x.device)
    s2, var = sde.scale(T) ** 2, sde.sigma(T) ** 2
    ratio = var / sde.prior_std**2
    d = x[0].numel()
    return 0.5 * (d * (ratio - 1 - torch.log(ratio)) + s2 * x.pow(2).flatten(1).sum(1) / sde.prior_std**2)


def gaussian_reconstruction(sde: SDE, x: Tensor, t_min: float) -> Tensor:
    """E[−log N(x; x_tmin/s, σ²/s² I)] = D/2·log(2πe) − D·λ(t_min), the same for every x: shape (batch,)."""
    lam = sde.log_snr(torch.full((x.shape[0],), t_min, dtype=x.dtype, device=x.device))
    d = x[0].numel()
    return 0.5 * d * math.log(2 * math.pi * math.e) - d * lam


def negative_elbo(sde: SDE, x: Tensor, diffusion: Tensor, t_min: float) -> Tensor:
    """L(x) = L_prior + L_diffusion + L_reconstruction per sample (VDM eq. 17; module docstring) from an estimate of
    the diffusion term: VDM's estimator L̂ when `diffusion` is one draw's (T − t_min)·g²/(2σ²)·‖ε̂ − ε‖²."""
    return prior_kl(sde, x).to(diffusion.dtype) + diffusion + gaussian_reconstruction(sde, x, t_min)


def time_draws(
    sde: SDE, n: int, n_t: int, t_min: float, importance: bool, like: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """(n_t, n) times t and weights ω with E[ω h(t)] = ∫ w h dt: stratified (draw j in [j, j+1)/n_t of the range),
    λ uniform on [λ(T), λ(t_min)] with ω = Δλ (importance), or t uniform on [t_min, T] with ω = (T − t_min) w(t)."""
    u = torch.rand(n_t, n, generator=generator, dtype=like.dtype, device=like.device)
    u = (torch.arange(n_t, dtype=like.dtype, device=like.device)[:, None] + u) / n_t
    if importance:
        levels = UniformLevels(sde, t_min)
        t = levels.t(1 - u)  # draw j in the j-th stratum down from λ(t_min)
        return t, torch.full_like(t, levels.hi - levels.lo)  # ω = 1/p(λ) = Δλ
    t = t_min + u * (sde.T - t_min)
    return t, (sde.T - t_min) * sde.g(t) ** 2 / (2 * sde.sigma(t) ** 2)


def diffusion_term(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    t_min: float = 1e-5,
    n_t: int = 16,
    importance: bool = True,
    generator: torch.Generator | None = None,
    control_variate: float | None = None,
) -> tuple[Tensor, Tensor]:
    """L_diffusion per sample and its standard error from n_t stratified draws of (t, ε), one score call each.

    `control_variate` v > 0 subtracts ω·c(λ)(‖ε‖² − D), c = (v e^{2λ}/(1 + v e^{2λ}))², whose mean is 0: for data of
    per-dimension variance v the residual is ε·c^{1/2} + …, so this removes most of the ε-noise at high SNR. The SE is
    the draws' sample sd/√n_t, which for stratified draws over-states it (conservative)."""
    t, weight = time_draws(sde, x.shape[0], n_t, t_min, importance, x, generator)
    terms = []
    for tj, wj in zip(t, weight, strict=True):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        r = noise + expand_as(sde.sigma(tj), x) * score_fn(sde.perturb(x, tj, noise), tj)
        h = r.pow(2).flatten(1).sum(1)
        if control_variate is not None:
            snr_v = control_variate * torch.exp(2 * sde.log_snr(tj))
            h = h - (snr_v / (1 + snr_v)) ** 2 * (noise.pow(2).flatten(1).sum(1) - x[0].numel())
        terms.append(wj * h)
    terms = torch.stack(terms)
    sem = terms.std(0) / math.sqrt(n_t) if n_t > 1 else torch.full_like(terms[0], math.nan)
    return terms.mean(0), sem


def elbo(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    t_min: float = 1e-5,
    n_t: int = 16,
    importance: bool = True,
    generator: torch.Generator | None = None,
    control_variate: float | None = None,
) -> ELBO:
    """−ELBO(x) = KL prior + diffusion + reconstruction (module docstring), per sample, in nats of x's space.

    x: a batch (batch, …) of continuous data; `n_t` stratified (t, ε) draws per sample; `importance` draws λ uniformly;
    `control_variate`: see `diffusion_term`. For discrete data see `sde_diffusion.likelihood.dequantise`."""
    if not 0 < t_min < sde.T:
        raise ArgumentError("t_min", t_min, f"in (0, T={sde.T})")
    if n_t < 1:
        raise ArgumentError("n_t", n_t, ">= 1")
    if control_variate is not None and not control_variate > 0:
        raise ArgumentError("control_variate", control_variate, "> 0 or None")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch of shape (batch, ...), got {tuple(x.shape)}")
    with torch.no_grad():
        diffusion, sem = diffusion_term(sde, score_fn, x, t_min, n_t, importance, generator, control_variate)
        prior, recon = prior_kl(sde, x), gaussian_reconstruction(sde, x, t_min)
    return ELBO(negative_elbo(sde, x, diffusion, t_min), prior, diffusion, recon, sem, n_t)
