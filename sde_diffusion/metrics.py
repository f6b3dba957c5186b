"""Sample-quality metrics against a reference set or the exact Gaussian-mixture oracle.

Samples of any shape (n, …) are flattened to (n, D) and compared in float64.
"""

from __future__ import annotations

import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from .analytic import GaussianMixture
from .sde import SDE


def _flat(x: Tensor) -> Tensor:
    return x.detach().flatten(1).to(torch.float64)


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """SW₂(x, y) = (E_θ W₂²(θᵀx, θᵀy))^{1/2} over `n_projections` seeded directions θ on the sphere (Rabin et al.
    2011); the 1-D W₂ compares quantiles (sorted samples; interpolated when the sizes differ)."""
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
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


def exact_flow_map(
    sde: SDE,
    mixture: GaussianMixture,
    x_T: Tensor,
    eps: float,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    denoise: bool = False,
) -> Tensor:
    """x_T carried from T to eps by the probability-flow ODE (Song et al. 2021, eq. 13) of the exact mixture score.

    Solved in float64 by DOP853 (`scipy.integrate.solve_ivp`, on the CPU) to `rtol`/`atol`; with `denoise` also
    Tweedie's step at eps, to pair with samplers run with denoise=True. Returned in x_T's dtype and device.
    """
    score = mixture.score_fn(sde)
    shape = (x_T.shape[0], mixture.dim)

    def fun(t: float, y):
        x = torch.from_numpy(y).view(shape)
        tt = torch.full((shape[0],), t, dtype=torch.float64)
        drift = sde.f(tt)[:, None] * x - 0.5 * sde.g(tt)[:, None] ** 2 * score(x, tt)
        return drift.flatten().numpy()

    y0 = _flat(x_T).cpu().reshape(-1).numpy()
    sol = solve_ivp(fun, (sde.T, eps), y0, method="DOP853", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"exact_flow_map stopped at t={sol.t[-1]:.6g}: {sol.message}")
    x = torch.from_numpy(sol.y[:, -1]).view(shape)
    if denoise:
        te = torch.full((shape[0],), eps, dtype=torch.float64)
        x = (x + sde.sigma(te)[:, None] ** 2 * score(x, te)) / sde.scale(te)[:, None]
    return x.to(dtype=x_T.dtype, device=x_T.device).view(x_T.shape)
