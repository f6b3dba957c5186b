"""SA-Solver (Xue et al. 2023, eqs. 15 and 18): a stochastic Adams predictor–corrector for the τ-family of reverse SDEs.

The SDEs dx = [f(t)x − ½(1 + τ²) g(t)² ∇log p_t(x)] dt + τ g(t) dw̄ share the marginals p_t for every τ ≥ 0 (τ = 0:
the probability-flow ODE). In λ = log(α_t/σ_t), with x̂₀ = E[x₀ | x_t] and h = λ_t − λ_s, one step is exactly
  x_t = (σ_t/σ_s) e^{−τ²h} x_s + α_t (1 + τ²) ∫_{−h}^0 e^{(1+τ²)u} x̂₀(λ_t + u) du + σ_t √(1 − e^{−2τ²h}) ξ;
the predictor and the corrector replace x̂₀ by Lagrange interpolants whose weights are integrated in closed form.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .common import Reverse
from .specs import Option, register


def _exp_moments(z: Tensor, n: int) -> Tensor:
    """G_k(z) = z ∫_{−1}^0 e^{zv} vᵏ dv for k < n, float64: by its power series for z < 1, else by the recursion
    G_0 = 1 − e^{−z}, G_k = −(−1)ᵏ e^{−z} − (k/z) G_{k−1} (whose cancellation grows like k!/zᵏ)."""
    m = torch.arange(25, dtype=z.dtype, device=z.device)
    powers = z ** (m + 1) / torch.exp(torch.lgamma(m + 1))
    series = torch.stack([(powers * (-1) ** (m + k) / (m + k + 1)).sum() for k in range(n)])
    rec = [-torch.expm1(-z)]
    for k in range(1, n):
        rec.append(-((-1) ** k) * torch.exp(-z) - k / z * rec[-1])
    return torch.where(z < 1, series, torch.stack(rec))


def _adams_step(
    x: Tensor,
    ms: Sequence[Tensor],
    nodes: Tensor,
    grid: tuple[Tensor, Tensor, Tensor],
    s: int,
    t: int,
    tau: Tensor,
    z: Tensor,
) -> Tensor:
    """x at grid index t from x at index s, x̂₀ interpolated through the outputs ms at the λ's `nodes`; `grid` holds
    λ, α, σ of every grid time (Xue et al. 2023, eqs. 15, 18)."""
    lam, alpha, sigma = grid
    h = lam[t] - lam[s]
    v = (nodes - lam[t]) / h  # the nodes in units of h: 0 at t, −1 at s
    k = torch.arange(len(ms), dtype=v.dtype, device=v.device)
    # the weights b of the quadrature Σ b_j x̂₀_j exact on polynomials of degree < len(ms): Σ_j b_j v_jᵏ = G_k
    b = torch.linalg.solve(v[None, :] ** k[:, None], _exp_moments((1 + tau**2) * h, len(ms)))
    drift = sum((alpha[t] * w).to(x.dtype) * m for w, m in zip(b, ms, strict=True))
    lin = sigma[t] / sigma[s] * torch.exp(-(tau**2) * h)
    noise = sigma[t] * torch.sqrt(-torch.expm1(-2 * tau**2 * h))
    return lin.to(x.dtype) * x + drift + noise.to(x.dtype) * z


@register(
    "sa_solver",
    stochastic=True,
    nfe=lambda steps, o: steps,
    nfe_text="steps",
    tau=Option(low=0.0),
    tau_sigma_min=Option(low=0.0),
    predictor_order=Option(choices=(1, 2, 3, 4)),
    corrector_order=Option(choices=(0, 1, 2, 3, 4)),
    grid="logsnr",
)
def sa_solver(
    run: Reverse,
    x: Tensor,
    t: Tensor,
    *,
    tau: float = 1.0,
    tau_sigma_min: float = 0.5,
    predictor_order: int = 2,
    corrector_order: int = 2,
) -> Tensor:
    """SA-Solver (Xue et al. 2023): stochastic Adams predictor–corrector in λ, one NFE per step, noise level τ.

    τ applies to the steps that end at σ/s ≥ `tau_sigma_min` and the steps below are noise-free: the paper's τ(t)
    is > 0 only on a middle stretch of t; its lower edge, here in EDM's σ̃ = σ/s so that it means the same noise
    level on every SDE (docs/samplers.md). Warms up with orders 1, 2, …; one NFE per step (PEC: the corrected x is
    not re-evaluated); the last step is the predictor alone (its output would only feed a corrector). A step is
    reported at the predicted x it evaluates the model on, not at the corrected x it carries on.
    """
    sde, steps = run.sde, len(t) - 1
    grid = sde.log_snr(t), sde.scale(t), sde.sigma(t)
    taus = tau * (grid[2] / grid[1] >= tau_sigma_min).to(t.dtype)  # τ of the step to each time
    ms = [sde.tweedie(x, t[0], run.score(x, t[0]))]
    run.report(0, t[0], x, ms[0])
    for i in run.steps(1, steps + 1, desc="sa_solver"):
        z = run.noise(x)
        p = min(predictor_order, i)
        x_p = _adams_step(x, ms[-p:], grid[0][i - p : i], grid, i - 1, i, taus[i], z)
        if i == steps:
            return x_p
        m = sde.tweedie(x_p, t[i], run.score(x_p, t[i]))
        run.report(i, t[i], x_p, m)
        k = min(corrector_order, i + 1)
        x = _adams_step(x, [*ms, m][-k:], grid[0][i + 1 - k : i + 1], grid, i - 1, i, taus[i], z) if k else x_p
        ms = [*ms[-3:], m]
    return x
