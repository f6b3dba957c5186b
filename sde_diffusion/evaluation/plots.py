"""Figures the apps write: samples against the data (2-D scatter or image grids), the training loss curve and the
excess loss per noise level (diagnosis)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from ..data.datasets import Scaler  # noqa: E402

if TYPE_CHECKING:
    from .diagnosis import LevelError


def describe(data: str, sde: object, run: str | None = None) -> str:
    """A title line naming the data set, the SDE with its β(t) and, in a sweep, the run: what every figure shows."""
    schedule = getattr(sde, "schedule", None)
    if schedule is not None:
        sde_text = f"{type(sde).__name__}, β(t) = {getattr(schedule, 'name', type(schedule).__name__)}"
    else:
        sde_text = type(sde).__name__
    return " · ".join(p for p in (data, sde_text, run) if p)


def scatter_panels(
    samples: Mapping[str, Tensor], reference: Tensor, path: str | Path, title: str = "", max_points: int = 4000
) -> Path:
    """One scatter panel per entry of `samples` (its key the panel's title: sampler and NFE) plus the data
    `reference`, on shared, ticked axes under the figure `title`; vectors of more than two dimensions show their
    first two coordinates."""
    panels = {"data": reference, **samples}
    ref = reference.flatten(1)[:, :2].double()
    lo, hi = ref.min(0).values, ref.max(0).values
    pad = 0.15 * (hi - lo)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.2 * len(panels), 3.9), squeeze=False, sharey=True, layout="constrained"
    )  # fits the figure title above multi-line panel titles
    for ax, (name, x) in zip(axes[0], panels.items(), strict=True):
        xy = x.detach().flatten(1)[:max_points, :2].double().cpu().numpy()
        ax.scatter(xy[:, 0], xy[:, 1], s=1.5, alpha=0.5, color="C0" if name == "data" else "C1", rasterized=True)
        ax.set_title(name, fontsize=9)
        ax.set(xlim=(lo[0] - pad[0], hi[0] + pad[0]), ylim=(lo[1] - pad[1], hi[1] + pad[1]), xlabel="x₁")
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.2)
    axes[0, 0].set_ylabel("x₂")
    if title:  # above the figure's top edge (the saved image grows to hold it): the layout engine, which shrinks
        fig.suptitle(title, fontsize=9, y=1.01, va="bottom")  # equal-aspect axes after placing it, cannot overlap it
    return _save(fig, path)


def image_grid(
    x: Tensor,
    path: str | Path,
    title: str = "",
    nrow: int | None = None,
    scaler: Scaler | None = None,
    min_size: int = 512,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """A grid of images (n, C, H, W), `nrow` per row, 1 channel in grey, 3 in colour, upscaled by nearest neighbour to
    at least `min_size` pixels wide with a light separator between cells, under `title`, each row labelled on its
    left by `row_labels`. With the data's `scaler`, pixels map back to raw levels (scaler.to_raw) and are shown on
    [0, levels − 1]; without, model space [−1, 1] is shown."""
    x = x.detach().float().cpu()
    x = scaler.to_raw(x) / (scaler.levels - 1) if scaler is not None else (x + 1) / 2
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    k = max(1, math.ceil(min_size / (nrow * w)))  # integer upscaling keeps pixels square and sharp
    cells = x.clamp(0, 1).repeat_interleave(k, 2).repeat_interleave(k, 3)
    gap = max(1, k // 4)
    grid = torch.full((c, ncol * (h * k + gap) + gap, nrow * (w * k + gap) + gap), 0.85)  # light separators
    for i in range(n):
        r, q = divmod(i, nrow)
        top, left = gap + r * (h * k + gap), gap + q * (w * k + gap)
        grid[:, top : top + h * k, left : left + w * k] = cells[i]
    image = grid.permute(1, 2, 0).numpy()
    title = "\n".join(textwrap.fill(line, width=max(40, image.shape[1] // 7)) for line in title.splitlines())
    dpi, title_px = 100, 16 * (1 + title.count("\n")) + 14 if title else 0
    label_px = 8 + 7 * max(map(len, row_labels)) if row_labels else 0
    height, width = image.shape[:2]
    fig = plt.figure(figsize=((width + label_px) / dpi, (height + title_px) / dpi), dpi=dpi)
    ax = fig.add_axes((label_px / (width + label_px), 0, width / (width + label_px), height / (height + title_px)))
    ax.imshow(
        image[..., 0] if c == 1 else image, cmap="gray" if c == 1 else None, vmin=0, vmax=1, interpolation="nearest"
    )
    ax.axis("off")
    for r, label in enumerate(row_labels or []):
        ax.text(-4, gap + r * (h * k + gap) + h * k / 2, label, ha="right", va="center", fontsize=8)
    if title:
        fig.text(0.5, 1 - 0.5 * title_px / (height + title_px), title, ha="center", va="center", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)  # no tight box: the image keeps its exact pixel size
    plt.close(fig)
    return path


def loss_curve(
    steps: Sequence[int], losses: Sequence[float], path: str | Path, title: str = "", decay: float | None = None
) -> Path:
    """The logged training loss against the step, raw and smoothed by an exponential average of the plotted points
    (bias-corrected like Adam's moments, so it starts at the first loss; not the weights' EMA); `decay` defaults to
    an average over about 5% of the logged points, so the curve follows the loss instead of lagging behind it."""
    steps_a, losses_a = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
    decay = max(0.0, 1 - 20 / len(losses_a)) if decay is None else decay
    ema, smooth = 0.0, []
    for i, value in enumerate(losses_a, start=1):
        ema = decay * ema + (1 - decay) * value
        smooth.append(ema / (1 - decay**i) if decay > 0 else value)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(steps_a, losses_a, lw=0.8, alpha=0.4, label="loss (mean over each logging interval)")
    span = f"≈ {1 / (1 - decay):.0f} logged points" if decay > 0 else "none"
    ax.plot(steps_a, smooth, lw=1.6, label=f"smoothed for this plot: running average over {span}")
    if np.all(losses_a > 0):
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="DSM loss")
    ax.set_title("training loss" + (f"\n{title}" if title else ""), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def level_error_curves(curves: Mapping[int | str, LevelError], path: str | Path, title: str = "") -> Path:
    """score_error.png: the excess ε-MSE per dimension against λ (diagnosis.excess_loss_by_level), one curve (± 2 SE)
    per training step (int keys) or per run (str keys), log scale."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, c in curves.items():
        excess, se = np.asarray(c.excess), np.asarray(c.se)
        ax.plot(c.lam, excess, marker="o", ms=3, label=f"step {key}" if isinstance(key, int) else key)
        ax.fill_between(c.lam, np.maximum(excess - 2 * se, 1e-12), excess + 2 * se, alpha=0.2)
    ax.set(yscale="log", xlabel="λ = log(s/σ)  (noisy ← → clean)", ylabel="excess ε-MSE per dim  E‖ε̂ − ε̂*‖²/D")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # two-line titles stay inside the image
    plt.close(fig)
    return path
