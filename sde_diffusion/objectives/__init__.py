"""Training objectives in log-SNR: weightings w(λ) (`weightings`), noise-level densities p(λ) (`noise_levels`),
the importance-weighted loss (`objective`) and the continuous-time ELBO (`elbo`).
"""

from .elbo import (
    ELBO,
    diffusion_term,
    elbo,
    gaussian_reconstruction,
    negative_elbo,
    prior_kl,
    time_draws,
)
from .noise_levels import (
    AdaptiveLevels,
    NoiseLevels,
    NormalLevels,
    PiecewiseLevels,
    ScheduleLevels,
    UniformLevels,
)
from .objective import (
    DENSITIES,
    Draw,
    LearnedScheduleELBO,
    Objective,
    build_objective,
    squared_eps_error,
)
from .weightings import (
    EDM,
    WEIGHTINGS,
    Flow,
    Likelihood,
    MinSNR,
    Sigma2,
    Sigmoid,
    Simple,
    Weighting,
)

__all__ = [
    "AdaptiveLevels",
    "DENSITIES",
    "Draw",
    "EDM",
    "ELBO",
    "Flow",
    "LearnedScheduleELBO",
    "Likelihood",
    "MinSNR",
    "NoiseLevels",
    "NormalLevels",
    "Objective",
    "PiecewiseLevels",
    "ScheduleLevels",
    "Sigma2",
    "Sigmoid",
    "Simple",
    "UniformLevels",
    "WEIGHTINGS",
    "Weighting",
    "build_objective",
    "diffusion_term",
    "elbo",
    "gaussian_reconstruction",
    "negative_elbo",
    "prior_kl",
    "squared_eps_error",
    "time_draws",
]
