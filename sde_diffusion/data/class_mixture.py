"""A Gaussian mixture whose classes are groups of components, so that p(x | y) is itself a mixture and a guided
sampler can lose variety *within* a class: component j belongs to class j mod C (`classes`), and
`oracle.given_class(classes[y])` is the exact p(x | y) (the class's components, weights renormalised)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.analytic import mixture
from ..core.checks import ArgumentError
from .datasets import MixtureSet


class ClassMixtureData(MixtureSet):
    """The oracle's seeded random mixture `mixture(dim, k, seed)` labelled with C = `num_classes` classes of k/C
    components each: the label of a draw is its component index mod C."""

    def __init__(self, dim: int = 16, k: int = 12, num_classes: int = 4, seed: int = 0):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= k:
            raise ArgumentError("num_classes", num_classes, f"an int in [1, k={k}]")
        super().__init__(mixture(dim, k, seed))
        self.num_classes = num_classes
        self.classes = [list(range(c, k, num_classes)) for c in range(num_classes)]
        self._class_of = torch.arange(k) % num_classes

    def batch_with_labels(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n i.i.d. draws, float32, and their classes (component mod C), long."""
        x, k = self.oracle.sample_with_labels(n, generator)
        return x.float(), self._class_of[k]

    def class_of_components(self, components: Tensor) -> Tensor:
        """The class of each component index."""
        return self._class_of.to(components.device)[components]
