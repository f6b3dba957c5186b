"""Inverse problems: samples of p(x | y) for y = A x + noise_std·n, n ~ N(0, I), with an unconditional score, by
replacement, RePaint, DPS and the twisted diffusion sampler (TDS), all on the DDIM-η base step (Song, Meng & Ermon
2021, eq. 12) in α_t, σ_t, λ_t = log(α_t/σ_t), so VP, sub-VP and VE run alike. A (m, D) acts on x flattened (a mask
is a row selection of the identity); NFE counts every score call, `vjp` the backward passes among them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .sampling.common import randn_like, tweedie_denoise
from .sampling.ddim import ddim_step
from .sampling.timesteps import timesteps
from .sde import SDE, ScoreFn


@dataclass
class InverseResult:
    """x: the samples, of the requested shape; nfe: score evaluations per sample path (those differentiated through
    included); vjp: backward passes through the score per sample path."""

    x: Tensor
    nfe: int
    vjp: int = 0


@dataclass
class _Setup:
    """The SDE, the prior draw x_T, the measurement in x's dtype and device, and the grid's α, σ, λ in float64."""

    sde: SDE
    x: Tensor
    A: Tensor
    y: Tensor
    t: Tensor
    alpha: Tensor
    sigma: Tensor
    lam: Tensor

    def tweedie(self, score_fn: ScoreFn, x: Tensor, i: int) -> Tensor:
        """x̂₀ = (x + σ_i² s(x, t_i))/α_i (Tweedie's formula, `SDE.tweedie`)."""
        return tweedie_denoise(self.sde, score_fn, x, self.t[i])

    def step(self, x: Tensor, x0: Tensor, i: int, eta: float) -> tuple[Tensor, Tensor]:
        """The DDIM-η step from t_i to t_{i+1} (`sampling.ddim.ddim_step`), h = λ_{i+1} − λ_i: its mean
        (α_{i+1}/α_i) r x + α_{i+1}(1 − r) x̂₀ and noise std σ_{i+1} η √(1 − e^{−2h}), r = e^{−h} √(1 − η²(1 − e^{−2h}));
        η = 1 draws q(x_{t_{i+1}} | x_{t_i}, x₀ = x̂₀), η = 0 is deterministic."""
        h = self.lam[i + 1] - self.lam[i]
        return ddim_step(x, x0, self.alpha[i], self.alpha[i + 1], self.sigma[i + 1], h, eta)

    def measure(self, x: Tensor) -> Tensor:
        """A x, shape (batch, m)."""
        return x.flatten(1) @ self.A.T


def _setup(
    sde: SDE,
    A: Tensor,
    y: Tensor,
    shape: tuple[int, ...],
    steps: int,
    t_min: float,
    eta: float,
    spacing: str,
    generator: torch.Generator | None,
    x_T: Tensor | None,
    dtype: torch.dtype,
    device: torch.device | str | None,
) -> _Setup:
    """Every argument the methods share, checked (a ValueError naming the bad one), and the prior draw."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"shape must be (batch, …) with at least one data dimension, got {shape}")
    d = math.prod(shape[1:])
    A, y = torch.as_tensor(A), torch.as_tensor(y)
    if A.ndim != 2 or A.shape[1] != d or y.shape != A.shape[:1]:
        raise ValueError(f"A must be (m, D={d}) and y (m,), got A {tuple(A.shape)} and y {tuple(y.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if isinstance(t_min, bool) or not isinstance(t_min, int | float) or not 0 < t_min < sde.T:
        raise ValueError(f"t_min must be a number in (0, T={sde.T:g}), got {t_min!r}")
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0 <= eta <= 1:
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    if x_T is None:
        x_T = sde.prior_sampling(shape, generator, dtype, generator.device if generator is not None else device)
    elif tuple(x_T.shape) != shape:
        raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected shape={shape}")
    x = x_T.to(device=device or x_T.device, dtype=dtype)
    t = timesteps(sde, steps, t_min, spacing, device=x.device)
    A, y = A.to(device=x.device, dtype=dtype), y.to(device=x.device, dtype=dtype)
    return _Setup(sde, x, A, y, t, sde.scale(t), sde.sigma(t), sde.log_snr(t))


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


def repaint(
    sde: SDE,
    score_fn: ScoreFn,
    A: Tensor,
    y: Tensor,
    shape: tuple[int, ...],
    steps: int = 250,
    t_min: float = 1e-3,
    *,
    jump_length: int = 10,
    resample: int = 10,
    eta: float = 1.0,
    spacing: str = "logsnr",
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> InverseResult:
    """RePaint (Lugmayr et al. 2022, Alg. 1): replacement, with each block of `jump_length` steps run down `resample`
    times and re-noised back up by the forward process in between, so the unknown part can adapt to the known.

    Down from t_i to t_{i+1}: the DDIM-η step of the unconditional score, then the measured part replaced by a
    forward-noised y, x ← x + A⁺(y_{i+1} − A x) with y_{i+1} = α_{i+1} y + σ_{i+1} A z (for a mask: the observed
    coordinates set to α y + σ z). Up from t_{i+1} to t_i: a draw of q(x_{t_i} | x_{t_{i+1}}),
    x ← (α_i/α_{i+1}) x + σ_i √(1 − e^{−2h}) z. At t_min Tweedie's step, then A x̂₀ = y exactly; the noise in y is not
    modelled. NFE = steps·resample + 1 (resample = 1: `replacement`).
    """
    for name, v in (("jump_length", jump_length), ("resample", resample)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    p = _setup(sde, A, y, shape, steps, t_min, eta, spacing, generator, x_T, dtype, device)
    pinv = torch.linalg.pinv(p.A.to(torch.float64)).to(p.A.dtype)  # A⁺ (D, m); Aᵀ for a row selection

    def project(x: Tensor, y_t: Tensor) -> Tensor:
        return x + ((y_t - p.measure(x)) @ pinv.T).view_as(x)

    x, nfe, walk = p.x, 0, _walk(steps, jump_length, resample)
    with torch.no_grad():
        for i, j in zip(walk[:-1], walk[1:], strict=True):
            if j == i + 1:
                mean, std = p.step(x, p.tweedie(score_fn, x, i), i, eta)
                x = mean + std * randn_like(x, generator) if eta > 0 else mean
                a, s = (c[j].to(x.dtype) for c in (p.alpha, p.sigma))
                x, nfe = project(x, a * p.y + s * p.measure(randn_like(x, generator))), nfe + 1
            else:
                lost = -torch.expm1(-2 * (p.lam[i] - p.lam[j]))
                noise = (p.sigma[j] * lost.sqrt()).to(x.dtype) * randn_like(x, generator)
                x = (p.alpha[j] / p.alpha[i]).to(x.dtype) * x + noise
        x = project(p.tweedie(score_fn, x, steps), p.y)
    return InverseResult(x, nfe + 1)


def replacement(
    sde: SDE,
    score_fn: ScoreFn,
    A: Tensor,
    y: Tensor,
    shape: tuple[int, ...],
    steps: int = 1000,
    t_min: float = 1e-3,
    *,
    eta: float = 1.0,
    spacing: str = "logsnr",
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> InverseResult:
    """Replacement / imputation (Song et al. 2021, App. I.2): after every step the measured part is replaced by a
    forward-noised y (`repaint` with resample = 1). Biased: the replaced part is drawn independently of the unknown
    part's path, not from p_t(A x_t | x_t's unknown part, y). NFE = steps + 1."""
    return repaint(
        sde, score_fn, A, y, shape, steps, t_min, jump_length=1, resample=1, eta=eta, spacing=spacing,
        generator=generator, x_T=x_T, dtype=dtype, device=device,
    )  # fmt: skip


def dps(
    sde: SDE,
    score_fn: ScoreFn,
    A: Tensor,
    y: Tensor,
    shape: tuple[int, ...],
    steps: int = 1000,
    t_min: float = 1e-3,
    *,
    zeta: float = 1.0,
    eta: float = 1.0,
    spacing: str = "logsnr",
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> InverseResult:
    """Diffusion posterior sampling (Chung et al. 2023, Alg. 1): the DDIM-η step, then x ← x − ζ ∇ₓ‖y − A x̂₀(x)‖
    through Tweedie's x̂₀, per sample: the reference code's step on the norm, i.e. the paper's ζ_i = ζ'/‖y − A x̂₀‖ on
    the squared norm with ζ = 2ζ'. Approximate: p(y | x_t) is replaced by p(y | x̂₀(x_t)). NFE = steps + 1,
    vjp = steps."""
    if isinstance(zeta, bool) or not isinstance(zeta, int | float) or not (math.isfinite(zeta) and zeta >= 0):
        raise ValueError(f"zeta must be a finite number >= 0, got {zeta!r}")
    p = _setup(sde, A, y, shape, steps, t_min, eta, spacing, generator, x_T, dtype, device)
    x = p.x
    for i in range(steps):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0 = p.tweedie(score_fn, x_in, i)
            (grad,) = torch.autograd.grad((p.y - p.measure(x0)).norm(dim=1).sum(), x_in)
        mean, std = p.step(x, x0.detach(), i, eta)
        x = (mean + std * randn_like(x, generator) if eta > 0 else mean) - zeta * grad
    with torch.no_grad():
        x = p.tweedie(score_fn, x, steps)
    return InverseResult(x, steps + 1, steps)


def _resample(log_w: Tensor, generator: torch.Generator | None, t: float, every: bool) -> tuple[Tensor, Tensor]:
    """Systematic resampling (Douc & Cappé 2005) of each group, a row of log_w (groups, K), whose effective sample
    size 1/Σw² is below K/2 (or of every group): each particle's ancestor within its group and the log weights after
    (0 where resampled). A non-finite log weight is a zero weight; a group left with none raises FloatingPointError."""
    g, k = log_w.shape
    log_w = torch.where(log_w.isfinite(), log_w, -math.inf)  # NaN and ±inf: the particle is dropped
    dead = log_w.isneginf().all(1)
    if bool(dead.any()):
        raise FloatingPointError(f"tds: every particle of group {int(dead.nonzero()[0])} has a non-finite weight at "
                                 f"t={t:.4g}: the score or x̂₀ is not finite there")  # fmt: skip
    w = torch.softmax(log_w, 1)
    low = (1 / w.square().sum(1) < k / 2) | every
    c = w.cumsum(1)
    u = torch.rand(g, 1, generator=generator, dtype=c.dtype, device=generator.device if generator else c.device)
    u = (u.to(c.device) + torch.arange(k, dtype=c.dtype, device=c.device)) / k * c[:, -1:]
    drawn = torch.searchsorted(c, u, side="right").clamp(max=k - 1)  # never a zero-weight particle
    own = torch.arange(k, device=c.device).expand(g, k)
    return torch.where(low[:, None], drawn, own), torch.where(low[:, None], 0.0, log_w)


def _log_twist(p: _Setup, noise_std: float) -> Callable[[Tensor, int], Tensor]:
    """log p̃_i(y | x_t) = log N(y; A x̂₀, noise_std² I + r_i² AAᵀ) up to a constant, (batch,) in float64, with
    r_i² = σ_i²/(α_i² + σ_i²) (ΠGDM's, Song et al. 2023) and r² = 0 at t_min: the likelihood itself."""
    d, u = torch.linalg.eigh(p.A.to(torch.float64) @ p.A.T.to(torch.float64))  # AAᵀ = U diag(d) Uᵀ
    r2 = p.sigma**2 / (p.alpha**2 + p.sigma**2)
    r2[-1] = 0.0
    var = noise_std**2 + r2[:, None] * d  # (steps + 1, m)

    def log_twist(x0: Tensor, i: int) -> Tensor:
        return -0.5 * (((p.y - p.measure(x0)).to(torch.float64) @ u) ** 2 / var[i]).sum(1)

    return log_twist


def _check_tds(noise_std: float, particles: int, max_shift: float, eta: float, batch: int) -> None:
    """TDS's own arguments, a ValueError naming the bad one."""
    if isinstance(noise_std, bool) or not isinstance(noise_std, int | float) or not (0 < noise_std < math.inf):
        raise ValueError(f"noise_std must be a finite number > 0 for tds, got {noise_std!r}")
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1 or batch % particles:
        raise ValueError(f"particles must be an int >= 1 that divides the batch {batch}, got {particles!r}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int | float) or not max_shift > 0:
        raise ValueError(f"max_shift must be a number > 0 (inf: unbounded), got {max_shift!r}")
    if not (isinstance(eta, int | float) and eta > 0):
        raise ValueError(f"eta must be a number in (0, 1] for tds (its proposal needs noise), got {eta!r}")


def tds(
    sde: SDE,
    score_fn: ScoreFn,
    A: Tensor,
    y: Tensor,
    shape: tuple[int, ...],
    steps: int = 100,
    t_min: float = 1e-3,
    *,
    noise_std: float,
    particles: int = 16,
    max_shift: float = 2.0,
    eta: float = 1.0,
    spacing: str = "logsnr",
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> InverseResult:
    """The twisted diffusion sampler (Wu et al. 2023, Alg. 1): SMC over the DDIM-η chain in groups of `particles`
    consecutive samples, twisted by p̃_t (`_log_twist`), asymptotically exact as particles → ∞. Proposal q: the step
    of the twisted score s + ∇ log p̃_t; weights p(x_{i+1} | x_i) p̃_{i+1}(x_{i+1}) / (p̃_i(x_i) q(x_{i+1} | x_i)), p the
    base step; resampling by `_resample`. Needs η > 0 and noise_std > 0. NFE = steps + 1, vjp = steps.

    The proposal's shift δ from the base step's mean is bounded per sample, ‖δ‖ ≤ max_shift · std (the step's noise
    std); the weights use the bounded q, so the sampler stays exact, and their factor p/q has variance at most
    e^{max_shift²} − 1. Why: ∇ log p̃ goes through ∂x̂₀/∂x = (I + σ² ∇s)/α, whose exact value α Cov[x₀ | x_t]/σ²
    vanishes as α → 0, but a trained score's error in ∇s is multiplied by 1/α (and the step by σ²/α): near T an
    unbounded proposal throws whole resampled groups off the data, and the network's extrapolation there diverges.
    max_shift = inf is Wu et al.'s proposal. A group whose weights all turn non-finite raises FloatingPointError.
    """
    _check_tds(noise_std, particles, max_shift, eta, shape[0])
    p = _setup(sde, A, y, shape, steps, t_min, eta, spacing, generator, x_T, dtype, device)
    log_twist, groups = _log_twist(p, noise_std), shape[0] // particles
    offset = particles * torch.arange(groups, device=p.x.device)[:, None]
    x, log_w = p.x, torch.zeros(groups, particles, dtype=torch.float64, device=p.x.device)
    ell_prev = log_pq = torch.zeros(shape[0], dtype=torch.float64, device=p.x.device)
    for i in range(steps + 1):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(i < steps)
            x0 = p.tweedie(score_fn, x_in, i)
            ell = log_twist(x0, i)
            grad = torch.autograd.grad(ell.sum(), x_in)[0] if i < steps else None
        log_w = log_w + (ell.detach() - ell_prev + log_pq).view(groups, particles)
        ancestor, log_w = _resample(log_w, generator, float(p.t[i]), every=i == steps)
        idx = (ancestor + offset).flatten()
        if i == steps:
            break
        x, x0, grad, ell_prev = x[idx], x0.detach()[idx], grad[idx], ell.detach()[idx]
        mean_p, std = p.step(x, x0, i, eta)
        mean_q, _ = p.step(x, x0 + (p.sigma[i] ** 2 / p.alpha[i]).to(x.dtype) * grad, i, eta)
        delta, sd = (mean_q - mean_p).flatten(1).to(torch.float64), std.to(torch.float64)
        delta = delta * (max_shift * sd / delta.norm(dim=1, keepdim=True)).clamp(max=1)
        z = randn_like(x, generator)
        log_pq = -(z.flatten(1).to(torch.float64) * delta).sum(1) / sd - delta.square().sum(1) / (2 * sd**2)
        x = mean_p + delta.to(x.dtype).view_as(x) + std * z
    return InverseResult(x0.detach()[idx], steps + 1, steps)
