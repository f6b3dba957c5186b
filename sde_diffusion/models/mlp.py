"""A time-conditioned MLP for vectors: [x, features(τ) (+ label embedding)] -> hidden SiLU layers -> x's shape."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core.checks import ArgumentError
from .label_embedding import add_label, label_embedding
from .time_embedding import time_features as make_time_features


class MLP(nn.Module):
    """ε̂(x, τ) for flat data: the time features are concatenated to the input (as in score_sde's toy models).

    `shape` is one example's shape (any rank; it is flattened), `layers` the number of hidden layers. With
    `num_classes` a learned class embedding (plus the null label ∅) is added to the time features: ε̂(x, τ, y).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        hidden: int = 128,
        layers: int = 3,
        time_features: str = "fourier",
        time_dim: int = 64,
        num_classes: int | None = None,
    ):
        super().__init__()
        if hidden < 1 or layers < 1:
            bad = "hidden" if hidden < 1 else "layers"
            raise ArgumentError(bad, hidden if bad == "hidden" else layers, ">= 1")
        self.shape = tuple(shape)
        d = math.prod(self.shape)
        self.time = make_time_features(time_features, time_dim)
        dims = [d + time_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            blocks += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*blocks, nn.Linear(hidden, d))
        self.num_classes, self.label_emb = num_classes, label_embedding(num_classes, time_dim)

    def forward(self, x: Tensor, tau: Tensor, y: Tensor | None = None) -> Tensor:
        """ε̂ for x at times τ; a conditional network reads labels y (batch,), y = None meaning ∅."""
        emb = add_label(self, self.time(tau), y, x.shape[0])
        h = torch.cat([x.flatten(1), emb], 1)
        return self.net(h).view_as(x)
