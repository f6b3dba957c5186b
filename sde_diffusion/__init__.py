"""sde-diffusion: continuous-time score-based diffusion models (Song et al. 2021)."""

from .analytic import GaussianMixture, eight_gaussians, mixture
from .schedules import BetaSchedule, CallableBeta, ConstantBeta, CosineBeta, LinearBeta
from .sde import SDE, VESDE, VPSDE, DDPMSchedule, ReverseSDE, SubVPSDE, expand_as

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "BetaSchedule",
    "CallableBeta",
    "ConstantBeta",
    "CosineBeta",
    "DDPMSchedule",
    "GaussianMixture",
    "LinearBeta",
    "ReverseSDE",
    "SubVPSDE",
    "eight_gaussians",
    "expand_as",
    "mixture",
]
