"""Figures: the scatter figure's title sits above its panels' (multi-line) titles, for square data too, whose
equal-aspect panels fill the figure's height."""

import matplotlib.pyplot as plt
import pytest
import torch

from sde_diffusion.data import EightGaussians
from sde_diffusion.evaluation import plots


@pytest.mark.parametrize("square", [True, False])
def test_the_figure_title_does_not_overlap_the_panel_titles(square, tmp_path, monkeypatch):
    x = EightGaussians().batch(2000, torch.Generator().manual_seed(0))
    x = x if square else x * torch.tensor([1.0, 0.5])
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to measure it
    panels = {"euler_maruyama: 1001 NFE\nNLL excess +0.03 ± 0.01\nmode-weight error 0.030": x}
    plots.scatter_panels(panels, x, tmp_path / "samples.png", "EightGaussians · VPSDE, β(t) = cosine (s = 0.008)")
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    title = fig.get_suptitle() and fig._suptitle.get_window_extent(renderer)
    tops = [ax.title.get_window_extent(renderer).y1 for ax in fig.axes]
    assert title and title.y0 >= max(tops)
