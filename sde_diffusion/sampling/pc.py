"""Predictor–corrector sampling (Song et al. 2021, Alg. 2/3): a predictor step, then Langevin corrector steps."""

from __future__ import annotations

from torch import Tensor

from ..core.sde import SDE
from .common import Reverse, coef
from .euler_maruyama import em_step
from .specs import POSITIVE, Option, register


def transition(sde: SDE, t: Tensor, u: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """The exact forward kernel x_t = a x_u + G z from u < t: a = s(t)/s(u), G² = σ(t)² − a²σ(u)²."""
    a = coef(sde.scale, t, x) / coef(sde.scale, u, x)
    return a, coef(sde.sigma, t, x) ** 2 - a**2 * coef(sde.sigma, u, x) ** 2


@register(
    "pc",
    stochastic=True,
    nfe=lambda steps, o: steps * (1 + o["corrector_steps"]),
    nfe_text="steps·(1 + corrector_steps)",
    predictor=Option(choices=("reverse_diffusion", "euler_maruyama")),
    corrector_steps=Option(low=0, integer=True),
    snr=POSITIVE,
    grid="logsnr",
)
def pc(
    run: Reverse,
    x: Tensor,
    t: Tensor,
    *,
    predictor: str = "reverse_diffusion",
    corrector_steps: int = 1,
    snr: float = 0.16,
) -> Tensor:
    """Predictor–corrector sampling (Song et al. 2021, Alg. 2/3) on the grid t.

    `reverse_diffusion` inverts the exact forward kernel x_t = a x_u + G z (eq. 46: x_u = (2 − a)x_t + G² ∇log p
    + G z; a = √(1−β_i), G² = β_i for VP; a = 1, G² = σ_t² − σ_u² for VE); `euler_maruyama` is the EM step.
    The corrector runs at the new time with step ε = 2α(snr·‖z‖/‖∇log p‖)², α = a² (score_sde's LangevinCorrector).
    """
    for i in run.steps(len(t) - 1, desc="pc"):
        score = run.score(x, t[i])
        run.report_score(i, t[i], x, score)
        a, G2 = transition(run.sde, t[i], t[i + 1], x)
        if predictor == "reverse_diffusion":
            x = (2 - a) * x + G2 * score + G2.sqrt() * run.noise(x)
        else:
            x = em_step(run.sde, x, score, t[i], t[i + 1], run.generator)
        for _ in range(corrector_steps):
            grad = run.score(x, t[i + 1])
            z = run.noise(x)
            ratio = z.flatten(1).norm(dim=1).mean() / grad.flatten(1).norm(dim=1).mean()
            step = 2 * a**2 * (snr * ratio) ** 2
            x = x + step * grad + (2 * step).sqrt() * z
    return x
