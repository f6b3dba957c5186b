"""Inverse problems: samples of p(x | y) for y = A x + noise_std·n, n ~ N(0, I) (a `Measurement`), with an
unconditional score, by replacement, RePaint, DPS and the twisted diffusion sampler (TDS), all on the DDIM-η base
step (Song, Meng & Ermon 2021, eq. 12) in α_t, σ_t, λ_t = log(α_t/σ_t), so VP, sub-VP and VE run alike. A (m, D)
acts on x flattened (a mask is a row selection of the identity).

Each method is a sampler of `sampling.INVERSE`, declared like the others (`sampling.specs`) and run by
`sampling.sample(sde, score_fn, shape, "tds", steps, measurement=Measurement(A, y, 0.05), particles=16)`, which
checks its options, builds its grid (logSNR by default) and counts NFE (every score call, the method's own final
Tweedie step included) and vjp (the backward passes through the score among them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.checks import ArgumentError, check_number
from .common import Reverse, tweedie_denoise
from .ddim import ddim_step
from .specs import Option, SamplerArgError, register

ETA = Option(low=0.0, high=1.0)  # the DDIM-η base step's noise
AT_LEAST_ONE = Option(low=1, integer=True)


@dataclass(frozen=True)
class Measurement:
    """y = A x + noise_std·n, n ~ N(0, I): A (m, D) acting on x flattened (a mask: rows of the identity), y (m,).

    The problem every inverse method is given as its `measurement` option (`sample(..., "dps", measurement=…)`);
    replacement, RePaint and DPS do not model the noise (their docstrings), TDS needs noise_std > 0."""

    A: Tensor
    y: Tensor
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        A, y = torch.as_tensor(self.A), torch.as_tensor(self.y)
        if A.ndim != 2 or y.shape != A.shape[:1]:
            raise ArgumentError("A", tuple(A.shape), f"an (m, D) matrix with y of shape (m,) (y: {tuple(y.shape)})")
        check_number("noise_std", self.noise_std, ge=0)
        object.__setattr__(self, "A", A)
        object.__setattr__(self, "y", y)


class _Chain:
    """The DDIM-η base chain every method steps along: the grid t with its α, σ, λ (float64) and the measurement in
    x's dtype, all on x's device."""

    def __init__(self, run: Reverse, measurement: Measurement, x: Tensor, t: Tensor):
        d = math.prod(x.shape[1:])
        if measurement.A.shape[1] != d:
            raise ValueError(
                f"A must be (m, D={d}) and y (m,), got A {tuple(measurement.A.shape)} (x: {tuple(x.shape)})"
            )
        self.run, self.t = run, t.to(x.device)
        self.A, self.y = (v.to(device=x.device, dtype=x.dtype) for v in (measurement.A, measurement.y))
        self.alpha, self.sigma, self.lam = run.sde.scale(self.t), run.sde.sigma(self.t), run.sde.log_snr(self.t)

    def tweedie(self, x: Tensor, i: int) -> Tensor:
        """x̂₀ = (x + σ_i² s(x, t_i))/α_i (Tweedie's formula, `SDE.tweedie`)."""
        return tweedie_denoise(self.run.sde, self.run.score_fn, x, self.t[i])

    def step(self, x: Tensor, x0: Tensor, i: int, eta: float) -> tuple[Tensor, Tensor]:
        """The DDIM-η step from t_i to t_{i+1} (`sampling.ddim.ddim_step`), h = λ_{i+1} − λ_i: its mean
        (α_{i+1}/α_i) r x + α_{i+1}(1 − r) x̂₀ and noise std σ_{i+1} η √(1 − e^{−2h}), r = e^{−h} √(1 − η²(1 − e^{−2h}));
        η = 1 draws q(x_{t_{i+1}} | x_{t_i}, x₀ = x̂₀), η = 0 is deterministic."""
        h = self.lam[i + 1] - self.lam[i]
        return ddim_step(x, x0, self.alpha[i], self.alpha[i + 1], self.sigma[i + 1], h, eta)

    def measure(self, x: Tensor) -> Tensor:
        """A x, shape (batch, m)."""
        return x.flatten(1) @ self.A.T


def _walk(steps: int, jump_length: int, resample: int) -> list[int]:
    """RePaint's schedule as grid indices 0 → steps: each block of `jump_length` steps run down `resample` times,
    jumping back up to the block's start in between (Lugmayr et al. 2022, §4.2, `get_schedule_jump`)."""
    walk = [0]
    for start in range(0, steps, jump_length):
        end = min(start + jump_length, steps)
        for k in range(resample):
            walk += range(start + 1, end + 1)
            if k < resample - 1:
                walk += range(end - 1, start - 1, -1)
    return walk


def _repaint(run: Reverse, x: Tensor, t: Tensor, measurement: Measurement, walk: list[int], eta: float) -> Tensor:
    """RePaint's chain (`repaint`) along the grid indices `walk`; every step down is reported where it starts."""
    p, steps = _Chain(run, measurement, x, t), len(t) - 1
    pinv = torch.linalg.pinv(p.A.to(torch.float64)).to(p.A.dtype)  # A⁺ (D, m); Aᵀ for a row selection

    def project(x: Tensor, y_t: Tensor) -> Tensor:
        return x + ((y_t - p.measure(x)) @ pinv.T).view_as(x)

    for i, j in zip(walk[:-1], walk[1:], strict=True):
        if j == i + 1:
            x0 = p.tweedie(x, i)
            run.report(i, t[i], x, x0)
            mean, std = p.step(x, x0, i, eta)
            x = mean + std * run.noise(x) if eta > 0 else mean
            a, s = (c[j].to(x.dtype) for c in (p.alpha, p.sigma))
            x = project(x, a * p.y + s * p.measure(run.noise(x)))
        else:
            lost = -torch.expm1(-2 * (p.lam[i] - p.lam[j]))
            noise = (p.sigma[j] * lost.sqrt()).to(x.dtype) * run.noise(x)
            x = (p.alpha[j] / p.alpha[i]).to(x.dtype) * x + noise
    x0 = p.tweedie(x, steps)
    run.report(steps, t[steps], x, x0)
    return project(x0, p.y)


@register(
    "repaint",
    stochastic=True,
    nfe=lambda steps, o: steps * o["resample"],
    nfe_text="steps·resample",
    grid="logsnr",
    measurement=Option(types=(Measurement,)),
    jump_length=AT_LEAST_ONE,
    resample=AT_LEAST_ONE,
    eta=ETA,
)
def repaint(
    run: Reverse,
    x: Tensor,
    t: Tensor,
    *,
    measurement: Measurement,
    jump_length: int = 10,
    resample: int = 10,
    eta: float = 1.0,
) -> Tensor:
    """RePaint (Lugmayr et al. 2022, Alg. 1): replacement, with each block of `jump_length` steps run down `resample`
    times and re-noised back up by the forward process in between, so the unknown part can adapt to the known.

    Down from t_i to t_{i+1}: the DDIM-η step of the unconditional score, then the measured part replaced by a
    forward-noised y, x ← x + A⁺(y_{i+1} − A x) with y_{i+1} = α_{i+1} y + σ_{i+1} A z (for a mask: the observed
    coordinates set to α y + σ z). Up from t_{i+1} to t_i: a draw of q(x_{t_i} | x_{t_{i+1}}),
    x ← (α_i/α_{i+1}) x + σ_i √(1 − e^{−2h}) z. At t_min Tweedie's step, then A x̂₀ = y exactly (the last report's
    x̂₀ is before that projection); the noise in y is not modelled. resample = 1: `replacement`.
    """
    return _repaint(run, x, t, measurement, _walk(len(t) - 1, jump_length, resample), eta)


@register(
    "replacement",
    stochastic=True,
    nfe=lambda steps, o: steps,
    nfe_text="steps",
    grid="logsnr",
    measurement=Option(types=(Measurement,)),
    eta=ETA,
)
def replacement(run: Reverse, x: Tensor, t: Tensor, *, measurement: Measurement, eta: float = 1.0) -> Tensor:
    """Replacement / imputation (Song et al. 2021, App. I.2): after every step the measured part is replaced by a
    forward-noised y (`repaint` with resample = 1). Biased: the replaced part is drawn independently of the unknown
    part's path, not from p_t(A x_t | x_t's unknown part, y)."""
    return _repaint(run, x, t, measurement, list(range(len(t))), eta)


@register(
    "dps",
    stochastic=True,
    nfe=lambda steps, o: steps,
    nfe_text="steps (each also a backward pass)",
    grid="logsnr",
    measurement=Option(types=(Measurement,)),
    zeta=Option(low=0.0),
    eta=ETA,
)
def dps(run: Reverse, x: Tensor, t: Tensor, *, measurement: Measurement, zeta: float = 1.0, eta: float = 1.0) -> Tensor:
    """Diffusion posterior sampling (Chung et al. 2023, Alg. 1): the DDIM-η step, then x ← x − ζ ∇ₓ‖y − A x̂₀(x)‖
    through Tweedie's x̂₀, per sample: the reference code's step on the norm, i.e. the paper's ζ_i = ζ'/‖y − A x̂₀‖ on
    the squared norm with ζ = 2ζ'. Approximate: p(y | x_t) is replaced by p(y | x̂₀(x_t)); the noise in y is not
    modelled. One backward pass through the score per step."""
    p, steps = _Chain(run, measurement, x, t), len(t) - 1
    for i in run.steps(steps, desc="dps"):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0 = p.tweedie(x_in, i)
            (grad,) = torch.autograd.grad((p.y - p.measure(x0)).norm(dim=1).sum(), x_in)
        run.report(i, t[i], x, x0.detach())
        mean, std = p.step(x, x0.detach(), i, eta)
        x = (mean + std * run.noise(x) if eta > 0 else mean) - zeta * grad
    with torch.no_grad():
        x0 = p.tweedie(x, steps)
    run.report(steps, t[steps], x, x0)
    return x0


def _resample(log_w: Tensor, generator: torch.Generator | None, t: float, every: bool) -> tuple[Tensor, Tensor]:
    """Systematic resampling (Douc & Cappé 2005) of each group, a row of log_w (groups, K), whose effective sample
    size 1/Σw² is below K/2 (or of every group): each particle's ancestor within its group and the log weights after
    (0 where resampled). A non-finite log weight is a zero weight; a group left with none raises FloatingPointError."""
    g, k = log_w.shape
    log_w = torch.where(log_w.isfinite(), log_w, -math.inf)  # NaN and ±inf: the particle is dropped
    dead = log_w.isneginf().all(1)
    if bool(dead.any()):
        raise FloatingPointError(
            f"tds: every particle of group {int(dead.nonzero()[0])} has a non-finite weight at "
            f"t={t:.4g}: the score or x̂₀ is not finite there"
        )
    w = torch.softmax(log_w, 1)
    low = (1 / w.square().sum(1) < k / 2) | every
    c = w.cumsum(1)
    u = torch.rand(g, 1, generator=generator, dtype=c.dtype, device=generator.device if generator else c.device)
    u = (u.to(c.device) + torch.arange(k, dtype=c.dtype, device=c.device)) / k * c[:, -1:]
    drawn = torch.searchsorted(c, u, side="right").clamp(max=k - 1)  # never a zero-weight particle
    own = torch.arange(k, device=c.device).expand(g, k)
    return torch.where(low[:, None], drawn, own), torch.where(low[:, None], 0.0, log_w)


def _log_twist(p: _Chain, noise_std: float) -> Callable[[Tensor, int], Tensor]:
    """log p̃_i(y | x_t) = log N(y; A x̂₀, noise_std² I + r_i² AAᵀ) up to a constant, (batch,) in float64, with
    r_i² = σ_i²/(α_i² + σ_i²) (ΠGDM's, Song et al. 2023) and r² = 0 at t_min: the likelihood itself."""
    d, u = torch.linalg.eigh(p.A.to(torch.float64) @ p.A.T.to(torch.float64))  # AAᵀ = U diag(d) Uᵀ
    r2 = p.sigma**2 / (p.alpha**2 + p.sigma**2)
    r2[-1] = 0.0
    var = noise_std**2 + r2[:, None] * d  # (steps + 1, m)

    def log_twist(x0: Tensor, i: int) -> Tensor:
        return -0.5 * (((p.y - p.measure(x0)).to(torch.float64) @ u) ** 2 / var[i]).sum(1)

    return log_twist


def _shifted_step(
    p: _Chain, x: Tensor, x0: Tensor, grad: Tensor, i: int, max_shift: float, eta: float
) -> tuple[Tensor, Tensor]:
    """TDS's proposal from t_i: the base step's mean shifted by the twist, δ bounded to max_shift noise stds, a
    draw of it, and log p/q of that draw (p the base step, q the proposal), float64 (batch,)."""
    mean_p, std = p.step(x, x0, i, eta)
    mean_q, _ = p.step(x, x0 + (p.sigma[i] ** 2 / p.alpha[i]).to(x.dtype) * grad, i, eta)
    delta, sd = (mean_q - mean_p).flatten(1).to(torch.float64), std.to(torch.float64)
    delta = delta * (max_shift * sd / delta.norm(dim=1, keepdim=True)).clamp(max=1)
    z = p.run.noise(x)
    log_pq = -(z.flatten(1).to(torch.float64) * delta).sum(1) / sd - delta.square().sum(1) / (2 * sd**2)
    return mean_p + delta.to(x.dtype).view_as(x) + std * z, log_pq


@register(
    "tds",
    stochastic=True,
    nfe=lambda steps, o: steps,
    nfe_text="steps (each also a backward pass)",
    grid="logsnr",
    measurement=Option(types=(Measurement,)),
    particles=AT_LEAST_ONE,
    max_shift=Option(low=0.0, open_low=True, infinite=True),
    eta=Option(low=0.0, high=1.0, open_low=True),
)
def tds(
    run: Reverse,
    x: Tensor,
    t: Tensor,
    *,
    measurement: Measurement,
    particles: int = 16,
    max_shift: float = 2.0,
    eta: float = 1.0,
) -> Tensor:
    """The twisted diffusion sampler (Wu et al. 2023, Alg. 1): SMC over the DDIM-η chain in groups of `particles`
    consecutive samples, twisted by p̃_t (`_log_twist`), asymptotically exact as particles → ∞. Proposal q: the step
    of the twisted score s + ∇ log p̃_t; weights p(x_{i+1} | x_i) p̃_{i+1}(x_{i+1}) / (p̃_i(x_i) q(x_{i+1} | x_i)), p the
    base step; resampling by `_resample`. Needs η > 0 and the measurement's noise_std > 0. A step is reported with
    the particles resampled.

    The proposal's shift δ from the base step's mean is bounded per sample, ‖δ‖ ≤ max_shift · std (the step's noise
    std); the weights use the bounded q, so the sampler stays exact, and their factor p/q has variance at most
    e^{max_shift²} − 1. Why: ∇ log p̃ goes through ∂x̂₀/∂x = (I + σ² ∇s)/α, whose exact value α Cov[x₀ | x_t]/σ²
    vanishes as α → 0, but a trained score's error in ∇s is multiplied by 1/α (and the step by σ²/α): near T an
    unbounded proposal throws whole resampled groups off the data, and the network's extrapolation there diverges.
    max_shift = inf is Wu et al.'s proposal. A group whose weights all turn non-finite raises FloatingPointError.
    """
    if not measurement.noise_std > 0:
        raise SamplerArgError("tds", "measurement.noise_std", measurement.noise_std, "a number > 0 for tds")
    if len(x) % particles:
        raise SamplerArgError("tds", "options.particles", particles, f"an int >= 1 that divides the batch {len(x)}")
    p, steps = _Chain(run, measurement, x, t), len(t) - 1
    log_twist, groups = _log_twist(p, measurement.noise_std), len(x) // particles
    offset = particles * torch.arange(groups, device=x.device)[:, None]
    log_w = torch.zeros(groups, particles, dtype=torch.float64, device=x.device)
    ell_prev = log_pq = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    for i in range(steps + 1):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(i < steps)
            x0 = p.tweedie(x_in, i)
            ell = log_twist(x0, i)
            grad = torch.autograd.grad(ell.sum(), x_in)[0] if i < steps else None
        log_w = log_w + (ell.detach() - ell_prev + log_pq).view(groups, particles)
        ancestor, log_w = _resample(log_w, run.generator, float(p.t[i]), every=i == steps)
        idx = (ancestor + offset).flatten()
        x, x0 = x[idx], x0.detach()[idx]
        run.report(i, t[i], x, x0)
        if i < steps:
            grad, ell_prev = grad[idx], ell.detach()[idx]
            x, log_pq = _shifted_step(p, x, x0, grad, i, max_shift, eta)
    return x0
