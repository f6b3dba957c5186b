"""An exact oracle: a Gaussian mixture, its density, and its exact score under every SDE here.

Under a linear SDE x_t = s(t)x_0 + σ(t)ε, so each component N(μ_k, Σ_k) of the data stays Gaussian:
N(s μ_k, s²Σ_k + σ²I). With Σ_k = U_k diag(λ_k) U_kᵀ the diffused covariance is U_k diag(s²λ_k + σ²) U_kᵀ,
so its inverse and log-determinant cost one projection, at every t, with no factorisation per step.
Everything is computed in float64 and returned in the input's dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .sde import SDE, ScoreFn


class GaussianMixture:
    """p(x) = Σ_k w_k N(x; μ_k, Σ_k) with full covariances."""

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.covs.shape != (k, d, d):
            raise ValueError(
                f"shapes disagree: weights {tuple(self.weights.shape)}, means {tuple(self.means.shape)}, "
                f"covs {tuple(self.covs.shape)}; expected (K,), (K, D), (K, D, D)"
            )
        if not bool((self.weights > 0).all()) or abs(float(self.weights.sum()) - 1) > 1e-9:
            raise ValueError("weights must be positive and sum to 1")
        self._eigvals, self._eigvecs = torch.linalg.eigh(self.covs)
        if not bool((self._eigvals > 0).all()):
            raise ValueError("covs must be symmetric positive definite")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws, float64, shape (n, D)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        root = self._eigvecs * self._eigvals.sqrt().unsqueeze(-2)  # U √Λ
        return self.means[k] + torch.einsum("nij,nj->ni", root[k], z)

    def _diffused(self, x: Tensor, s: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Per-component log w_k N(x; sμ_k, s²Σ_k + σ²I) and the precision-weighted residual C_k⁻¹(x − sμ_k)."""
        x = x.to(torch.float64)
        weights, means, eigvals, eigvecs = (
            p.to(x.device) for p in (self.weights, self.means, self._eigvals, self._eigvecs)
        )
        s, sigma = s.to(x).reshape(-1, 1, 1), sigma.to(x).reshape(-1, 1, 1)
        var = s**2 * eigvals + sigma**2  # (B, K, D): eigenvalues of C_k(t)
        y = torch.einsum("kdj,bkd->bkj", eigvecs, x[:, None, :] - s * means)  # U_kᵀ(x − sμ_k)
        log_n = -0.5 * ((y**2 / var).sum(-1) + var.log().sum(-1) + self.dim * math.log(2 * math.pi))
        residual = torch.einsum("kdj,bkj->bkd", eigvecs, y / var)
        return weights.log() + log_n, residual

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x), shape (batch,)."""
        one = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        log_wn, _ = self._diffused(x, one, torch.zeros_like(one))
        return torch.logsumexp(log_wn, -1).to(x.dtype)

    def marginal(self, sde: SDE, t: float) -> GaussianMixture:
        """p_t, the mixture diffused by `sde` to time t: components N(s μ_k, s²Σ_k + σ²I)."""
        tt = torch.tensor([t], dtype=torch.float64)
        s, sigma = float(sde.scale(tt)), float(sde.sigma(tt))
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, s * self.means, s**2 * self.covs + sigma**2 * eye)

    def score_fn(self, sde: SDE) -> ScoreFn:
        """The exact score ∇_x log p_t(x) = −Σ_k r_k(x) C_k(t)⁻¹(x − s μ_k), r_k the responsibilities."""

        def score(x: Tensor, t: Tensor) -> Tensor:
            t = t.to(torch.float64).expand(x.shape[0])
            log_wn, residual = self._diffused(x, sde.scale(t), sde.sigma(t))
            r = torch.softmax(log_wn, -1)
            return -(r.unsqueeze(-1) * residual).sum(1).to(x.dtype)

        return score

    def responsibilities(self, x: Tensor) -> Tensor:
        """r_k(x) = p(k | x), shape (batch, K)."""
        one = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        log_wn, _ = self._diffused(x, one, torch.zeros_like(one))
        return torch.softmax(log_wn, -1)


def eight_gaussians(radius: float = 4.0, std: float = 0.15) -> GaussianMixture:
    """Eight equal-weight isotropic Gaussians on a circle: the standard 2-D toy set."""
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    means = radius * torch.stack([angles.cos(), angles.sin()], 1)
    covs = std**2 * torch.eye(2, dtype=torch.float64).expand(8, 2, 2)
    return GaussianMixture(torch.full((8,), 1 / 8, dtype=torch.float64), means, covs)


def mixture(dim: int = 16, k: int = 10, seed: int = 0) -> GaussianMixture:
    """A seeded random mixture with anisotropic covariances (eigenvalues log-uniform in [0.01, 1])."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.5
    means = 3.0 * torch.randn(k, dim, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(k, dim, dim, generator=g, dtype=torch.float64))
    eig = torch.exp(torch.empty(k, dim, dtype=torch.float64).uniform_(math.log(0.01), 0.0, generator=g))
    covs = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    return GaussianMixture(weights / weights.sum(), means, 0.5 * (covs + covs.transpose(1, 2)))
