"""SDE-DPM-Solver++ against DPM-Solver++, k-diffusion's 2M SDE step, closed forms and its weak order on Gaussians."""

import math

import pytest
import torch
import torchsde

from sde_diffusion import VESDE, VPSDE, GaussianMixture, SubVPSDE, eight_gaussians
from sde_diffusion.sampling import SampleSetup, sample, timesteps

MIX = eight_gaussians()
SDES = [VPSDE(), SubVPSDE(), VESDE()]
IDS = ["vp", "subvp", "ve"]


def gaussian(mean, var) -> GaussianMixture:
    """A single diagonal Gaussian as a one-component mixture."""
    mean, var = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(var, dtype=torch.float64)
    return GaussianMixture(torch.ones(1), mean[None], torch.diag(var)[None])


def _x_T(sde, n=64):
    return sde.prior_std * torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize(("order", "method"), [(1, "multistep"), (2, "multistep"), (3, "multistep"),
                                               (2, "singlestep"), (3, "singlestep")])  # fmt: skip
@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("lower_order_final", [True, False])
def test_eta_zero_is_dpm_solver_plus_plus(sde, order, method, lower_order_final):
    x_T, score = _x_T(sde), MIX.score_fn(sde)
    run = dict(
        steps=8,
        denoise=False,
        setup=SampleSetup(x_T=x_T, dtype=torch.float64),
        spacing="karras",
        order=order,
        method=method,
        lower_order_final=lower_order_final,
    )
    ours = sample(sde, score, x_T.shape, sampler="sde_dpm_solver", eta=0.0, **run).x
    dpm = sample(sde, score, x_T.shape, sampler="dpm_solver", algorithm="dpmsolver++", **run).x
    torch.testing.assert_close(ours, dpm, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("eta", [0.5, 1.0])
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_2m_is_k_diffusions_dpmpp_2m_sde_midpoint(sde, eta):
    """k-diffusion's sample_dpmpp_2m_sde (solver_type="midpoint") on D(x̃, σ̃) = E[x₀ | x_t], x̃ = x/s, σ̃ = σ/s, with the
    same normals; its `eta` is ours."""
    x_T, score = _x_T(sde, 16), MIX.score_fn(sde)
    out = sample(
        sde,
        score,
        x_T.shape,
        sampler="sde_dpm_solver",
        steps=6,
        denoise=False,
        order=2,
        eta=eta,
        spacing="karras",
        lower_order_final=False,
        setup=SampleSetup(x_T=x_T, dtype=torch.float64, generator=torch.Generator().manual_seed(3)),
    ).x
    t = timesteps(sde, 6, 1e-3, "karras")
    s, sig = sde.scale(t), sde.sigma(t) / sde.scale(t)
    g = torch.Generator().manual_seed(3)
    x, old, h_last = x_T / s[0], None, None
    for i in range(6):
        tt = t[i].expand(16)
        denoised = sde.tweedie(s[i] * x, tt, score(s[i] * x, tt))
        h = -sig[i + 1].log() + sig[i].log()
        x = sig[i + 1] / sig[i] * (-eta * h).exp() * x + (-h - eta * h).expm1().neg() * denoised
        if old is not None:
            x = x + 0.5 * (-h - eta * h).expm1().neg() * (h / h_last) * (denoised - old)
        z = torch.randn(x.shape, generator=g, dtype=x.dtype)
        x = x + z * sig[i + 1] * (-2 * eta * h).expm1().neg().sqrt()
        old, h_last = denoised, h
    torch.testing.assert_close(out, s[-1] * x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_one_order_one_step_has_the_exact_mean_and_the_posterior_variance(sde):
    """Data N(μ, c²), x_s fixed, one step s → t at η = 1: its mean is E[x_t | x_s] of the exact reverse transition and
    its variance that of q(x_t | x_s, x₀), σ_t² − α_s²σ_t⁴/(α_t²σ_s²) (Gaussian conditioning of the forward process);
    2 × 200 000 draws, within 4 standard errors."""
    n, mu, c2, x_s = 200_000, 0.5, 0.3, 0.8 * sde.prior_std
    s, u = torch.tensor([sde.T], dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64)
    a_s, sg_s, a_t, sg_t = (float(v) for v in (sde.scale(s), sde.sigma(s), sde.scale(u), sde.sigma(u)))
    cov_ts, var_s = a_t * a_s * c2 + a_s / a_t * sg_t**2, a_s**2 * c2 + sg_s**2  # Cov(x_t, x_s), Var(x_s)
    mean = a_t * mu + cov_ts / var_s * (x_s - a_s * mu)
    var = sg_t**2 - a_s**2 * sg_t**4 / (a_t**2 * sg_s**2)
    x = sample(
        sde,
        gaussian([mu, mu], [c2, c2]).score_fn(sde),
        (n, 2),
        sampler="sde_dpm_solver",
        steps=1,
        t_min=0.3,
        denoise=False,
        order=1,
        eta=1.0,
        setup=SampleSetup(
            x_T=torch.full((n, 2), x_s, dtype=torch.float64),
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(0),
        ),
    ).x
    assert abs(x.mean().item() - mean) < 4 * math.sqrt(var / (2 * n))
    assert abs(x.var().item() - var) < 4 * var * math.sqrt(2 / (2 * n))


def _variance_errors(order: int, method: str, n: int = 20_000) -> list[float]:
    """Variance error at eps on N(0.5, 0.3) from the exact p_T at 20, 40, 80 steps (η = 1, logsnr), measured against
    3M at 320 steps on the same Brownian path, so that the Monte-Carlo noise cancels down to the strong error's size."""
    sde, g = VPSDE(), gaussian([0.5], [0.3])
    x_T = g.marginal(sde, sde.T).sample(n, torch.Generator().manual_seed(0))
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(n, 1), dtype=torch.float64, entropy=7)

    def var(steps: int, order: int, method: str) -> float:
        return (
            sample(
                sde,
                g.score_fn(sde),
                (n, 1),
                sampler="sde_dpm_solver",
                steps=steps,
                denoise=False,
                order=order,
                method=method,
                eta=1.0,
                spacing="logsnr",
                lower_order_final=False,
                bm=bm,
                setup=SampleSetup(x_T=x_T, dtype=torch.float64),
            )
            .x.var()
            .item()
        )

    ref = var(320, 3, "multistep")
    assert abs(ref - g.marginal(sde, 1e-3).covs[0, 0, 0].item()) < 4 * 0.3 * math.sqrt(2 / n)
    return [var(steps, order, method) - ref for steps in (20, 40, 80)]


@pytest.mark.parametrize(("order", "band"), [(1, (1.5, 2.3)), (2, (2.9, 5.0)), (3, (3.8, 6.5))])
def test_multistep_weak_order_on_a_gaussian(order, band):
    """The variance error's ratio per doubling 20 → 40 → 80 steps. Measured (n = 20 000): order 1 ≈ 1.74, 1.85
    (weak order 1); 2M ≈ 3.3, 4.2 and 3M ≈ 5.1, 4.8 (weak order 2)."""
    errs = _variance_errors(order, "multistep")
    ratios = [a / b for a, b in zip(errs, errs[1:], strict=False)]
    assert all(band[0] < r < band[1] for r in ratios), (errs, ratios)


@pytest.mark.parametrize("order", [2, 3])
def test_singlestep_converges_weakly_on_a_gaussian(order):
    """The stages' noise carried into the step's keeps the law: measured errors 2S −0.073, −0.026, −0.0073 and 3S
    −0.0056, 0.0016, 0.0008 at 20, 40, 80 steps (dropping the carried part would leave ~0.1 of the variance out)."""
    errs = _variance_errors(order, "singlestep")
    assert abs(errs[2]) < min(0.01, abs(errs[0]) / 3), errs


@pytest.mark.parametrize(("order", "method"), [(1, "multistep"), (2, "multistep"), (3, "multistep"),
                                               (2, "singlestep")])  # fmt: skip
def test_one_brownian_path_gives_the_same_sample_as_steps_double(order, method):
    """With one BrownianInterval the per-sample RMS difference between N and 2N steps shrinks as N doubles (strong
    convergence; Gaussian data, where no sample can switch modes), and at 80 steps it is far below the difference
    between two independent paths."""
    sde, g, n = VPSDE(), gaussian([1.0, -2.0], [0.05, 2.0]), 500
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def run(steps: int, bm: torchsde.BrownianInterval) -> torch.Tensor:
        return sample(
            sde,
            g.score_fn(sde),
            (n, 2),
            sampler="sde_dpm_solver",
            steps=steps,
            order=order,
            method=method,
            eta=1.0,
            spacing="logsnr",
            lower_order_final=False,
            bm=bm,
            setup=SampleSetup(x_T=x_T, dtype=torch.float64),
        ).x

    def rms(a: torch.Tensor, b: torch.Tensor) -> float:
        return (a - b).pow(2).sum(1).mean().sqrt().item()

    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(n, 2), dtype=torch.float64, entropy=3)
    xs = [run(steps, bm) for steps in (20, 40, 80, 160)]
    diffs = [rms(a, b) for a, b in zip(xs, xs[1:], strict=False)]
    assert all(a / b > 1.4 for a, b in zip(diffs, diffs[1:], strict=False)), diffs
    other = run(160, torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(n, 2), dtype=torch.float64, entropy=4))
    assert diffs[-1] < rms(xs[-1], other) / 5, (diffs, rms(xs[-1], other))


@pytest.mark.parametrize(("steps", "order"), [(7, 2), (7, 3), (9, 3), (1, 3)])
def test_singlestep_nfe_is_steps(steps, order):
    calls = []

    def score(x, t):
        calls.append(1)
        return MIX.score_fn(VPSDE())(x, t)

    r = sample(
        VPSDE(),
        score,
        (5, 2),
        sampler="sde_dpm_solver",
        steps=steps,
        order=order,
        method="singlestep",
        setup=SampleSetup(generator=torch.Generator().manual_seed(0)),
    )
    assert r.nfe == len(calls) == steps + 1
