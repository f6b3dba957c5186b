"""torchsde's SDE solvers (Li et al. 2020) on the reverse-time SDE, run forward in s = T − t."""

from __future__ import annotations

import torch
import torchsde
from torch import Tensor

from ..core.sde import SDE, ScoreFn
from .common import Reverse, at, coef
from .specs import Option, register


class _ReverseInS(torch.nn.Module):
    """The reverse SDE in s = T − t, forward in s as torchsde needs: dy = −[f y − g² ∇log p] ds + g dW_s.

    With a `run`, every `per_step`-th drift call after torchsde's shape check, a step's first stage at its start
    (s_n, y_n), is reported as step n."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sde: SDE, score_fn: ScoreFn, shape: tuple[int, ...], run: Reverse | None = None, per_step=1):
        super().__init__()
        self.forward_sde, self.score_fn, self.shape = sde, score_fn, shape
        self.run, self.per_step, self.calls = run, per_step, -1

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        t = (self.forward_sde.T - s.to(torch.float64)).reshape(())
        x = y.view(self.shape)
        score = self.score_fn(x, at(t, x))
        if self.run is not None and self.calls >= 0 and self.calls % self.per_step == 0:
            self.run.report_score(self.calls // self.per_step, t, x, score)
        self.calls += 1
        return -self.forward_sde.reverse_drift(x, t, score).flatten(1)

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        t = (self.forward_sde.T - s.to(torch.float64)).reshape(())
        return coef(self.forward_sde.g, t, y).expand_as(y)


PER_STEP = {"euler": 1, "milstein": 1, "srk": 10}  # drift calls per step (torchsde's solvers)


@register(
    "torchsde",
    stochastic=True,
    nfe=lambda steps, o: 1 + steps * PER_STEP[o["method"]],
    nfe_text="1 + steps·(1, or 10 for srk)",
    grid="time_uniform",
    spacing=Option(choices=("time_uniform", "custom")),
    method=Option(choices=tuple(PER_STEP)),
    bm=Option(types=(torchsde.BrownianInterval, type(None))),
)
def torchsde_sampler(
    run: Reverse, x: Tensor, t: Tensor, *, method: str = "euler", bm: torchsde.BrownianInterval | None = None
) -> Tensor:
    """`torchsde.sdeint` (Li et al. 2020) on the reverse SDE in s = T − t over [0, T − t_min], on the uniform grid t.

    torchsde takes one step size, (T − t_min)/steps: a custom grid must be uniform. `bm` reuses one Brownian path
    (a torchsde.BrownianInterval on [0, T − t_min] of size (batch, D)) across step counts; without it one is made
    with entropy drawn from `generator`. torchsde makes one extra drift call to check shapes. `progress` is not
    shown (torchsde has none).
    """
    steps, s1 = len(t) - 1, float(t[0] - t[-1])
    if not torch.allclose(t.diff(), t.diff()[:1], rtol=1e-9, atol=0):
        raise ValueError(f"torchsde steps uniformly in t: timesteps={t.tolist()} are not evenly spaced")
    y = x.flatten(1)
    if bm is None:
        entropy = int(torch.randint(2**62, (1,), generator=run.generator))
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
    reverse = _ReverseInS(run.sde, run.score_fn, x.shape, run, PER_STEP[method])
    return torchsde.sdeint(reverse, y, ts, bm=bm, method=method, dt=dt)[-1].view(x.shape)
