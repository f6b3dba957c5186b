"""ScoreModel: turns a network's output into a score s_θ(x, t) ≈ ∇ₓ log p_t(x) for any linear SDE.

Network inputs. The network sees c_in(t)·x with c_in = 1/√(s(t)² + σ(t)²) and the time τ = t/T ∈ [0, 1].
For VP c_in ≡ 1 (s² + σ² = 1), so this is score_sde's convention exactly; for VE it is EDM's input scaling
(Karras et al. 2022, Table 1, σ_data = 1), which keeps x_t of std up to σ_max = 50 at unit scale. τ = t/T is
one monotone label of the noise level for every SDE: for VE log σ(t) is affine in t (geometric σ), so τ carries
EDM's c_noise = ¼ log σ up to an affine map the first layer absorbs, and one range [0, 1] lets the Fourier
(scale 16) and sinusoidal (1000τ, DDPM's step range) features be tuned once for all SDEs.

Outputs. parameterization="eps" (default): the network predicts the noise ε in x_t = s(t)x₀ + σ(t)ε and
s_θ = −ε̂/σ(t) (the seed's eq. 13.15; score_sde's VP/sub-VP convention). For VE this is score_sde's
σ-scaled NCSN output, score = net/σ, with the net's sign flipped. parameterization="score": the network output
is the score itself (no σ scaling).

Labels. `model(x, t, y)` passes class labels y (batch,) to a conditional network (built with `num_classes`;
`num_classes` is then the model's too) and `model(x, t)` calls the network as net(x, τ): for a conditional network
that is the null label ∅, so the model is s_θ(x, t | y) and s_θ(x, t) in one (Ho & Salimans 2022).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..sde import SDE, expand_as

PARAMETERIZATIONS = ("eps", "score")


class ScoreModel(nn.Module):
    """s_θ(x, t | y) from a network net(c_in(t)·x, t/T[, y]); usable directly as a `score_fn(x, t)`."""

    def __init__(self, net: nn.Module, sde: SDE, parameterization: str = "eps"):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
        self.net, self.sde, self.parameterization = net, sde, parameterization
        if isinstance(getattr(sde, "schedule", None), nn.Module):  # a learned β(t): its parameters join the state dict
            self.schedule = sde.schedule
        self.num_classes: int | None = getattr(net, "num_classes", None)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        t = t.to(x.dtype).expand(x.shape[0])
        scale, sigma = self.sde.scale(t), self.sde.sigma(t)
        c_in = torch.rsqrt(scale**2 + sigma**2)
        x_in, tau = expand_as(c_in, x) * x, t / self.sde.T
        out = self.net(x_in, tau) if y is None else self.net(x_in, tau, y)
        return -out / expand_as(sigma, x) if self.parameterization == "eps" else out
