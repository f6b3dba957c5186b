"""One entry point for every guidance method: `Guidance(method, w, interval, …)` and `guided_sample`, which draws
class-conditional samples with it and counts the network evaluations each sample cost (the model's and the guide's).

  cfg    classifier-free guidance (Ho & Salimans 2022, eq. 6): `guidance.classifier_free`, 2 evaluations a call;
  auto   autoguidance (Karras et al. 2024) by a weaker conditional `guide`: 1 + 1 (the guide's) a call;
  cfgpp  CFG++ (Chung et al. 2024), DDIM only (`cfgpp`): 2 a step, `w` is the paper's λ ∈ [0, 1];
  apg    adaptive projected guidance (Sadat et al. 2024, without momentum): 2 a call, with `eta`, `threshold`.

`interval` = [λ_lo, λ_hi] (Kynkäänniemi et al. 2024) restricts any of them to λ(t) in it, using the conditional
score (1 evaluation) elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from ...core.checks import ArgumentError, check_choice, check_number
from ...core.sde import SDE, ScoreFn
from .. import SampleResult, SampleSetup
from ..sample import SamplerRun
from .apg import adaptive_projected
from .autoguidance import autoguidance
from .cfgpp import cfgpp_sample
from .conditional import CondScoreFn, classifier_free, cond_uncond, conditional
from .interval import check_interval, guidance_interval

METHODS = ("cfg", "auto", "cfgpp", "apg")


class CountedNet:
    """A conditional model(x, t, y) that counts the rows it evaluates (a doubled batch counts twice)."""

    def __init__(self, model: CondScoreFn):
        self.model, self.rows = model, 0

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        self.rows += x.shape[0]
        return self.model(x, t, y)


@dataclass(frozen=True)
class Guidance:
    """A guidance method of METHODS at scale w (w = 0: the conditional model; CFG++'s λ), restricted to the λ interval
    `interval` if given; APG's η (`eta`) and norm threshold r (`threshold`)."""

    method: str = "cfg"
    w: float = 0.0
    interval: Sequence[float] | None = None
    eta: float = 0.0
    threshold: float = math.inf

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        check_number("w", self.w, ge=0)
        check_number("eta", self.eta)
        if not (isinstance(self.threshold, int | float) and self.threshold > 0):
            raise ArgumentError("threshold", self.threshold, "a number > 0 (inf: no clipping)")
        if self.interval is not None:
            try:
                check_interval(tuple(self.interval))
            except (TypeError, ValueError):
                raise ArgumentError("interval", self.interval, "null or [λ_lo, λ_hi], λ_lo <= λ_hi") from None


def guided_score(
    g: Guidance, sde: SDE, model: CondScoreFn, labels: Tensor, null_label: int, guide: CondScoreFn | None = None
) -> ScoreFn:
    """The score_fn(x, t) of a score-transform method (every method but cfgpp) for the (batch,) labels."""
    if g.method == "cfg":
        score = classifier_free(model, labels, g.w, null_label)
    elif g.method == "apg":
        score = adaptive_projected(cond_uncond(model, labels, null_label), sde, g.w, g.eta, g.threshold)
    elif g.method == "auto":
        if guide is None:
            raise ArgumentError("guide", None, "a weaker conditional model for guidance=auto (sample.py guide=PATH)")
        score = autoguidance(conditional(model, labels), conditional(guide, labels), g.w)
    else:
        raise ArgumentError("method", g.method, "a score transform: one of cfg, auto, apg (cfgpp: guided_sample)")
    if g.interval is None:
        return score
    return guidance_interval(score, conditional(model, labels), sde, tuple(g.interval))


def guided_sample(
    g: Guidance,
    sde: SDE,
    model: CondScoreFn,
    labels: Tensor,
    null_label: int,
    run: SamplerRun,
    guide: CondScoreFn | None = None,
    *,
    setup: SampleSetup,
) -> tuple[SampleResult, dict[str, float]]:
    """Samples of `run` from setup.x_T guided by `g` (cfgpp: run must be ddim; its η option, default 0 as in the
    paper), and the network evaluations per sample: {"model": …, "guide": …}. `setup` as in `sampling.sample`
    (x_T required: the labels are per row of it)."""
    if setup.x_T is None:
        raise ArgumentError("setup.x_T", None, "the starting noise, one row per label")
    x_T, net, weak = setup.x_T, CountedNet(model), CountedNet(guide) if guide is not None else None
    if g.method == "cfgpp":
        if run.name != "ddim":
            raise ArgumentError("sampler", run.name, "ddim for guidance=cfgpp (CFG++ is defined for DDIM's step)")
        eta, spacing = run.options.get("eta"), run.options.get("spacing")
        x_T = x_T.to(setup.device or x_T.device)
        res = cfgpp_sample(
            sde,
            cond_uncond(net, labels, null_label),
            conditional(net, labels),
            g.w,
            x_T,
            run.steps,
            t_min=run.t_min,
            denoise=run.denoise,
            eta=0.0 if eta is None else eta,
            spacing=spacing or "logsnr",
            interval=g.interval and tuple(g.interval),
            generator=setup.generator,
            progress=setup.progress,
        )
    else:
        score = guided_score(g, sde, net, labels, null_label, weak)
        res = run.sample(sde, score, tuple(x_T.shape), setup)
    n = x_T.shape[0]
    return res, {"model": net.rows / n, "guide": weak.rows / n if weak is not None else 0.0}
