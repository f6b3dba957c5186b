"""Where a run computes and how it is seeded: the device, and the global RNGs that model initialisation and
dropout draw from."""

from __future__ import annotations

import random

import numpy as np
import torch

from ..core.checks import ArgumentError


def resolve_device(device: str | torch.device) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; anything else as torch.device(device)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ArgumentError("device", device, "'auto' or a torch device: cpu, cuda, cuda:N, mps") from None


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global RNGs (model initialisation and dropout draw from them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global RNG is what user code shares)
    torch.manual_seed(seed)
