"""DDPM ancestral sampling (Ho et al. 2020, Alg. 2): the discrete chain of `VPSDE.discretize(N)`, exactly."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm import trange

from ..sde import VPSDE, DDPMSchedule, ScoreFn
from .common import at, randn_like
from .specs import Option, register


def ddpm_posterior(x: Tensor, score: Tensor, chain: DDPMSchedule, i: int, variance: str) -> tuple[Tensor, Tensor]:
    """Mean and std of p(x_{i−1} | x_i): (x_i + β_i ∇log p)/√α_i and √β_i or √β̃_i (Ho et al. 2020, eq. 11, Alg. 2).

    With ε̂ = −√(1−ᾱ_i) ∇log p this is Ho et al.'s 1/√α_i (x_i − β_i/√(1−ᾱ_i) ε̂); β̃_i = (1−ᾱ_{i−1})/(1−ᾱ_i) β_i.
    """
    beta, alpha_bar = chain.betas[i], chain.alphas_cumprod
    mean = (x + beta.to(x.dtype) * score) / chain.alphas[i].sqrt().to(x.dtype)
    var = beta if variance == "beta" else (1 - alpha_bar[i - 1]) / (1 - alpha_bar[i]) * beta
    return mean, var.sqrt().to(x.dtype)


def chain_times(sde: VPSDE, chain: DDPMSchedule) -> Tensor:
    """The continuous time of each chain index i: the t with s(t)² = ᾱ_i, i.e. λ(t) = ½ log(ᾱ_i/(1 − ᾱ_i))."""
    alpha_bar = chain.alphas_cumprod
    return sde.log_snr_inverse(0.5 * (alpha_bar.log() - torch.log1p(-alpha_bar)))


@register(
    "ancestral",
    stochastic=True,
    nfe=lambda steps, o: steps - 1,
    nfe_text="N − 1 (`steps` = N of the chain)",
    min_steps=2,
    requires=VPSDE,
    variance=Option(choices=("beta", "beta_tilde")),
)
def ancestral(
    sde: VPSDE,
    score_fn: ScoreFn,
    x: Tensor,
    steps: int,
    t_min: float,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    variance: str = "beta",
) -> tuple[Tensor, Tensor]:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) on the chain `sde.discretize(steps)`, σ_i² = β_i or β̃_i.

    Runs i = N−1, …, 1 to x at index 0; the score is evaluated at the continuous time with the chain's ᾱ_i. The
    Tweedie step at index 0 that `denoise=True` adds, (x + (1−ᾱ_0)∇log p)/√ᾱ_0, is exactly Alg. 2's last,
    noise-free step (ᾱ_0 = α_0), so denoise=True with N = 1000 and LinearBeta() is DDPM. `t_min` is not used.
    """
    chain = sde.discretize(steps)
    t = chain_times(sde, chain).to(x.device)
    chain = DDPMSchedule(*(v.to(x.device) for v in (chain.t, chain.betas, chain.alphas, chain.alphas_cumprod)))
    for i in trange(steps - 1, 0, -1, disable=not progress, desc="ancestral"):
        mean, std = ddpm_posterior(x, score_fn(x, at(t[i], x)), chain, i, variance)
        x = mean + std * randn_like(x, generator)
    return x, t[0]
