"""Exact measures of a class-conditional sampler on a Gaussian mixture whose classes are groups of components, where
p(x | y) is known in closed form (`GaussianMixture.given_class`): per class y, for the samples q_y asked for y,

  precision  E_{x∼q_y}[log p(x | y)] beside its value under exact draws of p(x | y), E_p[log p] = −H(p(x | y))
             (Kynkäänniemi et al. 2019's precision, made exact: how typical the samples are of their class);
  recall     the in-class mode-weight error Σ_k |ŵ_k − w_k| over the class's components, each sample assigned to its
             most responsible component of p(x | y) (`metrics.mode_weight_error`): 0 when every component of the
             class is covered with its weight;
  sw2        SW₂ to as many exact draws of p(x | y), beside the floor SW₂ between two exact draws;
  accuracy   the share of samples whose Bayes class argmax_y p(y | x) is the one asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..core import metrics
from ..core.analytic import GaussianMixture

MEASURES = ("precision", "precision_exact", "recall_error", "sw2", "sw2_floor", "accuracy")


def class_measures(
    oracle: GaussianMixture, classes: Sequence[Sequence[int]], x: Tensor, y: Tensor, seed: int = 0
) -> dict[str, list[float]]:
    """Every measure of MEASURES per class (lists indexed by class) for samples x (n, D) asked for classes y (n,);
    the exact draws of class c come from the seed `seed + c` (two sets for the floor)."""
    x, y = x.detach().flatten(1).double().cpu(), y.cpu()
    if x.shape[0] != y.shape[0] or x.shape[1] != oracle.dim:
        raise ValueError(f"x must be (n, D={oracle.dim}) with one label each, got {tuple(x.shape)}, {tuple(y.shape)}")
    r = oracle.responsibilities(x)
    predicted = torch.stack([r[:, list(c)].sum(1) for c in classes], 1).argmax(1)
    out: dict[str, list[float]] = {k: [] for k in MEASURES}
    for c, components in enumerate(classes):
        xs = x[y == c]
        if len(xs) < 2:
            raise ValueError(f"class {c} has {len(xs)} samples: each class needs at least 2")
        p = oracle.given_class(list(components))
        g = torch.Generator().manual_seed(seed + c)
        exact, exact2 = p.sample(len(xs), g), p.sample(len(xs), g)
        out["precision"].append(float(p.log_prob(xs).mean()))
        out["precision_exact"].append(float(p.log_prob(exact).mean()))
        out["recall_error"].append(metrics.mode_weight_error(p, xs))
        out["sw2"].append(metrics.sliced_wasserstein(xs, exact, seed=seed))
        out["sw2_floor"].append(metrics.sliced_wasserstein(exact2, exact, seed=seed))
        out["accuracy"].append(float((predicted[y == c] == c).double().mean()))
    return out


def summary(per_class: dict[str, list[float]]) -> dict[str, float]:
    """The class means of `class_measures`' lists (classes weighted equally: labels=all asks n/C of each)."""
    return {k: sum(v) / len(v) for k, v in per_class.items()}
