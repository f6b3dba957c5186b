"""The learned β(t) (VDM's monotone γ(t)): a valid BetaSchedule, the samplers, likelihood and oracle work on it, a
checkpointed ScoreModel carries it, and, with the exact score, the ELBO depends on its endpoints only."""

import math

import pytest
import torch

from sde_diffusion import VPSDE, LearnedBeta, LinearBeta, mixture
from sde_diffusion.elbo import elbo
from sde_diffusion.models.mlp import MLP
from sde_diffusion.models.score_model import ScoreModel
from sde_diffusion.sampling import sample


def test_beta_is_the_derivative_of_its_integral_and_the_log_snr_is_gamma():
    sch = LearnedBeta(seed=3)
    t = torch.linspace(0, 1, 101, dtype=torch.float64).requires_grad_(True)
    (dB,) = torch.autograd.grad(sch.integral(t).sum(), t)
    with torch.no_grad():
        assert torch.allclose(dB, sch.beta(t), rtol=1e-10, atol=1e-10) and float(sch.integral(t)[0]) == 0
        lam, (g, _) = VPSDE(sch).log_snr(t[1:]), sch.gamma(t[1:])
        rho = t[1:] / (t[1:] + sch.t_zero)
        assert torch.allclose(-2 * lam, g + rho.log(), rtol=0, atol=1e-9)
        assert (g.diff() > 0).all() and abs(float(g[-1]) - float(sch.gamma_1)) < 1e-12
    # the defaults sit on linear β's λ at t = 1e-5 and at T
    ends = torch.tensor([1e-5, 1.0], dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(VPSDE(sch).log_snr(ends), VPSDE(LinearBeta()).log_snr(ends), atol=0.02)


def test_elbo_depends_only_on_the_endpoints():
    """VDM's claim, with the exact score: three random shapes with the same γ₀, γ₁ give the same −ELBO (the same
    draws: paired differences within 4 SE)."""
    mix = mixture(dim=4, k=3)
    x = mix.sample(256, torch.Generator().manual_seed(0))
    nll = []
    for seed in range(3):
        sde = VPSDE(LearnedBeta(seed=seed))
        with torch.no_grad():
            nll.append(elbo(sde, mix.score_fn(sde), x, n_t=16, generator=torch.Generator().manual_seed(1)).nll)
    for other in nll[1:]:
        diff = other - nll[0]
        assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(len(diff))


def test_samplers_and_the_oracle_run_on_it():
    sde, mix = VPSDE(LearnedBeta()), mixture(dim=4, k=3)
    with torch.no_grad():
        out = sample(sde, mix.score_fn(sde), (2000, 4), sampler="euler_maruyama", steps=200, t_min=1e-3,
                     dtype=torch.float64, generator=torch.Generator().manual_seed(0))  # fmt: skip
    # the first two moments of the samples against the data's, to 5 standard errors of 2 000 draws
    sd = mix.covariance.diag().sqrt()
    assert ((out.x.mean(0) - mix.mean).abs() < 5 * sd / math.sqrt(2000) + 0.05).all()


def test_a_score_model_carries_the_schedule_in_its_state_dict():
    sch = LearnedBeta(seed=1)
    model = ScoreModel(MLP(shape=(2,), hidden=8, layers=1), VPSDE(sch))
    with torch.no_grad():
        sch.gamma_1 += 1.0
    state = model.state_dict()
    assert "schedule.gamma_1" in state
    other = ScoreModel(MLP(shape=(2,), hidden=8, layers=1), VPSDE(LearnedBeta(seed=2)))
    other.load_state_dict(state)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(other.sde.schedule.integral(t), sch.integral(t))


@pytest.mark.parametrize(("kwargs", "key"), [({"gamma_0": 5.0, "gamma_1": 1.0}, "gamma_1"), ({"hidden": 0}, "hidden"),
                                             ({"t_zero": 2.0}, "t_zero")])  # fmt: skip
def test_bad_arguments_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        LearnedBeta(**kwargs)
