"""DDPM ancestral sampling (Ho et al. 2020, Alg. 2): the discrete chain of `VPSDE.discretize(N)`, exactly."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.sde import VPSDE, DDPMSchedule
from .common import Reverse
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


def chain(sde: VPSDE, steps: int) -> Tensor:
    """the DDPM chain's N = `steps` times, no `t_min`
    (`chain_times` of `sde.discretize(steps)`, from index N − 1 down to 0)."""
    return chain_times(sde, sde.discretize(steps)).flip(0)


@register(
    "ancestral",
    stochastic=True,
    nfe=lambda steps, o: steps - 1,
    nfe_text="N − 1 (`steps` = N of the chain)",
    requires=VPSDE,
    grid=chain,
    variance=Option(choices=("beta", "beta_tilde")),
)
def ancestral(run: Reverse, x: Tensor, t: Tensor, *, variance: str = "beta") -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) on the chain `sde.discretize(N)`, σ_i² = β_i or β̃_i.

    t: the chain's N times (`chain(sde, N)`). Runs i = N−1, …, 1 to x at index 0; the score is evaluated at the
    continuous time with the chain's ᾱ_i. The Tweedie step at index 0 that `denoise=True` adds,
    (x + (1−ᾱ_0)∇log p)/√ᾱ_0, is exactly Alg. 2's last, noise-free step (ᾱ_0 = α_0), so denoise=True with N = 1000
    and LinearBeta() is DDPM. The chain fixes its last time: there is no t_min.
    """
    steps = len(t)
    if not torch.equal(t, chain(run.sde, steps)):
        raise ValueError(f"ancestral walks the DDPM chain's own times: t = chain(sde, {steps})")
    ddpm = run.sde.discretize(steps)
    ddpm = DDPMSchedule(*(v.to(x.device) for v in (ddpm.t, ddpm.betas, ddpm.alphas, ddpm.alphas_cumprod)))
    for k in run.steps(steps - 1, desc="ancestral"):
        i = steps - 1 - k
        score = run.score(x, t[k])
        run.report_score(k, t[k], x, score)
        mean, std = ddpm_posterior(x, score, ddpm, i, variance)
        x = mean + std * run.noise(x)
    return x
