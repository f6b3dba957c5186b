"""torchsde's SDE solvers (Li et al. 2020) on the reverse-time SDE, run forward in s = T − t."""

from __future__ import annotations

import torch
import torchsde
from torch import Tensor

from ..sde import SDE, ScoreFn
from .common import coef, drift
from .specs import Option, register


class _ReverseInS(torch.nn.Module):
    """The reverse SDE in s = T − t, forward in s as torchsde needs: dy = −[f y − g² ∇log p] ds + g dW_s."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sde: SDE, score_fn: ScoreFn, shape: tuple[int, ...]):
        super().__init__()
        self.forward_sde, self.score_fn, self.shape = sde, score_fn, shape

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        t = (self.forward_sde.T - s.to(torch.float64)).reshape(())
        return -drift(self.forward_sde, self.score_fn, y.view(self.shape), t, False).flatten(1)

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        t = (self.forward_sde.T - s.to(torch.float64)).reshape(())
        return coef(self.forward_sde.g, t, y).expand_as(y)


@register(
    "torchsde",
    stochastic=True,
    nfe=lambda steps, o: 1 + steps * {"euler": 1, "milstein": 1, "srk": 10}[o["method"]],
    nfe_text="1 + steps·(1, or 10 for srk)",
    method=Option(choices=("euler", "milstein", "srk")),
    bm=Option(types=(torchsde.BrownianInterval, type(None))),
)
def torchsde_sampler(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    steps: int,
    t_min: float,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    method: str = "euler",
    bm: torchsde.BrownianInterval | None = None,
) -> tuple[Tensor, Tensor]:
    """`torchsde.sdeint` (Li et al. 2020) on the reverse SDE in s = T − t ∈ [0, T − t_min], step (T − t_min)/steps.

    `bm` reuses one Brownian path (a torchsde.BrownianInterval on [0, T − t_min] of size (batch, D)) across step
    counts; without it one is made with entropy drawn from `generator`. torchsde makes one extra drift call to
    check shapes. `progress` is not shown (torchsde has none).
    """
    s1 = sde.T - t_min
    y = x.flatten(1)
    if bm is None:
        entropy = int(torch.randint(2**62, (1,), generator=generator))
        bm = torchsde.BrownianInterval(
            t0=0.0,
            t1=s1,
            size=y.shape,
            dtype=x.dtype,
            device=x.device,
            entropy=entropy,
            levy_area_approximation="space-time" if method == "srk" else "none",
        )
    ts = torch.tensor([0.0, s1], dtype=torch.float64, device=x.device)
    dt = s1 / steps * (1 + 1e-9)  # so that rounding in torchsde's t += dt cannot add a sliver of a step at the end
    ys = torchsde.sdeint(_ReverseInS(sde, score_fn, x.shape), y, ts, bm=bm, method=method, dt=dt)
    return ys[-1].view(x.shape), torch.tensor(t_min, dtype=torch.float64, device=x.device)
