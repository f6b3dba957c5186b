"""Where in noise level a model is wrong: its excess ε-loss over the exact score's, per λ-bin, from the exact oracle.

At every λ, E‖ε̂ − ε‖² = E‖ε̂* − ε‖² + E‖ε̂ − ε̂*‖² with ε̂* = E[ε | x_t] = −σ s*(x_t, t), since the cross term has
mean zero (Vincent 2011). The oracle (analytic.GaussianMixture) gives s* in closed form under every SDE, so the
excess E‖ε̂ − ε̂*‖²/D = E‖σ(s_θ − s*)‖²/D at each λ is measured directly, exact up to Monte Carlo error: the
part of any objective's loss the network can still lose, at that noise level. λ = log(s/σ) as in `SDE.log_snr`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.analytic import GaussianMixture
from ..core.sde import SDE, ScoreFn
from ..objectives.noise_levels import UniformLevels


@dataclass
class LevelError:
    """Per λ-bin: its centre `lam`, the mean excess ε-MSE per dimension `excess` and its standard error `se`."""

    lam: list[float]
    excess: list[float]
    se: list[float]

    def as_dict(self) -> dict[str, list[float]]:
        return {"lam": self.lam, "excess": self.excess, "se": self.se}


@torch.no_grad()
def excess_loss_by_level(
    sde: SDE,
    score_fn: ScoreFn,
    oracle: GaussianMixture,
    t_min: float = 1e-5,
    bins: int = 12,
    per_bin: int = 1000,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LevelError:
    """E‖ε̂ − ε̂*‖²/D in `bins` equal bins of λ on [λ(T), λ(t_min)], `per_bin` draws each (λ uniform within its bin,
    x₀ ~ oracle, x_t = s x₀ + σε); `score_fn` is called in `dtype` on `device`, the oracle in float64."""
    levels = UniformLevels(sde, t_min)
    cell = torch.arange(bins, dtype=torch.float64).repeat_interleave(per_bin)
    t = levels.t((cell + torch.rand(len(cell), generator=generator, dtype=torch.float64)) / bins)
    x0 = oracle.sample(len(t), generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    sigma, x = sde.sigma(t)[:, None], sde.perturb(x0, t, noise)
    pairs = zip(x.split(4096), t.split(4096), strict=True)
    chunks = [score_fn(xc.to(device, dtype), tc.to(device, dtype)) for xc, tc in pairs]
    s = torch.cat(chunks).to("cpu", torch.float64)
    err = (sigma * (s - oracle.score_fn(sde)(x, t))).square().mean(1).view(bins, per_bin)
    width = (levels.hi - levels.lo) / bins
    centres = levels.lo + width * (torch.arange(bins, dtype=torch.float64) + 0.5)
    return LevelError(centres.tolist(), err.mean(1).tolist(), (err.std(1) / per_bin**0.5).tolist())
