"""Sweeps end to end: Hydra multiruns of train.py and compare_samplers.py (basic, submitit_local and joblib
launchers), one offline wandb run per job in one group per sweep, failed jobs named, and experiments/summarize.py
turning a sweep dir into one table."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from apps import ROOT, TINY, app_env, run_app, run_job
from omegaconf import OmegaConf
from wandb_reader import find_run_files, read_run

from sde_diffusion import VPSDE, LinearBeta, eight_gaussians
from sde_diffusion.apps import ConfigError
from sde_diffusion.core.analytic import exact_flow_map
from sde_diffusion.core.metrics import flow_error, mmd2, mode_weight_error, sliced_wasserstein
from sde_diffusion.sampling import SampleSetup, sample

sys.path.insert(0, str(ROOT / "experiments"))
import summarize  # noqa: E402
from compare_samplers import plot_panels  # noqa: E402

SHORT = [*TINY, "train.steps=3", "train.log_every=1"]  # 3 steps, each one logged
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_schedule_sweep_preset_2x2_gives_4_runs_in_one_group_and_a_4_row_summary(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_app("train.py", "-m", "experiment=train/schedule_sweep", "hydra.sweeper.params.schedule='linear,cosine'",
                   "sde=vp,subvp", *SHORT, f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 4 and all((j / "metrics.json").is_file() for j in jobs)

    runs = [read_run(p) for p in find_run_files(sweep)]
    assert len(runs) == 4 and len({r.run_id for r in runs}) == 4
    assert {r.group for r in runs} == {"schedule_sweep-sweep"} and {r.exit_code for r in runs} == {0}
    pairs = {(r.config["schedule"]["_target_"].rsplit(".", 1)[1], r.config["sde"]["_target_"].rsplit(".", 1)[1])
             for r in runs}  # fmt: skip
    assert pairs == {(s, d) for s in ("LinearBeta", "CosineBeta") for d in ("VPSDE", "SubVPSDE")}
    assert all("schedule=" in r.name and "sde=" in r.name for r in runs)  # run name = the job's overrides ...
    assert all("train.steps=3" in r.name and "train.progress" not in r.name for r in runs)  # ... minus run-only keys

    summarize.main([str(sweep), "--log", "offline"])
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert {(r["schedule"], r["sde"]) for r in rows} == {(s, d) for s in ("linear", "cosine") for d in ("vp", "subvp")}
    for row, job in zip(rows, jobs, strict=True):
        metrics = json.loads((job / "metrics.json").read_text())
        assert float(row["samplers/euler_maruyama/sw2"]) == pytest.approx(metrics["samplers"]["euler_maruyama"]["sw2"])
        assert float(row["final_loss"]) == pytest.approx(metrics["final_loss"])
    table = (sweep / "summary.md").read_text()
    assert table.count("| ok |") == 4 and "train.steps=3" in table.split("|")[0]  # fixed overrides above the table
    assert (sweep / "summary.png").read_bytes()[:8] == PNG
    (summary_run,) = [read_run(p) for p in find_run_files(sweep / "wandb")]
    assert summary_run.job_type == "summary" and summary_run.group == "schedule_sweep-sweep"
    assert summary_run.summary["summary.nrows"] == 4


@pytest.mark.slow
def test_a_failing_job_does_not_hide_the_others_and_is_named(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_app("train.py", "-m", "train.lr=0.003,-1", *SHORT, "logger=none", f"hydra.sweep.dir={sweep}",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode != 0 and "config error: train.lr=-1" in proc.stderr  # Hydra re-raises after all jobs ran
    assert "job failed: ConfigError: config error: train.lr=-1" in proc.stdout + proc.stderr  # logged as it failed
    assert (sweep / "0" / "metrics.json").is_file() and not (sweep / "1" / "metrics.json").exists()
    record = json.loads((sweep / "1" / "failure.json").read_text())
    assert (record["error"], record["message"]) == ("ConfigError", "config error: train.lr=-1: must be a number > 0")
    assert {"train.lr=-1", "logger=none"} <= set(record["overrides"])

    jobs = summarize.summarize(sweep)
    assert [(j.label, j.status) for j in jobs] == [("0", "ok"), ("1", "failed")]
    assert jobs[1].error == "ConfigError: config error: train.lr=-1: must be a number > 0"
    table = (sweep / "summary.md").read_text()
    assert "Failed jobs (1 of 2)" in table and "- job 1 (train.lr=-1): ConfigError" in table


@pytest.mark.slow
def test_a_config_error_is_printed_once(tmp_path):
    proc = run_app("train.py", "train.lr=-1", "logger=none", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and output.count("train.lr=-1: must be a number > 0") == 1, output
    assert json.loads((tmp_path / "run" / "failure.json").read_text())["error"] == "ConfigError"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".hydra", "failure.json", "train.log"]  # only


@pytest.mark.slow
def test_compare_multirun_matches_a_direct_sample_call(tmp_path):
    sweep, n = tmp_path / "sweep", 300
    proc = run_app("compare_samplers.py", "-m", "sampler=euler_maruyama,dpm_solver", "sampler.steps=choice(5)",
                   f"eval.n_samples={n}", "eval.floor_repeats=2", "oracles=[eight_gaussians]",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("0", "1"):
        assert {"comparison.csv", "comparison.md", "quality_vs_nfe.png", "metrics.json"} <= {
            p.name for p in (sweep / job).iterdir()
        }
        assert (sweep / job / "quality_vs_nfe.png").read_bytes()[:8] == PNG

    # The documented seeds: prior noise `seed`, sampler noise `seed + 1`, reference `seed + 500` (seed = 0).
    oracle, sde = eight_gaussians(), VPSDE(LinearBeta())
    x_T = sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(0))
    reference = oracle.sample(n, torch.Generator().manual_seed(500)).float()
    for job, name in (("0", "euler_maruyama"), ("1", "dpm_solver")):
        sc = OmegaConf.load(ROOT / "conf" / "sampler" / f"{name}.yaml")
        res = sample(
            sde,
            oracle.score_fn(sde),
            (n, 2),
            sampler=name,
            steps=5,
            t_min=sc.t_min,
            denoise=sc.denoise,
            setup=SampleSetup(x_T=x_T, generator=torch.Generator().manual_seed(1)),
            **sc.options,
        )
        x = res.x.double()
        with open(sweep / job / "comparison.csv") as f:
            (row,) = list(csv.DictReader(f))
        assert (row["sampler"], int(row["steps"]), int(row["nfe"])) == (name, 5, res.nfe)
        assert float(row["sw2"]) == pytest.approx(sliced_wasserstein(x, reference), rel=1e-9)
        assert float(row["mmd2"]) == pytest.approx(mmd2(x, reference), rel=1e-9)
        assert float(row["mode_weight_error"]) == pytest.approx(mode_weight_error(oracle, x), abs=1e-12)
        if name == "dpm_solver":
            exact = exact_flow_map(sde, oracle, x_T, sc.t_min, denoise=sc.denoise)
            assert float(row["flow_error"]) == pytest.approx(flow_error(x, exact), rel=1e-6)
        assert "| eight_gaussians | LinearBeta | " + name in (sweep / job / "comparison.md").read_text()

    runs = [read_run(p) for p in find_run_files(sweep)]
    assert len({r.run_id for r in runs}) == 2 and {r.group for r in runs} == {"compare-sweep"}
    assert {r.job_type for r in runs} == {"compare"} and all(r.summary["comparison.nrows"] == 2 for r in runs)
    em_csv = float(next(csv.DictReader(open(sweep / "0" / "comparison.csv")))["sw2"])
    assert [r.summary["eight_gaussians/sw2"] for r in runs if "euler" in r.name] == [pytest.approx(em_csv)]

    jobs = summarize.summarize(sweep, metrics=["eight_gaussians/*"], x="eight_gaussians/nfe")
    assert [j.overrides["sampler"] for j in jobs] == ["euler_maruyama", "dpm_solver"]
    assert jobs[0].metrics["eight_gaussians/sw2"] == pytest.approx(em_csv)


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_app("train.py", "-m", "hydra/launcher=submitit_local", "schedule=linear,cosine", *SHORT, "logger=none",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / ".submitit").is_dir()  # the jobs ran in submitit's own processes
    jobs = summarize.summarize(sweep)
    assert [(j.overrides["schedule"], j.status) for j in jobs] == [("linear", "ok"), ("cosine", "ok")]


@pytest.mark.slow
def test_local_launcher_runs_one_torch_thread_per_job(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(
        "from pathlib import Path\nimport hydra, torch\nfrom hydra.core.hydra_config import HydraConfig\n"
        "@hydra.main(version_base='1.3', config_path=None)\ndef main(cfg):\n"
        "    Path(HydraConfig.get().runtime.output_dir, 'threads').write_text(str(torch.get_num_threads()))\n"
        "main()\n"
    )
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in app_env(tmp_path).items() if k != "OMP_NUM_THREADS"}  # the launcher must set it
    proc = subprocess.run([sys.executable, str(app), "-m", "hydra/launcher=local",
                           f"hydra.searchpath=[file://{ROOT / 'conf'}]", "+job=1,2,3", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=-1" in proc.stdout + proc.stderr
    assert [(sweep / j / "threads").read_text() for j in "012"] == ["1", "1", "1"]


def _job(root: Path, name: str, overrides: list[str], files: dict[str, str]) -> None:
    (root / name / ".hydra").mkdir(parents=True)
    (root / name / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    for file, text in files.items():
        (root / name / file).write_text(text)


def test_summarize_reads_metrics_and_lists_every_kind_of_failure(tmp_path):
    ok = {"samplers": {"em": {"sw2": 0.5, "nfe": 11}}, "floor": {"sw2": 0.25}, "final_loss": 1.5, "plots": ["a.png"]}
    _job(tmp_path, "0", ["schedule=linear", "train.steps=5"], {"metrics.json": json.dumps(ok)})
    failure = {"error": "ConfigError", "message": "config error: train.lr=-1: must be > 0", "overrides": []}
    _job(tmp_path, "1", ["schedule=cosine", "train.steps=5"], {"failure.json": json.dumps(failure)})
    log = "[2026-01-01 00:00:00,000][train][INFO] - start\n[2026-01-01 00:00:01,000][train][ERROR] - out of memory\n"
    _job(tmp_path, "2", ["schedule=constant", "train.steps=5"], {"train.log": log})
    _job(tmp_path, "10", ["+schedule.beta=2", "train.steps=5"], {})

    jobs = summarize.summarize(tmp_path)
    assert [j.label for j in jobs] == ["0", "1", "2", "10"]  # job-number order, not string order
    assert jobs[0].metrics == {"samplers/em/sw2": 0.5, "samplers/em/nfe": 11.0, "floor/sw2": 0.25, "final_loss": 1.5}
    assert [j.status for j in jobs] == ["ok", "failed", "failed", "no result"]
    assert jobs[1].error == "ConfigError: config error: train.lr=-1: must be > 0"
    assert jobs[2].error == "out of memory" and "no metrics.json" in jobs[3].error
    assert summarize.swept_keys(jobs) == (["schedule", "schedule.beta"], {"train.steps": "5"})
    table = (tmp_path / "summary.md").read_text()
    assert "| job | status | schedule | schedule.beta | samplers/em/sw2 | floor/sw2 |" in table
    assert "| 0 | ok | linear |  | 0.5 | 0.25 |" in table and "Failed jobs (3 of 4)" in table

    assert summarize.main([str(tmp_path), "--metrics", "nothing*"]) == 2
    assert summarize.main([str(tmp_path / "empty")]) == 2


def test_compare_runs_each_oracle_again_with_its_perturbed_score(tmp_path):
    """perturbations: the exact score's rk45 run lands on the exact flow map; the one with ε̂ scaled by 1.25 does
    not, and its flow error is what that error does to the flow of these very samples (independent of the app)."""
    (tmp_path / "job").mkdir()
    run_job("compare_samplers", "sampler=rk45", "eval.n_samples=200", "eval.floor_repeats=2",
            "oracles=[eight_gaussians]", "+perturbations.scaled={kind: scale, size: 0.25}", "logger=none",
            out=tmp_path / "job")  # fmt: skip
    rows = {r["data"]: r for r in csv.DictReader(open(tmp_path / "job" / "comparison.csv"))}
    assert set(rows) == {"eight_gaussians", "eight_gaussians scaled"}
    exact, scaled = float(rows["eight_gaussians"]["flow_error"]), float(rows["eight_gaussians scaled"]["flow_error"])
    sde, mix = VPSDE(), eight_gaussians()
    x_T = sde.prior_sampling((200, 2), generator=torch.Generator().manual_seed(0)).double()
    score = mix.score_fn(sde)
    x = sample(
        sde, lambda x, t: 1.25 * score(x, t), (200, 2), "rk45", setup=SampleSetup(x_T=x_T, dtype=torch.float64)
    ).x
    assert exact < 1e-3 and scaled == pytest.approx(flow_error(x, exact_flow_map(sde, mix, x_T, 1e-3, denoise=True)),
                                                    rel=0.05)  # fmt: skip
    with pytest.raises(ConfigError, match="config error: perturbations.bad="):
        run_job("compare_samplers", "sampler=rk45", "oracles=[eight_gaussians]", "+perturbations.bad={kind: shift}",
                "logger=none", out=tmp_path / "bad")  # fmt: skip


def test_compare_flags_a_diverged_setting_and_tells_sde_from_ode(tmp_path, caplog):
    """A score scaled by 4 sends 4 Euler steps of the ODE far past the data: worse than the prior noise the solver
    started from, so the row is flagged (column, warning, metrics.json) while the exact score's is not; each row
    says whether its sampler is an SDE or an ODE one. On a trained model the empty flow_error panel becomes the NLL."""
    (tmp_path / "job").mkdir()
    with caplog.at_level("WARNING", logger="compare"):
        run_job("compare_samplers", "sampler=ode_euler", "sampler.steps=4", "eval.n_samples=200",
                "eval.floor_repeats=2", "oracles=[eight_gaussians]", "+perturbations.scaled={kind: scale, size: 3}",
                "logger=none", out=tmp_path / "job")  # fmt: skip
    rows = {r["data"]: r for r in csv.DictReader(open(tmp_path / "job" / "comparison.csv"))}
    assert rows["eight_gaussians"]["diverged"] == "False" and rows["eight_gaussians scaled"]["diverged"] == "True"
    assert {r["kind"] for r in rows.values()} == {"ODE"}
    diverged = json.loads((tmp_path / "job" / "metrics.json").read_text())["diverged"]
    assert diverged == ["eight_gaussians scaled ode_euler 4"]
    assert "eight_gaussians scaled, ode_euler at 4 steps: diverged" in caplog.text
    assert plot_panels(("sw2", "mmd2", "flow_error"), flow_error=False, oracle=True) == ("sw2", "mmd2", "oracle_nll")
    assert plot_panels(("sw2", "flow_error"), flow_error=False, oracle=False) == ("sw2", "energy")
    assert plot_panels(("sw2", "flow_error"), flow_error=True, oracle=True) == ("sw2", "flow_error")
