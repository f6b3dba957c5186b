"""The learned β(t) (VDM's monotone γ(t)): a valid BetaSchedule, the samplers, likelihood and oracle work on it, a
checkpointed ScoreModel carries it, and, with the exact score, the ELBO depends on its endpoints only."""

import math

import pytest
import torch

from sde_diffusion import VPSDE, LearnedBeta, LinearBeta, mixture
from sde_diffusion.models.mlp import MLP
from sde_diffusion.models.score_model import ScoreModel
from sde_diffusion.objectives.elbo import elbo
from sde_diffusion.sampling import SampleSetup, sample


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
        out = sample(
            sde,
            mix.score_fn(sde),
            (2000, 4),
            sampler="euler_maruyama",
            steps=200,
            t_min=1e-3,
            setup=SampleSetup(dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
        )
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


class _ExactEps(torch.nn.Module):
    """The ε-network of the exact score (ScoreModel's eps inputs x/√(s² + σ²), t/T), plus one unused weight: the
    network the Trainer's joint schedule training would converge to."""

    def __init__(self, mix, sde):
        super().__init__()
        self.mix, self.sde, self.unused = mix, sde, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_in, label):
        t = (label * self.sde.T).double()
        s, sigma = self.sde.scale(t)[:, None], self.sde.sigma(t)[:, None]
        x = x_in.double() * torch.sqrt(s**2 + sigma**2)
        return (-sigma * self.mix.score_fn(self.sde)(x, t)).to(x_in.dtype) + 0 * self.unused


def _joint_trainer(mix, seed=0, steps=300):
    from sde_diffusion.objectives import build_objective
    from sde_diffusion.training import Trainer

    sde = VPSDE(LearnedBeta(trainable=True, seed=seed))
    model = ScoreModel(_ExactEps(mix, sde), sde)
    objective = build_objective(sde, "likelihood", "schedule", stratified=True)  # LearnedScheduleELBO
    return Trainer(model, sde, _MixData(mix), objective=objective, steps=steps, batch_size=256, lr=2e-2, warmup=1,
                   ema_decay=0.0, grad_clip=None, progress=False)  # fmt: skip


class _MixData:
    def __init__(self, mix):
        self.mix, self.shape, self.oracle = mix, (mix.dim,), mix

    def batch(self, n, generator):
        return self.mix.sample(n, generator).float()


def test_joint_training_loss_is_the_elbo_estimator_in_nats():
    """The Trainer's per-example loss with a trainable schedule is VDM's L̂ (prior + (T − t_min)w‖ε̂ − ε‖² +
    reconstruction): its mean over draws equals elbo()'s importance-sampled −ELBO of the same points within 4 SE."""
    mix = mixture(dim=4, k=3)
    trainer = _joint_trainer(mix)
    x = mix.sample(256, torch.Generator().manual_seed(5)).float()
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        draws = torch.stack([trainer._loss(x, None)[0] for _ in range(64)])  # noqa: SLF001
        sde = trainer.sde
        ref = elbo(sde, mix.score_fn(sde), x.double(), t_min=trainer.objective.t_min, n_t=64, generator=gen)
    diff = draws.mean(0).double() - ref.nll
    se = math.sqrt(float(draws.var(0).mean()) / 64 / len(x) + float(ref.sem.pow(2).mean()) / len(x))
    assert abs(float(diff.mean())) < 4 * se, (float(diff.mean()), se)


@pytest.mark.slow
def test_joint_training_cuts_the_estimators_variance_and_keeps_the_elbo():
    """VDM §5.3 through the Trainer, with the exact score: 800 steps cut Var L̂ ≥ 3× (uniform t) and E[L̂] does not
    get worse beyond 4 SE (the 16-D mixture of docs/likelihood.md's figure)."""
    mix = mixture(dim=16, k=10)
    trainer = _joint_trainer(mix, steps=800)
    x = mix.sample(256, torch.Generator().manual_seed(7)).float()

    def moments():
        with torch.no_grad():
            loss = torch.cat([trainer._loss(x, None)[0] for _ in range(32)]).double()  # noqa: SLF001
        return float(loss.var()), float(loss.mean()), float(loss.std()) / math.sqrt(len(loss))

    var0, mean0, se0 = moments()
    trainer.fit()
    var1, mean1, se1 = moments()
    assert var0 / var1 >= 3, (var0, var1)
    assert mean1 < mean0 + 4 * math.hypot(se0, se1), (mean0, mean1)


def test_joint_training_needs_the_elbo_weighting_with_uniform_t():
    from sde_diffusion.core.checks import ArgumentError
    from sde_diffusion.objectives import Objective, build_objective
    from sde_diffusion.training import Trainer

    mix, sde = mixture(dim=4, k=3), VPSDE(LearnedBeta(trainable=True))
    for kw, key in (({"weighting": "simple"}, "weighting"), ({"weighting": "likelihood", "density": "importance"},
                                                             "density")):  # fmt: skip
        with pytest.raises(ArgumentError, match=f"^{key} .*to train schedule=learned"):
            build_objective(sde, **kw)
    with pytest.raises(ArgumentError, match="^weighting .*to train schedule=learned"):
        Objective(sde)  # its optimiser would train the schedule on the wrong loss
    with pytest.raises(ValueError, match="LearnedScheduleELBO trains in one process"):
        Trainer(ScoreModel(_ExactEps(mix, sde), sde), sde, _MixData(mix), world_size=2,
                objective=build_objective(sde, "likelihood", "schedule"), steps=1, batch_size=8)  # fmt: skip
