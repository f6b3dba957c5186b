"""Likelihood estimators: the probability-flow ODE's exact log-likelihood (`ode`), bits/dim and the bounds on
discrete data (`dequantise`). The data-set loop is `evaluation.likelihood`.
"""

from .dequantise import (
    DEQUANTISATIONS,
    DiscreteELBO,
    Quantiser,
    discrete_elbo,
    discretised_reconstruction,
    quantised_levels,
    quantised_log_pmf,
)
from .ode import (
    DIVERGENCES,
    NOISES,
    SOLVERS,
    BitsPerDim,
    FlowOptions,
    Likelihood,
    bits_per_dim,
    log_likelihood,
)

__all__ = [
    "BitsPerDim",
    "DEQUANTISATIONS",
    "DIVERGENCES",
    "DiscreteELBO",
    "FlowOptions",
    "Likelihood",
    "NOISES",
    "Quantiser",
    "SOLVERS",
    "bits_per_dim",
    "discrete_elbo",
    "discretised_reconstruction",
    "log_likelihood",
    "quantised_levels",
    "quantised_log_pmf",
]
