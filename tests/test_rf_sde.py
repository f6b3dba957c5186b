"""The rectified-flow path x_t = (1 − t)x₀ + tε as an SDE: its marginal against a Monte-Carlo simulation of its own
drift and diffusion, f and g² against s and σ, λ's inverse, and dλ/dt = −g²/(2σ²) for every SDE (noise_levels)."""

import pytest
import torch

from sde_diffusion import VESDE, VPSDE, CosineBeta, SubVPSDE
from sde_diffusion.core.analytic import GaussianMixture
from sde_diffusion.core.sde import RectifiedFlowSDE
from sde_diffusion.sampling import SampleSetup, sample


def test_marginal_matches_euler_maruyama_monte_carlo():
    """dx = f x dt + g dw from x₀ = 1.5 to t = 0.6: mean (1 − t)x₀ and variance t², inside 4 standard errors."""
    sde, g = RectifiedFlowSDE(), torch.Generator().manual_seed(0)
    n, steps, t_end = 40_000, 4000, 0.6
    x, dt = torch.full((n,), 1.5, dtype=torch.float64), t_end / steps
    for i in range(steps):
        t = torch.full((1,), i * dt, dtype=torch.float64)
        x = x + sde.f(t) * x * dt + sde.g(t) * dt**0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    mean, var = 1.5 * (1 - t_end), t_end**2
    assert abs(x.mean() - mean) < 4 * (var / n) ** 0.5
    assert abs(x.var() - var) < 4 * var * (2 / (n - 1)) ** 0.5


def test_drift_and_diffusion_are_derived_from_s_and_sigma():
    sde = RectifiedFlowSDE()
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64).requires_grad_(True)
    (dlog_s,) = torch.autograd.grad(torch.log(sde.scale(t)).sum(), t)
    (dvar,) = torch.autograd.grad((sde.sigma(t) ** 2).sum(), t)
    t = t.detach()
    torch.testing.assert_close(sde.scale(t), 1 - t)
    torch.testing.assert_close(sde.sigma(t), t)
    torch.testing.assert_close(sde.f(t), dlog_s)
    torch.testing.assert_close(sde.g(t) ** 2, dvar - 2 * sde.f(t) * sde.sigma(t) ** 2)
    torch.testing.assert_close(sde.log_snr_inverse(sde.log_snr(t)), t)


def test_t_must_stay_below_one():
    with pytest.raises(ValueError, match="T.*1.0"):
        RectifiedFlowSDE(T=1.0)


@pytest.mark.parametrize("sde", [VPSDE(CosineBeta()), SubVPSDE(), VESDE(0.01, 50.0), RectifiedFlowSDE()], ids=type)
def test_log_snr_derivative_is_minus_g2_over_2_sigma2(sde):
    t = torch.linspace(0.02, 0.98, 40, dtype=torch.float64).mul(sde.T).requires_grad_(True)
    (dlam,) = torch.autograd.grad(sde.log_snr(t).sum(), t)
    t = t.detach()
    torch.testing.assert_close(dlam, -(sde.g(t) ** 2) / (2 * sde.sigma(t) ** 2))


def test_probability_flow_of_the_exact_score_transports_the_prior_to_the_data():
    """The samplers work on the path unchanged: the probability-flow ODE (rk45) of the oracle's exact score reaches
    the data's mean and covariance (a 2-D Gaussian), within 4 standard errors of 20 000 draws (var: 0.5·√(2/n))."""
    sde = RectifiedFlowSDE()
    gm = GaussianMixture(torch.ones(1), torch.tensor([[1.0, -2.0]]), torch.tensor([[[0.5, 0.2], [0.2, 0.3]]]))
    x = sample(
        sde,
        gm.score_fn(sde),
        (20_000, 2),
        sampler="rk45",
        setup=SampleSetup(generator=torch.Generator().manual_seed(0), dtype=torch.float64),
    ).x
    torch.testing.assert_close(x.mean(0), gm.means[0], atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), gm.covs[0], atol=0.02, rtol=0)
