"""An exponential moving average of the weights, decay min(β, (1 + n)/(10 + n)) at step n (score_sde's
models/ema.py), so that short runs do not keep the random initialisation in their average."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """`model` holds the averaged weights (a frozen copy of the trained module, in eval mode); buffers are copied."""

    def __init__(self, source: nn.Module, decay: float):
        self.model = copy.deepcopy(source).requires_grad_(False).eval()
        self.decay = decay
        self._averaged, self._trained = list(self.model.parameters()), list(source.parameters())
        self._buffers = list(zip(self.model.buffers(), source.buffers(), strict=True))

    @torch.no_grad()
    def update(self, step: int) -> None:
        """θ̄ ← d θ̄ + (1 − d) θ with d = min(decay, (1 + step)/(10 + step))."""
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self._averaged, self._trained, 1 - decay)
        for ema_buffer, buffer in self._buffers:
            ema_buffer.copy_(buffer)
