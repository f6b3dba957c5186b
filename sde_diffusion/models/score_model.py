"""ScoreModel: turns a network's output into a score s_θ(x, t) ≈ ∇ₓ log p_t(x) for any linear SDE.

Every parameterisation is written in the VE-equivalent variable x̃ = x/s(t) = x₀ + σ̃ε with σ̃ = σ(t)/s(t) = e^{−λ},
so one formula holds for VP, sub-VP, VE and the rectified-flow path with any β(t), and each is a plain
`score_fn(x, t)` that every sampler, the likelihood, guidance and the inverse methods use unchanged.

  eps (default)  net(c_in·x, t/T) = ε̂ and s_θ = −ε̂/σ (Ho et al. 2020; score_sde's VP convention; for VE score_sde's
                 σ-scaled NCSN output with the sign flipped). c_in = 1/√(s² + σ²): 1 for VP, EDM's input scaling for
                 VE (σ_data = 1). τ = t/T is one monotone noise label in [0, 1] for every SDE, which the Fourier
                 (scale 16) and sinusoidal (1000τ) features are tuned for.
  score          the network output is the score itself.
  x0             EDM's preconditioned denoiser (Karras et al. 2022, Table 1) in σ̃: D = c_skip x̃ + c_out F(c_in x̃,
                 c_noise), c_skip = σ_d²/(σ̃² + σ_d²), c_out = σ̃σ_d/√(σ̃² + σ_d²), c_in = 1/√(σ̃² + σ_d²),
                 c_noise = ¼ log σ̃; s_θ = (s·D − x)/σ² (Tweedie). The network's noise input is c_noise, a function
                 of λ alone, so a model trained on one β(t) is the same function of (x̃, σ̃) on any other.
  v              Salimans & Ho (2022): with a = s/√(s² + σ²), b = σ/√(s² + σ²) and z = x/√(s² + σ²) = a x₀ + b ε,
                 the network predicts v = a ε − b x₀ from (z, t/T); ε̂ = b z + a v̂ and s_θ = −ε̂/σ.

Labels. `model(x, t, y)` passes class labels y (batch,) to a conditional network (built with `num_classes`;
`num_classes` is then the model's too) and `model(x, t)` calls the network as net(x, τ): for a conditional network
that is the null label ∅, so the model is s_θ(x, t | y) and s_θ(x, t) in one (Ho & Salimans 2022).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.checks import check_choice, check_number
from ..core.sde import SDE, expand_as

PARAMETERIZATIONS = ("eps", "score", "x0", "v")


class ScoreModel(nn.Module):
    """s_θ(x, t | y) from a network net(c_in·x, c_noise[, y]); usable directly as a `score_fn(x, t)`. `sigma_data`
    (σ_d, the data's standard deviation) enters only the x0 (EDM) parameterisation."""

    def __init__(self, net: nn.Module, sde: SDE, parameterization: str = "eps", sigma_data: float = 1.0):
        super().__init__()
        check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        check_number("sigma_data", sigma_data, gt=0)
        self.net, self.sde, self.parameterization, self.sigma_data = net, sde, parameterization, float(sigma_data)
        if isinstance(getattr(sde, "schedule", None), nn.Module):  # a learned β(t): its parameters join the state dict
            self.schedule = sde.schedule
        self.num_classes: int | None = getattr(net, "num_classes", None)

    def _net(self, x_in: Tensor, noise_label: Tensor, y: Tensor | None) -> Tensor:
        return self.net(x_in, noise_label) if y is None else self.net(x_in, noise_label, y)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        t = t.to(x.dtype).expand(x.shape[0])
        s, sigma = expand_as(self.sde.scale(t), x), expand_as(self.sde.sigma(t), x)
        if self.parameterization == "x0":
            return self._edm(x, s, sigma, y)
        norm = torch.rsqrt(s**2 + sigma**2)
        out = self._net(norm * x, t / self.sde.T, y)
        if self.parameterization == "score":
            return out
        if self.parameterization == "v":
            out = sigma * norm * (norm * x) + s * norm * out  # ε̂ = b z + a v̂
        return -out / sigma

    def _edm(self, x: Tensor, s: Tensor, sigma: Tensor, y: Tensor | None) -> Tensor:
        """Karras et al. (2022), Table 1 ("EDM" column) in σ̃ = σ/s on x̃ = x/s; returns (s·D − x)/σ²."""
        sd2, sigma_t = self.sigma_data**2, sigma / s
        x_tilde, r = x / s, torch.rsqrt(sigma_t**2 + sd2)
        c_noise = 0.25 * torch.log(sigma_t).reshape(-1)
        denoised = sd2 * r**2 * x_tilde + sigma_t * self.sigma_data * r * self._net(r * x_tilde, c_noise, y)
        return (s * denoised - x) / sigma**2
