"""Metrics against closed forms: SW₂ and MMD² of shifted Gaussians, mode weights, and the exact Gaussian flow map."""

import math

import pytest
import torch

from sde_diffusion import VESDE, VPSDE, GaussianMixture, eight_gaussians
from sde_diffusion.core.analytic import exact_flow_map
from sde_diffusion.core.metrics import energy_distance, flow_error, mmd2, mode_weight_error, sliced_wasserstein


def normal(n, mean, seed):
    return torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + mean


def test_sliced_wasserstein_of_a_shift_is_its_length_over_root_d():
    """W₂ between N(0, 1) and N(θᵀm, 1) is |θᵀm|, and E_θ (θᵀm)² = ‖m‖²/D on the sphere."""
    m = torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)
    x, y = normal(5000, torch.zeros(3), 0), normal(5000, m, 1)
    assert sliced_wasserstein(x, y, n_projections=1000) == pytest.approx(m.norm().item() / math.sqrt(3), rel=0.04)
    assert sliced_wasserstein(x, y, seed=3) == sliced_wasserstein(x, y, seed=3)
    assert sliced_wasserstein(x, x) == 0.0
    # unequal sizes compare quantiles
    assert sliced_wasserstein(x, y[:3000], n_projections=1000) == pytest.approx(m.norm().item() / 3**0.5, rel=0.04)


def test_mmd2_of_shifted_gaussians_matches_the_closed_form():
    """For N(μ₁, s²I), N(μ₂, s²I) and an RBF of bandwidth h in D dims, with c = (h²/(h² + 2s²))^{D/2}:
    MMD² = 2c(1 − exp(−‖μ₁ − μ₂‖²/(2(h² + 2s²)))) (Gaussian integrals)."""
    d, h = 2, 1.5
    m = torch.tensor([1.0, 0.5], dtype=torch.float64)
    c = (h**2 / (h**2 + 2)) ** (d / 2)
    closed = 2 * c * (1 - math.exp(-(m @ m).item() / (2 * (h**2 + 2))))
    x, y = normal(2000, torch.zeros(2), 0), normal(2000, m, 1)
    assert mmd2(x, y, bandwidths=[h]) == pytest.approx(closed, rel=0.1)
    same = [mmd2(normal(500, torch.zeros(2), s), normal(500, torch.zeros(2), s + 100)) for s in range(10)]
    assert abs(sum(same) / 10) < 3 * torch.tensor(same).std().item() / math.sqrt(10)  # unbiased: mean zero
    assert mmd2(x, y) > 10 * max(abs(v) for v in same)


def test_energy_distance_of_shifted_gaussians_matches_the_closed_form():
    """For N(a, 1) and N(b, 1) in 1-D, X − Y ~ N(a − b, 2) and X − X′ ~ N(0, 2), with E|N(m, s²)| =
    s√(2/π)e^{−m²/2s²} + m(1 − 2Φ(−m/s)) and 1 − 2Φ(−z) = erf(z/√2); the mean of 4 draws is within 4 standard
    errors."""

    def mean_abs(m, s):
        return s * math.sqrt(2 / math.pi) * math.exp(-(m**2) / (2 * s**2)) + m * math.erf(m / (s * math.sqrt(2)))

    closed = 2 * mean_abs(1.0, math.sqrt(2)) - 2 * mean_abs(0.0, math.sqrt(2))
    a, b = torch.tensor([0.0]), torch.tensor([1.0])
    runs = torch.tensor([energy_distance(normal(5000, a, s), normal(5000, b, s + 10)) for s in range(4)])
    se = runs.std().item() / 2
    assert se < 0.05 * closed
    assert runs.mean().item() == pytest.approx(closed, abs=4 * se)


def test_energy_distance_is_unbiased_symmetric_and_chunk_free():
    zero = torch.zeros(2)
    same = torch.tensor([energy_distance(normal(500, zero, s), normal(500, zero, s + 100)) for s in range(10)])
    assert abs(same.mean().item()) < 3 * same.std().item() / math.sqrt(10)  # U-statistics: mean zero
    x, y = normal(300, torch.zeros(3), 0), normal(200, torch.ones(3), 1)
    assert energy_distance(x, y) == pytest.approx(energy_distance(y, x), abs=1e-12)
    assert energy_distance(x, y, chunk=7) == pytest.approx(energy_distance(x, y), abs=1e-10)
    assert energy_distance(x, y) > 20 * same.abs().max().item()
    with pytest.raises(ValueError, match="samples"):
        energy_distance(x[:1], y)


def test_mode_weight_error_is_the_l1_between_assigned_and_true_weights():
    mix = eight_gaussians()
    counts = torch.tensor([30, 10, 10, 10, 10, 10, 10, 10])
    x = mix.means.repeat_interleave(counts, 0) + 0.01
    expected = (counts.double() / 100 - 0.125).abs().sum().item()
    assert mode_weight_error(mix, x) == pytest.approx(expected, abs=1e-12)


def test_flow_error_is_the_rms_distance():
    x = torch.zeros(4, 2)
    y = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert flow_error(x, y) == pytest.approx(math.sqrt(25 / 4))


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(sigma_max=5.0)], ids=["vp", "ve"])
def test_exact_flow_map_of_a_gaussian_keeps_the_standardised_variable(sde):
    """For N(μ, diag v) the PF-ODE map is affine: x_t = s_t μ + √(s_t² v + σ_t²) z, z fixed along the path."""
    mu, v = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.05, 2.0], dtype=torch.float64)
    mix = GaussianMixture(torch.ones(1), mu[None], torch.diag(v)[None])
    x_T = normal(64, torch.zeros(2), 0)
    T, t_min = torch.tensor([sde.T], dtype=torch.float64), torch.tensor([1e-3], dtype=torch.float64)

    def std(t):
        return (sde.scale(t) ** 2 * v + sde.sigma(t) ** 2).sqrt()

    z = (x_T - sde.scale(T) * mu) / std(T)
    expected = sde.scale(t_min) * mu + std(t_min) * z
    torch.testing.assert_close(exact_flow_map(sde, mix, x_T, 1e-3), expected, rtol=1e-7, atol=1e-7)
    denoised = exact_flow_map(sde, mix, x_T.float(), 1e-3, denoise=True)
    assert denoised.dtype == torch.float32
    tweedie = mu + v * sde.scale(t_min) / std(t_min) * z  # E[x₀ | x_{t_min}] = μ + v s (x − sμ)/(s²v + σ²)
    torch.testing.assert_close(denoised, tweedie.float(), rtol=1e-5, atol=1e-5)
