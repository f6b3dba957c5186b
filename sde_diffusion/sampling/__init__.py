"""Samplers of the reverse SDE and the probability-flow ODE, and of posteriors p(x | y), behind one entry point
`sample`.

Every module here that declares a sampler (`specs.register`) is imported below, the inverse methods (`inverse`,
registered in `INVERSE`) and the guidance sub-package included: adding a sampler is adding its module. `SAMPLERS`
maps each name to its spec and `DETERMINISTIC` lists the ODE solvers.
"""

import importlib
import pkgutil

from ..core.scipy_ode import SolverError
from .common import Callback, Reverse, tweedie_denoise
from .optimize import TunedGrid, optimize_timesteps
from .sample import SampleResult, SamplerRun, SampleSetup, sample
from .specs import INVERSE, SAMPLERS, SamplerArgError, SamplerSpec, check_sampler, sampler_table
from .timesteps import SPACINGS, timesteps

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

DETERMINISTIC = tuple(name for name, spec in SAMPLERS.items() if not spec.stochastic)

__all__ = [
    "DETERMINISTIC",
    "INVERSE",
    "SAMPLERS",
    "SPACINGS",
    "Callback",
    "Reverse",
    "SampleResult",
    "SampleSetup",
    "SamplerArgError",
    "SamplerRun",
    "SamplerSpec",
    "SolverError",
    "TunedGrid",
    "check_sampler",
    "optimize_timesteps",
    "sample",
    "sampler_table",
    "timesteps",
    "tweedie_denoise",
]
