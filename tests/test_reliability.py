"""Reliability through the real app (experiments/train.py in a subprocess, tiny configs): bad configs fail up front in
one line, kill -9 + train.resume=auto is bitwise lossless and continues the wandb run, bad checkpoints are refused in
one line without running code, the NaN guard stops (keeping a loadable state) or skips (counted), and a broken wandb
does not cost the run. Plus in-process checks of the pieces the app relies on (rewind on stop, keep_last)."""

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from apps import ROOT, TINY, app_env, run_app
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from wandb_reader import find_run_files, read_run

from sde_diffusion import VPSDE
from sde_diffusion.checkpoint import load_checkpoint, save_checkpoint
from sde_diffusion.config import build, load_run
from sde_diffusion.data import EightGaussians
from sde_diffusion.models import MLP, ScoreModel
from sde_diffusion.training import NonFiniteLossError, Trainer


class NaNAt(EightGaussians):
    """Eight Gaussians whose batches number `at` (1-based calls of `batch`) are all NaN: a data fault mid-run."""

    def __init__(self, at: list[int]):
        super().__init__()
        self.at, self.calls = set(at), 0

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        self.calls += 1
        x = super().batch(n, generator)
        return x.fill_(float("nan")) if self.calls in self.at else x


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The app's one-line error (Hydra prints it after 'Error executing job'), asserting it failed without a trace."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    return lines[lines.index(next(ln for ln in lines if ln.startswith("Error executing job"))) + 1]


def assert_no_work_done(out: Path) -> None:
    assert not (out / "checkpoints").exists() and not (out / "metrics.json").exists()
    assert not (out / "wandb").exists()


# ---------------------------------------------------------------------------------------------------- bad configs


def write_data(path: Path, kind: str) -> str:
    arrays = {
        "empty": np.zeros((0, 2), np.float32),
        "nan": np.array([[0.0, 1.0], [np.nan, 2.0]] * 10, np.float32),
        "rank3": np.zeros((20, 2, 2), np.float32),
    }
    np.save(path, arrays[kind])
    return str(path)


# (overrides, texts the error line must hold: the key, the value, what is allowed)
BAD_CONFIGS = {
    "beta_min<=0": (["schedule.beta_min=0"], ["schedule.beta_min=0", "must be a number > 0"]),
    "beta_max<beta_min": (["schedule.beta_min=5", "schedule.beta_max=1"], ["schedule.beta_max=1", ">= 5"]),
    "cosine_s<=0": (["schedule=cosine", "schedule.s=-0.01"], ["schedule.s=-0.01", "> 0"]),
    "T<=eps": (["sde.T=0.001"], ["eval.samplers.euler_maruyama.eps=0.001", "< 0.001"]),
    "loss_eps<=0": (["train.loss_eps=0"], ["train.loss_eps=0", "> 0"]),
    "steps<1": (["train.steps=0"], ["train.steps=0", "an integer >= 1"]),
    "batch_size<1": (["train.batch_size=0"], ["train.batch_size=0", "an integer >= 1"]),
    "lr<=0": (["train.lr=-0.001"], ["train.lr=-0.001", "> 0"]),
    "unknown_sampler": (["eval.samplers.euler_maruyama.name=leapfrog"], ["name='leapfrog'", "allowed: ancestral"]),
    "unknown_option": (["+eval.samplers.dpm_solver.options.ordr=2"], ["options.ordr=2", "order"]),
    "ancestral_on_ve": (
        ["sde=ve", "sampler@eval.samplers.euler_maruyama=ancestral"],
        ["eval.samplers.euler_maruyama.name='ancestral'", "needs a VP SDE", "VESDE"],
    ),
    "sigma_max<sigma_min": (["sde=ve", "sde.sigma_max=0.001"], ["sde.sigma_max=0.001", "> 0.01"]),
    "nan_policy": (["train.nan_policy=ignore"], ["train.nan_policy='ignore'", "allowed: stop, skip"]),
    "keep_last<0": (["train.keep_last=-1"], ["train.keep_last=-1", ">= 0"]),
    "logger_mode": (["logger.mode=sometimes"], ["logger.mode='sometimes'", "allowed: offline, online, disabled"]),
    "data_path_required": (["data=tensor_file"], ["data.path='???'", "a value is required"]),
    "data_missing": (["data=tensor_file", "data.path=/no/such.npy"], ["data.path='/no/such.npy'", "existing"]),
    "data_empty": (["data=tensor_file", "data.path={empty}"], ["{empty}", "empty array"]),
    "data_nan": (["data=tensor_file", "data.path={nan}"], ["{nan}", "contains NaN or Inf"]),
    "data_rank": (["data=tensor_file", "data.path={rank3}"], ["{rank3}", "rank 3", "allowed: (N, D) or (N, C, H, W)"]),
    "unknown_target": (["data._target_=sde_diffusion.data.Nope"], ["config error: data", "sde_diffusion.data.Nope"]),
}
# Unknown names of a config group fail in Hydra's composition, which lists the available options.
BAD_GROUPS = {
    "data": "data=nope",
    "sde": "sde=nope",
    "schedule": "schedule=nope",
    "sampler": "sampler@eval.samplers.euler_maruyama=nope",
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_exits_with_one_line_naming_key_value_and_what_is_allowed(case, tmp_path):
    files = {kind: write_data(tmp_path / f"{kind}.npy", kind) for kind in ("empty", "nan", "rank3")}
    overrides, texts = BAD_CONFIGS[case]
    out = tmp_path / "run"
    proc = run_app("train.py", *TINY, *(o.format(**files) for o in overrides), f"hydra.run.dir={out}", cwd=tmp_path)
    line = error_line(proc)
    assert line.startswith("config error: ")
    for text in texts:
        assert text.format(**files) in line, line
    assert_no_work_done(out)


@pytest.mark.slow
@pytest.mark.parametrize("group", list(BAD_GROUPS))
def test_unknown_group_option_lists_the_available_ones(group, tmp_path):
    out = tmp_path / "run"
    proc = run_app("train.py", *TINY, BAD_GROUPS[group], f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"Could not find '{group}/nope'" in proc.stderr
    assert f"Available options in '{group}'" in proc.stderr
    assert_no_work_done(out)


@pytest.mark.slow
def test_hydra_full_error_shows_the_traceback(tmp_path):
    proc = run_app("train.py", *TINY, "train.lr=0", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                   env={"HYDRA_FULL_ERROR": "1"})  # fmt: skip
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "config error: train.lr=0" in proc.stderr


# ------------------------------------------------------------------------------------------ kill -9 and resume

KILL = ["train.steps=400", "train.ckpt_every=40", "train.log_every=10"]


@pytest.mark.slow
def test_kill_9_then_resume_auto_equals_the_uninterrupted_run(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    cmd = [sys.executable, str(ROOT / "experiments" / "train.py"), *TINY, *KILL, f"hydra.run.dir={killed}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=app_env(tmp_path), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    ckpt = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.02)  # land the kill between checkpoints, at whatever step the run has reached
    os.killpg(proc.pid, signal.SIGKILL)  # the app and any helper it started (wandb's service)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    at_kill = load_checkpoint(ckpt)
    assert 0 < at_kill["step"] < 400 and at_kill["step"] % 40 == 0 and not (killed / "metrics.json").exists()

    resumed = run_app("train.py", *TINY, *KILL, "train.resume=auto", f"hydra.run.dir={killed}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {at_kill['step']} of {ckpt}" in (killed / "train.log").read_text()
    full = run_app("train.py", *TINY, *KILL, "logger=none", "train.keep_last=2", f"hydra.run.dir={whole}", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]

    a, b = load_checkpoint(ckpt), load_checkpoint(whole / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 400
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key  # bitwise
    assert all(torch.equal(x, b["optimizer"]["state"][i]["exp_avg_sq"]) for i, x in
               ((i, s["exp_avg_sq"]) for i, s in a["optimizer"]["state"].items()))  # fmt: skip
    assert torch.equal(a["loss_history"], b["loss_history"]) and len(a["loss_history"]) == 40
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (killed, whole))
    assert ma["samplers"] == {k: v | {"wall_s": ma["samplers"][k]["wall_s"]} for k, v in mb["samplers"].items()}

    runs = sorted(find_run_files(killed / "wandb"))  # the killed run's file, then the resumed one's
    assert len(runs) == 2 and all(p.parent.name.endswith(a["wandb_run_id"]) for p in runs)
    last = read_run(runs[-1])
    assert last.run_id == a["wandb_run_id"] and last.exit_code == 0
    assert min(row["trainer/step"] for row in last.history if "train/loss" in row) == at_kill["step"] + 10

    kept = sorted(p.name for p in (whole / "checkpoints").iterdir())
    assert kept == ["last.pt", "last_step00000360.pt", "last_step00000400.pt"]
    assert load_checkpoint(whole / "checkpoints" / "last_step00000360.pt")["step"] == 360


# ------------------------------------------------------------------------------------------------ bad checkpoints


def tiny_trainer(hidden: int = 8) -> Trainer:
    torch.manual_seed(0)
    sde = VPSDE()
    return Trainer(ScoreModel(MLP((2,), hidden=hidden, layers=1), sde), sde, EightGaussians(), steps=3, batch_size=4,
                   progress=False)  # fmt: skip


class Exploit:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_checkpoint(path: Path, kind: str, marker: Path) -> Path:
    if kind == "truncated":
        t = tiny_trainer()
        t.fit()
        save_checkpoint(path, t.state_dict())
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"model": Exploit(marker)}, protocol=2))
    elif kind == "torch_save":
        torch.save({"model": Exploit(marker), "step": 1}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("truncated", "truncated or corrupt"),
        ("random", "truncated or corrupt"),
        ("foreign", "not a training checkpoint, missing keys ['model'"),
        ("pickle", "refused to unpickle posix.system"),
        ("torch_save", "refused to unpickle posix.system"),
    ],
)
def test_bad_checkpoint_is_one_line_naming_the_file_and_runs_no_code(kind, problem, tmp_path):
    marker = tmp_path / "pwned"
    path = write_checkpoint(tmp_path / f"{kind}.pt", kind, marker)
    out = tmp_path / "run"
    proc = run_app("train.py", *TINY, f"train.resume={path}", f"hydra.run.dir={out}", cwd=tmp_path)
    line = error_line(proc)
    assert line.startswith(f"checkpoint {path}: ") and problem in line, line
    assert not marker.exists()
    assert not (out / "metrics.json").exists() and not (out / "checkpoints").exists()
    with pytest.raises(ValueError, match="refused|corrupt|missing keys"):  # load_run refuses it the same way
        load_run(path)
    assert not marker.exists()
    if kind in ("pickle", "torch_save"):  # the file is a working exploit: an unsafe load does run it
        with contextlib.suppress(Exception):  # os.system's return value may break the rest of the load
            torch.load(path, weights_only=False)
        assert marker.exists()


@pytest.mark.slow
def test_checkpoint_of_another_model_names_the_keys_and_config_values_that_differ(tmp_path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, "model.hidden=8"])
    built = build(cfg)
    t = Trainer(built.model, built.sde, built.data, steps=2, batch_size=8, progress=False)
    t.fit()
    path = tmp_path / "other.pt"
    save_checkpoint(path, t.state_dict() | {"config": OmegaConf.to_container(cfg, resolve=True), "wandb_run_id": None})
    proc = run_app("train.py", *TINY, f"train.resume={path}", "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
                   cwd=tmp_path)  # fmt: skip
    line = error_line(proc)
    assert line.startswith(f"checkpoint {path}: checkpoint's 'model' does not fit this model")
    assert "net.net.0.weight: (8, 66) vs (16, 66)" in line  # the checkpoint's shape vs this model's
    assert "config keys that differ (checkpoint -> this run): model.hidden: 8 -> 16" in line


# ------------------------------------------------------------------------------------------------- NaN guard

NAN_DATA = ["data._target_=test_reliability.NaNAt", "+data.at=[13]", "train.ckpt_every=5"]
TESTS_ON_PATH = {"PYTHONPATH": str(ROOT / "tests")}  # the app imports test_reliability.NaNAt


@pytest.mark.slow
def test_nan_in_the_data_stops_naming_the_step_and_keeps_a_loadable_state(tmp_path):
    out = tmp_path / "run"
    proc = run_app("train.py", *TINY, *NAN_DATA, "logger=none", f"hydra.run.dir={out}", cwd=tmp_path, env=TESTS_ON_PATH)
    line = error_line(proc)
    assert "non-finite loss at step 13" in line and "the data batch contains NaN/Inf" in line, line
    assert f"saved to {out / 'checkpoints' / 'last.pt'}" in line
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["step"] == 12 and not (out / "metrics.json").exists()
    model, _, _, _ = load_run(out / "checkpoints" / "last.pt")
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.slow
def test_huge_learning_rate_trips_the_guard_naming_the_learning_rate(tmp_path):
    out = tmp_path / "run"
    proc = run_app("train.py", *TINY, "train.lr=1e12", "train.warmup=0", "logger=none", f"hydra.run.dir={out}",
                   cwd=tmp_path)  # fmt: skip
    line = error_line(proc)
    assert "non-finite loss at step" in line and "training diverged: lower the learning rate (lr=" in line
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert f"at step {state['step'] + 1} " in line and state["step"] >= 1
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())


@pytest.mark.slow
def test_skip_policy_counts_and_logs_skipped_steps(tmp_path):
    out = tmp_path / "run"
    proc = run_app("train.py", *TINY, "data._target_=test_reliability.NaNAt", "+data.at=[13,17]",
                   "train.nan_policy=skip", f"hydra.run.dir={out}", cwd=tmp_path, env=TESTS_ON_PATH)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 2 steps with a non-finite loss or gradient" in (out / "train.log").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_steps"] == 2 and metrics["train_steps"] == 30
    assert load_checkpoint(out / "checkpoints" / "last.pt")["skipped_steps"] == 2
    (path,) = find_run_files(out / "wandb")
    assert read_run(path).series("train/skipped_steps") == [0, 0, 1, 2, 2, 2]  # logged at steps 5, 10, ..., 30


def test_stop_rewinds_the_failed_step_so_the_saved_state_is_the_last_good_one():
    stopped, clean = tiny_trainer(), tiny_trainer()
    stopped.data = NaNAt([3])
    clean.data = NaNAt([])
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        for _ in range(3):
            stopped.train_step()
    for _ in range(2):
        clean.train_step()
    a, b = stopped.state_dict(), clean.state_dict()
    assert a["step"] == b["step"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for rng in ("data", "noise", "torch"):
        assert torch.equal(a["rng"][rng], b["rng"][rng]), rng


# ------------------------------------------------------------------------------------------------ logger faults


@pytest.mark.slow
def test_unwritable_wandb_dir_warns_once_and_the_run_finishes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "wandb").write_text("a file where wandb wants its directory")
    proc = run_app("train.py", *TINY, f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("wandb could not start") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["samplers"]) == ["euler_maruyama", "dpm_solver"] and metrics["train_steps"] == 30
    assert metrics["main_metric"]["value"] == metrics["samplers"]["euler_maruyama"]["sw2"]
    assert all(Path(p).is_file() for p in metrics["plots"]) and len(metrics["plots"]) == 2
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["step"] == 30 and state["wandb_run_id"] is None and len(state["loss_history"]) == 6


@pytest.mark.slow
def test_failing_evaluation_sampler_is_one_line_and_the_trained_state_is_kept(tmp_path):
    out = tmp_path / "run"
    proc = run_app("train.py", *TINY, "eval.samplers.dpm_solver.options.order=5", "logger=none",
                   f"hydra.run.dir={out}", cwd=tmp_path)  # fmt: skip
    line = error_line(proc)
    assert line.startswith("evaluation sampler eval.samplers.dpm_solver (dpm_solver) failed at training step 30: ")
    assert "order must be one of [1, 2, 3], got 5" in line
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 30


# ------------------------------------------------------------------------------------------------ checkpoint files


def test_keep_last_keeps_the_newest_k_and_a_save_clears_temp_files_of_a_killed_save(tmp_path):
    path = tmp_path / "last.pt"
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    for step in (5, 10, 15, 20):
        save_checkpoint(path, {"step": step}, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last_step00000015.pt", "last_step00000020.pt"]
    assert torch.load(tmp_path / "last_step00000015.pt", weights_only=True) == {"step": 15}
    assert torch.load(path, weights_only=True) == {"step": 20}
