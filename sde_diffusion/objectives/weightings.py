"""Weightings w(λ) of the ε-error, one small class each (EDM's `EDMLoss` shape: hyper-parameters in, the weighting
and its reduction over dimensions out), λ = log(s/σ) = −log σ̃.

Each is a base density times a factor on the ε-MSE, w(λ) = p_base(λ)·c(λ), the form its paper trains it in (the
factor c on the ε-MSE of draws from p_base):

  simple      p_schedule · 1, mean over dimensions    ε-MSE, t ~ U (Ho et al. 2020; L_simple)
  sigma2      p_schedule · 1, sum                     σ²-weighted score matching (score_sde's default)
  likelihood  p_schedule · g²/σ², sum                 = 2/(T − t_min): constant in λ, the ELBO (Song et al. 2021b)
  min_snr     p_schedule · min(1, γ/SNR), mean        min-SNR-γ (Hang et al. 2023), SNR = e^{2λ}
  edm         p_lognormal · (σ̃² + σ_d²)/σ_d², mean     EDM's λ(σ) on ‖D − x₀‖² (Karras et al. 2022, Table 1)
  sigmoid     p_schedule · g²/σ² · sigmoid(b − 2λ)    = ELBO · sigmoid(b − log SNR) (Kingma & Gao 2023, App. D)
  flow        p_schedule · (1 + σ̃)², mean              ‖û − u‖² of the velocity u = ε − x₀ (û = ε̂ − x̂₀): flow matching
                                                      (Lipman et al. 2023) on the rectified-flow path (s + σ = 1)

p_schedule(λ) = 2σ²/(g²(T − t_min)) is t ~ U(t_min, T) under the SDE's β(t) (noise_levels.ScheduleLevels). A new
weighting is a subclass here with its `name` (which registers it in `WEIGHTINGS`, the names `loss.weighting` takes)
and its hyper-parameters as dataclass fields, plus a conf/loss/<preset>.yaml naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..core.checks import check_number
from ..core.sde import SDE
from .noise_levels import NoiseLevels, NormalLevels, ScheduleLevels

WEIGHTINGS: dict[str, type[Weighting]] = {}


class Weighting:
    """w(λ) = p_base(λ)·c(λ) (module docstring): `base` is the density p_base its paper draws from, `factor` c(λ) (None:
    1), `w` the product at (t, λ(t)) and `reduce` the reduction of (ε̂ − ε)² over dimensions ("mean" or "sum")."""

    name: ClassVar[str]
    base_density: ClassVar[str] = "schedule"  # the name of `base` among the densities (objectives.DENSITIES)
    reduction: ClassVar[str] = "mean"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        WEIGHTINGS[cls.name] = cls

    def base(self, sde: SDE, t_min: float) -> NoiseLevels:
        """p_base on [λ(T), λ(t_min)]: t ~ U(t_min, T) unless the paper draws otherwise."""
        return ScheduleLevels(sde, t_min)

    def factor(self, sde: SDE, t: Tensor, lam: Tensor | None) -> Tensor | None:
        """c(λ) at t (λ = λ(t) where the draw gave it, else None); None: c = 1."""
        return None

    def w(self, base: NoiseLevels, t: Tensor, lam: Tensor) -> Tensor:
        """w(λ) = p_base(λ)·c(λ) at (t, λ(t)), `base` this weighting's `base` density."""
        p, c = base.pdf(t, lam), self.factor(base.sde, t, lam)
        return p if c is None else p * c

    def reduce(self, squared_error: Tensor) -> Tensor:
        """(batch, D) → (batch,): the mean or the sum over dimensions."""
        return squared_error.mean(1) if self.reduction == "mean" else squared_error.sum(1)


def _noise_to_signal(sde: SDE, t: Tensor, lam: Tensor | None) -> Tensor:
    """σ̃ = σ/s = e^{−λ}: from λ where the draw gave it, else from t."""
    return sde.sigma(t) / sde.scale(t) if lam is None else torch.exp(-lam)


def _elbo_factor(sde: SDE, t: Tensor) -> Tensor:
    """g²/σ² = −2 dλ/dt (noise_levels' docstring): the likelihood weighting's c under t ~ U."""
    return (sde.g(t) / sde.sigma(t)) ** 2


@dataclass
class Simple(Weighting):
    """The ε-MSE under t ~ U (Ho et al. 2020, L_simple): c = 1, mean over dimensions."""

    name: ClassVar[str] = "simple"


@dataclass
class Sigma2(Weighting):
    """σ²-weighted score matching (Song et al. 2021, eq. 7 with λ = σ²; score_sde's default): c = 1, summed."""

    name: ClassVar[str] = "sigma2"
    reduction: ClassVar[str] = "sum"


@dataclass
class Likelihood(Weighting):
    """The likelihood weighting g² (Song et al. 2021b, Thm. 1): c = g²/σ², summed; w = 2/(T − t_min), constant in λ."""

    name: ClassVar[str] = "likelihood"
    reduction: ClassVar[str] = "sum"

    def factor(self, sde: SDE, t: Tensor, lam: Tensor | None) -> Tensor:
        return _elbo_factor(sde, t)

    def w(self, base: NoiseLevels, t: Tensor, lam: Tensor) -> Tensor:
        """p_schedule·g²/σ² = 2/(T − t_min) in closed form (no σ or g evaluated)."""
        return torch.full_like(lam, 2 / (base.sde.T - base.t_min))


@dataclass
class MinSNR(Weighting):
    """min-SNR-γ (Hang et al. 2023): c = min(1, γ/SNR) = min(1, γσ̃²) on the ε-MSE."""

    name: ClassVar[str] = "min_snr"
    gamma: float = 5.0

    def __post_init__(self) -> None:
        check_number("gamma", self.gamma, gt=0)

    def factor(self, sde: SDE, t: Tensor, lam: Tensor | None) -> Tensor:
        return torch.clamp(self.gamma * _noise_to_signal(sde, t, lam) ** 2, max=1.0)


@dataclass
class EDM(Weighting):
    """EDM (Karras et al. 2022, Table 1): λ(σ) = (σ̃² + σ_d²)/(σ̃σ_d)² on ‖D − x₀‖², i.e. c = 1 + σ̃²/σ_d² on the
    ε-MSE, drawn from log σ̃ ~ N(p_mean, p_std²)."""

    name: ClassVar[str] = "edm"
    base_density: ClassVar[str] = "lognormal"
    sigma_data: float = 1.0
    p_mean: float = -1.2
    p_std: float = 1.2

    def __post_init__(self) -> None:
        check_number("sigma_data", self.sigma_data, gt=0)
        check_number("p_mean", self.p_mean)
        check_number("p_std", self.p_std, gt=0)

    def base(self, sde: SDE, t_min: float) -> NoiseLevels:
        return NormalLevels(sde, t_min, self.p_mean, self.p_std)

    def factor(self, sde: SDE, t: Tensor, lam: Tensor | None) -> Tensor:
        return 1 + _noise_to_signal(sde, t, lam) ** 2 / self.sigma_data**2


@dataclass
class Sigmoid(Weighting):
    """Kingma & Gao (2023, App. D): the ELBO weighting times sigmoid(b − log SNR), c = g²/σ²·sigmoid(b − 2λ)."""

    name: ClassVar[str] = "sigmoid"
    bias: float = 0.0

    def __post_init__(self) -> None:
        check_number("bias", self.bias)

    def factor(self, sde: SDE, t: Tensor, lam: Tensor | None) -> Tensor:
        return _elbo_factor(sde, t) * torch.sigmoid(self.bias - 2 * (sde.log_snr(t) if lam is None else lam))

    def w(self, base: NoiseLevels, t: Tensor, lam: Tensor) -> Tensor:
        """sigmoid(b − 2λ)·2/(T − t_min) in closed form."""
        return torch.sigmoid(self.bias - 2 * lam) * (2 / (base.sde.T - base.t_min))


@dataclass
class Flow(Weighting):
    """Flow matching (Lipman et al. 2023) on the rectified-flow path: ‖û − u‖² = (1 + σ̃)²‖ε̂ − ε‖², c = (1 + σ̃)²."""

    name: ClassVar[str] = "flow"

    def factor(self, sde: SDE, t: Tensor, lam: Tensor | None) -> Tensor:
        return (1 + _noise_to_signal(sde, t, lam)) ** 2
