"""Samplers against the exact Gaussian-mixture oracle: the floor, convergence orders, DDIM, DDPM and torchsde."""

import math

import pytest
import torch

from sde_diffusion import VESDE, VPSDE, GaussianMixture, LinearBeta, eight_gaussians
from sde_diffusion.core.analytic import exact_flow_map
from sde_diffusion.core.metrics import flow_error, mmd2, mode_weight_error, sliced_wasserstein
from sde_diffusion.sampling import SAMPLERS, SampleSetup, sample
from sde_diffusion.sampling.ancestral import chain_times, ddpm_posterior

SDE = VPSDE()
MIX = eight_gaussians()
GENEROUS = {  # the steps at which each sampler reaches the floor (rk45 and adaptive_sde are adaptive: no steps)
    **dict.fromkeys(["rk45", "adaptive_sde"], None),
    **dict.fromkeys(["ode_heun", "dpm_solver", "sde_dpm_solver", "sa_solver", "edm"], 50),
    "ddim": 100,
    **dict.fromkeys(["euler_maruyama", "pc", "ode_euler", "torchsde"], 500),
    "ancestral": 1000,
}


def gaussian(mean, var) -> GaussianMixture:
    """A single diagonal Gaussian as a one-component mixture."""
    mean, var = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(var, dtype=torch.float64)
    return GaussianMixture(torch.ones(1), mean[None], torch.diag(var)[None])


@pytest.fixture(scope="module")
def floor():
    """The sampling floor: metrics of 8 independent true sets against the reference; threshold mean + 3 std."""
    ref = MIX.sample(2000, torch.Generator().manual_seed(100))
    vals = torch.tensor(
        [
            (sliced_wasserstein(y, ref), mmd2(y, ref), mode_weight_error(MIX, y))
            for y in (MIX.sample(2000, torch.Generator().manual_seed(s)) for s in range(8))
        ]
    )
    return ref, vals.mean(0) + 3 * vals.std(0)


def test_every_sampler_has_a_generous_step_count():
    missing = sorted(set(SAMPLERS) - set(GENEROUS))
    assert not missing, f"add {missing} to GENEROUS in tests/test_sampling.py: the steps at which it reaches the floor"


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_reaches_the_floor(name, floor):
    ref, hi = floor
    if name not in GENEROUS:
        pytest.fail(f"add {name!r} to GENEROUS in tests/test_sampling.py")
    x = sample(
        SDE,
        MIX.score_fn(SDE),
        (2000, 2),
        sampler=name,
        steps=GENEROUS[name],
        setup=SampleSetup(generator=torch.Generator().manual_seed(1)),
    ).x.double()
    assert sliced_wasserstein(x, ref) < hi[0]
    assert mmd2(x, ref) < hi[1]
    assert mode_weight_error(MIX, x) < hi[2]
    # the spread inside each mode is the data's std 0.15 (a sampler that lost or added noise is off by far more)
    residual = x - MIX.means[MIX.responsibilities(x).argmax(1)]
    assert residual.std().item() == pytest.approx(0.15, rel=0.05)


def _variance_error(name: str, steps: int, n: int = 200_000) -> float:
    """|Var(x) − Var_exact| at t_min for a 1-D Gaussian, started from the exact p_T: EM's weak error."""
    g = gaussian([0.5], [0.3])
    p_T = g.marginal(SDE, SDE.T)
    x_T = p_T.sample(n, torch.Generator().manual_seed(0))
    x = sample(
        SDE,
        g.score_fn(SDE),
        (n, 1),
        sampler=name,
        steps=steps,
        denoise=False,
        setup=SampleSetup(x_T=x_T, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
    ).x
    return abs(x.var().item() - g.marginal(SDE, 1e-3).covs[0, 0, 0].item())


def test_euler_maruyama_has_weak_order_one():
    errs = [_variance_error("euler_maruyama", n) for n in (20, 40, 80)]
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(1.6 < r < 2.5 for r in ratios), (errs, ratios)


def test_torchsde_euler_agrees_in_distribution_with_euler_maruyama():
    """At 10 steps EM is visibly biased; torchsde's Euler must carry the same bias (same scheme and uniform grid,
    torchsde's only one; other noise)."""
    n = 200_000
    g = gaussian([0.5], [0.3])
    x_T = g.marginal(SDE, SDE.T).sample(n, torch.Generator().manual_seed(0))
    exact = g.marginal(SDE, 1e-3).covs[0, 0, 0].item()
    var = {
        name: sample(
            SDE,
            g.score_fn(SDE),
            (n, 1),
            sampler=name,
            steps=10,
            denoise=False,
            spacing="time_uniform",
            setup=SampleSetup(x_T=x_T, dtype=torch.float64, generator=torch.Generator().manual_seed(2)),
        )
        .x.var()
        .item()
        for name in ("euler_maruyama", "torchsde")
    }
    se = exact * math.sqrt(2 / n)
    assert abs(var["torchsde"] - var["euler_maruyama"]) < 4 * se * math.sqrt(2)
    assert abs(var["euler_maruyama"] - exact) > 10 * se


def _flow_errors(name: str, steps: list[int], mix: GaussianMixture, n: int = 200, **opts) -> list[float]:
    x_T = torch.randn(n, mix.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = exact_flow_map(SDE, mix, x_T, 1e-3)
    score = mix.score_fn(SDE)
    return [
        flow_error(
            sample(
                SDE,
                score,
                x_T.shape,
                sampler=name,
                steps=s,
                denoise=False,
                setup=SampleSetup(x_T=x_T, dtype=torch.float64),
                **opts,
            ).x,
            exact,
        )
        for s in steps
    ]


def test_ode_euler_order_one_and_heun_order_two_on_the_flow_error():
    g = gaussian([1.0, -2.0], [0.05, 2.0])
    euler = _flow_errors("ode_euler", [20, 40, 80], g, spacing="time_uniform")
    heun = _flow_errors("ode_heun", [20, 40, 80], g, spacing="time_uniform")
    assert all(1.8 < a / b < 2.3 for a, b in zip(euler[:-1], euler[1:], strict=True)), euler
    assert all(3.4 < a / b < 4.6 for a, b in zip(heun[:-1], heun[1:], strict=True)), heun


@pytest.mark.parametrize("order", [2, 3])
def test_dpm_solver_beats_ode_euler_at_equal_nfe(order):
    euler = _flow_errors("ode_euler", [20, 40], MIX, spacing="time_uniform")
    dpm = _flow_errors(
        "dpm_solver", [20, 40], MIX, order=order, method="multistep", algorithm="dpmsolver++", spacing="logsnr"
    )
    assert dpm[0] < euler[0] / 2.5 and dpm[1] < euler[1] / 3.5, (euler, dpm)


@pytest.mark.parametrize("algorithm", ["dpmsolver", "dpmsolver++"])
@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_dpm_solver_order_one_is_a_ddim_step(algorithm, sde):
    """DDIM, η = 0 (Song et al. 2021a, eq. 12): x_t = α_t x̂₀ + σ_t ε̂, x̂₀ = (x_s − σ_s ε̂)/α_s, ε̂ = −σ_s ∇log p."""
    mix = gaussian([1.0, -2.0], [0.05, 2.0])
    score = mix.score_fn(sde)
    x_T = sde.prior_std * torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([sde.T, 0.5 * (sde.T + 1e-3), 1e-3], dtype=torch.float64)  # the 2-step time_uniform grid
    x = x_T
    for s, u in zip(t[:-1], t[1:], strict=True):
        eps_hat = -sde.sigma(s[None]) * score(x, s.expand(16))
        x0_hat = (x - sde.sigma(s[None]) * eps_hat) / sde.scale(s[None])
        x = sde.scale(u[None]) * x0_hat + sde.sigma(u[None]) * eps_hat
    out = sample(
        sde,
        score,
        (16, 2),
        sampler="dpm_solver",
        steps=2,
        denoise=False,
        order=1,
        algorithm=algorithm,
        spacing="time_uniform",
        setup=SampleSetup(x_T=x_T, dtype=torch.float64),
    ).x
    torch.testing.assert_close(out, x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ancestral_step_is_ddpm_posterior(variance):
    """With N = 1000 one step is q(x_{i−1} | x_i, x̂₀) of Ho et al. (2020, eq. 6–7), x̂₀ from ε̂ by eq. 4."""
    chain = SDE.discretize(1000)
    torch.testing.assert_close(chain.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    score = 0.7 * torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ab, beta, alpha = chain.alphas_cumprod, chain.betas, chain.alphas
    for i in (999, 500, 1):
        eps_hat = -(1 - ab[i]).sqrt() * score
        x0 = (x - (1 - ab[i]).sqrt() * eps_hat) / ab[i].sqrt()
        mu = ab[i - 1].sqrt() * beta[i] / (1 - ab[i]) * x0 + alpha[i].sqrt() * (1 - ab[i - 1]) / (1 - ab[i]) * x
        beta_tilde = (1 - ab[i - 1]) / (1 - ab[i]) * beta[i]
        mean, std = ddpm_posterior(x, score, chain, i, variance)
        torch.testing.assert_close(mean, mu, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(std**2, beta[i] if variance == "beta" else beta_tilde, rtol=1e-10, atol=0)


def test_ancestral_sampler_takes_the_ddpm_step_and_denoise_is_ddpm_last_step():
    """N = 2 through `sample`: one noisy step from index 1 at the continuous time of ᾱ_1, then Alg. 2's last step."""
    sde = VPSDE(LinearBeta(0.1, 1.0))
    g = gaussian([1.0, -2.0], [0.05, 2.0])
    score = g.score_fn(sde)
    chain = sde.discretize(2)
    t = chain_times(sde, chain)
    torch.testing.assert_close(sde.sigma(t) ** 2, 1 - chain.alphas_cumprod, rtol=1e-9, atol=1e-12)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample(
        sde,
        score,
        (8, 2),
        sampler="ancestral",
        steps=2,
        setup=SampleSetup(x_T=x_T, dtype=torch.float64, generator=torch.Generator().manual_seed(5)),
    ).x
    z = torch.randn(8, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x = (x_T + chain.betas[1] * score(x_T, t[1].expand(8))) / chain.alphas[1].sqrt() + chain.betas[1].sqrt() * z
    x = (x + chain.betas[0] * score(x, t[0].expand(8))) / chain.alphas[0].sqrt()
    torch.testing.assert_close(out, x, rtol=1e-10, atol=1e-10)
