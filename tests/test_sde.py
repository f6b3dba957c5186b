"""The SDEs against closed forms and a Monte-Carlo simulation of their own drift and diffusion."""

import pytest
import torch

from sde_diffusion import VESDE, VPSDE, CosineBeta, LinearBeta, SubVPSDE

SDES = {
    "vp_linear": lambda: VPSDE(LinearBeta()),
    "vp_cosine": lambda: VPSDE(CosineBeta()),
    "subvp_linear": lambda: SubVPSDE(LinearBeta()),
    "subvp_cosine": lambda: SubVPSDE(CosineBeta()),
    "ve": lambda: VESDE(0.01, 50.0),
}


@pytest.mark.parametrize("name", SDES)
def test_marginal_matches_euler_maruyama_monte_carlo(name):
    """Simulate dx = f(t)x dt + g(t) dw on a fine grid from x₀ = 1.5: the mean s(t)x₀ and the variance σ(t)² of
    eq. 29 hold inside 4 standard errors."""
    sde = SDES[name]()
    g = torch.Generator().manual_seed(0)
    n, steps, t_end, x0 = 40_000, 4000, 0.6, 1.5
    x, dt = torch.full((n,), x0, dtype=torch.float64), t_end / steps
    for i in range(steps):
        t = torch.full((1,), i * dt, dtype=torch.float64)
        x = x + sde.f(t) * x * dt + sde.g(t) * dt**0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    t_end = torch.tensor([t_end], dtype=torch.float64)
    mean, var = sde.scale(t_end) * x0, sde.sigma(t_end) ** 2
    se_mean = (var / n) ** 0.5
    se_var = var * (2 / (n - 1)) ** 0.5
    assert abs(x.mean() - mean) < 4 * se_mean
    assert abs(x.var() - var) < 4 * se_var


@pytest.mark.parametrize("schedule", [LinearBeta(), CosineBeta()])
def test_vp_preserves_variance_and_subvp_std(schedule):
    t = torch.linspace(1e-4, 1, 101, dtype=torch.float64)
    vp, subvp = VPSDE(schedule), SubVPSDE(schedule)
    torch.testing.assert_close(vp.scale(t) ** 2 + vp.sigma(t) ** 2, torch.ones_like(t), atol=1e-12, rtol=0)
    torch.testing.assert_close(subvp.sigma(t), 1 - torch.exp(-schedule.integral(t)), atol=1e-12, rtol=0)
    assert torch.all(subvp.sigma(t) <= vp.sigma(t))


def test_subvp_diffusion_is_song_eq_12():
    sched = LinearBeta()
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    expected = (sched.beta(t) * (1 - torch.exp(-2 * sched.integral(t)))).sqrt()
    torch.testing.assert_close(SubVPSDE(sched).g(t), expected)


def test_ve_sigma_and_diffusion():
    sde = VESDE(0.01, 50.0)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    geometric = 0.01 * (50.0 / 0.01) ** t
    torch.testing.assert_close(sde.sigma(t) ** 2, geometric**2 - 0.01**2)
    # g² = dσ²/dt for a driftless SDE.
    t.requires_grad_(True)
    (dvar,) = torch.autograd.grad((sde.sigma(t[1:]) ** 2).sum(), t)
    torch.testing.assert_close(dvar[1:], sde.g(t[1:].detach()) ** 2)
    assert abs(sde.prior_std**2 - sde.sigma(torch.ones(1, dtype=torch.float64)) ** 2) < 1e-9


@pytest.mark.parametrize("name", SDES)
def test_prior_logp_is_normal_log_density(name):
    sde = SDES[name]()
    z = sde.prior_sampling((7, 3, 4, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), ref)
    assert sde.prior_logp(z).shape == (7,)


@pytest.mark.parametrize("name", SDES)
def test_any_rank_and_log_snr_inverse(name):
    """Images (batch, C, H, W): the drift and Tweedie's E[x₀ | x_t] broadcast per example; λ⁻¹(λ(t)) = t."""
    sde = SDES[name]()
    x, score = torch.randn(5, 3, 8, 8, dtype=torch.float64), torch.randn(5, 3, 8, 8, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    for i in range(5):
        ti = t[i : i + 1]
        f, g2, s, sigma = sde.f(ti), sde.g(ti) ** 2, sde.scale(ti), sde.sigma(ti)
        torch.testing.assert_close(sde.reverse_drift(x, t, score)[i], f * x[i] - g2 * score[i])
        torch.testing.assert_close(sde.tweedie(x, t, score)[i], (x[i] + sigma**2 * score[i]) / s)
    tt = torch.linspace(0.01, 1.0, 23, dtype=torch.float64)
    torch.testing.assert_close(sde.log_snr_inverse(sde.log_snr(tt)), tt, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", SDES)
def test_reverse_drift_and_tweedie_for_gaussian_data(name):
    """Data N(0, c²): p_t = N(0, v), v = s²c² + σ², score −x/v. The reverse SDE's drift (eq. 6) is f x + g²x/v, the
    flow's (eq. 13) f x + ½g²x/v, and E[x₀ | x_t] = s c² x/v (Gaussian conditioning)."""
    sde, c = SDES[name](), 0.7
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64)
    s, f, g2 = sde.scale(t)[:, None], sde.f(t)[:, None], sde.g(t)[:, None] ** 2
    v = s**2 * c**2 + sde.sigma(t)[:, None] ** 2
    torch.testing.assert_close(sde.reverse_drift(x, t, -x / v), f * x + g2 * x / v)
    torch.testing.assert_close(sde.reverse_drift(x, t, -x / v, probability_flow=True), f * x + 0.5 * g2 * x / v)
    torch.testing.assert_close(sde.tweedie(x, t, -x / v), s * c**2 * x / v)


def test_discretize_recovers_ddpm():
    d = VPSDE(LinearBeta(0.1, 20.0)).discretize(1000)
    torch.testing.assert_close(d.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(d.alphas_cumprod, torch.cumprod(1 - d.betas, 0))


@pytest.mark.parametrize("schedule", [LinearBeta(), CosineBeta(beta_max=20.0)])
@pytest.mark.parametrize("N", [100, 1000])
def test_discrete_alpha_bar_approaches_continuous(schedule, N):
    """|log ᾱ_i + B(t_i)| ≤ 2T·max β/(N−1) + Σ_{j≤i} β_j²: the Riemann-sum error of Σβ_j plus the
    second-order term of −log(1 − β_j) (β_j ≤ ½ here, so −log(1−β) − β ≤ β²)."""
    sde = VPSDE(schedule)
    d = sde.discretize(N)
    gap = (d.alphas_cumprod.log() + schedule.integral(d.t)).abs()
    bound = 2 * sde.T * schedule.beta(d.t).max() / (N - 1) + torch.cumsum(d.betas**2, 0)
    assert torch.all(gap <= bound), (gap - bound).max()
    assert gap[-1] < 0.25 * (1000 / N)  # and it does shrink with N


@pytest.mark.parametrize(
    ("factory", "param"),
    [
        (lambda: VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: VESDE(sigma_min=1.0, sigma_max=0.5), "sigma_max"),
        (lambda: VPSDE(T=0.0), "T"),
        (lambda: VPSDE().discretize(1), "N"),
        (lambda: VPSDE().discretize(5), "N"),
    ],
)
def test_bad_parameters(factory, param):
    with pytest.raises(ValueError, match=param):
        factory()


def test_perturb_and_the_log_snr_range_are_the_closed_forms_of_linear_beta_and_ve():
    """x_t = √ᾱ x₀ + √(1 − ᾱ) ε with ᾱ = exp(−β₀t − ½(β₁ − β₀)t²) (DDPM's variables) and, for VE, x_t = x₀ + √(σ(t)²
    − σ_min²) ε with σ(t) = σ_min(σ_max/σ_min)^t (the variance added since t = 0), for image-shaped x₀; λ(T), λ(t_min)
    = −½ log(e^{B} − 1) at T and t_min for linear β."""
    t = torch.tensor([0.01, 0.3, 0.9], dtype=torch.float64)
    x0 = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alpha_bar = torch.exp(-0.1 * t - 0.5 * 19.9 * t**2).view(3, 1, 1, 1)
    vp, ve = VPSDE(LinearBeta(0.1, 20.0)), VESDE(0.01, 50.0)
    torch.testing.assert_close(vp.perturb(x0, t, eps), alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps)
    torch.testing.assert_close(
        ve.perturb(x0, t, eps), x0 + ((0.01 * 5000**t) ** 2 - 0.01**2).sqrt().view(3, 1, 1, 1) * eps
    )
    big_b = lambda s: 0.1 * s + 0.5 * 19.9 * s**2  # noqa: E731
    lam_T, lam_tmin = (-0.5 * torch.log(torch.expm1(torch.tensor(big_b(s), dtype=torch.float64))) for s in (1.0, 1e-3))
    assert vp.log_snr_range(1e-3) == pytest.approx((float(lam_T), float(lam_tmin)), rel=1e-12)
