"""The objectives in log-SNR against closed forms: today's losses, each weighting's formula, the importance density
(normalised, its draws by a KS test, Song et al. 2021b's closed form), β(t)-invariance, adaptive resume."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from sde_diffusion import VESDE, VPSDE, CosineBeta, LinearBeta, SubVPSDE
from sde_diffusion.core.analytic import mixture
from sde_diffusion.core.sde import RectifiedFlowSDE
from sde_diffusion.data import EightGaussians
from sde_diffusion.models import MLP, ScoreModel
from sde_diffusion.objectives import DENSITIES, WEIGHTINGS, Objective, build_objective
from sde_diffusion.training import Trainer

SDES = {
    "vp": lambda: VPSDE(LinearBeta()),
    "subvp_cosine": lambda: SubVPSDE(CosineBeta()),
    "ve": lambda: VESDE(0.01, 50.0),
    "rf": lambda: RectifiedFlowSDE(),
}
GM = mixture(dim=3, k=4, seed=1)


def test_the_default_draw_is_t_uniform_then_the_noise_from_one_generator():
    """t = t_min + (T − t_min)·u with u the generator's first `batch` uniforms, then ε its next normals."""
    sde, shape = VESDE(0.01, 50.0), (64, 3)
    draw = Objective(sde, t_min=1e-3).draw(shape, torch.Generator().manual_seed(1), torch.float64)
    gen = torch.Generator().manual_seed(1)
    u = torch.rand(64, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(draw.t, 1e-3 + (sde.T - 1e-3) * u, rtol=0, atol=1e-15)
    assert torch.equal(draw.noise, torch.randn(shape, generator=gen, dtype=torch.float64))
    assert draw.ratio is None  # the base density: c = 1


def _vp_closed_form(t, b0=0.1, b1=20.0):
    """Linear-β VP in DDPM's variables: ᾱ(t) = exp(−β₀t − ½(β₁ − β₀)t²), β(t) = β₀ + (β₁ − β₀)t (Song et al. 2021,
    eq. 29), SNR = ᾱ/(1 − ᾱ)."""
    alpha_bar = torch.exp(-b0 * t - 0.5 * (b1 - b0) * t**2)
    return alpha_bar, b0 + (b1 - b0) * t, alpha_bar / (1 - alpha_bar)


def test_each_weighting_is_its_papers_loss_in_the_papers_variables():
    """At fixed (t, ε) and a wrong score (1.1 × exact), each weighting's loss is its paper's formula written here in
    that paper's own variables (ᾱ, β, SNR, EDM's σ and D), not through the library's λ, g or σ̃: Ho et al.'s ε-MSE,
    Song et al.'s λ = σ² and λ = g² = β, Hang et al.'s min(SNR, γ)/SNR, EDM's λ(σ)‖D − x₀‖², Kingma & Gao's
    sigmoid(b − log SNR)·(−d log SNR/dt)."""
    sde, gamma, sigma_data, bias = VPSDE(LinearBeta()), 5.0, 0.5, 1.5
    exact = GM.score_fn(sde)
    score = lambda x, t: 1.1 * exact(x, t)  # noqa: E731
    x0 = GM.sample(512, torch.Generator().manual_seed(0))
    t = 1e-3 + (1 - 1e-3) * torch.rand(512, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    alpha_bar, beta, snr = (c[:, None] for c in _vp_closed_form(t))
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    s = score(x_t, t)
    eps_hat = -(1 - alpha_bar).sqrt() * s  # ε-prediction of the score (Ho et al. 2020)
    eps_mse = (eps_hat - noise).square()
    dsm = (s + noise / (1 - alpha_bar).sqrt()).square()  # ‖s_θ − ∇log p_0t‖² (Song et al. 2021, eq. 7)
    edm_sigma = ((1 - alpha_bar) / alpha_bar).sqrt()  # EDM's σ of the VP process (Karras et al. 2022, Table 1)
    denoised = (x_t + (1 - alpha_bar) * s) / alpha_bar.sqrt()  # D(x; σ): Tweedie's E[x₀ | x_t]
    edm_lambda = (edm_sigma**2 + sigma_data**2) / (edm_sigma * sigma_data) ** 2
    tt = t.clone().requires_grad_(True)
    (dlogsnr,) = torch.autograd.grad(_vp_closed_form(tt)[2].log().sum(), tt)
    expected = {
        "simple": eps_mse.mean(1),
        "sigma2": ((1 - alpha_bar) * dsm).sum(1),
        "likelihood": (beta * dsm).sum(1),
        "min_snr": (torch.clamp(snr, max=gamma) / snr * eps_mse).mean(1),
        "edm": (edm_lambda * (denoised - x0).square()).mean(1),
        "sigmoid": torch.sigmoid(bias - snr.log()[:, 0]) * -dlogsnr * eps_mse.mean(1),
    }
    hyper = {"gamma": gamma, "sigma_data": sigma_data, "bias": bias}
    for name, ref in expected.items():
        got = build_objective(sde, name, WEIGHTINGS[name].base_density, 1e-3, **hyper)(score, x0, None, t, noise)
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-12, msg=name)


def _target_cdf(obj):
    """CDF of the density ∝ w(λ) on the SDE's λ-range, by scipy quadrature of w on 200 cells (float64)."""

    def w(lam):
        lam_t = torch.tensor([lam], dtype=torch.float64)
        return float(obj.weighting.w(obj.base, obj.sde.log_snr_inverse(lam_t), lam_t))

    grid = np.linspace(obj.levels.lam_min, obj.levels.lam_max, 201)
    cum = np.concatenate(
        [[0.0], np.cumsum([integrate.quad(w, a, b)[0] for a, b in zip(grid[:-1], grid[1:], strict=True)])]
    )
    return lambda x: np.interp(x, grid, cum / cum[-1])


@pytest.mark.parametrize("weighting", ["edm", "min_snr", "likelihood"])
def test_importance_density_integrates_to_one_and_its_draws_follow_w(weighting):
    sde = VPSDE(CosineBeta())
    obj = build_objective(sde, weighting, "importance", t_min=1e-3, sigma_data=0.5)
    d = obj.levels
    lam = torch.linspace(d.lam_min, d.lam_max, 20_001, dtype=torch.float64)
    assert abs(float(torch.trapezoid(d.pdf(None, lam), lam)) - 1) < 1e-3
    t = obj.draw((20_000, 1), torch.Generator().manual_seed(0), torch.float64).t
    assert stats.kstest(sde.log_snr(t).numpy(), _target_cdf(obj)).pvalue > 1e-3


def test_likelihood_importance_draws_are_song_2021b_closed_form():
    """Linear β: t ∝ g²/σ² = β/(1 − e^{−B}) has CDF ∝ log(e^{B(t)} − 1), so u ↦ B(t) in closed form, t from the
    quadratic B(t) = β₀t + ½(β₁ − β₀)t² (Song et al. 2021b, App. F; score_sde's importance sampler)."""
    b0, b1, t_min = 0.1, 20.0, 1e-5
    sde = VPSDE(LinearBeta(b0, b1))
    obj = build_objective(sde, "likelihood", "importance", t_min=t_min)
    u = torch.rand(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    B = lambda t: b0 * t + 0.5 * (b1 - b0) * t**2  # noqa: E731
    lo, hi = math.log(math.expm1(B(t_min))), math.log(math.expm1(B(1.0)))
    big_b = torch.log1p(torch.exp(hi + (lo - hi) * u))  # u = 0 at t = T (λ ascends from λ(T))
    closed = (-b0 + torch.sqrt(b0**2 + 2 * (b1 - b0) * big_b)) / (b1 - b0)
    torch.testing.assert_close(obj.levels.t(u), closed, rtol=1e-9, atol=1e-12)


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
        obj = build_objective(sde, weighting, "uniform", t_min=1e-4, lam_min=-4.0, lam_max=5.0)
        loss = obj(model, x0, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad(loss.mean(), list(net.parameters()))
        other = obj(model, x0, generator=torch.Generator().manual_seed(2)).detach()  # independent draws
        results.append((loss, torch.cat([g.flatten() for g in grads]), other))
    (la, ga, oa), (lb, gb, ob) = results
    torch.testing.assert_close(la, lb, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-10)
    se = math.sqrt((oa.var() + ob.var()) / len(oa))
    assert abs(float(oa.mean() - ob.mean())) < 4 * se
    simple = [build_objective(s, "simple", "uniform", lam_min=-4, lam_max=5) for s in (VPSDE(), VPSDE(CosineBeta()))]
    ls = [o(ScoreModel(net, o.sde, "x0", 2.0), x0, generator=torch.Generator().manual_seed(1)).detach() for o in simple]
    assert abs(float(ls[0].mean() - ls[1].mean())) > 4 * math.sqrt((ls[0].var() + ls[1].var()) / len(x0))


@pytest.mark.parametrize("density", DENSITIES)
def test_the_drawn_weights_are_those_of_the_drawn_t(density):
    """`draw` reuses the draw's λ and p(λ) for w/p; recomputed from t alone (`ratio(t)`) they agree to rounding."""
    sde = VPSDE(CosineBeta())
    for weighting in WEIGHTINGS:
        obj = build_objective(sde, weighting, density, t_min=1e-3, sigma_data=0.5, bias=1.5, p_mean=0.5)
        d = obj.draw((4096, 1), torch.Generator().manual_seed(0), torch.float64)
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
        loss = build_objective(sde, "edm", density, t_min=1e-3, sigma_data=2.0)(
            GM.score_fn(sde), x0, generator=torch.Generator().manual_seed(3)
        )
        means[density] = (float(loss.mean()), float(loss.std()) / math.sqrt(len(loss)))
    ref, ref_se = means.pop("lognormal")
    for density, (m, se) in means.items():
        assert abs(m - ref) < 4 * math.hypot(se, ref_se), (density, m, ref)


def test_stratified_draws_put_one_uniform_in_each_stratum():
    obj = Objective(VPSDE(), stratified=True)
    t = obj.draw((64, 2), torch.Generator().manual_seed(0), torch.float64).t
    u = (t - obj.t_min) / (obj.sde.T - obj.t_min)
    assert torch.equal(torch.floor(u * 64), torch.arange(64, dtype=torch.float64))


def test_adaptive_density_state_resumes_bitwise():
    def trainer():
        torch.manual_seed(0)
        sde = VPSDE()
        obj = build_objective(sde, "simple", "adaptive", cells=8, ema_decay=0.5)
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
        ({"weighting": "min_snr", "gamma": 0.0}, "gamma.*0.0"),
        ({"density": "adaptive", "cells": 1}, "cells.*1"),
        ({"bins": 8}, "bins.*8"),
    ],  # fmt: skip
)
def test_bad_arguments_name_the_key_and_value(kw, key):
    with pytest.raises(ValueError, match=key):
        build_objective(VPSDE(), **kw)


def test_flow_weighting_is_flow_matchings_velocity_mse_on_the_rf_path():
    """‖û − u‖² with u = ε − x₀ = dx_t/dt and û = ε̂ − x̂₀ from the model's score (Tweedie), per dimension."""
    sde = RectifiedFlowSDE()
    exact = GM.score_fn(sde)
    score = lambda x, t: 1.1 * exact(x, t)  # noqa: E731
    x0 = GM.sample(256, torch.Generator().manual_seed(0))
    obj = build_objective(sde, "flow", t_min=1e-3)
    draw = obj.draw(x0.shape, torch.Generator().manual_seed(1), torch.float64)
    t, noise = draw.t, draw.noise
    x = (1 - t[:, None]) * x0 + t[:, None] * noise
    s = score(x, t)
    u_hat = -t[:, None] * s - (x + t[:, None] ** 2 * s) / (1 - t[:, None])
    expected = (u_hat - (noise - x0)).square().mean(1)
    torch.testing.assert_close(obj(score, x0, t=t, noise=noise), expected, rtol=1e-9, atol=1e-12)
