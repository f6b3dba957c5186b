"""What every sampler shares: scalar time coefficients, noise from a generator, the drift and Tweedie's step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..sde import SDE, ScoreFn


def at(t: Tensor, x: Tensor) -> Tensor:
    """The scalar time t as the (batch,) tensor a score function takes, in x's dtype and on its device."""
    return t.to(device=x.device, dtype=x.dtype).expand(x.shape[0]).contiguous()


def coef(fn: Callable[[Tensor], Tensor], t: Tensor, x: Tensor) -> Tensor:
    """A scalar SDE coefficient fn(t) (computed in t's float64) as a 0-d tensor in x's dtype."""
    return fn(t.reshape(1)).to(x.dtype).reshape(())


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """z ~ N(0, I) of x's shape, drawn from `generator` on the generator's device, then moved to x's device."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)


def drift(sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor, probability_flow: bool) -> Tensor:
    """dx/dt of the reverse SDE or of the probability-flow ODE at the scalar time t (`SDE.reverse_drift`)."""
    return sde.reverse_drift(x, t, score_fn(x, at(t, x)), probability_flow)


def tweedie_denoise(sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    """E[x₀ | x_t] at the scalar time t (`SDE.tweedie`, Tweedie's formula)."""
    return sde.tweedie(x, t, score_fn(x, at(t, x)))
