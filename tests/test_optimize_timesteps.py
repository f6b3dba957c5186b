"""`optimize_timesteps` on the exact oracle: the tuned grid against every built-in spacing on held-out noise, its
shape, the λ-parametrisation and its implicit derivative, the rk45 reference, and the validation; the app
experiments/tune_timesteps.py end to end and its bad configs."""

import json

import pytest
import torch
from apps import run_app, run_job
from conftest import SDES
from wandb_reader import find_run_files, read_run

from sde_diffusion import VPSDE, eight_gaussians
from sde_diffusion.apps import ConfigError
from sde_diffusion.core.analytic import exact_flow_map
from sde_diffusion.core.metrics import flow_error
from sde_diffusion.sampling import SAMPLERS, SampleSetup, optimize_timesteps, sample, timesteps
from sde_diffusion.sampling.optimize import BUILT_IN, _grid, _log_snr_inverse, _logits, rk45_reference

SDE, MIX, T_MIN = VPSDE(), eight_gaussians(), 1e-3
SCORE = MIX.score_fn(SDE)
STEPS = 9  # 10 NFE with the final Tweedie step
DPM_3M = {"order": 3, "method": "multistep", "algorithm": "dpmsolver++"}  # pinned: the defaults follow steps


def noise(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def exact(x_T: torch.Tensor) -> torch.Tensor:
    return exact_flow_map(SDE, MIX, x_T, T_MIN, denoise=True)


@pytest.fixture(scope="module")
def tuned():
    return optimize_timesteps(SDE, SCORE, "dpm_solver", STEPS, noise(256, 1), exact, options=DPM_3M, iters=60, lr=0.05)


def test_tuned_10_nfe_grid_beats_every_built_in_spacing_on_held_out_noise(tuned):
    x_T = noise(500, 0)
    truth = exact(x_T)

    def err(**grid) -> float:
        return flow_error(
            sample(
                SDE,
                SCORE,
                (500, 2),
                "dpm_solver",
                STEPS,
                setup=SampleSetup(x_T=x_T, dtype=torch.float64),
                **DPM_3M,
                **grid,
            ).x,
            truth,
        )

    built_in = {s: err(spacing=s) for s in BUILT_IN}
    assert set(built_in) == {"time_uniform", "logsnr", "time_quadratic", "karras"}
    tuned_err = err(spacing="custom", timesteps=tuned.timesteps)
    assert tuned_err < 0.5 * min(built_in.values()), (tuned_err, built_in)
    assert tuned.train["tuned"] < tuned.train[tuned.init] == min(v for k, v in tuned.train.items() if k != "tuned")


def test_tuned_grid_runs_strictly_down_from_T_to_t_min(tuned):
    t = torch.tensor(tuned.timesteps, dtype=torch.float64)
    assert len(t) == STEPS + 1 and t[0] == SDE.T and t[-1] == T_MIN
    assert (t.diff() < 0).all()
    assert len(tuned.losses) == 60 and min(tuned.losses) < tuned.losses[0] and tuned.held_out == {}


def test_held_out_errors_are_each_grids_flow_error():
    x_T = noise(64, 3)
    r = optimize_timesteps(SDE, SCORE, "ode_euler", 4, noise(32, 2), exact, iters=3, held_out=x_T)
    assert set(r.held_out) == {*BUILT_IN, "tuned"}
    for name, value in r.held_out.items():
        grid = {"spacing": "custom", "timesteps": r.timesteps} if name == "tuned" else {"spacing": name}
        x = sample(SDE, SCORE, (64, 2), "ode_euler", 4, setup=SampleSetup(x_T=x_T, dtype=torch.float64), **grid).x
        assert value == pytest.approx(flow_error(x, exact(x_T)), rel=1e-9)


@pytest.mark.parametrize("sde", SDES.values(), ids=SDES.keys())
def test_logits_and_grid_round_trip_and_dt_dlambda_is_the_inverse_slope(sde):
    t = timesteps(sde, 6, T_MIN, "karras")
    torch.testing.assert_close(_grid(sde, _logits(sde, t), T_MIN), t, rtol=1e-9, atol=1e-12)
    lam = sde.log_snr(torch.tensor([0.3, 0.7], dtype=torch.float64)).requires_grad_(True)
    (slope,) = torch.autograd.grad(_log_snr_inverse(sde, lam).sum(), lam)
    h = 1e-6
    fd = (sde.log_snr_inverse(lam.detach() + h) - sde.log_snr_inverse(lam.detach() - h)) / (2 * h)
    torch.testing.assert_close(slope, fd, rtol=1e-5, atol=0)


def test_rk45_reference_is_the_exact_flow_map():
    x_T = noise(16, 4)
    torch.testing.assert_close(rk45_reference(SDE, SCORE, T_MIN)(x_T), exact(x_T), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("sampler", "kw", "match"),
    [
        ("euler_maruyama", {}, r"sampler must be one of \[.*'dpm_solver'.*got 'euler_maruyama'"),
        ("rk45", {}, "deterministic, on a time grid"),
        ("dpm_solver", {"options": {"spacing": "logsnr"}}, r"\['spacing'\] are set by optimize_timesteps"),
        ("dpm_solver", {"options": {"order": 4}}, r"options.order=4: one of \[1, 2, 3\]"),
        ("dpm_solver", {"iters": 0}, "iters.*0"),
        ("dpm_solver", {"lr": -1.0}, r"lr.*-1\.0"),
    ],
)
def test_rejects_a_stochastic_or_gridless_sampler_and_bad_arguments(sampler, kw, match):
    with pytest.raises(ValueError, match=match):
        optimize_timesteps(SDE, SCORE, sampler, 4, noise(8, 0), exact, **kw)


@pytest.mark.slow
def test_app_on_the_oracle_writes_grids_figure_metrics_and_a_wandb_run(tmp_path):
    proc = run_app("tune_timesteps.py", "n_train=64", "n_held_out=64", "iters=10", "budgets=[4,6]",
                   f"hydra.run.dir={tmp_path}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = json.loads((tmp_path / "timesteps.json").read_text())
    assert (saved["sampler"], saved["source"]) == ("dpm_solver", "oracle")
    assert "spacing" not in saved["options"]  # the grid is what is tuned
    assert (tmp_path / "grids.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = json.loads((tmp_path / "metrics.json").read_text())
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # seed + 1: held out
    for budget, grid in saved["grids"].items():
        t = torch.tensor(grid, dtype=torch.float64)
        assert len(t) == int(budget) and t[0] == SDE.T and t[-1] == T_MIN and (t.diff() < 0).all()  # NFE − 1 steps
        x = sample(
            SDE,
            SCORE,
            (64, 2),
            "dpm_solver",
            len(t) - 1,
            spacing="custom",
            timesteps=grid,
            setup=SampleSetup(x_T=x_T, dtype=torch.float64),
            **saved["options"],
        )
        assert x.nfe == int(budget)
        held_out = m["budgets"][budget]["held_out"]
        assert held_out["tuned"] == pytest.approx(flow_error(x.x, exact(x_T)), rel=1e-9)
        own = SAMPLERS["dpm_solver"].defaults(m["budgets"][budget]["steps"])["spacing"]  # its default at that budget
        assert m["budgets"][budget]["default_spacing"] == own and set(held_out) == {*BUILT_IN, "tuned"}
    (path,) = find_run_files(tmp_path)
    run = read_run(path)
    assert run.job_type == "tune_timesteps" and run.exit_code == 0
    assert run.summary["main_metric"] == pytest.approx(m["budgets"]["4"]["held_out"]["tuned"])


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["sampler=euler_maruyama"], "config error: sampler.name='euler_maruyama': must be one of ["),
        (["budgets=[1]"], "config error: budgets.0=1: must be an int >= 2"),
        (["sampler=ode_heun", "budgets=[2]"], "config error: budgets=2: too small for ode_heun"),
        (["sampler.options.order=4"], "config error: sampler.options.order=4: one of [1, 2, 3]"),
        (["iters=0"], "config error: iters=0: must be an int >= 1"),
        (["data=moons"], "config error: data='sde_diffusion.data.Moons': without a checkpoint"),
        (["checkpoint=nope.pt"], "config error: checkpoint='nope.pt'"),
    ],
)
def test_app_rejects_a_bad_config_in_one_line(overrides, line, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        run_job("tune_timesteps", *overrides, "logger=none", out=out)
    assert str(info.value).startswith(line) and "\n" not in str(info.value), str(info.value)
    assert not out.exists()
