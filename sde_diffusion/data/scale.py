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


def edm_p_mean(sigma_data: float) -> float:
    """EDM's P_mean moved with the data's scale: −1.2 + log(σ_d/0.5), so σ̃/σ_d keeps EDM's log-normal law."""
    return EDM_P_MEAN + math.log(sigma_data / EDM_SIGMA_DATA)
