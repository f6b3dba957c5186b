"""EDM / k-diffusion interop against closed forms: the oracle's denoiser is the exact posterior mean E[x₀ | x₀ + σ̃ε]
of the mixture (the same for every SDE), the score from that posterior mean is the oracle's score, the round trip
is the identity, and k-diffusion's Euler sampler driven by the denoiser lands on the data."""

import pytest
import torch
from conftest import diffused

from sde_diffusion import VESDE, VPSDE, CosineBeta, SubVPSDE, eight_gaussians, mixture
from sde_diffusion.models.interop import as_denoiser, score_fn_from_denoiser

SDES = [VPSDE(), SubVPSDE(CosineBeta()), VESDE()]
ORACLE = mixture(dim=3, k=4, seed=2)


def posterior_mean(x, sigma):
    """E[x₀ | x̃ = x₀ + σ̃ε] for the mixture: Σ_k r_k(x̃) [μ_k + Σ_k(Σ_k + σ̃²I)⁻¹(x̃ − μ_k)] (Gaussian conditioning)."""
    eye = torch.eye(ORACLE.dim, dtype=torch.float64)
    cov = ORACLE.covs + sigma.reshape(-1, 1, 1, 1) ** 2 * eye  # (B, K, D, D)
    log_w = ORACLE.weights.log() + torch.distributions.MultivariateNormal(ORACLE.means, cov).log_prob(x[:, None])
    gain = ORACLE.covs @ torch.linalg.inv(cov)
    means = ORACLE.means + torch.einsum("bkij,bkj->bki", gain, x[:, None] - ORACLE.means)
    return (torch.softmax(log_w, -1).unsqueeze(-1) * means).sum(1)


def _noisy(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    sigma = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-3, 3.5, generator=g))  # σ̃ in [0.05, 33]
    return ORACLE.sample(n, g) + sigma[:, None] * torch.randn(n, ORACLE.dim, generator=g, dtype=torch.float64), sigma


@pytest.mark.parametrize("sde", SDES, ids=type)
def test_the_oracle_denoiser_is_the_exact_posterior_mean_under_every_sde(sde):
    x, sigma = _noisy()
    d = as_denoiser(ORACLE.score_fn(sde), sde)(x, sigma)
    assert torch.allclose(d, posterior_mean(x, sigma), rtol=0, atol=1e-9)


def _diffused(sde, seed):
    """200 points x_t ~ p_t at t from 10⁻³ to T."""
    t = torch.linspace(1e-3, sde.T, 200, dtype=torch.float64)
    return diffused(ORACLE, sde, t, 200, torch.Generator().manual_seed(seed))


def _error_in_eps(sde, x, t, score, dtype):
    """max σ²|score − exact| / (|x| eps): a score read off D(x̃) = x̃ + σ̃²s·score is exact to eps·|x|/σ² only."""
    exact = ORACLE.score_fn(sde)(x.double(), t)
    sigma2 = sde.sigma(t)[:, None] ** 2
    return (
        float(((score.double() - exact) * sigma2).norm(dim=1).div(x.double().norm(dim=1)).max())
        / torch.finfo(dtype).eps
    )


@pytest.mark.parametrize("sde", SDES, ids=type)
def test_the_score_of_the_exact_posterior_mean_is_the_oracle_score(sde):
    x, t = _diffused(sde, 1)
    score = score_fn_from_denoiser(posterior_mean, sde)(x, t)
    assert _error_in_eps(sde, x, t, score, torch.float64) < 64


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sde", SDES, ids=type)
def test_denoiser_round_trip_gives_back_the_score_to_rounding(sde, dtype):
    x, t = _diffused(sde, 2)
    x = x.to(dtype)
    back = score_fn_from_denoiser(as_denoiser(ORACLE.score_fn(sde), sde), sde)(x, t.to(dtype))
    assert back.dtype == dtype and _error_in_eps(sde, x, t, back, dtype) < 256


def test_image_shaped_batches_and_a_scalar_sigma():
    m, v = 0.3, 0.5  # data N(m, v) per pixel: E[x₀ | x̃] = m + v/(v + σ̃²)(x̃ − m)
    sde = VPSDE()

    def score(x, t):
        s, sigma = sde.scale(t).reshape(-1, 1, 1, 1), sde.sigma(t).reshape(-1, 1, 1, 1)
        return -(x - s * m) / (s**2 * v + sigma**2)

    x = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = as_denoiser(score, sde)
    sigma = torch.tensor([0.1, 1.0, 2.0, 5.0], dtype=torch.float64)
    assert torch.allclose(d(x, sigma), m + v / (v + sigma.reshape(-1, 1, 1, 1) ** 2) * (x - m), atol=1e-10)
    assert torch.equal(d(x, torch.tensor(2.0, dtype=torch.float64)), d(x, torch.full((4,), 2.0, dtype=torch.float64)))


def test_k_diffusion_euler_sampler_with_the_oracle_denoiser_lands_on_the_modes():
    """k_diffusion.sampling.sample_euler on Karras sigmas (ρ = 7), model(x, sigma * s_in), written out."""
    sde, oracle = VPSDE(), eight_gaussians()
    model = as_denoiser(oracle.score_fn(sde), sde)
    sigma_min, sigma_max, n, rho = 0.002, 80.0, 60, 7.0
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigmas[0]
    s_in = x.new_ones(x.shape[0])
    for i in range(n):
        denoised = model(x, sigmas[i] * s_in)
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    r = oracle.responsibilities(x)
    nearest = (x[:, None] - oracle.means).norm(dim=-1).min(1).values
    assert (nearest < 4 * 0.15).float().mean() > 0.99
    assert (r.mean(0) - 1 / 8).abs().max() < 0.02  # 4 000 draws: sd of a weight ≈ 0.005


@pytest.mark.parametrize("bad", [-0.1, 200.0, float("nan")])
def test_sigma_outside_the_sde_range_is_refused(bad):
    sde = VPSDE()
    d = as_denoiser(eight_gaussians().score_fn(sde), sde)
    with pytest.raises(ValueError, match=rf"^sigma={bad:.6g} .*\[0, 152\.") as e:
        d(torch.zeros(2, 2), torch.tensor([1.0, bad]))
    assert "\n" not in str(e.value)
