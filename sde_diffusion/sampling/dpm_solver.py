"""DPM-Solver (Lu et al. 2022a) and DPM-Solver++ (Lu et al. 2022b): exponential integrators of the PF-ODE in λ.

In λ(t) = log(α_t/σ_t), α_t = s(t), σ_t = σ(t), of any linear SDE here and with h = λ_t − λ_s, the first-order steps
x_t = (α_t/α_s) x_s − σ_t (e^h − 1) ε̂_s (ε̂ = −σ∇log p) and x_t = (σ_t/σ_s) x_s − α_t (e^{−h} − 1) x̂₀_s (Tweedie's x̂₀)
are DDIM; the higher orders follow the authors' `dpm_solver_pytorch.py`: singlestep Alg. 1/2 of Lu et al. 2022a
(r₁ = ½; r₁ = ⅓, r₂ = ⅔), multistep Alg. 2 of Lu et al. 2022b and its third-order extension.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate

import torch
from torch import Tensor

from ..core.sde import SDE, ScoreFn
from .common import Reverse, at
from .specs import Option, register


class _Model:
    """ε̂(x, t) or x̂₀(x, t) from the score, and the float64 scalars α_t, σ_t, λ_t of each time."""

    def __init__(self, sde: SDE, score_fn: ScoreFn, data_prediction: bool):
        self.sde, self.score_fn, self.data_prediction = sde, score_fn, data_prediction

    def coefs(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t = t.reshape(1)
        return self.sde.scale(t)[0], self.sde.sigma(t)[0], self.sde.log_snr(t)[0]

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        score = self.score_fn(x, at(t, x))
        if self.data_prediction:
            return self.sde.tweedie(x, t, score)
        return -self.coefs(t)[1].to(x.dtype) * score

    def reported(self, run: Reverse, i: int, x: Tensor, t: Tensor) -> Tensor:
        """The model's output at (x, t), reported as step i with x̂₀ = (x − σ ε̂)/α when it is ε̂."""
        m = self(x, t)
        alpha, sigma, _ = self.coefs(t)
        run.report(i, t, x, m if self.data_prediction else lambda: (x - sigma.to(x.dtype) * m) / alpha.to(x.dtype))
        return m


def _first_order(model: _Model, x: Tensor, m_s: Tensor, s: Tensor, t: Tensor) -> Tensor:
    """DPM-Solver-1 = DDIM: x_t = (α_t/α_s)x − σ_t(e^h − 1)ε̂_s, or (σ_t/σ_s)x − α_t(e^{−h} − 1)x̂₀_s."""
    (a_s, s_s, l_s), (a_t, s_t, l_t) = model.coefs(s), model.coefs(t)
    h = l_t - l_s
    if model.data_prediction:
        lin, c = s_t / s_s, a_t * torch.expm1(-h)
    else:
        lin, c = a_t / a_s, s_t * torch.expm1(h)
    return lin.to(x.dtype) * x - c.to(x.dtype) * m_s


def _multistep_update(model: _Model, x: Tensor, ms: list[Tensor], ts: list[Tensor], t: Tensor) -> Tensor:
    """One multistep step to t from the outputs ms at the previous times ts (most recent last); order len(ms)."""
    if len(ms) == 1:
        return _first_order(model, x, ms[0], ts[0], t)
    (a_s, s_s, l_0), (a_t, s_t, l_t) = model.coefs(ts[-1]), model.coefs(t)
    h, h_0 = l_t - l_0, l_0 - model.coefs(ts[-2])[2]
    D1_0 = (h / h_0).to(x.dtype) * (ms[-1] - ms[-2])
    pp = model.data_prediction
    lin, c, phi_1 = (s_t / s_s, a_t, torch.expm1(-h)) if pp else (a_t / a_s, s_t, torch.expm1(h))
    out = lin.to(x.dtype) * x - (c * phi_1).to(x.dtype) * ms[-1]
    if len(ms) == 2:
        return out - (0.5 * c * phi_1).to(x.dtype) * D1_0
    h_1 = l_0 - h_0 - model.coefs(ts[-3])[2]  # λ of the step before last minus λ two steps before
    r0, r1 = h_0 / h, h_1 / h
    D1_1 = (1 / r1).to(x.dtype) * (ms[-2] - ms[-3])
    D1 = D1_0 + (r0 / (r0 + r1)).to(x.dtype) * (D1_0 - D1_1)
    D2 = (1 / (r0 + r1)).to(x.dtype) * (D1_0 - D1_1)
    phi_2 = phi_1 / h + 1 if pp else phi_1 / h - 1
    phi_3 = phi_2 / h - 0.5
    sign = 1 if pp else -1
    return out + (sign * c * phi_2).to(x.dtype) * D1 - (c * phi_3).to(x.dtype) * D2


def _singlestep_update(model: _Model, x: Tensor, m_s: Tensor, s: Tensor, t: Tensor, order: int) -> Tensor:
    """One singlestep step s → t of `order` (Lu et al. 2022a, Alg. 1 with r₁ = ½; Alg. 2 with r₁ = ⅓, r₂ = ⅔)."""
    if order == 1:
        return _first_order(model, x, m_s, s, t)
    sde, pp = model.sde, model.data_prediction
    l_s, l_t = model.coefs(s)[2], model.coefs(t)[2]
    h = l_t - l_s
    r1 = 0.5 if order == 2 else 1 / 3
    s1 = sde.log_snr_inverse((l_s + r1 * h).reshape(1))[0]
    m_1 = model(_first_order(model, x, m_s, s, s1), s1)
    a_t, s_t, _ = model.coefs(t)
    c, phi_1 = (a_t, torch.expm1(-h)) if pp else (s_t, torch.expm1(h))
    x_t = _first_order(model, x, m_s, s, t)
    if order == 2:
        return x_t - (0.5 / r1 * c * phi_1).to(x.dtype) * (m_1 - m_s)
    r2 = 2 / 3
    s2 = sde.log_snr_inverse((l_s + r2 * h).reshape(1))[0]
    a_2, s_2, _ = model.coefs(s2)
    c2, phi_12 = (a_2, torch.expm1(-r2 * h)) if pp else (s_2, torch.expm1(r2 * h))
    phi_22 = phi_12 / (r2 * h) + 1 if pp else phi_12 / (r2 * h) - 1
    sign = 1 if pp else -1
    x_2 = _first_order(model, x, m_s, s, s2) + (sign * r2 / r1 * c2 * phi_22).to(x.dtype) * (m_1 - m_s)
    m_2 = model(x_2, s2)
    phi_2 = phi_1 / h + 1 if pp else phi_1 / h - 1
    return x_t + (sign / r2 * c * phi_2).to(x.dtype) * (m_2 - m_s)


def singlestep_orders(steps: int, order: int) -> list[int]:
    """Split `steps` NFE into singlestep orders, highest first, lower at the end (Lu et al. 2022a, App. D.1)."""
    if order == 3:
        k = steps // 3 + 1
        return [3] * (k - 2) + [2, 1] if steps % 3 == 0 else [3] * (k - 1) + [steps % 3]
    if order == 2:
        return [2] * (steps // 2) + [1] * (steps % 2)
    return [1] * steps


def multistep_order(order: int, n: int, steps: int, lower_order_final: bool) -> int:
    """The order of multistep step n = 0 … steps − 1: warm-up orders 1, 2, … up to `order`, and with
    `lower_order_final` orders 2, 1 on the last steps (Lu et al. 2022b, the reference's default)."""
    return min(order, n + 1, steps - n) if lower_order_final else min(order, n + 1)


def singlestep(
    run: Reverse, step: Callable[[Tensor, int, int, int], Tensor], x: Tensor, steps: int, order: int
) -> Tensor:
    """The singlestep driver: x ← step(x, i, j, k) over grid intervals i → j of k = 1–3 NFE (`singlestep_orders`),
    so every NFE covers the same stretch of the `steps`-interval grid."""
    orders = singlestep_orders(steps, order)
    idx = [0, *accumulate(orders)]
    for n in run.steps(len(orders), desc=step.__name__):
        x = step(x, idx[n], idx[n + 1], orders[n])
    return x


# {largest steps: options}: the minimax settings of `experiments/bench_samplers.py defaults` over linear, cosine and
# polynomial β(t) on both oracles, among grids defined in λ or σ̃ (the same under every β(t); docs/samplers.md)
BY_STEPS = {
    6: {"order": 2, "method": "multistep", "algorithm": "dpmsolver++", "spacing": "karras"},
    13: {"order": 2, "method": "multistep", "algorithm": "dpmsolver", "spacing": "logsnr"},
    30: {"order": 3, "method": "multistep", "algorithm": "dpmsolver", "spacing": "karras"},
}


@register(
    "dpm_solver",
    stochastic=False,
    nfe=lambda steps, o: steps,
    nfe_text="steps",
    order=Option(choices=(1, 2, 3)),
    method=Option(choices=("multistep", "singlestep")),
    algorithm=Option(choices=("dpmsolver", "dpmsolver++")),
    lower_order_final=Option(choices=(True, False)),
    grid="logsnr",
    by_steps=BY_STEPS,
)
def dpm_solver(
    run: Reverse,
    x: Tensor,
    t: Tensor,
    *,
    order: int = 3,
    method: str = "multistep",
    algorithm: str = "dpmsolver++",
    lower_order_final: bool = True,
) -> Tensor:
    """DPM-Solver / DPM-Solver++ of `order` 1–3 on the grid t, one NFE per grid interval (Lu et al. 2022a, 2022b).

    multistep: warms up with orders 1, 2, …; with `lower_order_final` the last steps drop to order 1, 2 (the
    reference's default). singlestep: intervals of 1–3 NFE each (`singlestep`).
    """
    model = _Model(run.sde, run.score_fn, data_prediction=algorithm == "dpmsolver++")
    steps = len(t) - 1

    def dpm_solver(x: Tensor, i: int, j: int, k: int) -> Tensor:
        return _singlestep_update(model, x, model.reported(run, i, x, t[i]), t[i], t[j], k)

    if method == "singlestep":
        return singlestep(run, dpm_solver, x, steps, order)
    ms, ts = [model.reported(run, 0, x, t[0])], [t[0]]
    for i in run.steps(1, steps + 1, desc="dpm_solver"):
        k = multistep_order(order, i - 1, steps, lower_order_final)
        x = _multistep_update(model, x, ms[-k:], ts[-k:], t[i])
        if i < steps:
            ms, ts = [*ms[-2:], model.reported(run, i, x, t[i])], [*ts[-2:], t[i]]
    return x
