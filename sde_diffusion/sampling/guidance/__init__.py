"""Guidance as score transforms, so that every sampler runs it unchanged: classifier-free and classifier guidance
(`conditional`), autoguidance, an interval in λ, APG, and CFG++ on DDIM's step; `guided` runs any of them by name and
counts the network evaluations."""

from .apg import adaptive_projected
from .autoguidance import autoguidance
from .cfgpp import cfgpp_sample
from .conditional import classifier, classifier_free, cond_uncond, conditional
from .guided import Guidance, guided_sample
from .interval import guidance_interval

__all__ = [
    "Guidance",
    "adaptive_projected",
    "autoguidance",
    "cfgpp_sample",
    "classifier",
    "classifier_free",
    "cond_uncond",
    "conditional",
    "guidance_interval",
    "guided_sample",
]
