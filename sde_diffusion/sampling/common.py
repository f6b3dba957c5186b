"""What every sampler shares: scalar time coefficients, noise from a generator, and Tweedie's denoising step."""

from __future__ import annotations

import torch
from torch import Tensor

from ..sde import SDE, ScoreFn


class SamplingError(RuntimeError):
    """A solver could not finish (e.g. rk45 met a non-finite drift); the message names the time reached."""


def at(t: Tensor, x: Tensor) -> Tensor:
    """The scalar time t as the (batch,) tensor a score function takes, in x's dtype and on its device."""
    return t.to(device=x.device, dtype=x.dtype).expand(x.shape[0]).contiguous()


def coef(fn, t: Tensor, x: Tensor) -> Tensor:
    """A scalar SDE coefficient fn(t) (computed in t's float64) as a 0-d tensor in x's dtype."""
    return fn(t.reshape(1)).to(x.dtype).reshape(())


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """z ~ N(0, I) of x's shape, drawn from `generator` on the generator's device, then moved to x's device."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)


def time_grid(sde: SDE, steps: int, eps: float, x: Tensor) -> Tensor:
    """steps + 1 uniformly spaced times from T down to eps, float64 on x's device (score_sde's linspace(T, eps))."""
    return torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64).to(x.device)


def tweedie_denoise(sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    """E[x₀ | x_t] = (x_t + σ(t)² ∇log p_t(x_t)) / s(t) (Tweedie's formula; Efron 2011, eq. 1.4)."""
    score = score_fn(x, at(t, x))
    return (x + coef(sde.sigma, t, x) ** 2 * score) / coef(sde.scale, t, x)


def pf_drift(sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    """dx/dt of the probability-flow ODE, f(t)x − ½g(t)² ∇log p_t(x) (Song et al. 2021, eq. 13)."""
    return coef(sde.f, t, x) * x - 0.5 * coef(sde.g, t, x) ** 2 * score_fn(x, at(t, x))
