"""Coverage of a class by its samples where no density is known (digits): the improved recall of Kynkäänniemi et al.
(2019, "Improved precision and recall metric for assessing generative models"), the share of the class's real
examples that lie in the k-NN balls of the samples, i.e. that have a sample near them; and the Fréchet distance of
Gaussians fitted to two sets (Heusel et al. 2017, FID's distance), here on the raw pixels (8×8 digits have no feature
network).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.checks import ArgumentError


def _flat(x: Tensor) -> Tensor:
    return x.detach().flatten(1).to(torch.float64).cpu()


def knn_radii(x: Tensor, k: int = 3) -> Tensor:
    """(n,) distance of each point of x to its k-th nearest other point of x."""
    x = _flat(x)
    if not 1 <= k < len(x):
        raise ArgumentError("k", k, f"in [1, {len(x) - 1}] for {len(x)} points")
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # the 0 to itself is the first


def recall(real: Tensor, samples: Tensor, k: int = 3) -> float:
    """Share of the real points within the k-NN ball of some sample: ‖x − g‖ ≤ NN_k(g) among the samples
    (Kynkäänniemi et al. 2019's recall: their precision with the two sets' roles swapped; k = 3 as in the paper)."""
    real, samples = _flat(real), _flat(samples)
    inside = torch.cdist(real, samples) <= knn_radii(samples, k)[None, :]
    return float(inside.any(1).double().mean())


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """‖μ_x − μ_y‖² + tr(Σ_x + Σ_y − 2(Σ_x Σ_y)^½) (Heusel et al. 2017) of the Gaussians fitted to x and y;
    tr (Σ_x Σ_y)^½ as Σ √eig(Σ_x^½ Σ_y Σ_x^½), which is symmetric positive semi-definite."""
    x, y = _flat(x), _flat(y)
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = torch.cov(x.T).reshape(x.shape[1], -1), torch.cov(y.T).reshape(y.shape[1], -1)
    vals, vecs = torch.linalg.eigh(cov_x)
    root_x = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root_x @ cov_y @ root_x).clamp(min=0).sqrt().sum()
    return float((mu_x - mu_y).square().sum() + cov_x.trace() + cov_y.trace() - 2 * cross)


def class_recall(real: Tensor, real_labels: Tensor, samples: Tensor, labels: Tensor, k: int = 3) -> list[float]:
    """Per class c, `recall` of the real examples of c by the samples asked for c."""
    real_labels, labels = real_labels.cpu(), labels.cpu()
    classes = sorted(set(labels.tolist()))
    return [recall(real[real_labels == c], samples[labels == c], k) for c in classes]
