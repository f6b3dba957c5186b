"""What every sampler shares: the problem it solves (`Reverse`), scalar time coefficients, noise from a generator,
the drift and Tweedie's step."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import trange

from ..core.sde import SDE, ScoreFn

# callback(i, t, x, denoised): at step i, the time t (float64), the state x at t and Tweedie's E[x₀ | x_t = x]
Callback = Callable[[int, Tensor, Tensor, Tensor], None]


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


@dataclass
class Reverse:
    """What a sampler runs on (specs' protocol): the SDE, the score ∇log p_t(x), the generator its noise comes from,
    an optional `callback(i, t, x, denoised)` and whether it shows a progress bar.

    A sampler calls `report` once per step, at the time t the step starts from (k-diffusion's `callback`): i is the
    index of t in its grid (for an adaptive sampler the count of steps before), x the state at t on which it
    evaluated the score there, and `denoised` Tweedie's x̂₀ = E[x₀ | x_t = x] from that score: for an SDE sampler the
    posterior mean at the current noisy state, free of the step's noise, not a sample. `sample` calls it once more
    at the final time with the x̂₀ it returns when it denoises."""

    sde: SDE
    score_fn: ScoreFn
    generator: torch.Generator | None = None
    callback: Callback | None = None
    progress: bool = False
    last: int = -1  # the last step reported

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """∇log p_t(x) at the scalar time t."""
        return self.score_fn(x, at(t, x))

    def noise(self, x: Tensor) -> Tensor:
        """z ~ N(0, I) like x, from the generator (`randn_like`)."""
        return randn_like(x, self.generator)

    def steps(self, *bounds: int, desc: str) -> Iterable[int]:
        """range(*bounds), behind a progress bar named `desc` when `progress`."""
        return trange(*bounds, disable=not self.progress, desc=desc)

    def report(self, i: int, t: Tensor, x: Tensor, denoised: Tensor | Callable[[], Tensor]) -> None:
        """callback(i, t, x, denoised) if there is one; `denoised` may be a function computing it (only then)."""
        self.last = i
        if self.callback is not None:
            self.callback(i, t, x, denoised() if callable(denoised) else denoised)

    def report_score(self, i: int, t: Tensor, x: Tensor, score: Tensor) -> None:
        """`report` with x̂₀ = `SDE.tweedie` from the score at (x, t)."""
        self.report(i, t, x, lambda: self.sde.tweedie(x, t, score))
