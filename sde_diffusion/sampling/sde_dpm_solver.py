"""SDE-DPM-Solver++ (Lu et al. 2022b): exponential integrators of the reverse SDEs that keep the marginals, in λ.

In x̃ = x/α, σ̃ = σ/α = e^{−λ} and with D = x̂₀ = E[x₀ | x_t] the family is dx̃ = −(1 + η)(x̃ − D) dλ + √(2η) σ̃ dW_λ
(η = 0: the probability-flow ODE, η = 1: Anderson's reverse SDE; k-diffusion's `eta`). Its linear part is solved
exactly, x̃_t = e^{−H} x̃_s + (1 − e^{−H}) D_s + … + σ̃_t √(1 − e^{−2ηh}) z with h = λ_t − λ_s, H = (1 + η)h, and the
higher orders are DPM-Solver++'s in μ = (1 + η)λ; a stage's noise is carried into the step's as the SDE carries it.
"""

from __future__ import annotations

import math

import torch
import torchsde
from torch import Tensor

from .common import Reverse
from .dpm_solver import multistep_order, singlestep
from .specs import Option, register


class _Integrator:
    """D(x̃, t), the exact linear flow e^{−H}x̃ + (1 − e^{−H})D of the η-family and its noise, for x̃ like x."""

    def __init__(self, run: Reverse, x: Tensor, eta: float, lam: Tensor, bm: torchsde.BrownianInterval | None):
        self.run, self.sde, self.x, self.eta, self.k = run, run.sde, x, eta, 1 + eta
        self.bm = bm
        if bm is not None:  # the path's clock u = (λ − λ_T)/(λ_min − λ_T), in floats
            self.l_T, self.l_range = float(lam[0]), float(lam[-1] - lam[0])

    def c(self, v: Tensor) -> Tensor:
        """A float64 scalar coefficient in x's dtype."""
        return v.to(self.x.dtype)

    def data(self, xt: Tensor, t: Tensor, step: int | None = None) -> Tensor:
        """D(x̃, t) = E[x₀ | x_t = α_t x̃] by Tweedie's formula; reported as `step` (at x = α_t x̃) if given."""
        x = self.c(self.sde.scale(t.reshape(1))[0]) * xt
        d = self.sde.tweedie(x, t, self.run.score(x, t))
        if step is not None:
            self.run.report(step, t, x, d)
        return d

    def time(self, lam: Tensor) -> Tensor:
        return self.sde.log_snr_inverse(lam.reshape(1))[0]

    def linear(self, xt: Tensor, d: Tensor, h: Tensor) -> Tensor:
        """e^{−H} x̃ + (1 − e^{−H}) D, H = (1 + η)h: the linear part solved exactly with D held fixed."""
        return self.c(torch.exp(-self.k * h)) * xt - self.c(torch.expm1(-self.k * h)) * d

    def decay(self, n: Tensor, h: Tensor) -> Tensor:
        """Noise at λ carried on to λ + h by the linear part: e^{−(1+η)h} n."""
        return self.c(torch.exp(-self.k * h)) * n

    def noise(self, l_a: Tensor, l_b: Tensor) -> Tensor:
        """The noise gathered over (λ_a, λ_b] as seen at λ_b: σ̃_b √(1 − e^{−2η(λ_b − λ_a)}) z (0 when η = 0)."""
        if self.eta == 0:
            return torch.zeros((), dtype=self.x.dtype, device=self.x.device)
        std = self.c(torch.exp(-l_b) * torch.sqrt(-torch.expm1(-2 * self.eta * (l_b - l_a))))
        if self.bm is None:
            return std * self.run.noise(self.x)
        u_a, u_b = ((float(v) - self.l_T) / self.l_range for v in (l_a, l_b))
        return std * (self.bm(u_a, u_b) / math.sqrt(u_b - u_a)).reshape(self.x.shape).to(self.x.dtype)


def _multistep(m: _Integrator, xt: Tensor, ds: list[Tensor], ls: list[Tensor], l_t: Tensor) -> Tensor:
    """The drift part of one multistep step to λ_t from D at the previous λs (most recent last); order len(ds)."""
    h = l_t - ls[-1]
    out = m.linear(xt, ds[-1], h)
    if len(ds) == 1:
        return out
    r0 = (ls[-1] - ls[-2]) / h
    d1_0 = m.c(1 / r0) * (ds[-1] - ds[-2])
    if len(ds) == 2:  # Lu et al. 2022b's 2M (midpoint)
        return out - m.c(0.5 * torch.expm1(-m.k * h)) * d1_0
    r1 = (ls[-2] - ls[-3]) / h
    d1_1 = m.c(1 / r1) * (ds[-2] - ds[-3])
    d1 = d1_0 + m.c(r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = m.c(1 / (r0 + r1)) * (d1_0 - d1_1)
    phi_2 = torch.expm1(-m.k * h) / (m.k * h) + 1
    phi_3 = phi_2 / (m.k * h) - 0.5
    return out + m.c(phi_2) * d1 - m.c(phi_3) * d2


def _singlestep(m: _Integrator, xt: Tensor, s: Tensor, l_s: Tensor, l_t: Tensor, order: int, step: int) -> Tensor:
    """One singlestep step λ_s → λ_t of `order`, stages at r = ½ (order 2) or ⅓, ⅔ (order 3), noise included;
    reported as `step`."""
    h = l_t - l_s
    d_s = m.data(xt, s, step)
    if order == 1:
        return m.linear(xt, d_s, h) + m.noise(l_s, l_t)
    r1 = 0.5 if order == 2 else 1 / 3
    l_1 = l_s + r1 * h
    n_1 = m.noise(l_s, l_1)
    d_1 = m.data(m.linear(xt, d_s, r1 * h) + n_1, m.time(l_1))
    if order == 2:
        out = m.linear(xt, d_s, h) - m.c(0.5 / r1 * torch.expm1(-m.k * h)) * (d_1 - d_s)
        return out + m.decay(n_1, l_t - l_1) + m.noise(l_1, l_t)
    r2 = 2 / 3
    l_2 = l_s + r2 * h
    n_2 = m.decay(n_1, l_2 - l_1) + m.noise(l_1, l_2)
    phi_22 = torch.expm1(-m.k * r2 * h) / (m.k * r2 * h) + 1
    d_2 = m.data(m.linear(xt, d_s, r2 * h) + m.c(r2 / r1 * phi_22) * (d_1 - d_s) + n_2, m.time(l_2))
    phi_2 = torch.expm1(-m.k * h) / (m.k * h) + 1
    out = m.linear(xt, d_s, h) + m.c(phi_2 / r2) * (d_2 - d_s)
    return out + m.decay(n_2, l_t - l_2) + m.noise(l_2, l_t)


@register(
    "sde_dpm_solver",
    stochastic=True,
    nfe=lambda steps, o: steps,
    nfe_text="steps",
    order=Option(choices=(1, 2, 3)),
    method=Option(choices=("multistep", "singlestep")),
    eta=Option(low=0.0, high=1.0),
    bm=Option(types=(torchsde.BrownianInterval, type(None))),
    lower_order_final=Option(choices=(True, False)),
    grid="karras",
)
def sde_dpm_solver(
    run: Reverse,
    x: Tensor,
    t: Tensor,
    *,
    order: int = 3,
    method: str = "multistep",
    eta: float = 0.5,
    bm: torchsde.BrownianInterval | None = None,
    lower_order_final: bool = True,
) -> Tensor:
    """SDE-DPM-Solver++ of `order` 1–3 (Lu et al. 2022b) with noise `eta` on the grid t, one NFE per grid interval.

    multistep: warms up with orders 1, 2, …, and with `lower_order_final` drops to orders 2, 1 on the last steps
    (as `dpm_solver`); singlestep: intervals of 1–3 NFE each (`dpm_solver.singlestep`). η = 0 is `dpm_solver`'s
    DPM-Solver++. `bm`: a torchsde.BrownianInterval(t0=0, t1=1, size=x's shape or (batch, D)) whose increments in
    the clock u = (λ − λ_T)/(λ_min − λ_T) are the noise (k-diffusion's `BrownianTreeNoiseSampler`, in λ rather
    than σ̃ so that the tree resolves every step), reused across step counts for the same sample path.
    """
    sde, steps = run.sde, len(t) - 1
    lam = sde.log_snr(t)
    m = _Integrator(run, x, eta, lam, bm)
    xt = x / m.c(sde.scale(t[:1])[0])

    def sde_dpm_solver(xt: Tensor, i: int, j: int, k: int) -> Tensor:
        return _singlestep(m, xt, t[i], lam[i], lam[j], k, i)

    if method == "singlestep":
        xt = singlestep(run, sde_dpm_solver, xt, steps, order)
    else:
        ds: list[Tensor] = []
        for i in run.steps(steps, desc="sde_dpm_solver"):
            ds = [*ds[-2:], m.data(xt, t[i], i)]
            k = multistep_order(order, i, steps, lower_order_final)
            xt = _multistep(m, xt, ds[-k:], list(lam[max(i + 1 - k, 0) : i + 1]), lam[i + 1])
            xt = xt + m.noise(lam[i], lam[i + 1])
    return m.c(sde.scale(t[-1:]))[0] * xt
