"""One entry point for every sampler, `sample(sde, score_fn, shape, sampler=…)` → SampleResult(x, nfe, vjp): it checks
the arguments against the sampler's spec, builds its times once (`SamplerSpec.grid`), runs the sampler on a
`Reverse` and denoises at the final time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..core.checks import ArgumentError, check_choice
from ..core.sde import SDE, ScoreFn
from .common import Callback, Reverse, tweedie_denoise
from .specs import SamplerArgError, SamplerSpec, check_sampler


@dataclass
class SampleResult:
    """x: the samples, of the requested shape; nfe: score-function calls per sample path (see `sample`); vjp: the
    backward passes through the score among them (an inverse method's)."""

    x: Tensor
    nfe: int
    vjp: int = 0


class _Counted:
    """score_fn with a counter of its calls and of those whose input requires a gradient (the vector-Jacobian
    products an inverse method takes through the score)."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn, self.calls, self.vjp = score_fn, 0, 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        self.vjp += torch.is_grad_enabled() and x.requires_grad
        return self.score_fn(x, t)


def _finish(spec: SamplerSpec, run: Reverse, x: Tensor, t: Tensor, denoise: bool) -> Tensor:
    """Tweedie's step at the final time t[-1] (reported as the last step), unless not asked for or the sampler is
    an inverse method, which ends with its own."""
    if not denoise or spec.measured:
        return x
    x0 = tweedie_denoise(run.sde, run.score_fn, x, t[-1])
    run.report(max(len(t) - 1, run.last + 1), t[-1], x, x0)
    return x0


def _check(spec: SamplerSpec, batch_size: Any, dtype: torch.dtype, denoise: Any) -> None:
    """sample's own arguments (SamplerArgError naming the bad one)."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise SamplerArgError(spec.name, "batch_size", batch_size, "None or an int >= 1")
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise SamplerArgError(spec.name, "dtype", dtype, "a floating torch dtype")
    if spec.measured and denoise is not True:
        raise SamplerArgError(spec.name, "denoise", denoise, "True: an inverse method ends with its own Tweedie step")


@dataclass(frozen=True)
class SampleSetup:
    """How `sample` draws and runs, apart from the sampler: the prior noise from `generator` (or start from `x_T`,
    cast to `dtype`, on its device unless `device` is given), in `dtype` on `device`, the batch in chunks of
    `batch_size` samples (bounds memory; the noise comes from the one generator in chunk order), with a progress
    bar and `callback(i, t, x, denoised)` once per step of each chunk (`Reverse`) and at the final time."""

    generator: torch.Generator | None = None
    x_T: Tensor | None = None
    dtype: torch.dtype = torch.float32
    device: torch.device | str | None = None
    batch_size: int | None = None
    progress: bool = False
    callback: Callback | None = None


def sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    sampler: str = "euler_maruyama",
    steps: int | None = None,
    t_min: float | None = None,
    denoise: bool = True,
    setup: SampleSetup = SampleSetup(),
    **options: object,
) -> SampleResult:
    """Draw samples by solving the reverse SDE or probability-flow ODE (Song et al. 2021) from T to t_min, or, with
    an inverse method (`INVERSE`) and its `measurement`, samples of p(x | y).

    steps and t_min: None takes specs.STEPS = 1000 and T_MIN = 1e-3 where the sampler takes them (an adaptive
    sampler takes no steps, `ancestral` no t_min: given, they are an error). denoise: finish with Tweedie's step
    (x + σ²∇log p)/s at the final time (one more NFE; an inverse method always ends with its own). setup: the
    generator, x_T, dtype, device, batch_size, progress bar and callback (`SampleSetup`). No autograd graph is
    built. nfe counts score calls per sample path, i.e. per chunk (the largest count over chunks for adaptive
    solvers), vjp those differentiated through. Every argument is checked against the sampler's spec first
    (`check_sampler`: a ValueError naming the key, the value and what is allowed); options not given, or given as
    None, take the sampler's defaults for `steps` (README).
    """
    generator, x_T, dtype, device = setup.generator, setup.x_T, setup.dtype, setup.device
    if moved := sorted(set(options) & set(SampleSetup.__dataclass_fields__)):
        raise ArgumentError(moved[0], options[moved[0]], f"given as setup=SampleSetup({moved[0]}=...)")
    spec = check_sampler(sampler, steps=steps, t_min=t_min, options=options, sde_type=type(sde), T=sde.T)
    _check(spec, setup.batch_size, dtype, denoise)
    timed = spec.grid(sde, steps, t_min, options)
    shape = tuple(shape)
    if x_T is None:
        x_T = sde.prior_sampling(shape, generator, dtype, generator.device if generator is not None else device)
    elif tuple(x_T.shape) != shape:
        raise ArgumentError("x_T", tuple(x_T.shape), f"of shape={shape}")
    x_T = x_T.to(device=device or x_T.device, dtype=dtype)
    outs, nfe, vjp = [], 0, 0
    with torch.no_grad():
        for chunk in x_T.split(setup.batch_size or max(len(x_T), 1)):
            counted = _Counted(score_fn)
            run = Reverse(sde, counted, generator, setup.callback, setup.progress)
            outs.append(_finish(spec, run, spec.fn(run, chunk, timed.t, **timed.options), timed.t, denoise))
            nfe, vjp = max(nfe, counted.calls), max(vjp, counted.vjp)
    return SampleResult(x=torch.cat(outs), nfe=nfe, vjp=vjp)


@dataclass(frozen=True)
class SamplerRun:
    """One sampler as in conf/sampler/: `sample(..., sampler=name, steps=steps, t_min=t_min, denoise=denoise,
    **options)` (steps None for an adaptive sampler, t_min None for `ancestral`), run by `sample`."""

    name: str
    steps: int | None
    t_min: float | None = 1e-3
    denoise: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)

    def check(self, sde: SDE) -> None:
        """Every argument against the sampler's spec for this SDE (sampling.SamplerArgError naming the key)."""
        check_sampler(self.name, steps=self.steps, t_min=self.t_min, options=self.options, sde_type=type(sde), T=sde.T)
        check_choice("denoise", self.denoise, (True, False))

    def sample(self, sde: SDE, score_fn: ScoreFn, shape: tuple[int, ...], setup: SampleSetup) -> SampleResult:
        """`sampling.sample` of this sampler, its steps, t_min, denoise and options, from `setup`."""
        return sample(
            sde, score_fn, shape, self.name, self.steps, self.t_min, self.denoise, setup=setup, **self.options
        )
