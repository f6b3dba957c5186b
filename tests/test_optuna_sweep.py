"""A 3-trial Optuna search over β(t) end to end (experiment=compare/beta_search, offline): one job dir and one wandb
run per trial in one group, each trial's objective the energy distance of its sampler's output on the exact oracle,
and the summary naming the trial Optuna reports as best."""

import json
import sys

import pytest
import torch
from apps import ROOT, run_app, run_job
from omegaconf import OmegaConf
from wandb_reader import find_run_files, read_run

from sde_diffusion import VPSDE, eight_gaussians
from sde_diffusion.apps import ConfigError
from sde_diffusion.core.metrics import energy_distance
from sde_diffusion.core.schedules import PolynomialBeta
from sde_diffusion.sampling import SampleSetup, sample

sys.path.insert(0, str(ROOT / "experiments"))
import summarize  # noqa: E402

SMALL = ["eval.n_samples=100", "eval.floor_repeats=2", "oracles=[eight_gaussians]", "logger=none"]
BOUNDS = {"schedule.beta_min": (0.01, 1.0), "schedule.beta_max": (5.0, 60.0), "schedule.p": (0.5, 4.0)}


@pytest.mark.slow
def test_a_3_trial_optuna_search_gives_3_runs_in_one_group_and_names_its_best_trial(tmp_path):
    sweep, n = tmp_path / "sweep", 200
    proc = run_app("compare_samplers.py", "-m", "experiment=compare/beta_search", "hydra.sweeper.n_trials=3",
                   f"eval.n_samples={n}",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr  # quiet: no colour codes, no plugin-setup lines, warnings without a file path
    assert not any(s in log for s in ("\x1b[", "setup plugin", "Study name:", "Joblib", "_instantiate2.py"))
    jobs = summarize.summarize(sweep)
    assert [j.label for j in jobs] == ["0", "1", "2"] and {j.status for j in jobs} == {"ok"}
    for j in jobs:
        assert all(lo <= float(j.overrides[k]) <= hi for k, (lo, hi) in BOUNDS.items())
        assert j.main_name == "eight_gaussians/energy"

    runs = [read_run(p) for p in find_run_files(sweep)]
    assert len({r.run_id for r in runs}) == 3 and {r.group for r in runs} == {"beta_search-sweep"}
    drawn = {tuple(r.config["schedule"][k.split(".")[1]] for k in BOUNDS) for r in runs}
    assert drawn == {tuple(float(j.overrides[k]) for k in BOUNDS) for j in jobs}  # one run per trial, its β(t)
    assert sorted(r.summary["main_metric"] for r in runs) == sorted(j.metrics["main_metric"] for j in jobs)

    # Optuna's best is the trial with the lowest objective, and that objective is the energy distance of DPM-Solver
    # on a time-uniform 10-step grid under that β(t), from the documented seeds (x_T: 0, reference: 500).
    result = OmegaConf.load(sweep / "optimization_results.yaml")
    best = min(jobs, key=lambda j: j.metrics["main_metric"])
    assert result.best_value == best.metrics["main_metric"]
    sde = VPSDE(PolynomialBeta(**{k.split(".")[1]: v for k, v in result.best_params.items()}))
    oracle, sc = eight_gaussians(), OmegaConf.load(ROOT / "conf" / "sampler" / "dpm_solver.yaml")
    x_T = sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(0))
    res = sample(
        sde,
        oracle.score_fn(sde),
        (n, 2),
        sampler="dpm_solver",
        steps=10,
        t_min=sc.t_min,
        denoise=sc.denoise,
        setup=SampleSetup(x_T=x_T),
        **{**sc.options, "spacing": "time_uniform"},
    )
    reference = oracle.sample(n, torch.Generator().manual_seed(500)).float()
    assert result.best_value == pytest.approx(energy_distance(res.x.float(), reference), rel=1e-6)

    table = (sweep / "summary.md").read_text()
    assert f"Optuna search: best value {result.best_value:.4g} in job {best.label} (`{best.dir}`)" in table
    assert (sweep / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_objective_needs_a_run_of_one_row_that_defines_it(tmp_path):
    with pytest.raises(ConfigError, match=r"objective='energy': needs a run of one row: .* \(this run has 2\)"):
        run_job("compare_samplers", "objective=energy", "sampler=dpm_solver", "logger=none", out=tmp_path)
    with pytest.raises(ConfigError, match="objective='flow_error': must be a metric this run defines: sw2, mmd2,"):
        run_job("compare_samplers", "objective=flow_error", "sampler=euler_maruyama", "sampler.steps=5", *SMALL,
                out=tmp_path)  # fmt: skip
    value = run_job("compare_samplers", "objective=sw2", "sampler=euler_maruyama", "sampler.steps=5", *SMALL,
                    out=tmp_path)  # fmt: skip
    assert value == json.loads((tmp_path / "metrics.json").read_text())["eight_gaussians"]["sw2"]
