"""Sample-quality metrics against a reference set or the exact Gaussian-mixture oracle.

Samples of any shape (n, …) are flattened to (n, D) and compared in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .analytic import GaussianMixture
from .checks import ArgumentError


def _flat(x: Tensor) -> Tensor:
    return x.detach().flatten(1).to(torch.float64)


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """SW₂(x, y) = (E_θ W₂²(θᵀx, θᵀy))^{1/2} over `n_projections` seeded directions θ on the sphere (Rabin et al.
    2011); the 1-D W₂ compares quantiles (sorted samples; interpolated when the sizes differ)."""
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1]:
        raise ArgumentError("y", tuple(y.shape), f"of the same dimension as x, {tuple(x.shape)}")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64).to(x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, py = (theta.T @ x.T).sort(1).values.T, (theta.T.to(y.device) @ y.T).sort(1).values.T.to(x.device)
    if len(px) != len(py):  # y's quantiles at x's plotting positions (i + ½)/n, linearly interpolated
        pos = ((torch.arange(len(px), dtype=torch.float64, device=x.device) + 0.5) * len(py) / len(px) - 0.5).clamp(
            0, len(py) - 1
        )
        lo = pos.floor().long()
        w = (pos - lo)[:, None]
        py = py[lo] * (1 - w) + py[(lo + 1).clamp(max=len(py) - 1)] * w
    return float(((px - py) ** 2).mean().sqrt())


def mmd2(x: Tensor, y: Tensor, bandwidths: list[float] | None = None) -> float:
    """Unbiased MMD² (Gretton et al. 2012, eq. 3) with k = Σ_h exp(−‖a − b‖²/(2h²)).

    Default bandwidths: the median pairwise distance within y (the reference) times 1/4, 1/2, 1, 2, 4, so every
    sampler compared to the same reference is scored with the same kernel. Can be slightly negative.
    """
    x, y = _flat(x), _flat(y).to(x.device)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"mmd2 needs at least 2 samples in each set, got {n} and {m}")
    d_yy = torch.cdist(y, y) ** 2
    if bandwidths is None:
        med = d_yy[torch.triu_indices(m, m, 1, device=y.device).unbind()].median().sqrt()
        bandwidths = [float(med) * c for c in (0.25, 0.5, 1.0, 2.0, 4.0)]

    def k(d2: Tensor) -> Tensor:
        return sum(torch.exp(-d2 / (2 * h**2)) for h in bandwidths)

    k_xx, k_yy, k_xy = k(torch.cdist(x, x) ** 2), k(d_yy), k(torch.cdist(x, y) ** 2)
    xx = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(xx + yy - 2 * k_xy.mean())


def energy_distance(x: Tensor, y: Tensor, chunk: int = 1024) -> float:
    """The squared energy distance 2E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖ (Székely & Rizzo 2013, eq. 2.1), with unbiased
    U-statistics (i ≠ j) for the within-set terms; zero in expectation iff the laws agree, scale-free, no bandwidth.

    Pairwise distances are summed `chunk` rows at a time (chunk × len(y) float64 entries live at once), so
    10 000 × 10 000 points fit in memory. Can be slightly negative.
    """
    x, y = _flat(x), _flat(y).to(x.device)
    if len(x) < 2 or len(y) < 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y need >= 2 samples each and one dimension, got {tuple(x.shape)} and {tuple(y.shape)}")
    if chunk < 1:
        raise ArgumentError("chunk", chunk, ">= 1")

    def mean_distance(a: Tensor, b: Tensor, pairs: int) -> Tensor:
        return sum(torch.cdist(a[i : i + chunk], b).sum() for i in range(0, len(a), chunk)) / pairs

    n, m = len(x), len(y)
    xy = mean_distance(x, y, n * m)
    return float(2 * xy - mean_distance(x, x, n * (n - 1)) - mean_distance(y, y, m * (m - 1)))


def mode_weight_error(mixture: GaussianMixture, x: Tensor) -> float:
    """Σ_k |ŵ_k − w_k|: each sample assigned to its most responsible component, ŵ the assigned fractions."""
    assigned = mixture.responsibilities(_flat(x)).argmax(1)
    counts = torch.bincount(assigned.cpu(), minlength=len(mixture.weights)).to(torch.float64)
    return float((counts / len(x) - mixture.weights).abs().sum())


def flow_error(x: Tensor, x_exact: Tensor) -> float:
    """RMS distance (E‖x − x_exact‖²)^{1/2} between paired samples, e.g. a solver's and the exact flow map's."""
    x, x_exact = _flat(x), _flat(x_exact).to(x.device)
    if x.shape != x_exact.shape:
        raise ValueError(f"x and x_exact must pair up, got shapes {tuple(x.shape)} and {tuple(x_exact.shape)}")
    return float((x - x_exact).pow(2).sum(1).mean().sqrt())
