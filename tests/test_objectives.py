"""The objectives in log-SNR against closed forms: today's losses, each weighting's formula, the importance density
(normalised, its draws by a KS test, Song et al. 2021b's closed form), β(t)-invariance, adaptive resume."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from sde_diffusion import VESDE, VPSDE, CosineBeta, LinearBeta, SubVPSDE
from sde_diffusion.analytic import mixture
from sde_diffusion.data import EightGaussians
from sde_diffusion.losses import dsm_loss
from sde_diffusion.models import MLP, ScoreModel
from sde_diffusion.objectives import DENSITIES, WEIGHTINGS, Objective
from sde_diffusion.sde import RectifiedFlowSDE
from sde_diffusion.training import Trainer

SDES = {
    "vp": lambda: VPSDE(LinearBeta()),
    "subvp_cosine": lambda: SubVPSDE(CosineBeta()),
    "ve": lambda: VESDE(0.01, 50.0),
    "rf": lambda: RectifiedFlowSDE(),
}
GM = mixture(dim=3, k=4, seed=1)


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("weighting", ["simple", "sigma2", "likelihood"])
def test_schedule_density_reproduces_todays_dsm_loss(name, weighting):
    """Same generator, same draws: simple bitwise (float32: the default path), sigma2 and likelihood to rounding."""
    sde, score = SDES[name](), GM.score_fn(SDES[name]())
    x0 = GM.sample(256, torch.Generator().manual_seed(0)).float()
    new = Objective(sde, weighting, t_min=1e-3)(score, x0, generator=torch.Generator().manual_seed(1))
    old = dsm_loss(sde, score, x0, 1e-3, weighting, torch.Generator().manual_seed(1))
    if weighting == "simple":
        assert torch.equal(new, old)
    torch.testing.assert_close(new, old, rtol=1e-5, atol=0)


def _p_schedule_by_autograd(sde, t, t_min):
    """p(λ) of t ~ U(t_min, T): |dt/dλ|/(T − t_min), dλ/dt by autograd of log_snr (not the g²/σ² identity)."""
    t = t.clone().requires_grad_(True)
    (dlam,) = torch.autograd.grad(sde.log_snr(t).sum(), t)
    return 1 / (dlam.abs() * (sde.T - t_min))


@pytest.mark.parametrize("name", SDES)
def test_each_weighting_is_its_formula(name):
    sde, t_min = SDES[name](), 1e-3
    t = torch.linspace(0.01, 0.99, 49, dtype=torch.float64) * sde.T
    lam = sde.log_snr(t)
    p_sched = _p_schedule_by_autograd(sde, t, t_min)
    snr, sigma_t = torch.exp(2 * lam), torch.exp(-lam)
    ends = sde.log_snr(torch.tensor([sde.T, t_min], dtype=torch.float64))
    lognormal = stats.truncnorm((-ends[1] + 1.2) / 1.2, (-ends[0] + 1.2) / 1.2, loc=-1.2, scale=1.2).pdf(-lam)
    expected = {
        "simple": p_sched,
        "sigma2": p_sched,
        "likelihood": torch.full_like(t, 2 / (sde.T - t_min)),  # constant in λ: the ELBO
        "min_snr": p_sched * torch.clamp(5.0 / snr, max=1.0),
        "edm": torch.as_tensor(lognormal) * (sigma_t**2 + 0.5**2) / 0.5**2,
        "sigmoid": 2 / (sde.T - t_min) / (1 + torch.exp(2 * lam - 1.5)),
        "flow": p_sched * (1 + sigma_t) ** 2,
    }
    for weighting in WEIGHTINGS:
        obj = Objective(sde, weighting, t_min=t_min, gamma=5.0, sigma_data=0.5, bias=1.5)
        torch.testing.assert_close(obj.w(t, lam), expected[weighting], rtol=1e-7, atol=0, msg=weighting)


def _target_cdf(obj):
    """CDF of the density ∝ w(λ) on the SDE's λ-range, by scipy quadrature of w on 200 cells (float64)."""

    def w(lam):
        lam_t = torch.tensor([lam], dtype=torch.float64)
        return float(obj.w(obj.sde.log_snr_inverse(lam_t), lam_t))

    grid = np.linspace(obj.density.lam_min, obj.density.lam_max, 201)
    cum = np.concatenate(
        [[0.0], np.cumsum([integrate.quad(w, a, b)[0] for a, b in zip(grid[:-1], grid[1:], strict=True)])]
    )
    return lambda x: np.interp(x, grid, cum / cum[-1])


@pytest.mark.parametrize("weighting", ["edm", "min_snr", "likelihood"])
def test_importance_density_integrates_to_one_and_its_draws_follow_w(weighting):
    sde = VPSDE(CosineBeta())
    obj = Objective(sde, weighting, "importance", t_min=1e-3, sigma_data=0.5)
    d = obj.density
    lam = torch.linspace(d.lam_min, d.lam_max, 20_001, dtype=torch.float64)
    assert abs(float(torch.trapezoid(d.pdf(None, lam), lam)) - 1) < 1e-3
    t, _ = obj.draw((20_000, 1), torch.Generator().manual_seed(0), torch.float64)
    assert stats.kstest(sde.log_snr(t).numpy(), _target_cdf(obj)).pvalue > 1e-3


def test_likelihood_importance_draws_are_song_2021b_closed_form():
    """Linear β: t ∝ g²/σ² = β/(1 − e^{−B}) has CDF ∝ log(e^{B(t)} − 1), so u ↦ B(t) in closed form, t from the
    quadratic B(t) = β₀t + ½(β₁ − β₀)t² (Song et al. 2021b, App. F; score_sde's importance sampler)."""
    b0, b1, t_min = 0.1, 20.0, 1e-5
    sde = VPSDE(LinearBeta(b0, b1))
    obj = Objective(sde, "likelihood", "importance", t_min=t_min)
    u = torch.rand(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    B = lambda t: b0 * t + 0.5 * (b1 - b0) * t**2  # noqa: E731
    lo, hi = math.log(math.expm1(B(t_min))), math.log(math.expm1(B(1.0)))
    big_b = torch.log1p(torch.exp(hi + (lo - hi) * u))  # u = 0 at t = T (λ ascends from λ(T))
    closed = (-b0 + torch.sqrt(b0**2 + 2 * (b1 - b0) * big_b)) / (b1 - b0)
    torch.testing.assert_close(obj.density.t(u), closed, rtol=1e-9, atol=1e-12)


class _SigmaNet(torch.nn.Module):
    """A network of (c_in x̃, c_noise) only, as the x0 parameterisation feeds it: a function of (x̃, σ̃)."""

    def __init__(self):
        super().__init__()
        self.mlp = MLP((3,), hidden=32, layers=2)

    def forward(self, x, c_noise):
        return self.mlp(x, c_noise)


@pytest.mark.parametrize("weighting", ["likelihood", "sigmoid"])
def test_two_betas_with_the_same_p_and_w_give_the_same_loss_and_gradient(weighting):
    """β(t) enters only through p(λ) and w(λ) (Kingma et al. 2021): linear and cosine VP, λ ~ U(−4, 5) and a β-free w
    give the same loss and gradient for a model of (x̃, σ̃); with w = simple (β-dependent) they differ."""
    torch.manual_seed(0)
    net = _SigmaNet().double()
    x0 = GM.sample(4096, torch.Generator().manual_seed(0))
    results = []
    for sde in (VPSDE(LinearBeta()), VPSDE(CosineBeta())):
        model = ScoreModel(net, sde, "x0", sigma_data=2.0)
        obj = Objective(sde, weighting, "uniform", t_min=1e-4, lam_min=-4.0, lam_max=5.0)
        loss = obj(model, x0, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad(loss.mean(), list(net.parameters()))
        other = obj(model, x0, generator=torch.Generator().manual_seed(2)).detach()  # independent draws
        results.append((loss, torch.cat([g.flatten() for g in grads]), other))
    (la, ga, oa), (lb, gb, ob) = results
    torch.testing.assert_close(la, lb, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-10)
    se = math.sqrt((oa.var() + ob.var()) / len(oa))
    assert abs(float(oa.mean() - ob.mean())) < 4 * se
    simple = [Objective(s, "simple", "uniform", lam_min=-4.0, lam_max=5.0) for s in (VPSDE(), VPSDE(CosineBeta()))]
    ls = [o(ScoreModel(net, o.sde, "x0", 2.0), x0, generator=torch.Generator().manual_seed(1)).detach() for o in simple]
    assert abs(float(ls[0].mean() - ls[1].mean())) > 4 * math.sqrt((ls[0].var() + ls[1].var()) / len(x0))


@pytest.mark.parametrize("density", DENSITIES)
def test_the_drawn_weights_are_those_of_the_drawn_t(density):
    """`draws` reuses the draw's λ and p(λ) for w/p; recomputed from t alone (`ratio(t)`) they agree to rounding."""
    sde = VPSDE(CosineBeta())
    for weighting in WEIGHTINGS:
        obj = Objective(sde, weighting, density, t_min=1e-3, sigma_data=0.5, bias=1.5, p_mean=0.5)
        d = obj.draws((4096, 1), torch.Generator().manual_seed(0), torch.float64)
        if d.lam is not None:
            torch.testing.assert_close(d.lam, sde.log_snr(d.t), rtol=1e-9, atol=1e-9, msg=weighting)
        if d.ratio is None:
            assert obj.ratio(d.t) is None
        else:
            torch.testing.assert_close(d.ratio, obj.ratio(d.t), rtol=1e-7, atol=0, msg=weighting)


def test_every_density_is_unbiased_for_the_same_objective():
    """E_p[w/p·ℓ] does not depend on p: each density's mean loss of the exact score agrees within MC error."""
    sde = VPSDE()
    x0 = GM.sample(20_000, torch.Generator().manual_seed(0))
    means = {}
    for density in ("lognormal", "uniform", "importance", "adaptive"):
        loss = Objective(sde, "edm", density, t_min=1e-3, sigma_data=2.0)(
            GM.score_fn(sde), x0, generator=torch.Generator().manual_seed(3)
        )
        means[density] = (float(loss.mean()), float(loss.std()) / math.sqrt(len(loss)))
    ref, ref_se = means.pop("lognormal")
    for density, (m, se) in means.items():
        assert abs(m - ref) < 4 * math.hypot(se, ref_se), (density, m, ref)


def test_stratified_draws_put_one_uniform_in_each_stratum():
    obj = Objective(VPSDE(), stratified=True)
    t, _ = obj.draw((64, 2), torch.Generator().manual_seed(0), torch.float64)
    u = (t - obj.t_min) / (obj.sde.T - obj.t_min)
    assert torch.equal(torch.floor(u * 64), torch.arange(64, dtype=torch.float64))


def test_adaptive_density_state_resumes_bitwise():
    def trainer():
        torch.manual_seed(0)
        sde = VPSDE()
        obj = Objective(sde, "simple", "adaptive", bins=8, ema_decay=0.5)
        return Trainer(ScoreModel(MLP((2,), hidden=16, layers=1), sde), sde, EightGaussians(), steps=6,
                       batch_size=64, objective=obj, progress=False)  # fmt: skip

    straight = trainer()
    straight.fit()
    first = trainer()
    first.steps = 3
    first.fit()
    state = first.state_dict()
    resumed = trainer()
    resumed.load_state_dict(state)
    resumed.fit()
    assert not torch.equal(state["objective"]["ema"], trainer().objective.state_dict()["ema"])  # it did adapt
    assert torch.equal(straight.objective.state_dict()["ema"], resumed.objective.state_dict()["ema"])
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"weighting": "snr"}, "weighting.*snr"),
        ({"density": "beta"}, "density.*beta"),
        ({"t_min": 1.0}, "t_min.*1.0"),
        ({"gamma": 0.0}, "gamma.*0.0"),
    ],  # fmt: skip
)
def test_bad_arguments_name_the_key_and_value(kw, key):
    with pytest.raises(ValueError, match=key):
        Objective(VPSDE(), **kw)


def test_flow_weighting_is_flow_matchings_velocity_mse_on_the_rf_path():
    """‖û − u‖² with u = ε − x₀ = dx_t/dt and û = ε̂ − x̂₀ from the model's score (Tweedie), per dimension."""
    sde = RectifiedFlowSDE()
    exact = GM.score_fn(sde)
    score = lambda x, t: 1.1 * exact(x, t)  # noqa: E731
    x0 = GM.sample(256, torch.Generator().manual_seed(0))
    obj = Objective(sde, "flow", t_min=1e-3)
    t, noise = obj.draw(x0.shape, torch.Generator().manual_seed(1), torch.float64)
    x = (1 - t[:, None]) * x0 + t[:, None] * noise
    s = score(x, t)
    u_hat = -t[:, None] * s - (x + t[:, None] ** 2 * s) / (1 - t[:, None])
    expected = (u_hat - (noise - x0)).square().mean(1)
    torch.testing.assert_close(obj(score, x0, t=t, noise=noise), expected, rtol=1e-9, atol=1e-12)
