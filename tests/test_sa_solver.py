"""SA-Solver against closed forms: DDIM at order 1 without noise, one step's exact transition (moment ODEs in t),
its weak order on a Gaussian, and its convergence order as a deterministic solver (τ = 0)."""

import math
import warnings

import pytest
import torch
from scipy.integrate import solve_ivp

from sde_diffusion import VESDE, VPSDE, GaussianMixture, LinearBeta, SubVPSDE
from sde_diffusion.core.analytic import exact_flow_map
from sde_diffusion.core.metrics import flow_error
from sde_diffusion.core.sde import PriorMismatchWarning
from sde_diffusion.sampling import SampleSetup, sample

SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE()}
with warnings.catch_warnings():  # ending at moderate noise (λ_T ≈ −0.3) on purpose: one step's x̂₀ term is large
    warnings.simplefilter("ignore", PriorMismatchWarning)
    SHORT = {"vp": VPSDE(LinearBeta(0.1, 2.0)), "subvp": SubVPSDE(LinearBeta(0.1, 2.0)), "ve": VESDE(sigma_max=2.0)}


def gaussian(mean, var) -> GaussianMixture:
    """A single diagonal Gaussian as a one-component mixture."""
    mean, var = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(var, dtype=torch.float64)
    return GaussianMixture(torch.ones(1), mean[None], torch.diag(var)[None])


def run(sde, mix, x_T, steps, t_min=1e-3, seed=1, **opts):
    return sample(
        sde,
        mix.score_fn(sde),
        tuple(x_T.shape),
        sampler="sa_solver",
        steps=steps,
        t_min=t_min,
        denoise=False,
        setup=SampleSetup(x_T=x_T, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)),
        **opts,
    )


@pytest.mark.parametrize("name", SDES)
def test_order_one_without_noise_is_ddim(name):
    sde, mix = SDES[name], gaussian([1.0, -2.0], [0.05, 2.0])
    x_T = sde.prior_std * torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sa = run(sde, mix, x_T, 7, tau=0.0, predictor_order=1, corrector_order=0).x
    ddim = sample(
        sde,
        mix.score_fn(sde),
        (16, 2),
        sampler="dpm_solver",
        steps=7,
        denoise=False,
        order=1,
        setup=SampleSetup(x_T=x_T, dtype=torch.float64),
    ).x
    torch.testing.assert_close(sa, ddim, rtol=1e-10, atol=1e-10)


def _frozen_transition(sde, s: float, t: float, x0_hat: float, x_s: float, tau: float) -> tuple[float, float]:
    """Mean and variance at t < s of dx = [f x − ½(1 + τ²) g² ∇log p] dt + τ g dw̄ run down from x_s, with the score
    of a point mass at x̂₀, −(x − s(t)x̂₀)/σ(t)², i.e. x̂₀ frozen over the step: its moment ODEs, solved in t."""

    def coefs(u):
        u = torch.tensor([u], dtype=torch.float64)
        return (float(c) for c in (sde.f(u), sde.g(u) ** 2, sde.scale(u), sde.sigma(u) ** 2))

    def rhs(u, y):
        f, g2, a, var = coefs(u)
        k = f + 0.5 * (1 + tau**2) * g2 / var
        return [k * y[0] - 0.5 * (1 + tau**2) * g2 * a * x0_hat / var, 2 * k * y[1] - tau**2 * g2]

    sol = solve_ivp(rhs, (s, t), [x_s, 0.0], method="DOP853", rtol=1e-12, atol=1e-12)
    return sol.y[0, -1], sol.y[1, -1]


@pytest.mark.parametrize("h", [0.5, 2.0])
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("name", SHORT)
def test_one_step_has_the_mean_and_variance_of_its_exact_transition(name, tau, h):
    """One step from T to λ_T + h (order 1: the predictor alone) is the exact τ-SDE transition with x̂₀ held at
    E[x₀ | x_T]."""
    sde, mix, n = SHORT[name], gaussian([0.5], [0.3]), 200_000
    T = torch.tensor([sde.T], dtype=torch.float64)
    t = float(sde.log_snr_inverse(sde.log_snr(T) + h))
    x_s = torch.tensor([[0.7 * sde.prior_std]], dtype=torch.float64)
    x0_hat = float(sde.tweedie(x_s, T, mix.score_fn(sde)(x_s, T)))
    mean, var = _frozen_transition(sde, sde.T, t, x0_hat, float(x_s), tau)
    x = run(sde, mix, x_s.expand(n, 1), 1, t_min=t, tau=tau, tau_sigma_min=0.0).x
    assert abs(x.mean().item() - mean) < 4 * math.sqrt(var / n)
    assert abs(x.var().item() - var) < 4 * var * math.sqrt(2 / n)


def _variance_errors(steps: list[int], n: int = 500_000, **opts) -> list[float]:
    """|Var(x) − Var_exact| at eps for a 1-D Gaussian started from the exact p_T (weak error), VP, τ everywhere."""
    sde, g = VPSDE(), gaussian([0.5], [0.3])
    x_T = g.marginal(sde, sde.T).sample(n, torch.Generator().manual_seed(0))
    exact = g.marginal(sde, 1e-3).covs[0, 0, 0].item()
    return [abs(run(sde, g, x_T, s, tau_sigma_min=0.0, **opts).x.var().item() - exact) for s in steps]


def test_weak_error_falls_faster_than_first_order():
    """τ = 1 (the reverse SDE): order 1 halves the variance error per doubling of steps (measured 1.5, 1.8),
    predictor 2 + corrector 2 cuts it by more than 4 (measured 4.7, 8.1; the Monte-Carlo SE is 6e-4)."""
    first = _variance_errors([10, 20, 40], tau=1.0, predictor_order=1, corrector_order=0)
    second = _variance_errors([10, 20, 40], tau=1.0, predictor_order=2, corrector_order=2)
    assert all(1.3 < a / b < 2.5 for a, b in zip(first[:-1], first[1:], strict=True)), first
    assert all(a / b > 3.5 for a, b in zip(second[:-1], second[1:], strict=True)), second


def test_without_noise_it_is_deterministic_and_converges_at_its_order():
    """τ = 0: the PF-ODE by Adams–Bashforth / –Moulton in λ; the flow error falls as hᵖ, p = 1, 2, 3."""
    sde, mix = VPSDE(), gaussian([1.0, -2.0], [0.05, 2.0])
    x_T = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = exact_flow_map(sde, mix, x_T, 1e-3)
    a, b = run(sde, mix, x_T, 10, tau=0.0, seed=1).x, run(sde, mix, x_T, 10, tau=0.0, seed=2).x
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    for (p, c), band in {(1, 0): (1.8, 2.3), (1, 2): (3.4, 4.6), (2, 3): (7.0, 9.0)}.items():
        errs = [flow_error(run(sde, mix, x_T, s, tau=0.0, predictor_order=p, corrector_order=c).x, exact)
                for s in (20, 40, 80)]  # fmt: skip
        assert all(band[0] < e / f < band[1] for e, f in zip(errs[:-1], errs[1:], strict=True)), (p, c, errs)


@pytest.mark.parametrize(("p", "c"), [(1, 0), (3, 4), (4, 2)])
def test_nfe_is_one_per_step(p, c):
    calls, sde, mix = [], VPSDE(), gaussian([0.5], [0.3])

    def score(x, t):
        calls.append(1)
        return mix.score_fn(sde)(x, t)

    r = sample(
        sde,
        score,
        (5, 1),
        sampler="sa_solver",
        steps=7,
        predictor_order=p,
        corrector_order=c,
        setup=SampleSetup(generator=torch.Generator().manual_seed(0)),
    )
    assert r.nfe == len(calls) == 8  # 7 steps + the Tweedie step
