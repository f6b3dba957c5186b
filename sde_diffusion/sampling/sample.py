"""One entry point for every sampler, `sample(sde, score_fn, shape, sampler=…)` → SampleResult(x, nfe): it checks the
arguments against the sampler's spec, builds the time grid T = t_0 > … > t_steps = t_min once, and runs the sampler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..sde import SDE, ScoreFn
from .common import tweedie_denoise
from .specs import GRID, SamplerSpec, check_sampler
from .timesteps import timesteps


@dataclass
class SampleResult:
    """x: the samples, of the requested shape; nfe: score-function calls per sample path (see `sample`)."""

    x: Tensor
    nfe: int


class _Counted:
    """score_fn with a call counter."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn, self.calls = score_fn, 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return self.score_fn(x, t)


def grid_and_options(
    sde: SDE, spec: SamplerSpec, steps: int, t_min: float, options: dict[str, Any]
) -> tuple[Tensor | None, dict[str, Any]]:
    """The sampler's float64 time grid on the CPU (None if it walks none) and its other options, at `steps`
    (`SamplerSpec.resolve`). `timesteps` given without `spacing` means "custom"."""
    opts = spec.resolve(steps, options)
    if not spec.spacing:
        return None, opts
    if options.get("timesteps") is not None and options.get("spacing") is None:
        opts["spacing"] = "custom"
    spacing, rho, custom = (opts.pop(k) for k in GRID)
    return timesteps(sde, steps, t_min, spacing, rho, custom=custom), opts


def sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    sampler: str = "euler_maruyama",
    steps: int = 1000,
    t_min: float = 1e-3,
    denoise: bool = True,
    *,
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    progress: bool = False,
    batch_size: int | None = None,
    **options: object,
) -> SampleResult:
    """Draw samples by solving the reverse SDE or probability-flow ODE (Song et al. 2021) from T to t_min.

    x_T: start from this noise (cast to `dtype`; its device unless `device` is given) instead of drawing it from
    the prior with `generator`. denoise: finish with Tweedie's step (x + σ²∇log p)/s at the final time (one more
    NFE). batch_size: solve the batch in chunks of this many samples (bounds memory; the noise comes from the one
    generator in chunk order). No autograd graph is built. nfe counts score calls per sample path, i.e. per chunk
    (the largest count over chunks for adaptive solvers). Every argument is checked against the sampler's spec
    first (`check_sampler`: a ValueError naming the key, the value and what is allowed); options not given, or
    given as None, take the sampler's defaults for `steps` (README's table).
    """
    spec = check_sampler(sampler, steps=steps, t_min=t_min, options=options, sde_type=type(sde), T=sde.T)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size={batch_size!r}: None or an int >= 1")
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"dtype={dtype}: a floating torch dtype")
    t, opts = grid_and_options(sde, spec, steps, t_min, options)
    shape = tuple(shape)
    if x_T is None:
        x_T = sde.prior_sampling(shape, generator, dtype, generator.device if generator is not None else device)
    elif tuple(x_T.shape) != shape:
        raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected shape={shape}")
    x_T = x_T.to(device=device or x_T.device, dtype=dtype)
    outs, nfe = [], 0
    with torch.no_grad():
        for chunk in x_T.split(batch_size or max(len(x_T), 1)):
            counted = _Counted(score_fn)
            if t is None:
                x, t_end = spec.fn(sde, counted, chunk, steps, t_min, generator=generator, progress=progress, **opts)
            else:
                x, t_end = spec.fn(sde, counted, chunk, t, generator=generator, progress=progress, **opts), t[-1]
            outs.append(tweedie_denoise(sde, counted, x, t_end) if denoise else x)
            nfe = max(nfe, counted.calls)
    return SampleResult(x=torch.cat(outs), nfe=nfe)
