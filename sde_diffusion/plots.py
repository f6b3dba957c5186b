"""Figures the apps write: samples against the data (2-D scatter or image grids) and the training loss curve."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402


def scatter_panels(samples: Mapping[str, Tensor], reference: Tensor, path: str | Path, max_points: int = 4000) -> Path:
    """One scatter panel per entry of `samples` plus the data `reference`, same axes; vectors of more than
    two dimensions show their first two coordinates."""
    panels = {"data": reference, **samples}
    ref = reference.flatten(1)[:, :2].double()
    lo, hi = ref.min(0).values, ref.max(0).values
    pad = 0.15 * (hi - lo)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, x) in zip(axes[0], panels.items(), strict=True):
        xy = x.detach().flatten(1)[:max_points, :2].double().cpu().numpy()
        ax.scatter(xy[:, 0], xy[:, 1], s=1.5, alpha=0.5, color="C0" if title == "data" else "C1", rasterized=True)
        ax.set_title(title, fontsize=9)
        ax.set(xlim=(lo[0] - pad[0], hi[0] + pad[0]), ylim=(lo[1] - pad[1], hi[1] + pad[1]))
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def image_grid(x: Tensor, path: str | Path, title: str = "", nrow: int | None = None, scaler=None) -> Path:
    """A grid of images (n, C, H, W), 1 channel in grey, 3 in colour. With the data's `scaler`, pixels map back to
    raw levels (scaler.to_raw) and are shown on [0, levels − 1]; without, model space [−1, 1] is shown."""
    x = x.detach().float().cpu()
    x = scaler.to_raw(x) / (scaler.levels - 1) if scaler is not None else (x + 1) / 2
    x = x.clamp(0, 1)
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.zeros(c, ncol * (h + 1) + 1, nrow * (w + 1) + 1)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = x[i]
    image = grid.permute(1, 2, 0).numpy()
    fig, ax = plt.subplots(figsize=(0.4 * nrow + 0.6, 0.4 * ncol + 0.8))
    ax.imshow(image[..., 0] if c == 1 else image, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return _save(fig, path)


def loss_curve(steps: Sequence[int], losses: Sequence[float], path: str | Path, smooth: int = 20) -> Path:
    """The logged training loss against the step on a log axis, with a running mean over `smooth` points."""
    steps_a, losses_a = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps_a, losses_a, lw=0.8, alpha=0.4, label="logged")
    if len(losses_a) >= smooth > 1:
        kernel = np.ones(smooth) / smooth
        ax.plot(steps_a[smooth - 1 :], np.convolve(losses_a, kernel, mode="valid"), lw=1.5, label=f"mean of {smooth}")
    if np.all(losses_a > 0):
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="DSM loss", title="training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # two-line titles stay inside the image
    plt.close(fig)
    return path
