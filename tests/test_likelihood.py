"""PF-ODE likelihood against exact densities: the Gaussian-mixture oracle, a Gaussian's closed-form flow, and a
dequantisation case whose bits/dim is known in closed form."""

import csv
import json
import math
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from apps import ROOT, app_env, run_app
from wandb_reader import find_run_files, read_run

from sde_diffusion import VESDE, VPSDE, CosineBeta, GaussianMixture, SubVPSDE, eight_gaussians, mixture
from sde_diffusion.data import Scaler
from sde_diffusion.evaluation.likelihood import NLLEstimator, evaluate_likelihood
from sde_diffusion.likelihood import FlowOptions, bits_per_dim, log_likelihood

EPS = 1e-5
SDES = {"vp": VPSDE(), "vp_cosine": VPSDE(CosineBeta()), "subvp": SubVPSDE(), "ve": VESDE()}
MIXTURES = {"mixture16": mixture(dim=16, k=10), "eight": eight_gaussians()}


def _gaussian(dim: int, seed: int) -> tuple[GaussianMixture, torch.Tensor, torch.Tensor, torch.Tensor]:
    """N(μ, U diag(λ) Uᵀ) with λ log-uniform in [0.05, 1], as a one-component mixture, and (μ, λ, U)."""
    g = torch.Generator().manual_seed(seed)
    lam = torch.exp(torch.empty(dim, dtype=torch.float64).uniform_(math.log(0.05), 0.0, generator=g))
    u, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    mu = torch.randn(dim, generator=g, dtype=torch.float64)
    return GaussianMixture(torch.ones(1), mu[None], ((u * lam) @ u.T)[None]), mu, lam, u


def _gaussian_flow(sde, mu, lam, u, x):
    """Closed form of the whole computation for Gaussian data N(μ, UΛUᵀ): p_t = N(sμ, U diag(c) Uᵀ),
    c(t) = s²λ + σ², and since c' = 2fc + g² the PF-ODE (eq. 13) is dy/dt = (f + ½g²/c) y = (log √c)' y in
    y = Uᵀ(x − sμ), so x_T = s_T μ + U diag(√(c_T/c_ε)) y_ε and log p̂ = log π(x_T) + ½ Σ log(c_T/c_ε)."""
    te, tT = torch.tensor([EPS], dtype=torch.float64), torch.tensor([sde.T], dtype=torch.float64)
    c_eps, c_T = (sde.scale(t) ** 2 * lam + sde.sigma(t) ** 2 for t in (te, tT))
    z = sde.scale(tT) * mu + ((x - sde.scale(te) * mu) @ u * (c_T / c_eps).sqrt()) @ u.T
    return sde.prior_logp(z) + 0.5 * (c_T / c_eps).log().sum(), z


@pytest.mark.parametrize("sde_name", SDES)
def test_gaussian_data_matches_closed_form_flow(sde_name):
    sde = SDES[sde_name]
    gauss, mu, lam, u = _gaussian(dim=5, seed=1)
    x = gauss.sample(16, torch.Generator().manual_seed(2))
    result = log_likelihood(sde, gauss.score_fn(sde), x)
    ref, z = _gaussian_flow(sde, mu, lam, u, x)
    assert (result.log_p - ref).abs().mean() / 5 <= 1e-4
    torch.testing.assert_close(result.prior_logp + result.divergence_integral, result.log_p)
    torch.testing.assert_close(result.z, z, atol=5e-3, rtol=0)


@pytest.mark.parametrize("mix_name", MIXTURES)
@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_exact_divergence_recovers_mixture_density(mix_name, sde_name):
    """Measured (8 samples, default tolerances): the N(0, σ_T² I) prior differs from the true p_T by
    |log π(x_T) − log p_T(x_T)| ≈ 1.5e-3 (VP, sub-VP) and 4.4e-3 (VE) nats/dim on the 16-D mixture, 9e-5 (VP)
    and 1e-3 (VE) on 8-Gaussians; the solver error beyond it is 1e-5–6e-5 nats/dim and p_ε vs p_0 ≤ 1e-5."""
    sde, mix = SDES[sde_name], MIXTURES[mix_name]
    x = mix.sample(8, torch.Generator().manual_seed(0))
    result = log_likelihood(sde, mix.score_fn(sde), x)
    mismatch = result.prior_logp - mix.marginal(sde, sde.T).log_prob(result.z)
    error = result.log_p - mix.log_prob(x)
    assert (error - mismatch).abs().mean() / mix.dim <= 1e-3
    assert (error - mismatch).abs().mean() / mix.dim <= 2e-4  # what the solver achieves; 1e-3 is the target
    if mix_name == "eight" and sde_name != "ve":
        assert error.abs().mean() / mix.dim <= 1e-3


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(noise):
    sde, mix = SDES["vp"], MIXTURES["mixture16"]
    g = torch.Generator().manual_seed(0)
    x, probes = mix.sample(3, g), 64
    exact = log_likelihood(sde, mix.score_fn(sde), x).log_p
    est = log_likelihood(
        sde, mix.score_fn(sde), x.repeat_interleave(probes, 0), FlowOptions("hutchinson", noise), generator=g
    ).log_p.reshape(3, probes)
    stderr = est.std(1) / math.sqrt(probes)
    assert bool((stderr > 0).all())
    assert bool(((est.mean(1) - exact).abs() <= 3 * stderr).all())


def test_rademacher_probes_have_smaller_variance():
    """Var(εᵀAε) = 2‖A‖_F² for Gaussian ε but 2(‖A‖_F² − Σ A_ii²) for Rademacher ε (A symmetric here)."""
    sde, mix = SDES["vp"], MIXTURES["mixture16"]
    g = torch.Generator().manual_seed(1)
    x = mix.sample(2, g).repeat_interleave(64, 0)
    var = {
        noise: log_likelihood(sde, mix.score_fn(sde), x, FlowOptions("hutchinson", noise), generator=g)
        .log_p.reshape(2, 64)
        .var(1)
        for noise in ("rademacher", "gaussian")
    }
    assert bool((var["rademacher"] < var["gaussian"]).all())


@pytest.mark.parametrize(("solver", "order"), [("euler", 1), ("heun", 2)])
def test_fixed_step_solvers_converge_at_their_order(solver, order):
    sde = SDES["vp"]
    gauss, mu, lam, u = _gaussian(dim=5, seed=1)
    x = gauss.sample(16, torch.Generator().manual_seed(2))
    ref, _ = _gaussian_flow(sde, mu, lam, u, x)
    errors = []
    for steps in (25, 50, 100):
        result = log_likelihood(sde, gauss.score_fn(sde), x, FlowOptions(solver=solver, steps=steps))
        assert result.nfe == steps * order
        errors.append(float((result.log_p - ref).abs().mean()))
    for coarse, fine in zip(errors[:-1], errors[1:], strict=True):
        assert 0.8 * 2**order <= coarse / fine <= 1.25 * 2**order


def test_float32_input_stays_float32_and_close():
    sde, mix = SDES["vp"], MIXTURES["eight"]
    x = mix.sample(8, torch.Generator().manual_seed(0))
    ref = log_likelihood(sde, mix.score_fn(sde), x).log_p
    result = log_likelihood(sde, mix.score_fn(sde), x.float())
    assert result.log_p.dtype == result.z.dtype == torch.float32
    assert (result.log_p.double() - ref).abs().max() <= 1e-2


def _uniform_levels_and_matched_gaussian(levels: int):
    """Every point of {0..K−1}² in model space, and the Gaussian with the moments of its dequantisation.

    Dequantised, the data is uniform on [−½, K − ½)² in level units: variance K²/12. The Gaussian with these
    moments has cross-entropy = its own entropy = ½ log₂(2πe K²/12) bits/dim, i.e. log₂ K (the data's entropy)
    plus ½ log₂(πe/6) ≈ 0.2546 bits/dim for Gaussian vs uniform shape.
    """
    scaler = Scaler(levels)
    k = torch.cartesian_prod(torch.arange(levels), torch.arange(levels)).double()
    a = 2 / (levels - 1)
    var = a**2 * levels**2 / 12
    gauss = GaussianMixture(torch.ones(1), torch.zeros(1, 2), var * torch.eye(2, dtype=torch.float64)[None])
    return scaler, scaler.to_model(k), gauss, a, var


def test_bits_per_dim_of_uniform_levels_is_known():
    levels = 5
    scaler, x, gauss, _, _ = _uniform_levels_and_matched_gaussian(levels)
    sde = SDES["vp"]
    g = torch.Generator().manual_seed(0)
    result = bits_per_dim(sde, gauss.score_fn(sde), x, scaler, n_draws=32, generator=g)
    expected = math.log2(levels) + 0.5 * math.log2(math.pi * math.e / 6)
    assert result.draws.shape == (32, levels**2)
    torch.testing.assert_close(result.bpd, result.draws.mean(0))
    # Monte Carlo error over u: 4.4e-3 bits (std over seeds); forgetting the scaler's Jacobian would be off by
    # log₂ a = −1 bit, uncentred bins k + u by ½·(½)²·12/K²/ln 2 = 0.087 bits
    assert abs(float(result.bpd.mean()) - expected) <= 0.02


def test_dequantisation_noise_raises_nll_by_its_variance():
    """E_u[−log p(x + a(u − ½))] + log p(x) = −(a²/24) tr ∇² log p(x) + O(a⁴): for N(m, s² I) exactly
    a²D/(24 s²) — uniform noise of one bin's width a costs its variance a²/12 times the curvature. Here 17 levels
    (digits), s = a and x = m (no linear term, so less Monte Carlo noise): 1/(24 ln 2) ≈ 0.060 bits/dim."""
    scaler = Scaler(17)
    a = 2 / 16
    x = scaler.to_model(torch.full((64, 2), 8.0, dtype=torch.float64))
    gauss = GaussianMixture(torch.ones(1), x[:1], a**2 * torch.eye(2, dtype=torch.float64)[None])
    sde = SDES["vp"]
    deq = bits_per_dim(sde, gauss.score_fn(sde), x, scaler, n_draws=8, generator=torch.Generator().manual_seed(1))
    at_levels = -(log_likelihood(sde, gauss.score_fn(sde), x).log_p / 2 + math.log(a)) / math.log(2)
    shift = deq.draws - at_levels
    stderr = float(shift.std() / math.sqrt(shift.numel()))
    expected = 1 / (24 * math.log(2))
    assert stderr < 0.1 * expected
    assert abs(float(shift.mean()) - expected) <= 3 * stderr


def test_evaluate_likelihood_summaries():
    sde, mix = SDES["vp"], MIXTURES["mixture16"]
    x = mix.sample(8, torch.Generator().manual_seed(0))
    estimate = NLLEstimator(sde, mix.score_fn(sde), oracle=mix)
    whole, split = evaluate_likelihood(estimate, x, batch_size=8), evaluate_likelihood(estimate, x, batch_size=3)
    assert (whole["n"], whole["dim"]) == (8, 16)
    assert abs(whole["nll"] - split["nll"]) <= 1e-3 and whole["nll_sem"] > 0
    assert whole["oracle_nll"] == pytest.approx(float(-mix.log_prob(x).mean()))
    assert whole["abs_error_per_dim"] <= whole["prior_mismatch_per_dim"] + 2e-4
    assert "bpd" not in whole  # continuous data: a density, NLL in nats only

    levels = 5
    scaler, x, gauss, _, _ = _uniform_levels_and_matched_gaussian(levels)
    g = torch.Generator().manual_seed(0)
    images = evaluate_likelihood(NLLEstimator(sde, gauss.score_fn(sde), scaler=scaler, n_draws=8), x, 10, g)
    assert abs(images["bpd"] - math.log2(levels) - 0.5 * math.log2(math.pi * math.e / 6)) <= 0.03
    assert "oracle_nll" not in images


def test_bad_arguments_raise():
    sde, mix = SDES["vp"], MIXTURES["eight"]
    score, x = mix.score_fn(sde), mix.sample(2)
    for kwargs, name in [
        ({"divergence": "trace"}, "divergence"),
        ({"noise": "uniform"}, "noise"),
        ({"solver": "rk4"}, "solver"),
        ({"t_min": 0.0}, "t_min"),
        ({"t_min": 1.0}, "t_min"),
        ({"rtol": 0.0}, "rtol"),
        ({"steps": 0, "solver": "euler"}, "steps"),
    ]:
        with pytest.raises(ValueError, match=name):
            log_likelihood(sde, score, x, FlowOptions(**kwargs))
    with pytest.raises(ValueError, match="x must"):
        log_likelihood(sde, score, x[0])
    scaler = Scaler(17)
    with pytest.raises(ValueError, match="quantised"):
        bits_per_dim(sde, score, scaler.to_model(torch.full((2, 2), 3.5)), scaler)
    with pytest.raises(ValueError, match="n_draws"):
        bits_per_dim(sde, score, scaler.to_model(torch.full((2, 2), 3.0)), scaler, n_draws=0)


def test_non_affine_scaler_is_refused():
    @dataclass(frozen=True)
    class ClampingScaler(Scaler):
        def to_model(self, k):
            return super().to_model(k).clamp(-1, 1)

    sde, gauss = SDES["vp"], _uniform_levels_and_matched_gaussian(5)[2]
    scaler = ClampingScaler(5)
    with pytest.raises(ValueError, match="affine"):
        bits_per_dim(sde, gauss.score_fn(sde), scaler.to_model(torch.zeros(4, 2)), scaler)


@pytest.mark.slow
def test_app_on_the_oracle_writes_metrics_and_a_wandb_run(tmp_path):
    proc = run_app("likelihood.py", "likelihood.n=32", "likelihood.batch_size=32", f"hydra.run.dir={tmp_path}",
                   cwd=tmp_path, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert (m["source"], m["n"], m["dim"], m["dequantised"]) == ("oracle", 32, 16, False)
    # the exact score leaves only the prior mismatch and the solver error (≈ 6e-5 nats/dim)
    assert m["abs_error_per_dim"] <= m["prior_mismatch_per_dim"] + 2e-4
    assert abs(m["nll"] - m["oracle_nll"]) <= 1e-3 * m["dim"]
    assert "bpd" not in m and m["main_metric"] == {"name": "nll", "value": m["nll"]}
    assert m["nfe"] > 0 and m["wall_s_per_sample"] > 0
    (path,) = find_run_files(tmp_path)
    run = read_run(path)
    assert run.job_type == "likelihood" and run.exit_code == 0
    assert run.summary["likelihood/nll"] == pytest.approx(m["nll"]) and "likelihood/bpd" not in run.summary
    assert run.config["likelihood"]["divergence"] == "auto" and m["divergence"] == "exact"
    assert {"nll", "nll_sem", "abs_error_per_dim", "prior_mismatch_per_dim", "oracle_nll"} <= m["legend"].keys()
    with open(tmp_path / "per_example.csv") as f:  # every example's NLL, by its index in the held-out draw
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(32))
    assert sum(float(r["nll"]) for r in rows) / 32 == pytest.approx(m["nll"])
    assert sum(float(r["oracle_nll"]) for r in rows) / 32 == pytest.approx(m["oracle_nll"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("likelihood.divergence=trace", "likelihood.divergence"),
        ("data=moons", "data"),
        ("checkpoint=nope.pt", "checkpoint"),
    ],
)
def test_app_rejects_bad_config_in_one_line(tmp_path, override, key):
    proc = run_app("likelihood.py", override, "logger=none", f"hydra.run.dir={tmp_path}", cwd=tmp_path, timeout=600)
    assert proc.returncode == 1
    assert f"config error: {key}" in proc.stderr and "Traceback" not in proc.stderr


def _dequantised_bpd(checkpoint, n):
    """Theis et al. (2016)'s bound written out: −log P(k) ≤ E_u[−log p(k + u − ½)] in level units, where a density
    in levels is the model's at x = a·y − 1 times a^D, a = 2/(L − 1) (the digits' scaler maps the L levels onto
    [−1, 1]); one draw of u per example, on the app's held-out examples. Bits/dim per example."""
    from sde_diffusion.apps.build import load_score

    score_fn, sde, data = load_score(checkpoint)
    x = data.reference(n, torch.Generator().manual_seed(0))  # likelihood.seed = 0
    levels, d = data.scaler.levels, x[0].numel()
    k = ((x + 1) * (levels - 1) / 2).round()
    a = 2 / (levels - 1)
    gen = torch.Generator().manual_seed(11)
    y = k + torch.rand(k.shape, generator=gen) - 0.5
    log_p = log_likelihood(sde, score_fn, a * y - 1, FlowOptions("hutchinson"), generator=gen).log_p
    return -(log_p + d * math.log(a)) / (d * math.log(2))


@pytest.mark.slow
def test_app_on_a_digits_checkpoint_gives_the_dequantisation_bound_in_bits_per_dim(tmp_path):
    """A 3-step U-Net: far from trained (≈ 11.6 bits/dim against log₂ 17 ≈ 4.09 for uniform pixels; 200 steps give
    ≈ 2.4). The app's bits/dim is the bound written out here (`_dequantised_bpd`, the 3 bits/dim offset
    log₂((L − 1)/2) included) within the SEs; the discretised ELBO is a probability of the levels."""
    train = run_app(
        "train.py",
        "experiment=train/digits_unet",
        "train.steps=3",
        "train.progress=false",
        "eval.n_samples=2",
        "eval.samplers.euler_maruyama.steps=2",
        "~sampler@eval.samplers.dpm_solver",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'train'}",
        cwd=tmp_path,
        timeout=600,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    out = tmp_path / "likelihood"
    checkpoint = tmp_path / "train" / "checkpoints" / "last.pt"
    proc = run_app(
        "likelihood.py",
        f"checkpoint={checkpoint}",
        "likelihood.n=4",
        "likelihood.n_draws=1",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert (m["source"], m["dim"], m["dequantised"], m["divergence"]) == (str(checkpoint), 64, True, "hutchinson")
    assert m["main_metric"] == {"name": "bpd", "value": m["bpd"]}
    ref = _dequantised_bpd(checkpoint, 4)
    se = math.hypot(m["bpd_sem"], float(ref.std()) / 2)
    assert abs(m["bpd"] - float(ref.mean())) < 4 * se < 1.5, (m["bpd"], float(ref.mean()), se)  # 1.5: half the offset
    # the ELBO with VDM's discretised decoder: a probability of the levels, so positive bits/dim too
    proc = run_app("likelihood.py", f"checkpoint={checkpoint}", "likelihood.method=elbo", "likelihood.n=4",
                   "likelihood.n_draws=2", "likelihood.dequantisation=discretised", "logger=none",
                   f"hydra.run.dir={tmp_path / 'elbo'}", cwd=tmp_path, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    e = json.loads((tmp_path / "elbo" / "metrics.json").read_text())
    assert (
        e["nfe"] == 2 * 16 and e["mc_sem_per_sample"] > 0 and e["bpd"] == pytest.approx(e["nll"] / (64 * math.log(2)))
    )


@pytest.mark.slow
def test_app_elbo_bounds_the_oracle_nll(tmp_path):
    proc = run_app("likelihood.py", "likelihood.method=elbo", "likelihood.n=256", "likelihood.n_t=8", "logger=none",
                   f"hydra.run.dir={tmp_path}", cwd=tmp_path, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert (m["n"], m["nfe"], m["divergence"]) == (256, 8, None)
    assert m["nll"] > m["oracle_nll"] - 3 * m["nll_sem"] and m["mc_sem_per_sample"] > 0
    # by default the control variate, v = the mixture's variance per dimension within a mode (Σ_k w_k tr Σ_k / D)
    mix = mixture()
    within = sum(float(w * torch.trace(c)) for w, c in zip(mix.weights, mix.covs, strict=True)) / mix.dim
    assert m["control_variate"] == pytest.approx(within)
    assert f"ELBO with the control variate v = {within:.3g}" in proc.stdout + proc.stderr
    # the plain estimate (null): the same bound within SE (the control variate has mean zero: tests/test_elbo.py),
    # with a larger SE of the mean (docs/likelihood.md; the per-example sd/√n_t over-states a stratified estimate)
    plain_dir = f"hydra.run.dir={tmp_path / 'plain'}"
    proc = run_app("likelihood.py", "likelihood.method=elbo", "likelihood.n=256", "likelihood.n_t=8", "logger=none",
                   "likelihood.control_variate=null", plain_dir, cwd=tmp_path, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert plain["control_variate"] is None and plain["nll_sem"] > 1.5 * m["nll_sem"], (plain["nll_sem"], m["nll_sem"])
    assert plain["nll"] != m["nll"] and abs(plain["nll"] - m["nll"]) < 3 * (plain["nll_sem"] + m["nll_sem"])
    assert plain["nll"] > plain["oracle_nll"] - 3 * plain["nll_sem"]


@pytest.mark.slow
def test_torchrun_two_processes_with_unequal_shares_match_one_process(tmp_path):
    """5 examples in batches of 2: rank 0 solves 2 batches, rank 1 one, each with its own RK45 step count; no rank
    waits for another inside the loop, and the gathered rows are the one-process run's up to RK45's tolerance."""
    args = ["likelihood.n=5", "likelihood.batch_size=2", "progress=false", "logger=none"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    app = [str(ROOT / "experiments" / "likelihood.py"), *args, f"hydra.run.dir={tmp_path / 'ddp'}"]
    proc = subprocess.run([*torchrun, *app], cwd=tmp_path, env=app_env(tmp_path), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = run_app("likelihood.py", *args, f"hydra.run.dir={tmp_path / 'one'}", cwd=tmp_path, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp, one = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ddp", "one"))
    assert (ddp["n"], ddp["processes"], one["processes"]) == (5, 2, 1)
    assert ddp["oracle_nll"] == pytest.approx(one["oracle_nll"], rel=1e-12)  # the same examples, gathered in order
    assert abs(ddp["nll"] - one["nll"]) < 1e-3 * ddp["dim"]
