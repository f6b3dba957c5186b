"""The NaN guard: a non-finite loss or gradient norm is caught before the optimiser touches the weights.
nan_policy "stop" raises NonFiniteLossError naming the step and the likely cause; "skip" drops the update."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

NAN_POLICIES = ("stop", "skip")


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm of a step is NaN or infinite; the weights are those before the step."""


def diagnose(x0: Tensor, model: nn.Module, loss: float, grad_norm: float, lr: float, clip: bool, step: int) -> str:
    """One line: what was non-finite at step `step` + 1, and its likely cause (the data, the weights, divergence)."""
    what = "loss" if not math.isfinite(loss) else "gradient norm"
    if not bool(torch.isfinite(x0).all()):
        cause = "the data batch contains NaN/Inf values: check the data set"
    elif not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        cause = "the weights are already non-finite"
    else:
        cause = f"the training diverged: lower the learning rate (lr={lr:.3g})" + ("" if clip else " or set grad_clip")
    return (
        f"non-finite {what} at step {step + 1} (loss={loss}, grad_norm={grad_norm}); likely cause: {cause}; "
        f"the weights are those after step {step}; nan_policy='skip' skips such steps instead"
    )
