"""Samplers of the reverse SDE and the probability-flow ODE, behind one entry point `sample`."""

from .common import SamplingError, tweedie_denoise
from .dpm_solver import dpm_solver
from .ode_samplers import ode_euler, ode_heun, rk45
from .sample import DETERMINISTIC, SAMPLERS, SampleResult, sample, solver_options
from .sde_samplers import ancestral, ddpm_posterior, euler_maruyama, pc, torchsde_sampler
from .timesteps import SPACINGS, timesteps

__all__ = [
    "DETERMINISTIC",
    "SAMPLERS",
    "SPACINGS",
    "SampleResult",
    "SamplingError",
    "ancestral",
    "ddpm_posterior",
    "dpm_solver",
    "euler_maruyama",
    "ode_euler",
    "ode_heun",
    "pc",
    "rk45",
    "sample",
    "solver_options",
    "timesteps",
    "torchsde_sampler",
    "tweedie_denoise",
]
