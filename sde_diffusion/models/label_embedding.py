"""A learned class embedding with a null label ∅, added to the time embedding (Ho & Salimans 2022)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.checks import ArgumentError


class LabelEmbedding(nn.Embedding):
    """Rows 0 … C − 1 embed the classes, row C the null label ∅ that classifier-free guidance's p(x) uses.

    Its parameter keeps nn.Embedding's name (`weight`), so a network's key for it is `<name>.weight`.
    """

    def __init__(self, num_classes: int, dim: int):
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ArgumentError("num_classes", num_classes, "an integer >= 1 or None (unconditional)")
        super().__init__(num_classes + 1, dim)
        self.num_classes = num_classes

    def forward(self, y: Tensor | None, n: int) -> Tensor:
        """The (n, dim) embeddings of labels y (n,) in {0, …, C}, or of ∅ for every row when y is None."""
        if y is None:
            y = torch.full((n,), self.num_classes, dtype=torch.long, device=self.weight.device)
        return super().forward(y)


def label_embedding(num_classes: int | None, dim: int) -> LabelEmbedding | None:
    """A network's class embedding of width `dim`, None for an unconditional network (num_classes None)."""
    return None if num_classes is None else LabelEmbedding(num_classes, dim)


def add_label(net: nn.Module, emb: Tensor, y: Tensor | None, n: int) -> Tensor:
    """The time embedding emb plus the class embedding of labels y (∅ for y = None) in a conditional `net`; a network
    built without `num_classes` refuses labels."""
    if net.label_emb is None:
        if y is not None:
            raise ValueError(f"{type(net).__name__} was built without num_classes (unconditional); got labels y")
        return emb
    return emb + net.label_emb(y, n)
