"""VDM's schedule invariance (Kingma et al. 2021, §5.1) against closed forms: linear β and a polynomial β solved in
closed form for the same B(t_min) and B(T), hence the same λ-range. The logSNR grid is the same λ values, the
β(t)-free objective's expected loss of a fixed model agrees within MC error, and the exact-score ODE's samples agree;
L_simple (t ~ U) and a t-grid do not."""

import math

import pytest
import torch
from apps import compose_job  # (also puts experiments/ on the path)
from beta_invariance import common_range, cut

from sde_diffusion import VPSDE, LinearBeta, PolynomialBeta, eight_gaussians
from sde_diffusion.core.analytic import GaussianMixture
from sde_diffusion.objectives import build_objective
from sde_diffusion.sampling import INVERSE, SAMPLERS, SampleSetup, sample, timesteps

T_MIN = 1e-3


def equal_range_pair() -> tuple[VPSDE, VPSDE]:
    """Linear β(t) = 0.1 + 19.9t, B(t) = 0.1t + 9.95t², and β(t) = b₀ + 3c·t² (p = 2), B(t) = b₀t + ct³, with b₀, c
    solving B(t_min) and B(1) equal to linear's: b₀(t_min − t_min³) = B_lin(t_min) − B_lin(1)·t_min³,
    c = B_lin(1) − b₀."""
    b_lin = lambda t: 0.1 * t + 9.95 * t**2  # noqa: E731
    b0 = (b_lin(T_MIN) - b_lin(1.0) * T_MIN**3) / (T_MIN - T_MIN**3)
    c = b_lin(1.0) - b0
    return VPSDE(LinearBeta(0.1, 20.0)), VPSDE(PolynomialBeta(b0, b0 + 3 * c, 2.0))


def closed_form_log_snr(b: float) -> float:
    """λ = log(s/σ) = −½ log(e^B − 1) for s² = e^{−B}."""
    return -0.5 * math.log(math.expm1(b))


def test_the_pair_has_equal_ends_and_the_logsnr_grid_is_the_same_lambdas():
    lin, poly = equal_range_pair()
    for sde in (lin, poly):
        lo, hi = sde.log_snr_range(T_MIN)
        assert lo == pytest.approx(closed_form_log_snr(10.05), abs=1e-9)
        assert hi == pytest.approx(closed_form_log_snr(0.1 * T_MIN + 9.95 * T_MIN**2), abs=1e-9)
    t_lin, t_poly = (timesteps(sde, 12, T_MIN, "logsnr") for sde in (lin, poly))
    assert (t_lin[1:-1] - t_poly[1:-1]).abs().min() > 1e-3  # different times ...
    lam_lin, lam_poly = lin.log_snr(t_lin), poly.log_snr(t_poly)
    torch.testing.assert_close(lam_lin, lam_poly, atol=1e-8, rtol=0)  # ... the same λ values
    torch.testing.assert_close(lam_lin, torch.linspace(*lin.log_snr_range(T_MIN), 13, dtype=torch.float64))


UNIFORM_IN_T = {"torchsde"}  # torchsde's solvers take one step size: its grid is uniform in t by construction
GRID_SAMPLERS = [n for n, s in {**SAMPLERS, **INVERSE}.items() if s.times == "grid" and n not in UNIFORM_IN_T]


@pytest.mark.parametrize("name", GRID_SAMPLERS)
def test_every_grid_samplers_default_grid_is_the_same_lambdas_under_both_betas(name):
    """The defaults (spacing and by_steps) at every step count: different times under the two β(t) of one λ-range,
    the same λ values, so a β(t) sweep compares the schedules, not two grids."""
    spec, (lin, poly) = {**SAMPLERS, **INVERSE}[name], equal_range_pair()
    for steps in sorted({3, 4, 6, 9, 10, 13, 19, 20, 30, 50, *spec.by_steps, *(n + 1 for n in spec.by_steps)}):
        t_lin, t_poly = (spec.grid(sde, steps, T_MIN, {}).t for sde in (lin, poly))
        assert (t_lin[1:-1] - t_poly[1:-1]).abs().max() > 1e-3, (steps, spec.defaults(steps)["spacing"])
        torch.testing.assert_close(lin.log_snr(t_lin), poly.log_snr(t_poly), atol=1e-8, rtol=0)


def test_torchsde_alone_keeps_a_t_grid_because_it_takes_only_uniform_steps():
    assert SAMPLERS["torchsde"].options["spacing"].choices == ("time_uniform", "custom")


def expected(objective, model, oracle: GaussianMixture, seed: int, n: int = 40_000) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(seed)
    loss = objective(model, oracle.sample(n, gen).float(), generator=gen).double()
    return float(loss.mean()), float(loss.std() / math.sqrt(n))


def test_the_lambda_defined_loss_of_a_fixed_model_agrees_and_l_simple_does_not():
    oracle = eight_gaussians()
    wrong = GaussianMixture(oracle.weights, oracle.means, 2 * oracle.covs)  # a model of x and λ alone
    fixed, simple = [], []
    for seed, sde in enumerate(equal_range_pair()):
        edm = build_objective(sde, "edm", "uniform", t_min=T_MIN, sigma_data=2.83, p_mean=0.53)
        fixed.append(expected(edm, wrong.score_fn(sde), oracle, seed))
        simple.append(expected(build_objective(sde, "simple", t_min=1e-5), wrong.score_fn(sde), oracle, seed))
    (m1, s1), (m2, s2) = fixed
    assert abs(m1 - m2) < 4 * math.hypot(s1, s2)
    (m1, s1), (m2, s2) = simple
    assert abs(m1 - m2) > 8 * math.hypot(s1, s2)


def test_the_exact_score_odes_samples_agree_on_the_logsnr_grid_not_on_a_t_grid():
    oracle = eight_gaussians()
    x_T = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    pair = equal_range_pair()
    for spacing, agree in (("logsnr", True), ("time_quadratic", False)):
        a, b = (
            sample(
                s, oracle.score_fn(s), x_T.shape, "dpm_solver", 10, T_MIN, spacing=spacing, setup=SampleSetup(x_T=x_T)
            ).x
            for s in pair
        )
        assert ((a - b).norm(dim=1).max() < 1e-3) == agree


def test_cutting_each_beta_to_the_common_range_gives_it_exactly_that_range():
    lin, poly = equal_range_pair()
    sdes = {"linear": lin, "poly": VPSDE(PolynomialBeta(0.1, 30.0, 2.0))}
    lam_min, lam_max = common_range(sdes, T_MIN)
    for sde in sdes.values():
        cut_sde, t_end = cut(sde, lam_min, lam_max)
        assert cut_sde.log_snr_range(t_end) == pytest.approx((lam_min, lam_max), abs=1e-6)


def test_the_beta_sweep_preset_holds_a_lambda_defined_objective_and_grid_beside_l_simple():
    cfg = compose_job("train", "experiment=train/beta_sweep")
    params = cfg.hydra.sweeper.params
    assert set(params.schedule.split(",")) == {"linear", "cosine", "polynomial", "sigmoid", "learned"}
    assert params.loss.split(",") == ["edm", "simple"]
    runs = cfg.eval.samplers.values()
    assert {r.name for r in runs} == {"dpm_solver"} and {r.options.spacing for r in runs} == {"logsnr"}
