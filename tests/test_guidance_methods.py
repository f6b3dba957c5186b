"""Guidance beyond CFG against the exact oracle and the papers' formulas, each written out here independently:
autoguidance with the exact class score as model and the exact p(x) score as guide is CFG; a λ interval covering
every λ is the un-intervalled guidance bitwise and switches at the same λ under every SDE and β(t); CFG++'s step is
Chung et al.'s DDIM update in ᾱ notation; APG is Sadat et al.'s update per sample."""

import math

import pytest
import torch
from test_guidance import CLASSES, NULL, class_scores, draws, oracle_model

from sde_diffusion import VESDE, VPSDE, SubVPSDE, mixture
from sde_diffusion.core.schedules import CosineBeta
from sde_diffusion.sampling import SamplerRun, SampleSetup, sample, timesteps
from sde_diffusion.sampling.guidance.apg import adaptive_projected
from sde_diffusion.sampling.guidance.autoguidance import autoguidance
from sde_diffusion.sampling.guidance.cfgpp import cfgpp_ddim, cfgpp_sample
from sde_diffusion.sampling.guidance.conditional import classifier, classifier_free, cond_uncond, conditional
from sde_diffusion.sampling.guidance.guided import Guidance, guided_sample
from sde_diffusion.sampling.guidance.interval import guidance_interval

SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(), "vp-cosine": VPSDE(CosineBeta())}
MIX = mixture(dim=4, k=5, seed=1)


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("w", [0.5, 2.0])
def test_autoguidance_with_the_exact_class_score_and_the_exact_unconditional_guide_is_cfg(sde_name, w):
    """(1 + w)∇log p_t(x | y) − w∇log p_t(x) = ∇log p_t(x) + (1 + w)∇log p_t(y | x): classifier guidance at 1 + w with
    the oracle's exact classifier, and CFG at w of the exact conditional model."""
    sde = SDES[sde_name]
    x, t, y = draws(sde, MIX)
    model = conditional(oracle_model(MIX, sde), y)
    auto = autoguidance(model, MIX.score_fn(sde), w)(x, t)
    exact_cg = classifier(MIX.score_fn(sde), lambda x, t: MIX.classifier_log_prob(sde, x, t, CLASSES), y, 1 + w)
    torch.testing.assert_close(auto, exact_cg(x, t), atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(auto, classifier_free(oracle_model(MIX, sde), y, w, NULL)(x, t), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(autoguidance(model, MIX.score_fn(sde), 0.0)(x, t), class_scores(MIX, sde, x, t, y))


def guided_kinds(sde, y):
    """(name, guided score, its sample_with Guidance) for cfg, auto (a weaker guide: p(x)'s score) and apg."""
    model = oracle_model(MIX, sde)
    return {
        "cfg": classifier_free(model, y, 2.0, NULL),
        "auto": autoguidance(conditional(model, y), MIX.score_fn(sde), 2.0),
        "apg": adaptive_projected(cond_uncond(model, y, NULL), sde, 2.0, eta=0.3, threshold=1.0),
    }


@pytest.mark.parametrize("sampler", ["ddim", "euler_maruyama", "dpm_solver"])
@pytest.mark.parametrize("interval", [(-math.inf, math.inf), (-50.0, 50.0)])
def test_an_interval_covering_every_lambda_is_the_unintervalled_guidance_bitwise(sampler, interval):
    sde = VPSDE()
    y = torch.arange(12) % len(CLASSES)
    x_T = sde.prior_sampling((12, 4), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name, guided in guided_kinds(sde, y).items():
        unguided = conditional(oracle_model(MIX, sde), y)
        runs = [
            sample(
                sde,
                s,
                (12, 4),
                sampler,
                steps=8,
                setup=SampleSetup(x_T=x_T, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
            ).x
            for s in (guided, guidance_interval(guided, unguided, sde, interval))
        ]
        assert torch.equal(runs[0], runs[1]), name


@pytest.mark.parametrize("sde_name", SDES)
def test_an_interval_switches_at_the_same_lambda_under_every_sde_and_schedule(sde_name):
    """Per sample: the guided score where λ(t) ∈ [−1, 2] (t = λ⁻¹(λ) of this SDE), the unguided one elsewhere."""
    sde = SDES[sde_name]
    lam = torch.tensor([-1.5, -1.01, -0.99, 0.5, 1.99, 2.01, 3.0], dtype=torch.float64)
    t = sde.log_snr_inverse(lam)
    torch.testing.assert_close(sde.log_snr(t), lam, atol=1e-6, rtol=0)
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.arange(7) % len(CLASSES)
    guided = classifier_free(oracle_model(MIX, sde), y, 2.0, NULL)
    unguided = conditional(oracle_model(MIX, sde), y)
    got = guidance_interval(guided, unguided, sde, (-1.0, 2.0))(x, t)
    inside = torch.tensor([False, False, True, True, True, False, False])
    assert torch.equal(got[inside], guided(x, t)[inside]) and torch.equal(got[~inside], unguided(x, t)[~inside])


def test_network_evaluations_count_two_per_guided_call_and_one_outside_the_interval():
    sde, steps = VPSDE(), 10
    model = oracle_model(MIX, sde)
    y = torch.arange(8) % len(CLASSES)
    x_T = sde.prior_sampling((8, 4), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lam = sde.log_snr(timesteps(sde, steps, 1e-3, "logsnr"))
    inside = int(((lam >= -1) & (lam <= 2)).sum())  # the grid's times, the last one Tweedie's step's
    run = SamplerRun("ddim", steps, options={"eta": 0.0})
    for g, expected in [
        (Guidance("cfg", 1.0), 2 * (steps + 1)),
        (Guidance("cfg", 1.0, interval=(-1, 2)), steps + 1 + inside),
        (Guidance("apg", 1.0), 2 * (steps + 1)),
        (Guidance("cfgpp", 0.5), 2 * (steps + 1)),
        (Guidance("cfgpp", 0.5, interval=(-1, 2)), steps + 1 + inside),
    ]:
        res, evals = guided_sample(g, sde, model, y, NULL, run, setup=SampleSetup(x_T=x_T))
        assert evals == {"model": expected, "guide": 0.0} and res.nfe == steps + 1, g
    _, evals = guided_sample(Guidance("auto", 1.0), sde, model, y, NULL, run, guide=model, setup=SampleSetup(x_T=x_T))
    assert evals == {"model": steps + 1, "guide": steps + 1}


def test_cfgpp_step_is_the_papers_formula():
    """Chung et al. 2024's DDIM with CFG++ in ᾱ (VP): ε̂_λ = ε̂_∅ + λ(ε̂_c − ε̂_∅), x̂₀ = (x_s − √(1 − ᾱ_s) ε̂_λ)/√ᾱ_s,
    x_t = √ᾱ_t x̂₀ + √(1 − ᾱ_t) ε̂_∅, with ε̂ = −σ(s)·score."""
    sde, lam = VPSDE(), 0.6
    x, _, y = draws(sde, MIX, n=12)
    s, t = torch.tensor(0.55, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    ab_s, ab_t = sde.scale(s) ** 2, sde.scale(t) ** 2
    ts = s.expand(len(x))
    eps_c = -torch.sqrt(1 - ab_s) * class_scores(MIX, sde, x, ts, y)
    eps_u = -torch.sqrt(1 - ab_s) * MIX.score_fn(sde)(x, ts)
    eps_lam = eps_u + lam * (eps_c - eps_u)
    x0 = (x - torch.sqrt(1 - ab_s) * eps_lam) / torch.sqrt(ab_s)
    expected = torch.sqrt(ab_t) * x0 + torch.sqrt(1 - ab_t) * eps_u
    model = oracle_model(MIX, sde)
    got = cfgpp_ddim(sde, cond_uncond(model, y, NULL), conditional(model, y), lam, x, torch.stack([s, t]))
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


def test_cfgpp_outside_its_interval_is_conditional_ddim_and_covering_it_changes_nothing():
    sde, steps = VPSDE(), 12
    model = oracle_model(MIX, sde)
    y = torch.arange(10) % len(CLASSES)
    x_T = sde.prior_sampling((10, 4), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pair, cond = cond_uncond(model, y, NULL), conditional(model, y)
    never = cfgpp_sample(sde, pair, cond, 0.7, x_T, steps, interval=(100.0, 200.0)).x
    ddim = sample(sde, cond, (10, 4), "ddim", steps, eta=0.0, setup=SampleSetup(x_T=x_T, dtype=torch.float64)).x
    torch.testing.assert_close(never, ddim, atol=1e-12, rtol=1e-12)
    full = cfgpp_sample(sde, pair, cond, 0.7, x_T, steps, interval=(-math.inf, math.inf)).x
    assert torch.equal(full, cfgpp_sample(sde, pair, cond, 0.7, x_T, steps).x)
    assert not torch.allclose(full, ddim, atol=1e-3)


def apg_by_hand(sde, x, t, y, w, eta, r):
    """Sadat et al. 2024's APG (no momentum), one sample at a time: D = (x + σ²s)/α; ΔD = D_c − D_u, scaled to
    norm r if longer; ΔD_∥ = (ΔD·D_c / D_c·D_c) D_c; D̂ = D_c + w(ΔD − ΔD_∥ + η ΔD_∥)."""
    out = []
    for i in range(len(x)):
        xi, ti = x[i : i + 1], t[i : i + 1]
        a, sig = sde.scale(ti), sde.sigma(ti)
        d_c = ((xi + sig**2 * class_scores(MIX, sde, xi, ti, y[i : i + 1])) / a)[0]
        d_u = ((xi + sig**2 * MIX.score_fn(sde)(xi, ti)) / a)[0]
        delta = d_c - d_u
        if delta.norm() > r:
            delta = delta * r / delta.norm()
        par = torch.dot(delta, d_c) / torch.dot(d_c, d_c) * d_c
        out.append(d_c + w * ((delta - par) + eta * par))
    return torch.stack(out)


@pytest.mark.parametrize(("eta", "r"), [(0.0, math.inf), (0.4, 0.5), (1.0, 2.0)])
def test_apg_is_the_papers_formula(eta, r):
    sde, w = VPSDE(), 2.5
    x, t, y = draws(sde, MIX)
    score = adaptive_projected(cond_uncond(oracle_model(MIX, sde), y, NULL), sde, w, eta, r)(x, t)
    torch.testing.assert_close(sde.tweedie(x, t, score), apg_by_hand(sde, x, t, y, w, eta, r), atol=1e-9, rtol=1e-9)


def test_apg_without_damping_or_clipping_is_cfg_and_at_eta0_moves_orthogonally_to_the_conditional_estimate():
    sde = VPSDE()
    x, t, y = draws(sde, MIX)
    pair = cond_uncond(oracle_model(MIX, sde), y, NULL)
    cfg = classifier_free(oracle_model(MIX, sde), y, 1.5, NULL)(x, t)
    torch.testing.assert_close(adaptive_projected(pair, sde, 1.5, eta=1.0)(x, t), cfg, atol=1e-8, rtol=1e-8)
    d_c = sde.tweedie(x, t, class_scores(MIX, sde, x, t, y))
    moved = sde.tweedie(x, t, adaptive_projected(pair, sde, 1.5)(x, t)) - d_c
    assert (moved * d_c).sum(1).abs().max() < 1e-9 * d_c.norm(dim=1).max() ** 2


def test_bad_guidance_settings_are_named():
    with pytest.raises(ValueError, match="^method must be one of"):
        Guidance("pag")
    with pytest.raises(ValueError, match="^interval must be"):
        Guidance("cfg", 1.0, interval=(2.0, 1.0))
    with pytest.raises(ValueError, match="^threshold must be"):
        Guidance("apg", 1.0, threshold=0)
    with pytest.raises(ValueError, match="^guide must be"):
        guided_sample(Guidance("auto", 1.0), VPSDE(), oracle_model(MIX, VPSDE()), torch.zeros(2, dtype=torch.long),
                      NULL, SamplerRun("ddim", 2), setup=SampleSetup(x_T=torch.zeros(2, 4)))  # fmt: skip
    with pytest.raises(ValueError, match="^sampler must be ddim"):
        guided_sample(Guidance("cfgpp", 0.5), VPSDE(), oracle_model(MIX, VPSDE()), torch.zeros(2, dtype=torch.long),
                      NULL, SamplerRun("dpm_solver", 2), setup=SampleSetup(x_T=torch.zeros(2, 4)))  # fmt: skip


def test_a_cfgpp_step_is_a_ddim_cfg_step_at_a_scale_set_by_the_step_size():
    """With r = e^{−h}, h = λ_t − λ_s: x̂₀' = x̂₀_∅ + λ/(1 − r)·(x̂₀_c − x̂₀_∅) in DDIM's update, i.e. CFG at
    1 + w = λ/(1 − r); the steps' lengths set the scale."""
    sde, lam = VPSDE(), 0.3
    x, _, y = draws(sde, MIX, n=12)
    model = oracle_model(MIX, sde)
    for s, t in [(0.7, 0.6), (0.7, 0.3)]:
        grid = torch.tensor([s, t], dtype=torch.float64)
        h = sde.log_snr(grid[1:]) - sde.log_snr(grid[:1])
        w = float(lam / -torch.expm1(-h)) - 1
        (a_s, a_t), (s_s, s_t) = sde.scale(grid), sde.sigma(grid)
        x0 = sde.tweedie(x, grid[:1].expand(len(x)), classifier_free(model, y, w, NULL)(x, grid[:1].expand(len(x))))
        cfg_step = a_t * x0 + s_t * (x - a_s * x0) / s_s  # DDIM, η = 0: α_t x̂₀ + σ_t ε̂ (Song et al. 2021a, eq. 12)
        got = cfgpp_ddim(sde, cond_uncond(model, y, NULL), conditional(model, y), lam, x, grid)
        torch.testing.assert_close(got, cfg_step, atol=1e-10, rtol=1e-10)
