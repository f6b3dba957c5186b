"""Exact likelihood through the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2).

Along the probability-flow ODE dx/dt = f̃(x, t) = f(t)x − ½g(t)² ∇log p_t(x) (eq. 13) the density obeys the
instantaneous change of variables d log p_t(x_t)/dt = −∇·f̃(x_t, t) (Chen et al. 2018, thm. 1), so

    log p_tmin(x) = log p_T(x_T) + ∫_tmin^T ∇·f̃(x_t, t) dt,    x_tmin = x,

solved forward from t_min to T for x_t and the running integral together, with p_T replaced by the prior
N(0, σ_T² I). Two errors remain besides the solver's: p_tmin ≠ p_0 (tiny for t_min = 1e-5) and the prior mismatch
log N(x_T) − log p_T(x_T), set by how far the SDE has forgotten the data at T.

The divergence is either exact (the Jacobian trace, one vector–Jacobian product per dimension, so for small D)
or Hutchinson's unbiased estimate εᵀ(∂f̃/∂x)ε with one probe ε per sample held fixed for the whole solve
(Grathwohl et al. 2018), which makes log p̂ = log N(x_T) + εᵀ(∫J dt)ε unbiased for the exact solve.

Solvers: scipy's adaptive RK45 (default, as score_sde) integrates the flattened state [x, ∫div] in float64 on
the CPU, because scipy works on NumPy arrays; each right-hand side moves the state to the input's device and
dtype, evaluates the score there and comes back. Its error norm is the RMS over the whole batch's state, so
a batch shares one step sequence. The fixed-step `euler` and `heun` solvers stay on the input's device and dtype.
The score must treat samples independently (no batch statistics), since divergences are taken batch-wise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.checks import ArgumentError
from ..core.scipy_ode import Solver, solve
from ..core.sde import SDE, ScoreFn
from .dequantise import Quantiser, quantised_levels

DIVERGENCES = ("exact", "hutchinson")
NOISES = ("rademacher", "gaussian")
SOLVERS = ("rk45", "euler", "heun")

Rhs = Callable[[Tensor, float], tuple[Tensor, Tensor]]


@dataclass
class Likelihood:
    """log p(x) = prior_logp + divergence_integral, per sample, in nats; z = x_T; nfe = drift evaluations."""

    log_p: Tensor
    prior_logp: Tensor
    divergence_integral: Tensor
    z: Tensor
    nfe: int


def _probe(x: Tensor, noise: str, generator: torch.Generator | None) -> Tensor:
    """Hutchinson probe with E[εεᵀ] = I: Rademacher ±1 or standard normal."""
    if noise == "rademacher":
        return torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _rhs(sde: SDE, score_fn: ScoreFn, probe: Tensor | None) -> Rhs:
    """(x, t) -> (f̃(x, t), ∇·f̃(x, t)): the PF-ODE drift (eq. 13) and its exact or Hutchinson divergence."""

    def rhs(x: Tensor, t: float) -> tuple[Tensor, Tensor]:
        tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            drift = sde.reverse_drift(x, tt, score_fn(x, tt), probability_flow=True)
            if probe is not None:  # εᵀ J ε from one vector–Jacobian product
                (vjp,) = torch.autograd.grad(drift, x, probe)
                div = (vjp * probe).flatten(1).sum(1)
            else:  # tr J = Σ_i ∂f̃_i/∂x_i, one vector–Jacobian product per dimension
                flat = drift.flatten(1)
                div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
                for i in range(flat.shape[1]):
                    (row,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)
                    div = div + row.flatten(1)[:, i]
        return drift.detach(), div.detach()

    return rhs


def _solve_rk45(rhs: Rhs, x: Tensor, t_min: float, T: float, rtol: float, atol: float) -> tuple[Tensor, Tensor, int]:
    """Integrate [x, ∫div] from t_min to T with scipy's RK45 (Dormand–Prince 5(4)), state float64 on the CPU."""
    n = x.shape[0]

    def fun(y: Tensor, t: float) -> Tensor:
        drift, div = rhs(y[:-n].view(x.shape), t)
        return torch.cat([drift.flatten(), div])

    y0 = torch.cat([x.detach().flatten(), x.new_zeros(n)])
    y, nfe = solve(fun, y0, t_min, T, Solver("RK45", rtol, atol), desc="likelihood RK45")
    return y[:-n].view(x.shape), y[-n:], nfe


def _solve_fixed(rhs: Rhs, x: Tensor, t_min: float, T: float, steps: int, heun: bool) -> tuple[Tensor, Tensor, int]:
    """Integrate [x, ∫div] from t_min to T with `steps` uniform Euler or Heun (explicit trapezoid) steps."""
    ts = torch.linspace(t_min, T, steps + 1, dtype=torch.float64).tolist()
    integral = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
        h = float(t1 - t0)
        d0, v0 = rhs(x, float(t0))
        if heun:
            d1, v1 = rhs(x + h * d0, float(t1))
            x, integral = x + 0.5 * h * (d0 + d1), integral + 0.5 * h * (v0 + v1)
        else:
            x, integral = x + h * d0, integral + h * v0
    return x, integral, steps * (2 if heun else 1)


@dataclass(frozen=True)
class FlowOptions:
    """How `log_likelihood` solves the PF-ODE from t_min to T: the divergence ("exact" or "hutchinson", with probes
    of `noise`), the `solver` ("rk45" to `rtol`/`atol`, or fixed-step "euler"/"heun" of `steps` steps). Checked on
    construction (checks.ArgumentError naming the field); t_min < T is checked against the SDE by the solve."""

    divergence: str = "exact"
    noise: str = "rademacher"
    solver: str = "rk45"
    steps: int = 1000
    rtol: float = 1e-5
    atol: float = 1e-5
    t_min: float = 1e-5

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("divergence", self.divergence, DIVERGENCES),
            ("noise", self.noise, NOISES),
            ("solver", self.solver, SOLVERS),
        ):
            if value not in allowed:
                raise ArgumentError(name, value, f"one of {allowed}")
        for name in ("t_min", "rtol", "atol"):
            if not getattr(self, name) > 0:
                raise ArgumentError(name, getattr(self, name), "> 0")
        if self.steps < 1:
            raise ArgumentError("steps", self.steps, ">= 1")


def log_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    flow: FlowOptions = FlowOptions(),
    generator: torch.Generator | None = None,
) -> Likelihood:
    """log p_tmin(x) = log π(x_T) + ∫_tmin^T ∇·f̃(x_t, t) dt along the PF-ODE (Song et al. 2021, App. D.2).

    x: a batch (batch, …) read as a sample at time t_min; `flow`: the divergence and solver (`FlowOptions`).
    `generator` draws Hutchinson's probes. The returned tensors have x's device and dtype.
    """
    if not flow.t_min < sde.T:
        raise ArgumentError("t_min", flow.t_min, f"in (0, T={sde.T})")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch of shape (batch, ...), got {tuple(x.shape)}")
    probe = _probe(x, flow.noise, generator) if flow.divergence == "hutchinson" else None
    rhs = _rhs(sde, score_fn, probe)
    if flow.solver == "rk45":
        z, integral, nfe = _solve_rk45(rhs, x, flow.t_min, sde.T, flow.rtol, flow.atol)
    else:
        z, integral, nfe = _solve_fixed(rhs, x.detach(), flow.t_min, sde.T, flow.steps, heun=flow.solver == "heun")
    prior_logp = sde.prior_logp(z)
    return Likelihood(prior_logp + integral, prior_logp, integral, z, nfe)


@dataclass
class BitsPerDim:
    """Dequantised negative log-likelihood in bits per dimension: per sample (mean over draws) and per draw."""

    bpd: Tensor
    draws: Tensor
    nfe: int


def bits_per_dim(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    scaler: Quantiser,
    n_draws: int = 5,
    generator: torch.Generator | None = None,
    flow: FlowOptions = FlowOptions(),
) -> BitsPerDim:
    """−E_u[log p(k + u − ½)]/(D log 2), u ~ U[0, 1)^D: the dequantisation bound (Theis et al. 2016; Ho et al. 2019).

    x is quantised data in model space (as the data sets return it); k = scaler.to_raw(x) must be its integer
    levels. The density is taken in level units, one unit-wide bin per level centred on it (the model was trained
    on to_model(k), so the bins sit around its data), and y = k + u − ½ maps to model space by the scaler's own
    affine map x = a·y + b, read off as a = to_model(1) − to_model(0) per element; its log-Jacobian Σ log|a| is
    the whole "offset" (score_sde hard-codes 7 bits). The bound ≥ the discrete NLL by Jensen; it averages the
    log-likelihood over `n_draws` draws of u, each solved as `flow` says (`log_likelihood`).
    """
    if n_draws < 1:
        raise ArgumentError("n_draws", n_draws, ">= 1")
    k, a, b = quantised_levels(x, scaler)
    log_det = a.abs().log().flatten(1).sum(1)  # log |∂x/∂y| per sample
    d = x[0].numel()
    draws, nfe = [], 0
    for _ in range(n_draws):
        y = k + torch.rand(k.shape, generator=generator, dtype=k.dtype, device=k.device) - 0.5
        x_deq = scaler.to_model(y)
        if not torch.allclose(x_deq, a * y + b, rtol=1e-5, atol=1e-5):
            raise ValueError("scaler.to_model must be affine on [-1/2, levels - 1/2] to dequantise with it")
        ll = log_likelihood(sde, score_fn, x_deq, flow, generator)
        draws.append(-(ll.log_p + log_det) / (d * math.log(2)))
        nfe += ll.nfe
    draws = torch.stack(draws)
    return BitsPerDim(draws.mean(0), draws, nfe)
