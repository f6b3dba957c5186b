"""The per-λ excess loss over the exact score (evaluation.diagnosis) against known errors of the oracle's score
and the closed form of a Gaussian's, and its figure (plots.level_error_curves) against the curves it was given."""

import math

import torch

from sde_diffusion import VPSDE, CosineBeta
from sde_diffusion.core.analytic import GaussianMixture, mixture
from sde_diffusion.evaluation import plots as plots_module
from sde_diffusion.evaluation.diagnosis import excess_loss_by_level
from sde_diffusion.evaluation.plots import level_error_curves


def test_excess_is_zero_for_the_exact_score_and_a2_times_the_eps_power_for_a_scaled_one():
    """ε̂ = (1 + a)ε̂* has excess a²·E‖ε̂*‖²/D at every λ, and the zero score has excess E‖ε̂*‖²/D: on the same
    draws (same seed) their ratio is a² in every bin, and the exact score's excess is 0."""
    sde, gm, a = VPSDE(CosineBeta()), mixture(dim=4, k=3), 0.1
    exact = gm.score_fn(sde)

    def run(fn):
        return excess_loss_by_level(sde, fn, gm, bins=6, per_bin=200, generator=torch.Generator().manual_seed(0),
                                    dtype=torch.float64)  # fmt: skip

    zero, scaled, none = run(lambda x, t: 0 * x), run(lambda x, t: (1 + a) * exact(x, t)), run(exact)
    f64 = torch.float64
    torch.testing.assert_close(
        torch.tensor(scaled.excess, dtype=f64), a**2 * torch.tensor(zero.excess, dtype=f64), rtol=1e-9, atol=0
    )
    assert max(none.excess) == 0


def test_each_bins_excess_of_the_zero_score_is_a_gaussians_closed_form_over_that_bin():
    """For x₀ ~ N(μ, diag v), E[ε | x_t] = σ(s²v + σ²)⁻¹(x_t − sμ), so the zero score's excess at λ is
    E‖ε̂*‖²/D = (1/D) Σ_i 1/(1 + e^{2λ}v_i), whose mean over λ uniform on a bin [a, b] is
    (1/(D(b − a))) Σ_i [λ − ½ log(1 + v_i e^{2λ})]_a^b: bins placed or filled at the wrong λ fail it."""
    sde, t_min, bins = VPSDE(CosineBeta()), 1e-3, 8
    v = torch.tensor([0.05, 0.5, 3.0], dtype=torch.float64)
    gauss = GaussianMixture(torch.ones(1), torch.tensor([[1.0, -0.5, 0.3]]), torch.diag(v)[None])
    res = excess_loss_by_level(sde, lambda x, t: 0 * x, gauss, t_min, bins=bins, per_bin=4000,
                               generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # fmt: skip
    lo = float(sde.log_snr(torch.tensor(sde.T, dtype=torch.float64)))
    hi = float(sde.log_snr(torch.tensor(t_min, dtype=torch.float64)))
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)

    def antiderivative(lam):
        return (lam - 0.5 * torch.log1p(v * math.exp(2 * lam))).sum() / len(v)

    for k in range(bins):
        a, b = float(edges[k]), float(edges[k + 1])
        expected = float(antiderivative(b) - antiderivative(a)) / (b - a)
        assert abs(res.lam[k] - (a + b) / 2) < 1e-9, (k, res.lam[k], (a + b) / 2)
        assert abs(res.excess[k] - expected) < 4 * res.se[k], (k, res.excess[k], expected, res.se[k])


def test_the_figure_draws_each_curve_at_its_lambdas_with_its_label(tmp_path, monkeypatch):
    sde, gm = VPSDE(), mixture(dim=2, k=2)
    curves = {k: excess_loss_by_level(sde, lambda x, t, c=k / 100: c * x, gm, bins=4, per_bin=50) for k in (100, 200)}
    curves["a run"] = curves[100]
    figures = []
    monkeypatch.setattr(plots_module, "_save", lambda fig, path: figures.append(fig) or path)
    assert level_error_curves(curves, tmp_path / "score_error.png") == tmp_path / "score_error.png"
    (ax,) = figures[0].axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["step 100", "step 200", "a run"]
    for line, c in zip(lines, curves.values(), strict=True):
        assert list(line.get_xdata()) == c.lam and list(line.get_ydata()) == c.excess
    assert ax.get_yscale() == "log"
