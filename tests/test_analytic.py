"""The Gaussian-mixture oracle against autograd and torch.distributions."""

import math

import pytest
import torch

from sde_diffusion import VESDE, VPSDE, CosineBeta, GaussianMixture, SubVPSDE, eight_gaussians, mixture

SDES = {"vp": VPSDE(), "vp_cosine": VPSDE(CosineBeta()), "subvp": SubVPSDE(), "ve": VESDE()}
MIXTURES = {"eight": eight_gaussians(), "random16": mixture(dim=16, k=10)}


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("mix_name", MIXTURES)
def test_score_is_gradient_of_diffused_log_density(sde_name, mix_name):
    sde, mix = SDES[sde_name], MIXTURES[mix_name]
    g = torch.Generator().manual_seed(3)
    score = mix.score_fn(sde)
    for t in torch.rand(12, generator=g, dtype=torch.float64).tolist() + [1e-4, 1.0]:
        tt = torch.full((32,), t, dtype=torch.float64)
        x0 = mix.sample(32, generator=g)
        mean, std = sde.marginal_prob(x0, tt)
        x = (mean + std * torch.randn(x0.shape, generator=g, dtype=torch.float64)).requires_grad_(True)
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
