"""The adaptive reverse-SDE solver of Jolicoeur-Martineau et al. (2021): its step by hand, tolerance against error
and NFE on a Gaussian, every SDE on the oracle, honest NFE, and the per-sample mode's need for many dimensions."""

import pytest
import torch

from sde_diffusion import VESDE, VPSDE, GaussianMixture, SubVPSDE, eight_gaussians
from sde_diffusion.sampling import SampleSetup, SolverError, sample

MIX = eight_gaussians()


def gaussian(dim: int, n_var: float = 0.3) -> GaussianMixture:
    """N(0.5, 0.3 I) in `dim` dimensions as a one-component mixture."""
    return GaussianMixture(torch.ones(1), torch.full((1, dim), 0.5, dtype=torch.float64),
                           n_var * torch.eye(dim, dtype=torch.float64)[None])  # fmt: skip


def test_two_accepted_steps_are_em_and_stochastic_improved_euler_by_hand():
    """With tolerances no error can fail, Alg. 1 tries h₀ = 0.01, accepts x″, then grows h to reach t_min at once."""
    sde, g, t_min = VPSDE(), gaussian(2), 1e-3
    score = g.score_fn(sde)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample(
        sde,
        score,
        (6, 2),
        sampler="adaptive_sde",
        t_min=t_min,
        denoise=False,
        rtol=1e9,
        atol=1e9,
        setup=SampleSetup(x_T=x, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
    )
    gen = torch.Generator().manual_seed(1)

    def a(y, t):  # the reverse drift f x − g² ∇log p at the scalar time t
        tt = torch.tensor([t], dtype=torch.float64)
        return float(sde.f(tt)) * y - float(sde.g(tt)) ** 2 * score(y, tt.expand(len(y)))

    def g_(t):
        return float(sde.g(torch.tensor([t], dtype=torch.float64)))

    for t, h in ((1.0, 0.01), (0.99, 0.99 - t_min)):
        z = torch.randn(6, 2, generator=gen, dtype=torch.float64)
        x_em = x - h * a(x, t) + g_(t) * h**0.5 * z
        x = x - 0.5 * h * (a(x, t) + a(x_em, t - h)) + 0.5 * (g_(t) + g_(t - h)) * h**0.5 * z
    assert out.nfe == 4
    torch.testing.assert_close(out.x, x, rtol=1e-10, atol=1e-10)


def _runs(rtols, atol=1e-3, n=200_000):
    """(NFE, |Var(x) − Var_exact|) at t_min for a 1-D Gaussian started from the exact p_T, VP."""
    sde, g = VPSDE(), gaussian(1)
    x_T = g.marginal(sde, sde.T).sample(n, torch.Generator().manual_seed(0))
    exact = g.marginal(sde, 1e-3).covs[0, 0, 0].item()
    runs = [
        sample(
            sde,
            g.score_fn(sde),
            (n, 1),
            sampler="adaptive_sde",
            denoise=False,
            rtol=r,
            atol=atol,
            setup=SampleSetup(x_T=x_T, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
        )
        for r in rtols
    ]
    return [r.nfe for r in runs], [abs(r.x.var().item() - exact) for r in runs]


def test_tightening_rtol_costs_nfe_and_cuts_the_error():
    """Measured: rtol 0.8, 0.4, 0.2 → NFE 18, 30, 48 and variance errors 6.3e-2, 2.1e-2, 3.0e-3 (SE 1e-3)."""
    nfe, errs = _runs([0.8, 0.4, 0.2])
    assert nfe[0] < nfe[1] < nfe[2], nfe
    assert all(b < a / 2 for a, b in zip(errs[:-1], errs[1:], strict=True)), errs


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_every_sde_samples_the_oracle(sde):
    """rtol = 0.05: the mode weights and the spread inside each mode (std 0.15) are right. (At the default, ≈ 50 NFE,
    sub-VP's spread is still 6% short, VP's and VE's 1–3%.)"""
    r = sample(
        sde,
        MIX.score_fn(sde),
        (2000, 2),
        sampler="adaptive_sde",
        rtol=0.05,
        setup=SampleSetup(generator=torch.Generator().manual_seed(0)),
    )
    x = r.x.double()
    residual = x - MIX.means[MIX.responsibilities(x).argmax(1)]
    assert residual.std().item() == pytest.approx(0.15, rel=0.05)
    weights = torch.bincount(MIX.responsibilities(x).argmax(1), minlength=8) / len(x)
    assert (weights - 1 / 8).abs().sum().item() < 0.1


def test_nfe_counts_every_tried_step_twice():
    calls = []

    def score(x, t):
        calls.append(1)
        return MIX.score_fn(VPSDE())(x, t)

    r = sample(
        VPSDE(),
        score,
        (64, 2),
        sampler="adaptive_sde",
        rtol=0.05,
        setup=SampleSetup(generator=torch.Generator().manual_seed(0)),
    )
    assert r.nfe == len(calls) and (r.nfe - 1) % 2 == 0 and r.nfe > 20  # 2 per tried step + the Tweedie step


def test_per_sample_steps_need_many_dimensions():
    """The authors' per-sample control: fine on a 1024-D Gaussian (as the batch control), too spread in 1-D."""
    sde = VPSDE()
    errs = {}
    for dim, n in ((1, 20_000), (1024, 200)):
        g = gaussian(dim)
        x_T = g.marginal(sde, sde.T).sample(n, torch.Generator().manual_seed(0))
        exact = g.marginal(sde, 1e-3).covs[0, 0, 0].item()
        for per_sample in (True, False):
            x = sample(
                sde,
                g.score_fn(sde),
                (n, dim),
                sampler="adaptive_sde",
                denoise=False,
                rtol=0.2,
                atol=1e-3,
                per_sample=per_sample,
                setup=SampleSetup(x_T=x_T, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
            ).x
            errs[dim, per_sample] = x.var().item() - exact
    assert abs(errs[1024, True]) < 0.01 and abs(errs[1024, False]) < 0.01 and abs(errs[1, False]) < 0.01, errs
    assert errs[1, True] > 0.1, errs


def test_a_non_finite_score_names_the_time_reached():
    def score(x, t):
        out = MIX.score_fn(VPSDE())(x, t)
        return out if float(t[0]) > 0.5 else out * float("nan")

    with pytest.raises(SolverError, match=r"t=0\.[5-9]\d*: the error estimate is not finite"):
        sample(
            VPSDE(),
            score,
            (4, 2),
            sampler="adaptive_sde",
            setup=SampleSetup(generator=torch.Generator().manual_seed(0)),
        )
