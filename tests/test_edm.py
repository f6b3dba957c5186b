"""EDM's sampler against closed forms: Alg. 1 (no churn) step for step with an independent Heun in (σ̃, x̃) on the
mixture's exact denoiser, second order to the exact flow map, and churn that keeps the exact marginals."""

import pytest
import torch

from sde_diffusion import VESDE, VPSDE, GaussianMixture, SubVPSDE, eight_gaussians
from sde_diffusion.core.analytic import exact_flow_map
from sde_diffusion.core.metrics import flow_error
from sde_diffusion.sampling import SampleSetup, sample, timesteps

SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE()}
MIX = eight_gaussians()


def posterior_mean(mix: GaussianMixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x₀ | x̃ = x₀ + σ̃ε] for mixture data: Σ_k r_k(x̃)(μ_k + Σ_k(Σ_k + σ̃²I)⁻¹(x̃ − μ_k)), by Gaussian conditioning."""
    cov = mix.covs + sigma**2 * torch.eye(mix.dim, dtype=torch.float64)
    dist = torch.distributions.MultivariateNormal(mix.means, cov)
    r = torch.softmax(dist.log_prob(x[:, None]) + mix.weights.log(), -1)
    means = mix.means + torch.einsum("kij,kjl,nkl->nki", mix.covs, torch.linalg.inv(cov), x[:, None] - mix.means)
    return (r[..., None] * means).sum(1)


@pytest.mark.parametrize("name", SDES)
def test_no_churn_is_karras_alg1_heun_in_sigma(name):
    sde = SDES[name]
    x_T = sde.prior_sampling((64, 2), generator=torch.Generator().manual_seed(0)).double()
    got = sample(
        sde, MIX.score_fn(sde), (64, 2), "edm", 6, s_churn=0.0, setup=SampleSetup(x_T=x_T, dtype=torch.float64)
    ).x
    t = timesteps(sde, 6, 1e-3, "karras")
    sigma, s_T = torch.exp(-sde.log_snr(t)).tolist(), float(sde.scale(t[:1]))
    x = x_T / s_T
    for s, s_next in zip(sigma[:-1], sigma[1:], strict=True):  # Alg. 1: Heun on dx̃/dσ̃ = (x̃ − D)/σ̃
        d = (x - posterior_mean(MIX, x, s)) / s
        x_next = x + (s_next - s) * d
        x = x + (s_next - s) * 0.5 * (d + (x_next - posterior_mean(MIX, x_next, s_next)) / s_next)
    torch.testing.assert_close(got, posterior_mean(MIX, x, sigma[-1]), rtol=1e-8, atol=1e-8)  # + Euler to σ̃ = 0


@pytest.mark.parametrize("name", SDES)
def test_no_churn_converges_to_the_exact_flow_at_second_order(name):
    sde = SDES[name]
    x_T = sde.prior_sampling((500, 2), generator=torch.Generator().manual_seed(1)).double()
    exact = exact_flow_map(sde, MIX, x_T, 1e-3, denoise=True)
    errs = [
        flow_error(
            sample(
                sde, MIX.score_fn(sde), (500, 2), "edm", n, s_churn=0.0, setup=SampleSetup(x_T=x_T, dtype=torch.float64)
            ).x,
            exact,
        )
        for n in (10, 20, 40)
    ]
    assert all(3.2 < a / b < 8 for a, b in zip(errs, errs[1:], strict=False)), errs


@pytest.mark.parametrize("churn", [0.5, 2.0, 40.0])
def test_churn_keeps_the_exact_marginal_of_point_data(churn):
    """Data at 0: D = 0, so a step is x̃ ← (x̃ + √(σ̂² − σ̃²) z)·σ̃'/σ̂, which maps N(0, σ̃²) onto N(0, σ̃'²) exactly:
    whatever the churn, x at eps has variance σ(eps)² (Monte Carlo, 4 standard errors)."""
    point = GaussianMixture(torch.ones(1), torch.zeros(1, 1), torch.full((1, 1, 1), 1e-12))
    sde, n = VPSDE(), 200_000
    x = sample(
        sde,
        point.score_fn(sde),
        (n, 1),
        "edm",
        5,
        denoise=False,
        s_churn=churn,
        setup=SampleSetup(dtype=torch.float64, generator=torch.Generator().manual_seed(2)),
    ).x
    var = float(sde.sigma(torch.tensor([1e-3], dtype=torch.float64))) ** 2
    assert abs(x.var().item() - var) < 4 * var * (2 / n) ** 0.5
