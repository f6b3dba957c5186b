"""DDIM-η against DPM-Solver++(1), k-diffusion's ancestral Euler step and the forward posterior in closed form."""

import math

import pytest
import torch

from sde_diffusion import VESDE, VPSDE, GaussianMixture, SubVPSDE, eight_gaussians
from sde_diffusion.sampling import SampleSetup, sample, timesteps

MIX = eight_gaussians()
SDES = [VPSDE(), SubVPSDE(), VESDE()]
IDS = ["vp", "subvp", "ve"]


def _x_T(sde, n=64):
    return sde.prior_std * torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("spacing", ["logsnr", "karras", "time_uniform"])
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_eta_zero_is_dpm_solver_order_one(sde, spacing):
    x_T, score = _x_T(sde), MIX.score_fn(sde)
    run = dict(steps=7, denoise=False, setup=SampleSetup(x_T=x_T, dtype=torch.float64), spacing=spacing)
    ddim = sample(sde, score, x_T.shape, sampler="ddim", eta=0.0, **run).x
    dpm = sample(sde, score, x_T.shape, sampler="dpm_solver", order=1, algorithm="dpmsolver++", **run).x
    torch.testing.assert_close(ddim, dpm, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("eta", [0.5, 1.0])
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_each_step_is_k_diffusions_euler_ancestral_in_sigma_tilde(sde, eta):
    """k-diffusion's sample_euler_ancestral on D(x̃, σ̃) = E[x₀ | x_t], x̃ = x/s, σ̃ = σ/s, with the same draws z."""
    x_T, score = _x_T(sde, 16), MIX.score_fn(sde)
    out = sample(
        sde,
        score,
        x_T.shape,
        sampler="ddim",
        steps=5,
        denoise=False,
        eta=eta,
        spacing="karras",
        setup=SampleSetup(x_T=x_T, dtype=torch.float64, generator=torch.Generator().manual_seed(3)),
    ).x
    t = timesteps(sde, 5, 1e-3, "karras")
    s, sig = sde.scale(t), sde.sigma(t) / sde.scale(t)
    g = torch.Generator().manual_seed(3)
    x = x_T / s[0]
    for i in range(5):
        tt = t[i].expand(16)
        denoised = sde.tweedie(s[i] * x, tt, score(s[i] * x, tt))
        up = torch.minimum(sig[i + 1], eta * (sig[i + 1] ** 2 * (sig[i] ** 2 - sig[i + 1] ** 2) / sig[i] ** 2).sqrt())
        down = (sig[i + 1] ** 2 - up**2).sqrt()
        x = x + (x - denoised) / sig[i] * (down - sig[i]) + torch.randn(x.shape, generator=g, dtype=x.dtype) * up
    torch.testing.assert_close(out, s[-1] * x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_one_eta_one_step_has_the_exact_mean_and_the_posterior_variance(sde):
    """Data N(μ, c²), x_s fixed, one step s → t. Its law is q(x_t | x_s, x₀ = E[x₀|x_s]) of the forward process, so
    its mean is E[x_t | x_s] of the exact reverse transition (q's mean is affine in x₀) and its variance is q's,
    σ_t² − α_s²σ_t⁴/(α_t²σ_s²), short of the exact Var[x_t | x_s] by the unknown x₀'s share. Both closed forms from
    Gaussian conditioning of the forward process; 2 × 200 000 draws, within 4 standard errors."""
    n, mu, c2, x_s = 200_000, 0.5, 0.3, 0.8 * sde.prior_std
    mix = GaussianMixture(torch.ones(1), torch.full((1, 2), mu), c2 * torch.eye(2)[None])
    s, u = torch.tensor([sde.T], dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64)
    a_s, sg_s, a_t, sg_t = (float(v) for v in (sde.scale(s), sde.sigma(s), sde.scale(u), sde.sigma(u)))
    cov_ts, var_s = a_t * a_s * c2 + a_s / a_t * sg_t**2, a_s**2 * c2 + sg_s**2  # Cov(x_t, x_s), Var(x_s)
    mean = a_t * mu + cov_ts / var_s * (x_s - a_s * mu)
    var = sg_t**2 - a_s**2 * sg_t**4 / (a_t**2 * sg_s**2)
    x = sample(
        sde,
        mix.score_fn(sde),
        (n, 2),
        sampler="ddim",
        steps=1,
        t_min=0.3,
        denoise=False,
        eta=1.0,
        setup=SampleSetup(
            x_T=torch.full((n, 2), x_s, dtype=torch.float64),
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(0),
        ),
    ).x
    assert abs(x.mean().item() - mean) < 4 * math.sqrt(var / (2 * n))
    assert abs(x.var().item() - var) < 4 * var * math.sqrt(2 / (2 * n))
