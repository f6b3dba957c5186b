"""β(t) schedules against scipy quadrature and their published closed forms."""

import math
import warnings

import pytest
import torch
from scipy.integrate import quad

from sde_diffusion import VPSDE, CallableBeta, ConstantBeta, CosineBeta, EDMBeta, LinearBeta, SubVPSDE
from sde_diffusion.core.schedules import LogSNRLinearBeta, PolynomialBeta, SigmoidBeta
from sde_diffusion.core.sde import PriorMismatchWarning
from sde_diffusion.sampling import timesteps


def user_beta(t):
    return 0.5 + 12.0 * t**2 + torch.sin(3 * t) ** 2


SCHEDULES = {
    "linear": LinearBeta(0.1, 20.0),
    "linear_T2": LinearBeta(0.5, 10.0, T=2.0),
    "cosine": CosineBeta(),
    "cosine_lowclip": CosineBeta(s=0.02, beta_max=20.0),
    "constant": ConstantBeta(3.0),
    "user": CallableBeta(user_beta),
    "polynomial": PolynomialBeta(),
    "polynomial_sqrt_T2": PolynomialBeta(0.5, 10.0, p=0.5, T=2.0),
    "sigmoid": SigmoidBeta(),
    "sigmoid_chen_fig": SigmoidBeta(start=0.0, end=3.0, tau=0.3, beta_max=200.0),
    "logsnr_linear": LogSNRLinearBeta(),
    "logsnr_linear_T2": LogSNRLinearBeta(10.0, -10.0, T=2.0),
    "edm": EDMBeta(),
    "edm_rho3": EDMBeta(0.01, 50.0, rho=3.0),
}
NEW_DEFAULTS = [PolynomialBeta, SigmoidBeta, LogSNRLinearBeta, EDMBeta]


@pytest.mark.parametrize("name", SCHEDULES)
def test_integral_matches_scipy_quad(name):
    sched = SCHEDULES[name]
    t = torch.tensor([0.0, 1e-3, 0.1, 0.37, 0.5, 0.9, 0.97, 0.99, 1.0], dtype=torch.float64)
    got = sched.integral(t)
    for ti, gi in zip(t.tolist(), got.tolist(), strict=True):
        points = [sched.t_clip] if getattr(sched, "t_clip", math.inf) < ti else None
        ref, _ = quad(
            lambda s: float(sched.beta(torch.tensor(s, dtype=torch.float64))),
            0,
            ti,
            epsabs=1e-13,
            epsrel=1e-13,
            points=points,
            limit=200,
        )
        assert abs(gi - ref) <= 1e-8 * max(1.0, abs(ref)), (name, ti, gi, ref)


@pytest.mark.parametrize("name", SCHEDULES)
def test_integral_inverse_round_trip_and_gradient(name):
    sched = SCHEDULES[name]
    t = torch.linspace(0.01, 1.0, 37, dtype=torch.float64, requires_grad=True)
    b = sched.integral(t)
    torch.testing.assert_close(sched.integral_inverse(b.detach()), t.detach(), atol=1e-9, rtol=0)
    (grad,) = torch.autograd.grad(b.sum(), t)  # dB/dt = β(t)
    torch.testing.assert_close(grad, sched.beta(t.detach()), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("name", SCHEDULES)
def test_float32_any_shape_and_relative_precision_down_to_t_0(name):
    """float32 in, float32 out, any shape, and B(t) to 32 ulps of its own value on t ∈ [10⁻⁷T, T]: a few roundings,
    no cancellation near t = 0, where σ(t)² ≈ B(t) is the smallest noise level. β to 2¹⁰ ulps: its steepest step,
    SigmoidBeta's k/expm1(e − u) at the clip, turns u's rounding (3ε) into 3ε/(e − u_c) ≈ 3ε·β_max/k = 500ε."""
    sched = SCHEDULES[name]
    T = getattr(sched, "T", 1.0)
    t = torch.cat([torch.logspace(-7, 0, 60), torch.rand(60, generator=torch.Generator().manual_seed(0))]) * T
    t = t.reshape(3, 2, 20)
    ulp = torch.finfo(torch.float32).eps
    for f, ulps in ((sched.integral, 32), (sched.beta, 2**10)):
        out, exact = f(t), f(t.double())
        assert out.shape == t.shape and out.dtype == torch.float32
        assert ((out.double() - exact).abs() / exact).max() <= ulps * ulp, f.__name__


def test_cosine_alpha_bar_is_nichol_dhariwal():
    s = 0.008
    sched = CosineBeta(s=s)
    t = torch.linspace(0, sched.t_clip, 50, dtype=torch.float64)

    def f(u):
        return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    torch.testing.assert_close(
        torch.exp(-sched.integral(t)), f(t) / f(torch.zeros((), dtype=torch.float64)), atol=1e-12, rtol=0
    )
    beyond = torch.tensor([sched.t_clip + 1e-6, 1.0], dtype=torch.float64)
    assert torch.all(sched.beta(beyond) == sched.beta_max)


def test_linear_is_affine():
    sched = LinearBeta(0.1, 20.0)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(sched.beta(t), torch.tensor([0.1, 10.05, 20.0], dtype=torch.float64))


@pytest.mark.parametrize(
    ("factory", "param"),
    [
        (lambda: LinearBeta(beta_min=0.0), "beta_min"),
        (lambda: LinearBeta(beta_min=-1.0), "beta_min"),
        (lambda: LinearBeta(beta_min=5.0, beta_max=1.0), "beta_max"),
        (lambda: LinearBeta(T=0.0), "T"),
        (lambda: CosineBeta(s=0.0), "s"),
        (lambda: CosineBeta(s=-0.1), "s"),
        (lambda: CosineBeta(beta_max=-1.0), "beta_max"),
        (lambda: CosineBeta(beta_max=0.01), "beta_max"),
        (lambda: ConstantBeta(beta=0.0), "beta"),
        (lambda: CallableBeta(3.0), "beta_fn"),
        (lambda: CallableBeta(user_beta, T=0.0), "T"),
        (lambda: PolynomialBeta(beta_min=0.0), "beta_min"),
        (lambda: PolynomialBeta(beta_min=5.0, beta_max=1.0), "beta_max"),
        (lambda: PolynomialBeta(p=0.0), "p"),
        (lambda: PolynomialBeta(T=-1.0), "T"),
        (lambda: SigmoidBeta(tau=0.0), "tau"),
        (lambda: SigmoidBeta(start=3.0, end=-3.0), "end"),
        (lambda: SigmoidBeta(beta_max=0.1), "beta_max"),
        (lambda: SigmoidBeta(T=0.0), "T"),
        (lambda: LogSNRLinearBeta(lambda_max=-5.0, lambda_min=5.0), "lambda_max"),
        (lambda: LogSNRLinearBeta(lambda_min=-math.inf), "lambda_min"),
        (lambda: LogSNRLinearBeta(T=0.0), "T"),
        (lambda: EDMBeta(sigma_min=0.0), "sigma_min"),
        (lambda: EDMBeta(sigma_max=0.001), "sigma_max"),
        (lambda: EDMBeta(rho=-7.0), "rho"),
        (lambda: EDMBeta(T=0.0), "T"),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(factory, param):
    with pytest.raises(ValueError, match=param):
        factory()


@pytest.mark.parametrize("name", SCHEDULES)
def test_beta_nonnegative_and_integral_increasing(name):
    sched = SCHEDULES[name]
    t = torch.linspace(0, 1, 4001, dtype=torch.float64)
    assert bool((sched.beta(t) >= 0).all())
    b = sched.integral(t)
    assert b[0] == 0 and bool((b.diff() > 0).all())


def test_sigmoid_alpha_bar_is_chens_algorithm_1_until_the_clip():
    start, end, tau = -3.0, 3.0, 1.1
    sched = SigmoidBeta(start, end, tau, beta_max=300.0)

    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    v_start, v_end = sigmoid(start / tau), sigmoid(end / tau)
    for t in torch.linspace(0, sched.t_clip, 41, dtype=torch.float64).tolist():
        chen = (v_end - sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)
        assert math.exp(-float(sched.integral(torch.tensor(t, dtype=torch.float64)))) == pytest.approx(chen, rel=1e-12)
    # β reaches β_max at t_clip from below and stays there
    before = sched.beta(torch.tensor([sched.t_clip - 1e-9], dtype=torch.float64))
    assert float(before) == pytest.approx(300.0, rel=1e-6)
    assert bool((sched.beta(torch.tensor([sched.t_clip + 1e-6, 1.0], dtype=torch.float64)) == 300.0).all())


def test_polynomial_p1_is_linear():
    t = torch.linspace(0, 2, 9, dtype=torch.float64)
    poly, lin = PolynomialBeta(0.3, 12.0, p=1.0, T=2.0), LinearBeta(0.3, 12.0, T=2.0)
    torch.testing.assert_close(poly.beta(t), lin.beta(t), rtol=1e-14, atol=0)
    torch.testing.assert_close(poly.integral(t), lin.integral(t), rtol=1e-14, atol=0)


def test_logsnr_linear_has_vdm_alpha_bar_divided_by_its_value_at_0():
    lam_max, lam_min = 6.65, -5.0
    sched = LogSNRLinearBeta(lam_max, lam_min)
    t = torch.linspace(0, 1, 21, dtype=torch.float64)
    lam = lam_max - (lam_max - lam_min) * t
    torch.testing.assert_close(
        torch.exp(-sched.integral(t)),
        torch.sigmoid(2 * lam) * (1 + math.exp(-2 * lam_max)),
        rtol=1e-12,
        atol=0,
    )


def test_logsnr_linear_log_snr_is_the_line_up_to_the_stated_bound():
    """0 ≤ λ̂ − λ ≤ e^{−2Δλt/T} + e^{−2λ_max}/2 wherever e^{−2Δλt/T} ≤ ¾ (the class docstring)."""
    lam_max, lam_min = 6.65, -5.0
    sde = VPSDE(LogSNRLinearBeta(lam_max, lam_min))
    t = torch.linspace(0.02, 1, 200, dtype=torch.float64)
    x = torch.exp(-2 * (lam_max - lam_min) * t)
    gap = sde.log_snr(t) - (lam_max - (lam_max - lam_min) * t)
    assert bool((gap >= -1e-12).all())
    ok = x <= 0.75
    assert bool((gap[ok] <= x[ok] + 0.5 * math.exp(-2 * lam_max)).all())
    assert float(gap[0]) > 0.1  # near t = 0 the log-SNR is not the line: λ̂ → ∞ there


def _uniform_gap(sde, t_min, steps=10):
    grid = timesteps(sde, steps, t_min, "logsnr")
    return float((grid - torch.linspace(sde.T, t_min, steps + 1, dtype=torch.float64)).abs().max())


@pytest.mark.parametrize(("t_min", "uniform_to"), [(1e-3, 0.17), (0.05, 0.017), (0.5, 4e-7)])
def test_logsnr_linear_makes_logsnr_time_steps_uniform_in_time(t_min, uniform_to):
    """`logsnr` steps are uniform in λ̂ = λ + δ, δ(t) = ½log(1 + e^{−2λ_max}) − ½log(1 − e^{−2(λ_max − λ(t))}) falling
    in t. Uniform time u_i has λ(u_i) uniform, so |λ(t_i) − λ(u_i)| ≤ δ(t_min) − δ(T), i.e. |t_i − u_i| ≤
    T(δ(t_min) − δ(T))/Δλ: equal to rounding once t_min·Δλ/T ≳ 10, while near t = 0 no VP schedule has a linear λ̂."""
    lam_max, lam_min = 6.65, -5.0
    sde = VPSDE(LogSNRLinearBeta(lam_max, lam_min))

    def delta(t):
        lam = lam_max - (lam_max - lam_min) * t
        return 0.5 * math.log1p(math.exp(-2 * lam_max)) - 0.5 * math.log1p(-math.exp(-2 * (lam_max - lam)))

    bound = (delta(t_min) - delta(1.0)) / (lam_max - lam_min)
    assert bound <= uniform_to
    assert _uniform_gap(sde, t_min) <= bound + 1e-12
    assert _uniform_gap(VPSDE(LinearBeta()), t_min) > 0.02  # another schedule's logsnr grid is far from uniform


def test_edm_alpha_bar_is_the_karras_noise_levels_read_backwards():
    sigma_min, sigma_max, rho, n = 0.002, 80.0, 7.0, 18
    sched = EDMBeta(sigma_min, sigma_max, rho)
    i = torch.arange(n, dtype=torch.float64)
    karras = (sigma_max ** (1 / rho) + i / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    t = 1 - i / (n - 1)
    torch.testing.assert_close(torch.exp(-sched.integral(t)), (1 + sigma_min**2) / (1 + karras**2), rtol=1e-12, atol=0)


def test_a_negative_or_infinite_user_beta_is_rejected_naming_the_time():
    with pytest.raises(ValueError, match=r"beta\(0\.5001\) = -0\.0002"):
        CallableBeta(lambda t: 1 - 2 * t)
    with pytest.raises(ValueError, match=r"beta\(0\.7001\) = inf"):
        CallableBeta(lambda t: torch.where(t > 0.7, math.inf, 1.0))
    with pytest.raises(ValueError, match=r"beta\(0\) = nan"):
        CallableBeta(lambda t: torch.sqrt(t - 0.1) + 1)
    with pytest.raises(ValueError, match=r"shape \(10001,\).*got float"):
        CallableBeta(lambda t: 2.0)


def test_the_sde_checks_beta_on_its_own_interval():
    beta = CallableBeta(lambda t: 12 - 8 * t)  # fine on the schedule's [0, 1] ...
    VPSDE(beta, T=1.0)
    with pytest.raises(ValueError, match=r"T=2\], got beta\(1\.5002\)"):  # ... not on the SDE's [0, 2]
        VPSDE(beta, T=2.0)


@pytest.mark.parametrize("sde_cls", [VPSDE, SubVPSDE])
def test_prior_mismatch_warns_with_its_size(sde_cls):
    with pytest.warns(PriorMismatchWarning) as record:
        sde_cls(LinearBeta(0.1, 5.0))  # B(1) = 0.1 + 4.9/2 = 2.55
    assert len(record) == 1
    message = str(record[0].message)
    assert f"s(T) = {math.exp(-2.55 / 2):.3g}" in message and f"= {math.exp(-2.55):.3g} > 1e-3" in message
    assert "raise beta_max or T" in message
    with pytest.warns(PriorMismatchWarning, match="now 6.9"):
        sde_cls(ConstantBeta(6.9))  # s(T)² = 1.008e-3, just over the line


@pytest.mark.parametrize("schedule", [LinearBeta, CosineBeta, *NEW_DEFAULTS, lambda: ConstantBeta(6.92)])
def test_no_prior_mismatch_warning_for_the_defaults(schedule):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PriorMismatchWarning)
        VPSDE(schedule())
        SubVPSDE(schedule())


@pytest.mark.parametrize(
    "schedule, name",
    [
        (LinearBeta(), "linear (β_min = 0.1, β_max = 20)"),
        (ConstantBeta(2.5), "constant (β = 2.5)"),
        (CosineBeta(), "cosine (s = 0.008)"),
        (CosineBeta(s=0.01, T=2.0), "cosine (s = 0.01, T = 2)"),
        (PolynomialBeta(), "polynomial (β_min = 0.1, β_max = 30, p = 2)"),
        (SigmoidBeta(), "sigmoid (start = -3, end = 3, τ = 1)"),
        (LogSNRLinearBeta(), "log-SNR linear (λ_max = 6.65, λ_min = -5)"),
        (EDMBeta(), "EDM (σ_min = 0.002, σ_max = 80, ρ = 7)"),
        (CallableBeta(lambda t: 10 + t), "callable"),
    ],
)
def test_every_schedule_is_named_as_a_person_would_in_figure_titles(schedule, name):
    from sde_diffusion.evaluation.plots import describe

    assert schedule.name == name
    assert describe("EightGaussians", VPSDE(schedule)) == f"EightGaussians · VPSDE, β(t) = {name}"
