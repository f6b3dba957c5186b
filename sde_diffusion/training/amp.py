"""Mixed precision (Micikevicius et al. 2018): the loss's forward pass under torch.autocast in bf16 or fp16 while
weights, optimiser and EMA stay float32; fp16 scales the loss with a GradScaler, whose overflow steps are skipped."""

from __future__ import annotations

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtype of the loss


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """torch.autocast at `precision` on `device`'s type; disabled for fp32."""
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A GradScaler for fp16, a disabled one (every call a pass-through) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
