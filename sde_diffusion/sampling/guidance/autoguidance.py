"""Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"): guide a model with a
weaker version of itself, D_w = w_K·D_1 + (1 − w_K)·D_0, D_0 the weak guide. Written in this project's
classifier-free convention w = w_K − 1 (`guidance.classifier_free`), and in scores, where the same affine map holds
since D = (x + σ²s)/s(t) is affine in s at fixed x, t.
"""

from __future__ import annotations

import math

from torch import Tensor

from ...core.checks import ArgumentError
from ...core.sde import ScoreFn


def autoguidance(model: ScoreFn, guide: ScoreFn, w: float) -> ScoreFn:
    """s = (1 + w)·s_model − w·s_guide (Karras et al. 2024's guided denoiser, w_K = 1 + w; EDM2's `ref.lerp(D, w_K)`):
    w = 0 is the model alone. `guide` is any second score_fn(x, t) of the same task: a smaller network, an earlier
    checkpoint (`train.guide_at`), fewer steps; both are plain score functions, so a conditional model and guide take
    their labels first (`guidance.conditional`). With the exact p(x | y) as model and the exact p(x) as guide it is
    classifier-free guidance at w.

    Each call is one call of each: the network evaluations of the model plus the guide's.
    """
    if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
        raise ArgumentError("w", w, "a finite number")

    def score(x: Tensor, t: Tensor) -> Tensor:
        return (1 + w) * model(x, t) - w * guide(x, t)

    return score
