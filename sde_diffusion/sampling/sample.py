"""One entry point for every sampler: `sample(sde, score_fn, shape, sampler=…)` → SampleResult(x, nfe).

| sampler        | `steps` means                      | NFE (+1 with denoise)        | options
|----------------|------------------------------------|------------------------------|------------------------------------
| euler_maruyama | steps on linspace(T, eps)          | steps                        | —
| pc             | predictor steps                    | steps·(1 + corrector_steps)  | predictor, corrector_steps, snr
| ancestral      | N of `VPSDE.discretize(N)`         | N − 1                        | variance ("beta", "beta_tilde")
| ode_euler      | steps on the `spacing` grid        | steps                        | spacing, rho
| ode_heun       | steps on the `spacing` grid        | 2·steps                      | spacing, rho
| rk45           | unused (adaptive)                  | from the solver              | rtol, atol
| dpm_solver     | NFE                                | steps                        | order, method, algorithm,
|                |                                    |                              | spacing, rho, lower_order_final
| torchsde       | fixed steps of (T − eps)/steps     | 1 + steps·(drift calls/step) | method, bm

(torchsde makes one extra drift call to check shapes; euler and milstein make 1 per step, srk 10.)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import Tensor

from ..sde import SDE, ScoreFn
from .common import tweedie_denoise
from .dpm_solver import dpm_solver
from .ode_samplers import ode_euler, ode_heun, rk45
from .sde_samplers import ancestral, euler_maruyama, pc, torchsde_sampler

SAMPLERS = {
    "euler_maruyama": euler_maruyama,
    "pc": pc,
    "ancestral": ancestral,
    "ode_euler": ode_euler,
    "ode_heun": ode_heun,
    "rk45": rk45,
    "dpm_solver": dpm_solver,
    "torchsde": torchsde_sampler,
}
DETERMINISTIC = ("ode_euler", "ode_heun", "rk45", "dpm_solver")


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


def solver_options(sampler: str) -> list[str]:
    """The keyword options `sampler` accepts."""
    params = inspect.signature(SAMPLERS[sampler]).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    sampler: str = "euler_maruyama",
    steps: int = 1000,
    eps: float = 1e-3,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    progress: bool = False,
    batch_size: int | None = None,
    **solver_options_: object,
) -> SampleResult:
    """Draw samples by solving the reverse SDE or probability-flow ODE (Song et al. 2021) from T to eps.

    x_T: start from this noise (cast to `dtype`; its device unless `device` is given) instead of drawing it from
    the prior with `generator`. denoise: finish with Tweedie's step (x + σ²∇log p)/s at the final time (one more
    NFE). batch_size: solve the batch in chunks of this many samples (bounds memory; the noise comes from the one
    generator in chunk order). No autograd graph is built. nfe counts score calls per sample path, i.e. per chunk
    (the largest count over chunks for the adaptive rk45). See the module table for `steps` and the options.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
    valid = solver_options(sampler)
    unknown = sorted(set(solver_options_) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for sampler {sampler!r}; valid options: {valid}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < (2 if sampler == "ancestral" else 1):
        raise ValueError(f"steps must be an int >= {2 if sampler == 'ancestral' else 1}, got {steps!r}")
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must be in (0, T={sde.T}), got {eps}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}")
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"dtype must be a floating torch dtype, got {dtype}")
    shape = tuple(shape)
    if x_T is None:
        x_T = sde.prior_sampling(shape, generator, dtype, generator.device if generator is not None else device)
    elif tuple(x_T.shape) != shape:
        raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected shape={shape}")
    x_T = x_T.to(device=device or x_T.device, dtype=dtype)
    fn = SAMPLERS[sampler]
    outs, nfe = [], 0
    with torch.no_grad():
        for chunk in x_T.split(batch_size or max(len(x_T), 1)):
            counted = _Counted(score_fn)
            x, t_end = fn(sde, counted, chunk, steps, eps, generator, progress, **solver_options_)
            if denoise:
                x = tweedie_denoise(sde, counted, x, t_end)
            outs.append(x)
            nfe = max(nfe, counted.calls)
    return SampleResult(x=torch.cat(outs), nfe=nfe)
