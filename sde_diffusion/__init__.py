"""sde-diffusion: continuous-time score-based diffusion models (Song et al. 2021)."""

from .core.analytic import GaussianMixture, eight_gaussians, mixture
from .core.learned_schedule import LearnedBeta
from .core.schedules import (
    BetaSchedule,
    CallableBeta,
    ConstantBeta,
    CosineBeta,
    EDMBeta,
    LinearBeta,
    LogSNRLinearBeta,
    PolynomialBeta,
    SigmoidBeta,
)
from .core.sde import SDE, VESDE, VPSDE, DDPMSchedule, SubVPSDE, expand_as

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "BetaSchedule",
    "CallableBeta",
    "ConstantBeta",
    "CosineBeta",
    "DDPMSchedule",
    "EDMBeta",
    "GaussianMixture",
    "LearnedBeta",
    "LinearBeta",
    "LogSNRLinearBeta",
    "PolynomialBeta",
    "SigmoidBeta",
    "SubVPSDE",
    "eight_gaussians",
    "expand_as",
    "mixture",
]
