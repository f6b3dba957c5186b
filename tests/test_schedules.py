"""β(t) schedules against scipy quadrature and their published closed forms."""

import math

import pytest
import torch
from scipy.integrate import quad

from sde_diffusion import CallableBeta, ConstantBeta, CosineBeta, LinearBeta


def user_beta(t):
    return 0.5 + 12.0 * t**2 + torch.sin(3 * t) ** 2


SCHEDULES = {
    "linear": LinearBeta(0.1, 20.0),
    "linear_T2": LinearBeta(0.5, 10.0, T=2.0),
    "cosine": CosineBeta(),
    "cosine_lowclip": CosineBeta(s=0.02, beta_max=20.0),
    "constant": ConstantBeta(3.0),
    "user": CallableBeta(user_beta),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_integral_matches_scipy_quad(name):
    sched = SCHEDULES[name]
    t = torch.tensor([0.0, 1e-3, 0.1, 0.37, 0.5, 0.9, 0.97, 0.99, 1.0], dtype=torch.float64)
    got = sched.integral(t)
    for ti, gi in zip(t.tolist(), got.tolist(), strict=True):
        points = [sched.t_clip] if isinstance(sched, CosineBeta) and sched.t_clip < ti else None
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
def test_float32_and_any_shape(name):
    t = torch.rand(3, 4, 5)
    for f in (SCHEDULES[name].beta, SCHEDULES[name].integral):
        out = f(t)
        assert out.shape == t.shape and out.dtype == torch.float32 and torch.isfinite(out).all()


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
    ],
)
def test_bad_parameters_raise_value_error_naming_them(factory, param):
    with pytest.raises(ValueError, match=param):
        factory()
