"""Guidance: a class-conditional `score_fn(x, t)` from a conditional model (classifier-free, Ho & Salimans 2022, eq. 6)
or from a classifier (Song et al. 2021, eq. 14), so that every sampler runs it unchanged; the conditional score and
the (conditional, unconditional) pair that the guidance of `autoguidance`, `apg`, `interval` and `cfgpp`
combine. A conditional model is
called model(x, t, y) with (batch,) long labels y; the label `null_label` asks for the unconditional s(x, t | ∅).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ...core.checks import ArgumentError
from ...core.sde import ScoreFn

CondScoreFn = Callable[[Tensor, Tensor, Tensor], Tensor]
LogProbFn = Callable[[Tensor, Tensor], Tensor]


def _check(labels: int | Tensor, w: float) -> None:
    """labels an int or a 1-D integer tensor, w a finite number."""
    if isinstance(labels, Tensor):
        if labels.ndim != 1 or labels.dtype not in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
            raise ValueError(
                f"labels must be an int or a (batch,) integer tensor, got dtype {labels.dtype}, shape "
                f"{tuple(labels.shape)}"
            )
    elif isinstance(labels, bool) or not isinstance(labels, int):
        raise ArgumentError("labels", labels, "an int or a (batch,) integer tensor")
    if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
        raise ArgumentError("w", w, "a finite number")


def _per_sample(labels: int | Tensor, x: Tensor) -> Tensor:
    """The (batch,) long labels of x's batch: an int for every sample, or a tensor that must match the batch. A
    sampler with batch_size calls the score on chunks, and x does not say which rows a chunk holds: so a mismatch is
    an error (pass an int, or sample one chunk per call)."""
    if isinstance(labels, int):
        return torch.full((x.shape[0],), labels, dtype=torch.long, device=x.device)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels has {labels.shape[0]} entries but the score was called on a batch of {x.shape[0]} (a sampler "
            f"with batch_size calls it on chunks): pass one label per sample of the batch, or an int"
        )
    return labels.to(device=x.device, dtype=torch.long)


PairFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def conditional(model: CondScoreFn, labels: int | Tensor) -> ScoreFn:
    """The plain score_fn(x, t) = s(x, t | y) of a conditional model with its labels bound: one network evaluation
    per call (the model or guide of `autoguidance.autoguidance`)."""
    _check(labels, 0.0)

    def score(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t.expand(x.shape[0]), _per_sample(labels, x))

    return score


def cond_uncond(model: CondScoreFn, labels: int | Tensor, null_label: int) -> PairFn:
    """pair(x, t) -> (s(x, t | y), s(x, t | ∅)): one model call on the doubled batch [x; x] with labels [y; ∅], two
    network evaluations. Every guidance built from the two scores takes this pair."""
    _check(labels, 0.0)
    if isinstance(null_label, bool) or not isinstance(null_label, int):
        raise ArgumentError("null_label", null_label, "an int")

    def pair(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        y = _per_sample(labels, x)
        t = t.expand(x.shape[0])
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
        return both.chunk(2)

    return pair


def classifier_free(model: CondScoreFn, labels: int | Tensor, w: float, null_label: int) -> ScoreFn:
    """s = (1 + w)·s(x, t | y) − w·s(x, t | ∅) (Ho & Salimans 2022, eq. 6); w = 0 is the conditional score. It samples
    ∝ p_t(x | y)^{1+w} p_t(x)^{−w} = p_t(x) p_t(y | x)^{1+w}: classifier guidance of scale 1 + w.

    Each call is one model call on the doubled batch [x; x] with labels [y; ∅]: two network evaluations.
    """
    _check(labels, w)
    pair = cond_uncond(model, labels, null_label)

    def score(x: Tensor, t: Tensor) -> Tensor:
        cond, uncond = pair(x, t)
        return (1 + w) * cond - w * uncond

    return score


def classifier(score_fn: ScoreFn, log_prob_fn: LogProbFn, labels: int | Tensor, w: float) -> ScoreFn:
    """s = s(x, t) + w·∇ₓ log p_t(y | x) (Song et al. 2021, eq. 14; Dhariwal & Nichol 2021, Alg. 1): at w = 1 the
    exact class-conditional score when the classifier is exact (`GaussianMixture.classifier_log_prob` is).

    log_prob_fn(x, t) -> (batch, C) log-probabilities of a time-dependent classifier, differentiable in x; its
    gradient is taken with autograd enabled inside, as samplers run under no_grad. Each call is one score call plus
    one classifier forward and backward pass.
    """
    _check(labels, w)

    def score(x: Tensor, t: Tensor) -> Tensor:
        y = _per_sample(labels, x)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_p = log_prob_fn(x_in, t)
            if log_p.ndim != 2 or log_p.shape[0] != x.shape[0] or not bool(((y >= 0) & (y < log_p.shape[1])).all()):
                raise ValueError(
                    f"log_prob_fn must return (batch={x.shape[0]}, C) log-probabilities with every label in [0, C), "
                    f"got shape {tuple(log_p.shape)} and labels in [{int(y.min())}, {int(y.max())}]"
                )
            (grad,) = torch.autograd.grad(log_p.gather(1, y[:, None]).sum(), x_in)
        return score_fn(x, t) + w * grad

    return score
