"""Stochastic samplers of the reverse-time SDE: Euler–Maruyama, predictor–corrector, DDPM ancestral, torchsde.

Each runs from x at t = T to the returned final time and gives back (x, t_final); the entry point `sample`
adds the Tweedie step. The reverse SDE is dx = [f(t)x − g(t)² ∇log p_t(x)] dt + g(t) dw̄ (Anderson 1982).
"""

from __future__ import annotations

import torch
import torchsde
from torch import Tensor
from tqdm import trange

from ..sde import SDE, VPSDE, DDPMSchedule, ScoreFn
from .common import at, coef, randn_like, time_grid


def euler_maruyama(
    sde: SDE, score_fn: ScoreFn, x: Tensor, steps: int, eps: float, generator=None, progress=False
) -> tuple[Tensor, Tensor]:
    """x ← x − [f x − g² ∇log p] h + g √h z, h = t_i − t_{i+1} > 0 the grid's true step (Song et al. 2021, eq. 6)."""
    t = time_grid(sde, steps, eps, x)
    for i in trange(steps, disable=not progress, desc="euler_maruyama"):
        h = (t[i] - t[i + 1]).to(x.dtype)
        g = coef(sde.g, t[i], x)
        drift = coef(sde.f, t[i], x) * x - g**2 * score_fn(x, at(t[i], x))
        x = x - drift * h + g * h.sqrt() * randn_like(x, generator)
    return x, t[-1]


def _transition(sde: SDE, t: Tensor, u: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """The exact forward kernel x_t = a x_u + G z from u < t: a = s(t)/s(u), G² = σ(t)² − a²σ(u)²."""
    a = coef(sde.scale, t, x) / coef(sde.scale, u, x)
    return a, coef(sde.sigma, t, x) ** 2 - a**2 * coef(sde.sigma, u, x) ** 2


def pc(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    steps: int,
    eps: float,
    generator=None,
    progress=False,
    *,
    predictor: str = "reverse_diffusion",
    corrector_steps: int = 1,
    snr: float = 0.16,
) -> tuple[Tensor, Tensor]:
    """Predictor–corrector sampling (Song et al. 2021, Alg. 2/3): a predictor step, then Langevin corrector steps.

    `reverse_diffusion` inverts the exact forward kernel x_t = a x_u + G z (eq. 46: x_u = (2 − a)x_t + G² ∇log p
    + G z; a = √(1−β_i), G² = β_i for VP; a = 1, G² = σ_t² − σ_u² for VE); `euler_maruyama` is the EM step.
    The corrector runs at the new time with step ε = 2α(snr·‖z‖/‖∇log p‖)², α = a² (score_sde's LangevinCorrector).
    NFE = steps·(1 + corrector_steps).
    """
    if predictor not in ("reverse_diffusion", "euler_maruyama"):
        raise ValueError(f"predictor must be one of ['euler_maruyama', 'reverse_diffusion'], got {predictor!r}")
    if not (isinstance(corrector_steps, int) and corrector_steps >= 0):
        raise ValueError(f"corrector_steps must be an int >= 0, got {corrector_steps!r}")
    if not snr > 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    t = time_grid(sde, steps, eps, x)
    for i in trange(steps, disable=not progress, desc="pc"):
        score = score_fn(x, at(t[i], x))
        a, G2 = _transition(sde, t[i], t[i + 1], x)
        if predictor == "reverse_diffusion":
            x = (2 - a) * x + G2 * score + G2.sqrt() * randn_like(x, generator)
        else:
            h = (t[i] - t[i + 1]).to(x.dtype)
            g = coef(sde.g, t[i], x)
            x = x - (coef(sde.f, t[i], x) * x - g**2 * score) * h + g * h.sqrt() * randn_like(x, generator)
        for _ in range(corrector_steps):
            grad = score_fn(x, at(t[i + 1], x))
            z = randn_like(x, generator)
            ratio = z.flatten(1).norm(dim=1).mean() / grad.flatten(1).norm(dim=1).mean()
            step = 2 * a**2 * (snr * ratio) ** 2
            x = x + step * grad + (2 * step).sqrt() * z
    return x, t[-1]


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


def ancestral(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    steps: int,
    eps: float,
    generator=None,
    progress=False,
    *,
    variance: str = "beta",
) -> tuple[Tensor, Tensor]:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) on the chain `sde.discretize(steps)`, σ_i² = β_i or β̃_i.

    Runs i = N−1, …, 1 to x at index 0; the score is evaluated at the continuous time with the chain's ᾱ_i. The
    Tweedie step at index 0 that `denoise=True` adds, (x + (1−ᾱ_0)∇log p)/√ᾱ_0, is exactly Alg. 2's last,
    noise-free step (ᾱ_0 = α_0), so denoise=True with N = 1000 and LinearBeta() is DDPM. `eps` is not used.
    """
    if not isinstance(sde, VPSDE):
        raise ValueError(f"sampler 'ancestral' needs a VPSDE (DDPM's chain), got {type(sde).__name__}")
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"variance must be one of ['beta', 'beta_tilde'], got {variance!r}")
    chain = sde.discretize(steps)
    t = chain_times(sde, chain).to(x.device)
    chain = DDPMSchedule(*(v.to(x.device) for v in (chain.t, chain.betas, chain.alphas, chain.alphas_cumprod)))
    for i in trange(steps - 1, 0, -1, disable=not progress, desc="ancestral"):
        mean, std = ddpm_posterior(x, score_fn(x, at(t[i], x)), chain, i, variance)
        x = mean + std * randn_like(x, generator)
    return x, t[0]


class _ReverseInS(torch.nn.Module):
    """The reverse SDE in s = T − t, forward in s as torchsde needs: dy = −[f y − g² ∇log p] ds + g dW_s."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sde: SDE, score_fn: ScoreFn, shape: tuple[int, ...]):
        super().__init__()
        self.forward_sde, self.score_fn, self.shape = sde, score_fn, shape

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        t = (self.forward_sde.T - s.to(torch.float64)).reshape(())
        x = y.view(self.shape)
        g = coef(self.forward_sde.g, t, x)
        return -(coef(self.forward_sde.f, t, x) * x - g**2 * self.score_fn(x, at(t, x))).flatten(1)

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        t = (self.forward_sde.T - s.to(torch.float64)).reshape(())
        return coef(self.forward_sde.g, t, y).expand_as(y)


TORCHSDE_METHODS = ("euler", "milstein", "srk")


def torchsde_sampler(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    steps: int,
    eps: float,
    generator=None,
    progress=False,
    *,
    method: str = "euler",
    bm: torchsde.BrownianInterval | None = None,
) -> tuple[Tensor, Tensor]:
    """`torchsde.sdeint` (Li et al. 2020) on the reverse SDE in s = T − t ∈ [0, T − eps], fixed step (T − eps)/steps.

    `bm` reuses one Brownian path (a torchsde.BrownianInterval on [0, T − eps] of size (batch, D)) across step
    counts; without it one is made with entropy drawn from `generator`. `progress` is not shown (torchsde has none).
    """
    if method not in TORCHSDE_METHODS:
        raise ValueError(f"method must be one of {list(TORCHSDE_METHODS)}, got {method!r}")
    s1 = sde.T - eps
    y = x.flatten(1)
    if bm is None:
        entropy = int(torch.randint(2**62, (1,), generator=generator))
        bm = torchsde.BrownianInterval(
            t0=0.0,
            t1=s1,
            size=y.shape,
            dtype=x.dtype,
            device=x.device,
            entropy=entropy,
            levy_area_approximation="space-time" if method == "srk" else "none",
        )
    ts = torch.tensor([0.0, s1], dtype=torch.float64, device=x.device)
    dt = s1 / steps * (1 + 1e-9)  # so that rounding in torchsde's t += dt cannot add a sliver of a step at the end
    ys = torchsde.sdeint(_ReverseInS(sde, score_fn, x.shape), y, ts, bm=bm, method=method, dt=dt)
    return ys[-1].view(x.shape), torch.tensor(eps, dtype=torch.float64, device=x.device)
