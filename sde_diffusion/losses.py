"""Denoising score matching (Vincent 2011) for the linear SDEs: the training objective of Song et al. (2021).

With x_t = s(t)x₀ + σ(t)ε, ∇log p_{0t}(x_t | x₀) = −ε/σ(t), so the per-sample loss
λ(t)‖s_θ(x_t, t) + ε/σ(t)‖² (Song et al. 2021, eq. 7) is written through r = σ(t)s_θ(x_t, t) + ε, which for
the ε-parameterisation s_θ = −ε̂/σ is exactly ε − ε̂. Weightings (t ~ U(t_min, T)):
  simple      mean over dimensions of ‖ε̂ − ε‖² (L_simple, the seed's eq. 13.15; Ho et al. 2020)
  sigma2      λ = σ²: the sum over dimensions of ‖ε̂ − ε‖² (score_sde's default, reduce_mean=False)
  likelihood  λ = g²: g²/σ² · Σ‖ε̂ − ε‖², whose t-integral bounds −log p₀ (Song et al. 2021b, Thm. 1)
As in score_sde, no ½ or (T − t_min) factor is applied. With class labels y the model is s_θ(x_t, t | y) and the
same loss trains the class-conditional score ∇log p_t(x | y) (the label rides along with x₀).
These are today's objectives, kept as the reference; `objectives.Objective` generalises them (its defaults equal
dsm_loss's).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sde import SDE, ScoreFn, expand_as

WEIGHTINGS = ("simple", "sigma2", "likelihood")


def dsm_loss(
    sde: SDE,
    model: ScoreFn,
    x0: Tensor,
    t_min: float = 1e-5,
    weighting: str = "simple",
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    y: Tensor | None = None,
) -> Tensor:
    """Per-sample DSM loss, shape (batch,), for x0 of any shape (batch, …); t and ε drawn from `generator` by
    `dsm_draws`, unless given (e.g. one process's slice of a global draw); labels y (batch,) go to model(x, t, y)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if not 0 < t_min < sde.T:
        raise ValueError(f"t_min must be in (0, T={sde.T}), got {t_min}")
    if t is None or noise is None:
        t, noise = dsm_draws(sde, x0.shape, t_min, generator, x0.dtype, x0.device)
    sq = squared_eps_error(sde, model, x0, t, noise, y)
    if weighting == "simple":
        return sq.mean(1)
    if weighting == "sigma2":
        return sq.sum(1)
    return sq.sum(1) * (sde.g(t) / sde.sigma(t)).square()


def squared_eps_error(
    sde: SDE, model: ScoreFn, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None
) -> Tensor:
    """(ε̂ − ε)² per dimension, shape (batch, D): r = σ(t)s_θ(x_t, t[, y]) + ε at x_t = s(t)x₀ + σ(t)ε."""
    sigma = expand_as(sde.sigma(t), x0)
    x_t = expand_as(sde.scale(t), x0) * x0 + sigma * noise
    score = model(x_t, t) if y is None else model(x_t, t, y)
    return (sigma * score + noise).square().flatten(1)


def dsm_draws(
    sde: SDE,
    shape: tuple[int, ...],
    t_min: float,
    generator: torch.Generator | None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """t ~ U(t_min, T) of shape (batch,) and ε ~ N(0, I) of `shape`, drawn in this order from `generator`."""
    t = t_min + (sde.T - t_min) * torch.rand(shape[0], generator=generator, dtype=dtype, device=device)
    return t, torch.randn(shape, generator=generator, dtype=dtype, device=device)
