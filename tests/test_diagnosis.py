"""The per-λ excess loss over the exact score (sde_diffusion.diagnosis) against known errors of the oracle's score."""

import torch

from sde_diffusion import VPSDE, CosineBeta
from sde_diffusion.analytic import mixture
from sde_diffusion.diagnosis import excess_loss_by_level, plot_level_errors


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
    assert max(none.excess) == 0 and len(zero.lam) == 6
    assert all(sde.log_snr(torch.tensor([sde.T])) < lam < sde.log_snr(torch.tensor([1e-5])) for lam in zero.lam)


def test_plot_has_one_curve_per_step(tmp_path):
    sde, gm = VPSDE(), mixture(dim=2, k=2)
    curves = {k: excess_loss_by_level(sde, lambda x, t: 0 * x, gm, bins=4, per_bin=50) for k in (100, 200)}
    assert plot_level_errors(curves, tmp_path / "score_error.png").read_bytes()[:4] == b"\x89PNG"
