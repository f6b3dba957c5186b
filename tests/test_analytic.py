"""The Gaussian-mixture oracle against autograd and torch.distributions."""

import math

import pytest
import torch
from conftest import SDES, diffused

from sde_diffusion import VPSDE, GaussianMixture, eight_gaussians, mixture
from sde_diffusion.core.analytic import PerturbedScore, eps_error

MIXTURES = {"eight": eight_gaussians(), "random16": mixture(dim=16, k=10)}


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("mix_name", MIXTURES)
def test_score_is_gradient_of_diffused_log_density(sde_name, mix_name):
    sde, mix = SDES[sde_name], MIXTURES[mix_name]
    g = torch.Generator().manual_seed(3)
    score = mix.score_fn(sde)
    for t in torch.rand(12, generator=g, dtype=torch.float64).tolist() + [1e-4, 1.0]:
        x, tt = diffused(mix, sde, t, 32, g)
        x.requires_grad_(True)
        (ref,) = torch.autograd.grad(mix.marginal(sde, t).log_prob(x).sum(), x)
        torch.testing.assert_close(score(x.detach(), tt), ref, atol=1e-6, rtol=1e-6)


def test_score_with_per_sample_times():
    sde, mix = VPSDE(), mixture(dim=4, k=3)
    t = torch.tensor([0.01, 0.3, 0.9], dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    batched = mix.score_fn(sde)(x, t)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], mix.score_fn(sde)(x[i : i + 1], t[i : i + 1]))


def test_one_component_is_multivariate_normal():
    a = torch.randn(5, 5, dtype=torch.float64)
    cov = a @ a.T + 0.1 * torch.eye(5, dtype=torch.float64)
    mu = torch.randn(5, dtype=torch.float64)
    mix = GaussianMixture(torch.ones(1), mu[None], cov[None])
    x = torch.randn(20, 5, dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(mu, cov).log_prob(x)
    torch.testing.assert_close(mix.log_prob(x), ref)


def test_two_components_log_prob_is_weighted_sum():
    covs = torch.stack([torch.eye(2), 0.3 * torch.eye(2)]).double()
    means = torch.tensor([[0.0, 0.0], [2.0, -1.0]], dtype=torch.float64)
    mix = GaussianMixture(torch.tensor([0.3, 0.7]), means, covs)
    x = torch.randn(10, 2, dtype=torch.float64)
    dens = sum(
        w * torch.distributions.MultivariateNormal(m, c).log_prob(x).exp()
        for w, m, c in zip([0.3, 0.7], means, covs, strict=True)
    )
    torch.testing.assert_close(mix.log_prob(x), dens.log())


def test_samples_have_the_mixture_moments():
    mix = mixture(dim=3, k=4, seed=5)
    x = mix.sample(200_000, generator=torch.Generator().manual_seed(0))
    mean = (mix.weights[:, None] * mix.means).sum(0)
    second = (mix.weights[:, None, None] * (mix.covs + mix.means[:, :, None] * mix.means[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    torch.testing.assert_close(x.mean(0), mean, atol=5 * cov.diag().max().sqrt() / math.sqrt(2e5), rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.05 * cov.diag().max(), rtol=0)


def test_eight_gaussians_layout():
    mix = eight_gaussians()
    torch.testing.assert_close(mix.means.norm(dim=1), torch.full((8,), 4.0, dtype=torch.float64))
    torch.testing.assert_close(mix.covs, 0.15**2 * torch.eye(2, dtype=torch.float64).expand(8, 2, 2))


def test_random_mixture_is_anisotropic_and_seeded():
    a, b = mixture(dim=16, k=10, seed=0), mixture(dim=16, k=10, seed=0)
    torch.testing.assert_close(a.covs, b.covs)
    eig = torch.linalg.eigvalsh(a.covs)
    assert (eig.max(1).values / eig.min(1).values).min() > 5


def test_bad_mixture_raises():
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.tensor([0.5, 0.6]), torch.zeros(2, 2), torch.eye(2).expand(2, 2, 2))
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), -torch.eye(2)[None])


# The exact conditional oracle: classes, the time-t classifier, posteriors of linear measurements.


def test_given_class_is_its_components_renormalised():
    mix = mixture(dim=3, k=5, seed=2)
    x = torch.randn(20, 3, dtype=torch.float64)
    dens = sum(
        mix.weights[k] * torch.distributions.MultivariateNormal(mix.means[k], mix.covs[k]).log_prob(x).exp()
        for k in (1, 3)
    )
    torch.testing.assert_close(mix.given_class([3, 1]).log_prob(x), (dens / mix.weights[[1, 3]].sum()).log())
    one = mix.given_class(4)
    torch.testing.assert_close(one.means, mix.means[4:])
    assert one.weights.tolist() == [1.0]
    for bad in (5, -1, [], [1, 1], [0.5]):
        with pytest.raises(ValueError, match="class"):
            mix.given_class(bad)


@pytest.mark.parametrize("mix_name", MIXTURES)
def test_classifier_is_bayes_rule_on_the_diffused_mixture(mix_name):
    """log p_t(y | x) = log w_y + log p_t(x | y) − log p_t(x), each side from the diffused densities."""
    sde, mix = VPSDE(), MIXTURES[mix_name]
    g = torch.Generator().manual_seed(0)
    classes = [[0, 2], 1, [3, 4, 5, 6, 7]]
    for t in (1e-3, 0.3, 1.0):
        x, tt = diffused(mix, sde, t, 16, g)
        log_r = mix.classifier_log_prob(sde, x, tt, classes)
        p_t = mix.marginal(sde, t).log_prob(x)
        for c, cls in enumerate(classes):
            w_c = mix.weights[cls].sum().log()
            ref = w_c + mix.given_class(cls).marginal(sde, t).log_prob(x) - p_t
            torch.testing.assert_close(log_r[:, c], ref, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(mix.classifier_log_prob(sde, x, tt).exp().sum(1), torch.ones(16, dtype=x.dtype))
    assert mix.classifier_log_prob(sde, x.float(), tt).dtype == torch.float32


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
@pytest.mark.parametrize("mix_name", MIXTURES)
def test_classifier_gradient_plus_score_is_the_class_conditional_score(sde_name, mix_name):
    sde, mix = SDES[sde_name], MIXTURES[mix_name]
    g = torch.Generator().manual_seed(1)
    for cls in (3, [0, 5, 6]):
        for t in (1e-3, 0.2, 0.7, 1.0):
            x, tt = diffused(mix, sde, t, 16, g)
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(mix.classifier_log_prob(sde, x, tt, [cls]).sum(), x)
            guided = grad + mix.score_fn(sde)(x.detach(), tt)
            ref = mix.given_class(cls).score_fn(sde)(x.detach(), tt)
            torch.testing.assert_close(guided, ref, atol=1e-6 * (1 + ref.abs().max().item()), rtol=1e-8)


def test_posterior_of_one_gaussian_is_the_textbook_conditional():
    """Information form: Σ_post⁻¹ = Σ⁻¹ + AᵀA/s², μ_post = Σ_post(Σ⁻¹μ + Aᵀy/s²) (Bishop 2006, eq. 2.116-2.117)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=g, dtype=torch.float64)
    cov, mu = a @ a.T + 0.2 * torch.eye(4, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    A, y, s = torch.randn(2, 4, generator=g, dtype=torch.float64), torch.tensor([0.5, -1.0], dtype=torch.float64), 0.3
    post = GaussianMixture(torch.ones(1), mu[None], cov[None]).posterior(A, y, s)
    precision = torch.linalg.inv(cov) + A.T @ A / s**2
    torch.testing.assert_close(post.covs[0], torch.linalg.inv(precision))
    mean = torch.linalg.solve(precision, torch.linalg.solve(cov, mu) + A.T @ y / s**2)
    torch.testing.assert_close(post.means[0], mean)


def test_posterior_density_is_the_prior_times_the_likelihood():
    """log p(x | y) − log p(x) − log N(y; Ax, s²I) = −log p(y) for every x: Bayes' rule, exactly."""
    mix = mixture(dim=16, k=10)
    g = torch.Generator().manual_seed(2)
    A = torch.randn(5, 16, generator=g, dtype=torch.float64)
    y = A @ mix.sample(1, generator=g)[0] + 0.4 * torch.randn(5, generator=g, dtype=torch.float64)
    post = mix.posterior(A, y, 0.4)
    x = post.sample(64, generator=g)
    gap = post.log_prob(x) - mix.log_prob(x) + (y - x @ A.T).square().sum(1) / (2 * 0.4**2)
    assert gap.std().item() < 1e-8


@pytest.mark.parametrize(
    "mix_name, A, y, s",
    [("eight", [[0.6, 0.8]], [1.5], 0.3), ("small3", [[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]], [1.0, 0.5], 0.5)],
)
def test_posterior_matches_importance_reweighted_prior_samples(mix_name, A, y, s):
    """Self-normalised importance sampling from the prior with weights N(y; Ax, s²I): mean and covariance agree
    within 5 standard errors (the error of a weighted mean is about (Var/ESS)^½)."""
    mix = {"eight": eight_gaussians(), "small3": mixture(dim=3, k=4, seed=5)}[mix_name]
    A, y = torch.tensor(A, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    post = mix.posterior(A, y, s)
    x = mix.sample(400_000, generator=torch.Generator().manual_seed(0))
    w = torch.softmax(-(y - x @ A.T).square().sum(1) / (2 * s**2), 0)
    ess = 1 / w.square().sum()
    mean = w @ x
    d = x - mean
    cov = (w[:, None] * d).T @ d
    var = post.covariance.diagonal()
    torch.testing.assert_close(mean, post.mean, atol=5 * (var.max() / ess).sqrt().item(), rtol=0)
    torch.testing.assert_close(cov, post.covariance, atol=5 * (2 / ess).sqrt().item() * var.max().item(), rtol=0)


def test_inpainting_posterior_is_each_component_conditioned_and_reweighted():
    mix = mixture(dim=5, k=4, seed=1)
    mask = torch.tensor([True, False, True, True, False])
    o, u = mask.nonzero()[:, 0], (~mask).nonzero()[:, 0]
    y = mix.sample(1, generator=torch.Generator().manual_seed(3))[0, o]
    post = mix.inpainting_posterior(mask, y)
    log_w = []
    for k in range(4):
        c, m = mix.covs[k], mix.means[k]
        c_uo, c_oo = c[u][:, o], c[o][:, o]
        torch.testing.assert_close(post.means[k], m[u] + c_uo @ torch.linalg.solve(c_oo, y - m[o]))
        torch.testing.assert_close(post.covs[k], c[u][:, u] - c_uo @ torch.linalg.solve(c_oo, c_uo.T))
        log_w.append(mix.weights[k].log() + torch.distributions.MultivariateNormal(m[o], c_oo).log_prob(y))
    torch.testing.assert_close(post.weights, torch.softmax(torch.stack(log_w), 0))
    # the noisy full-D posterior's missing block tends to it as noise_std -> 0, computed stably at 1e-6
    near = mix.posterior(torch.eye(5, dtype=torch.float64)[mask], y, 1e-6)
    torch.testing.assert_close(near.means[:, u], post.means, atol=1e-8, rtol=0)
    torch.testing.assert_close(near.covs[:, u][:, :, u], post.covs, atol=1e-8, rtol=0)
    torch.testing.assert_close(near.means[:, o], y.expand(4, 3), atol=1e-8, rtol=0)


def test_inpainting_drops_components_that_underflow():
    """Observing x₁ = 4 on 8-Gaussians: the mode at −4 has weight e^{−1422} = 0 in float64 and is dropped; the
    posterior of x₂ is symmetric about 0, and the mode at (4, 0) carries all but ~1e-13 of the weight."""
    post = eight_gaussians().inpainting_posterior(torch.tensor([True, False]), torch.tensor([4.0]))
    assert len(post.weights) < 8 and post.dim == 1
    assert abs(post.mean.item()) < 1e-12
    assert post.weights.max().item() == pytest.approx(1.0, abs=1e-10)


def test_bad_measurements_raise():
    mix = eight_gaussians()
    with pytest.raises(ValueError, match="noise_std"):
        mix.posterior(torch.eye(2), torch.zeros(2), 0.0)
    with pytest.raises(ValueError, match=r"^A .*\(3, 3\)"):
        mix.posterior(torch.eye(3), torch.zeros(3), 0.1)
    with pytest.raises(ValueError, match="mask"):
        mix.inpainting_posterior(torch.tensor([1, 0]), torch.zeros(1))
    with pytest.raises(ValueError, match="mask"):
        mix.inpainting_posterior(torch.tensor([True, True]), torch.zeros(2))
    with pytest.raises(ValueError, match="y_obs"):
        mix.inpainting_posterior(torch.tensor([True, False]), torch.zeros(2))


# The perturbed oracle and the ε-prediction error.


def test_eps_error_of_gaussian_data_is_the_closed_form():
    """For x₀ ~ N(0, c²I) under VP, ε̂* = σx/(s²c² + σ²), so a zero score's ε-RMS error is
    ((T − t_min)⁻¹ ∫ σ²/(s²c² + σ²) dt)^½; the exact score's is float32 rounding."""
    sde, c2 = VPSDE(), 0.5
    gauss = GaussianMixture(torch.ones(1), torch.zeros(1, 3), c2 * torch.eye(3)[None])
    t = torch.linspace(1e-5, 1, 100_001, dtype=torch.float64)
    f = sde.sigma(t) ** 2 / (sde.scale(t) ** 2 * c2 + sde.sigma(t) ** 2)
    closed = torch.trapezoid(f, t).sqrt().item() / (1 - 1e-5) ** 0.5
    zero = eps_error(sde, lambda x, t: torch.zeros_like(x), gauss, generator=torch.Generator().manual_seed(0))
    assert zero == pytest.approx(closed, rel=0.02)
    assert eps_error(sde, gauss.score_fn(sde), gauss, generator=torch.Generator().manual_seed(0)) < 1e-5


@pytest.mark.parametrize("mix_name", MIXTURES)
def test_perturbed_scale_is_a_scaled_eps(mix_name):
    """kind "scale": σ(s − s*) = −size·ε̂*, so its ε-RMS error is |size| times a zero score's, on the same draws."""
    sde, mix = VPSDE(), MIXTURES[mix_name]
    g = torch.Generator().manual_seed(0)
    x, tt = diffused(mix, sde, 0.4, 32, g)
    exact = mix.score_fn(sde)(x, tt)
    eps_hat_star = -sde.sigma(tt)[:, None] * exact

    def err(score_fn):
        return eps_error(sde, score_fn, mix, n=4000, generator=torch.Generator().manual_seed(1), dtype=x.dtype)

    zero = err(lambda x, t: torch.zeros_like(x))
    for size in (0.05, -0.3):
        p = PerturbedScore(mix, sde, "scale", size)
        torch.testing.assert_close(sde.sigma(tt)[:, None] * (p(x, tt) - exact), -size * eps_hat_star)
        assert err(p) == pytest.approx(abs(size) * zero, rel=1e-9)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("mix_name", MIXTURES)
def test_perturbed_bias_has_eps_rms_error_size(sde_name, mix_name):
    sde, mix = SDES[sde_name], MIXTURES[mix_name]
    for size in ("small", 0.3):
        p = PerturbedScore(mix, sde, "bias", size, seed=4)
        expected = PerturbedScore.SIZES.get(size, size)
        assert eps_error(sde, p, mix, generator=torch.Generator().manual_seed(9)) == pytest.approx(expected, rel=0.05)


def test_perturbed_bias_field_has_the_random_fourier_kernel():
    """Over seeds, E b_d(x, t) b_d(x′, t′) ∝ exp(−‖x̃ − x̃′‖²/2ℓ² − (2π(t − t′)/T)²/2) (Rahimi & Recht 2007); VP
    keeps x̃ = x. Pairs at distance r = 0.5, 1, 2 (ℓ = 1) and a time lag of 0.1T, at 64 far-apart points (nearly
    independent), 40 seeds: standard error about 0.02."""
    sde, mix = VPSDE(), eight_gaussians()
    x = 10 * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    step = torch.tensor([0.6, 0.8], dtype=torch.float64)
    t, t_lag = torch.full((64,), 0.5, dtype=torch.float64), torch.full((64,), 0.6, dtype=torch.float64)
    pairs = {r: [] for r in (0.0, 0.5, 1.0, 2.0, "lag")}
    for seed in range(40):
        b = PerturbedScore(mix, sde, "bias", 1.0, seed=seed).bias
        b0 = b(x, t)
        for r in (0.0, 0.5, 1.0, 2.0):
            pairs[r].append((b0 * b(x + r * step, t)).mean())
        pairs["lag"].append((b0 * b(x, t_lag)).mean())
    k = {r: torch.stack(v).mean().item() for r, v in pairs.items()}
    for r in (0.5, 1.0, 2.0):
        assert k[r] / k[0.0] == pytest.approx(math.exp(-(r**2) / 2), abs=0.07)
    assert k["lag"] / k[0.0] == pytest.approx(math.exp(-((2 * math.pi * 0.1) ** 2) / 2), abs=0.07)


def test_bad_perturbation_raises():
    sde, mix = VPSDE(), eight_gaussians()
    for kind, size in (("noise", 0.1), ("bias", "medium"), ("scale", -1.0), ("bias", math.nan)):
        with pytest.raises(ValueError, match="kind" if kind == "noise" else "size"):
            PerturbedScore(mix, sde, kind, size)
