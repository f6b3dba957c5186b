"""The continuous-time ELBO against the exact oracle: closed forms for a single Gaussian, the bound's gap on a mixture
equal to the analytic prior-mismatch and truncation terms on every SDE, and the importance sampler's inverse."""

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import Independent, Normal, kl_divergence

from sde_diffusion import VESDE, VPSDE, CosineBeta, GaussianMixture, LearnedBeta, LinearBeta, SubVPSDE, mixture
from sde_diffusion.core.sde import SDE
from sde_diffusion.objectives.elbo import diffusion_term, elbo, gaussian_reconstruction, prior_kl, time_draws

SDES = {
    "vp-linear": lambda: VPSDE(LinearBeta()),
    "vp-cosine": lambda: VPSDE(CosineBeta()),
    "subvp-linear": lambda: SubVPSDE(LinearBeta()),
    "subvp-cosine": lambda: SubVPSDE(CosineBeta()),
    "ve": lambda: VESDE(),
}


def _gaussian() -> GaussianMixture:
    """One full-covariance Gaussian in 3-D (eigenvalues 0.3, 1, 2.5)."""
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    cov = q @ torch.diag(torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)) @ q.T
    return GaussianMixture(torch.ones(1), torch.tensor([[0.5, -1.0, 0.2]]), cov[None])


def _gaussian_diffusion_term(sde: SDE, g: GaussianMixture, x: Tensor, t_min: float) -> Tensor:
    """∫ E_ε‖ε + σ s(x_t)‖² dλ for data N(μ, Σ), Σ = U diag(v) Uᵀ, y = Uᵀ(x − μ): with u = e^{2λ}v + 1 per direction,
    E‖·‖² = Σ_i (1 − 1/u_i)² + e^{2λ} y_i²/u_i², whose antiderivative in λ is Σ_i ½(log u + 1/u) − y_i²/(2 v_i u)."""
    v, vecs = torch.linalg.eigh(g.covs[0])
    y = (x - g.means[0]) @ vecs
    lam = sde.log_snr(torch.tensor([t_min, sde.T], dtype=torch.float64))

    def F(lam_: Tensor) -> Tensor:
        u = torch.exp(2 * lam_) * v + 1
        return (0.5 * (torch.log(u) + 1 / u) - y**2 / (2 * v * u)).sum(-1)

    return F(lam[0]) - F(lam[1])


@pytest.mark.parametrize("name", SDES)
def test_single_gaussian_terms_match_their_closed_forms(name):
    sde, g, t_min = SDES[name](), _gaussian(), 1e-3
    x = g.sample(4, torch.Generator().manual_seed(1))
    T = torch.full((4,), sde.T, dtype=torch.float64)
    q_T = Independent(Normal(sde.scale(T)[:, None] * x, sde.sigma(T)[:, None].expand_as(x)), 1)
    prior = Independent(Normal(torch.zeros_like(x), torch.full_like(x, sde.prior_std)), 1)
    assert torch.allclose(prior_kl(sde, x), kl_divergence(q_T, prior), rtol=0, atol=1e-6)
    tm = torch.full((4,), t_min, dtype=torch.float64)
    decoder = Independent(Normal(x, (sde.sigma(tm) / sde.scale(tm))[:, None].expand_as(x)), 1)  # std σ/s
    assert torch.allclose(gaussian_reconstruction(sde, x, t_min), decoder.entropy(), rtol=0, atol=1e-6)
    # the diffusion term: its MC mean within 4 of its standard errors of the closed form
    exact = _gaussian_diffusion_term(sde, g, x, t_min)
    for cv in (None, 1.0):  # and with the control variate, whose mean is zero
        # 512 independent 8-draw estimates of each x, batched: their mean and its SE
        runs, _ = diffusion_term(sde, g.score_fn(sde), x.repeat(512, 1), t_min, n_t=8,
                                 generator=torch.Generator().manual_seed(2), control_variate=cv)  # fmt: skip
        est, sem = runs.view(512, 4).mean(0), runs.view(512, 4).std(0) / math.sqrt(512)
        assert ((est - exact).abs() < 4 * sem).all(), (est, exact, sem)


def test_importance_draws_invert_linear_betas_log_snr_in_closed_form():
    """Song et al. (2021b, App.): for linear β, e^{−2λ} = e^{B(t)} − 1, so t = (−β_min + √(β_min² + 2Δβ·B))/Δβ."""
    sde = VPSDE(LinearBeta(0.1, 20.0))
    lam = torch.linspace(-5, 6.9, 101, dtype=torch.float64)  # inside [λ(T), λ(1e-5)]
    b = torch.log1p(torch.exp(-2 * lam))
    closed = (-0.1 + torch.sqrt(0.01 + 2 * 19.9 * b)) / 19.9
    assert torch.allclose(SDE.log_snr_inverse(sde, lam), closed, rtol=0, atol=1e-12)  # the numeric (bisection) one
    assert torch.allclose(sde.log_snr_inverse(lam), closed, rtol=0, atol=1e-12)
    # and importance draws are uniform in λ between λ(T) and λ(t_min): weights Δλ, λ(t) stratified
    t, w = time_draws(sde, 3, 8, 1e-5, True, lam, torch.Generator().manual_seed(0))
    ends = sde.log_snr(torch.tensor([1e-5, 1.0], dtype=torch.float64))
    strata = (ends[0] - sde.log_snr(t)) / (ends[0] - ends[1]) * 8
    assert torch.allclose(w, ends[0] - ends[1]) and (strata.floor() == torch.arange(8.0)[:, None]).all()


def _oracle_gap(sde: SDE, mix: GaussianMixture, t_min: float, n: int) -> tuple[float, float]:
    """E_x[−ELBO(x)] − E_x[−log p₀(x)] with the exact score = KL(p_T ‖ π) + E KL(q(x | x_tmin) ‖ N(x_tmin/s, σ²/s²)), by
    the oracle's exact densities: the second is E[log p₀(x) − log p_tmin(x_tmin)] − D log s(t_min). Mean and SE."""
    gen = torch.Generator().manual_seed(5)
    z_T = mix.marginal(sde, sde.T).sample(n, gen)
    kl_T = mix.marginal(sde, sde.T).log_prob(z_T) - sde.prior_logp(z_T)
    x = mix.sample(n, gen)
    tm = torch.full((n,), t_min, dtype=torch.float64)
    mean, std = sde.scale(tm)[:, None] * x, sde.sigma(tm)[:, None]
    z = mean + std * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    trunc = mix.log_prob(x) - mix.marginal(sde, t_min).log_prob(z) - mix.dim * torch.log(sde.scale(tm))
    total = kl_T + trunc
    return float(total.mean()), float(total.std() / math.sqrt(n))


@pytest.mark.parametrize("name", [*SDES, "vp-short", pytest.param("vp-learned", marks=pytest.mark.slow)])
@pytest.mark.filterwarnings("ignore::sde_diffusion.core.sde.PriorMismatchWarning")
def test_mean_elbo_gap_is_the_prior_mismatch_plus_truncation(name):
    """At t_min where σ/s = e^{−1} the truncation term is resolved; vp-short (B(T) = 2.1) adds a real prior mismatch;
    vp-learned is VDM's learned schedule (at a random shape)."""
    sde = {"vp-short": lambda: VPSDE(LinearBeta(0.1, 4.0)), "vp-learned": lambda: VPSDE(LearnedBeta(seed=1))}.get(
        name, SDES.get(name)
    )()
    mix, n = mixture(dim=4, k=3), 2048
    t_min = float(sde.log_snr_inverse(torch.tensor(1.0, dtype=torch.float64)))
    x = mix.sample(n, torch.Generator().manual_seed(3))
    res = elbo(sde, mix.score_fn(sde), x, t_min=t_min, n_t=8, generator=torch.Generator().manual_seed(4))
    gap = res.nll + mix.log_prob(x)
    expected, expected_se = _oracle_gap(sde, mix, t_min, 20_000)
    se = math.hypot(float(gap.std()) / math.sqrt(n), expected_se)
    assert abs(float(gap.mean()) - expected) < 4 * se, (float(gap.mean()), expected, se)
    assert expected > 10 * expected_se  # the terms are resolved, not zero


@pytest.mark.parametrize("name", ["vp-linear", "ve"])
def test_negative_elbo_bounds_each_samples_nll_beyond_mc_noise(name):
    sde, mix = SDES[name](), mixture(dim=4, k=3)
    x = mix.sample(64, torch.Generator().manual_seed(6))
    res = elbo(sde, mix.score_fn(sde), x, t_min=1e-4, n_t=64, generator=torch.Generator().manual_seed(7))
    assert (res.nll + mix.log_prob(x) > -4 * res.sem).all()


@pytest.mark.parametrize("name", ["vp-linear", "ve"])
def test_each_samples_negative_elbo_is_the_gaussians_closed_form(name):
    """Per sample, not only on average: for one Gaussian −ELBO(x) = KL prior + the closed-form diffusion integral +
    reconstruction (torch.distributions' KL and entropy, `_gaussian_diffusion_term`), and the MC estimate of each
    sample is within 4 of its SEs of it."""
    sde, g, t_min = SDES[name](), _gaussian(), 1e-4
    x = g.sample(32, torch.Generator().manual_seed(6))
    T, tm = (torch.full((32,), c, dtype=torch.float64) for c in (sde.T, t_min))
    q_T = Independent(Normal(sde.scale(T)[:, None] * x, sde.sigma(T)[:, None].expand_as(x)), 1)
    prior = Independent(Normal(torch.zeros_like(x), torch.full_like(x, sde.prior_std)), 1)
    decoder = Independent(Normal(x, (sde.sigma(tm) / sde.scale(tm))[:, None].expand_as(x)), 1)
    closed = kl_divergence(q_T, prior) + _gaussian_diffusion_term(sde, g, x, t_min) + decoder.entropy()
    res = elbo(sde, g.score_fn(sde), x, t_min=t_min, n_t=64, generator=torch.Generator().manual_seed(7))
    assert ((res.nll - closed).abs() < 4 * res.sem).all(), (res.nll - closed) / res.sem


def test_bad_arguments_name_the_key():
    sde, x = VPSDE(), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="t_min.*1.5"):
        elbo(sde, lambda x, t: x, x, t_min=1.5)
    with pytest.raises(ValueError, match="n_t.*0"):
        elbo(sde, lambda x, t: x, x, n_t=0)
