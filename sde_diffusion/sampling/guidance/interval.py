"""A guidance interval (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval improves sample and
distribution quality"): guide only at middle noise levels, σ ∈ (σ_lo, σ_hi], and use the unguided score elsewhere.
Given in λ = log(s(t)/σ(t)) = −log σ̃ (σ̃ the VE-equivalent noise level, EDM's σ), so one interval means the same
noise levels under every SDE, β(t) and time grid; EDM's σ ∈ (σ_lo, σ_hi] is λ ∈ [−log σ_hi, −log σ_lo).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...core.checks import ArgumentError
from ...core.sde import SDE, ScoreFn, expand_as


def check_interval(interval: tuple[float, float]) -> tuple[float, float]:
    """(λ_lo, λ_hi) with λ_lo ≤ λ_hi, neither NaN (±inf allowed: an open end)."""
    if isinstance(interval, str | bytes) or len(interval) != 2:
        raise ArgumentError("interval", interval, "[λ_lo, λ_hi]")
    lo, hi = (float(v) for v in interval)
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ArgumentError("interval", interval, "[λ_lo, λ_hi] with λ_lo <= λ_hi (±inf for an open end)")
    return lo, hi


def in_interval(sde: SDE, t: Tensor, interval: tuple[float, float]) -> Tensor:
    """(batch,) bool: λ(t) ∈ [λ_lo, λ_hi], λ computed in float64."""
    lam = sde.log_snr(t.to(torch.float64).reshape(-1))
    return (lam >= interval[0]) & (lam <= interval[1])


def guidance_interval(guided: ScoreFn, unguided: ScoreFn, sde: SDE, interval: tuple[float, float]) -> ScoreFn:
    """s = guided(x, t) where λ(t) ∈ [λ_lo, λ_hi], else unguided(x, t) (Kynkäänniemi et al. 2024's w(σ); `unguided`
    the conditional score). Only the score needed is evaluated: a batch wholly inside calls `guided` alone, so an
    interval covering every λ returns exactly the un-intervalled guidance, and outside it costs the unguided score's
    network evaluations only."""
    interval = check_interval(interval)

    def score(x: Tensor, t: Tensor) -> Tensor:
        inside = in_interval(sde, t, interval).expand(x.shape[0])
        if bool(inside.all()):
            return guided(x, t)
        if not bool(inside.any()):
            return unguided(x, t)
        return torch.where(expand_as(inside.to(x.device), x), guided(x, t), unguided(x, t))

    return score
