"""Adaptive projected guidance (Sadat et al. 2024, "Eliminating oversaturation and artifacts of high guidance scales
in diffusion models", without its momentum): classifier-free guidance on the denoised estimates D = E[x₀ | x_t], with
the update ΔD = D(x | y) − D(x | ∅) clipped to norm ≤ r and its component parallel to D(x | y) damped by η."""

from __future__ import annotations

import math

from torch import Tensor

from ...core.checks import ArgumentError
from ...core.sde import SDE, ScoreFn, expand_as
from .conditional import PairFn


def _per_sample_dot(a: Tensor, b: Tensor) -> Tensor:
    """(batch,) ⟨a_i, b_i⟩ over all but the batch dimension."""
    return (a * b).flatten(1).sum(1)


def adaptive_projected(pair: PairFn, sde: SDE, w: float, eta: float = 0.0, threshold: float = math.inf) -> ScoreFn:
    """D̂ = D_c + w·(ΔD_⊥ + η·ΔD_∥) (Sadat et al. 2024's APG update, their w − 1 = this w), with
    ΔD = (D_c − D_u)·min(1, r/‖D_c − D_u‖) (their norm threshold r = `threshold`), ΔD_∥ = (⟨ΔD, D_c⟩/‖D_c‖²)·D_c and
    ΔD_⊥ = ΔD − ΔD_∥ (their projection), per sample; D = (x + σ²s)/s(t) (Tweedie), the score returned
    (s(t)·D̂ − x)/σ².
    η = 1 and r = ∞ give classifier-free guidance at w; the paper's defaults are η = 0 and a data-dependent r.
    The paper's momentum on ΔD is left out: it carries state from one call to the next, which multi-stage and
    adaptive samplers do not call in step order. Each call is one `pair` call (two network evaluations)."""
    for name, v in (("w", w), ("eta", eta)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ArgumentError(name, v, "a finite number")
    if not threshold > 0:
        raise ArgumentError("threshold", threshold, "> 0 (inf for no clipping)")

    def score(x: Tensor, t: Tensor) -> Tensor:
        cond, uncond = pair(x, t)
        t = t.expand(x.shape[0])
        d_c, d_u = sde.tweedie(x, t, cond), sde.tweedie(x, t, uncond)
        delta = d_c - d_u
        norm = delta.flatten(1).norm(dim=1)
        delta = delta * expand_as((threshold / norm).clamp(max=1.0), x)
        parallel = expand_as(_per_sample_dot(delta, d_c) / _per_sample_dot(d_c, d_c), x) * d_c
        d = d_c + w * (delta - parallel + eta * parallel)
        s, sigma = expand_as(sde.scale(t).to(x), x), expand_as(sde.sigma(t).to(x), x)
        return (s * d - x) / sigma**2

    return score
