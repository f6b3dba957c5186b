"""Inpainting masks (`half`, `box`, `random`): which coordinates of one example, (D,) or (C, H, W), a measurement
observes (True; a pixel in all its channels). `sampling.inverse` measures y = A x + noise, A = I[mask.flatten()].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.checks import ArgumentError, check_choice, check_number

SIDES = ("top", "bottom", "left", "right")


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(shape)
    if len(shape) not in (1, 3) or math.prod(shape) < 2:
        raise ArgumentError("shape", shape, "(D,) or (C, H, W) with at least two coordinates")
    return shape


def _both(mask: Tensor, kind: str) -> Tensor:
    """`mask` if it observes some coordinates and leaves some missing; else ArgumentError naming the shape."""
    if bool(mask.all()) or not bool(mask.any()):
        raise ArgumentError("shape", tuple(mask.shape), f"large enough for a {kind} mask to observe some but not all")
    return mask


def half(shape: tuple[int, ...], side: str = "top") -> Tensor:
    """The first ⌈D/2⌉ coordinates of a vector observed, or the `side` half of an image (rows or columns)."""
    shape = _check_shape(shape)
    check_choice("side", side, SIDES)
    mask = torch.zeros(shape, dtype=torch.bool)
    if len(shape) == 1:
        mask[: math.ceil(shape[0] / 2)] = True
        return _both(mask, "half")
    _, h, w = shape
    rows, cols = slice(None), slice(None)
    if side in ("top", "bottom"):
        rows = slice(None, math.ceil(h / 2)) if side == "top" else slice(h // 2, None)
    else:
        cols = slice(None, math.ceil(w / 2)) if side == "left" else slice(w // 2, None)
    mask[:, rows, cols] = True
    return _both(mask, "half")


def box(shape: tuple[int, ...], size: float = 0.5) -> Tensor:
    """Everything observed but a centred box of `size` (a fraction in (0, 1)) of each side, at least one coordinate
    per side."""
    shape = _check_shape(shape)
    check_number("size", size, gt=0, lt=1)
    mask = torch.ones(shape, dtype=torch.bool)
    cut = []
    for n in shape[-2:] if len(shape) == 3 else shape:
        k = min(n - 1, max(1, round(size * n)))  # at least one coordinate missing and one observed per side
        cut.append(slice((n - k) // 2, (n - k) // 2 + k))
    mask[(slice(None), *cut) if len(shape) == 3 else cut[0]] = False
    return _both(mask, "box")


def random(shape: tuple[int, ...], fraction: float = 0.5, seed: int = 0) -> Tensor:
    """Each coordinate (each pixel, in all channels) observed with probability `fraction` ∈ (0, 1), drawn with
    `seed`; a draw that observes all or nothing is redrawn."""
    shape = _check_shape(shape)
    check_number("fraction", fraction, gt=0, lt=1)
    check_number("seed", seed, integer=True, ge=0)
    cells = shape if len(shape) == 1 else shape[1:]
    if math.prod(cells) < 2:
        raise ArgumentError("shape", shape, "large enough for a random mask: at least two pixels")
    generator = torch.Generator().manual_seed(seed)
    while True:
        mask = torch.rand(cells, generator=generator) < fraction
        if bool(mask.any()) and not bool(mask.all()):
            return mask.expand(shape).clone()


def measurement_matrix(mask: Tensor) -> Tensor:
    """A = I[mask.flatten()], (m, D) float64: A x reads the m observed coordinates of x flattened."""
    return torch.eye(mask.numel(), dtype=torch.float64)[mask.flatten()]
