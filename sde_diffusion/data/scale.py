"""The data's scale σ_d and EDM's hyper-parameters moved with it (Karras et al. 2022, §5 and Table 1).

EDM's σ_d is the per-dimension standard deviation of the training data, σ_d² = tr Σ/D for data of covariance Σ in D
dimensions; its P_mean = −1.2 is for images scaled to [−1, 1], σ_d = 0.5. For data of another scale the log-normal
density of log σ̃ moves with log σ_d, P_mean(σ_d) = −1.2 + log(σ_d/0.5), as docs/training.md does by hand.
"""

from __future__ import annotations

import math
from typing import Any

import torch

EDM_SIGMA_DATA = 0.5  # EDM's σ_d, images in [−1, 1]
EDM_P_MEAN = -1.2  # EDM's P_mean at that σ_d


def data_std(data: Any, n: int = 65536, seed: int = 0, chunk: int = 8192) -> float:
    """σ_d = √(mean over dimensions of Var x_d) of `n` training draws `data.batch(·, generator)` from a generator of
    its own (seeded `seed`, so the training stream is untouched), in chunks of `chunk`, summed in float64."""
    gen = torch.Generator().manual_seed(seed)
    total, sq, count = 0.0, 0.0, 0
    while count < n:
        x = data.batch(min(chunk, n - count), gen).flatten(1).double()
        total, sq, count = total + x.sum(0), sq + x.square().sum(0), count + len(x)
    mean = total / count
    var = sq / count - mean.square()
    return math.sqrt(float(var.mean()))


def isotropy_gap(data: Any, n: int = 16384, seed: int = 0, max_dim: int = 256) -> float | None:
    """‖E[x xᵀ]/σ_d² − I‖_F/√D over `n` draws, σ_d² = tr E[x xᵀ]/D: 0 when c_skip·x̃ with σ_d = the data's std is the
    best linear denoiser (zero mean, covariance σ_d²I), where EDM's loss of F ≡ 0 is 1 at every σ̃ and the network
    starts on a plateau (docs/training.md); None for data of more than `max_dim` dimensions (not computed)."""
    x = data.batch(n, torch.Generator().manual_seed(seed)).flatten(1).double()
    if x.shape[1] > max_dim:
        return None
    second = x.T @ x / len(x)
    scaled = second / (torch.trace(second) / x.shape[1])
    return float(torch.linalg.matrix_norm(scaled - torch.eye(x.shape[1], dtype=x.dtype)) / math.sqrt(x.shape[1]))


def edm_p_mean(sigma_data: float) -> float:
    """EDM's P_mean moved with the data's scale: −1.2 + log(σ_d/0.5), so σ̃/σ_d keeps EDM's log-normal law."""
    return EDM_P_MEAN + math.log(sigma_data / EDM_SIGMA_DATA)
