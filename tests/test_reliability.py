"""Reliability of the train app: the one-line error contract of the process (bad configs fail up front without a
traceback), kill -9 + train.resume=auto is bitwise lossless and continues the wandb run, SIGTERM saves at the next
step boundary and ends the process by the signal, after which resuming is bitwise lossless (all through the real
process), and, running the app in this process: bad checkpoints are refused in one line without running code, the
NaN guard stops (keeping a loadable state) or skips (counted), a failing evaluation sampler names its slot, and a
broken wandb does not cost the run. Plus the pieces the app relies on (rewind on stop, keep_last)."""

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from apps import ROOT, TINY, app_env, compose_job, run_app, run_job
from conftest import NaNAt, mlp_trainer
from omegaconf import OmegaConf, open_dict
from wandb_reader import find_run_files, read_run

from sde_diffusion.apps import RunError, build, load_run
from sde_diffusion.evaluation import evaluator
from sde_diffusion.infra.checkpoint import load_checkpoint, save_checkpoint
from sde_diffusion.training import NonFiniteLossError, Trainer


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The app's one-line error, asserting it failed with that line alone on stderr: no traceback, no Hydra wrapper
    ("Error executing job", the HYDRA_FULL_ERROR hint) and no Hydra advice ("+key")."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "HYDRA_FULL_ERROR" not in line and "Error executing job" not in line and "append" not in line
    return line


# ------------------------------------------------------------- the process: one line (tests/test_config.py: each key)


@pytest.mark.slow
def test_bad_config_exits_with_one_line_and_does_no_work(tmp_path):
    out = tmp_path / "run"
    proc = run_app("train.py", *TINY, "+eval.samplers.dpm_solver.options.ordr=2", f"hydra.run.dir={out}", cwd=tmp_path)
    assert error_line(proc) == (
        "config error: eval.samplers.dpm_solver.options.ordr=2: dpm_solver takes options: order, method, algorithm, "
        "lower_order_final, spacing, rho, timesteps"
    )
    assert not (out / "checkpoints").exists() and not (out / "metrics.json").exists() and not (out / "wandb").exists()


@pytest.mark.slow
@pytest.mark.parametrize("typo", ["train.stpes=100", "+train.stpes=100"])
def test_a_misspelt_key_is_one_line_naming_it_and_the_valid_keys_with_no_hydra_advice(typo, tmp_path):
    proc = run_app("train.py", typo, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert error_line(proc) == (
        "config error: train.stpes=100: unknown key 'stpes' of train; valid keys: steps, batch_size, lr, weight_decay, "
        "warmup, ema_decay, grad_clip, seed, cond_drop, nan_policy, device, precision, compile, progress, log_every, "
        "eval_every, ckpt_every, keep_last, guide_at, threads, resume"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_config_error_after_composing_is_one_line_and_the_job_log_records_it(tmp_path):
    out = tmp_path / "run"
    proc = run_app("train.py", *TINY, "train.log_every=0", f"hydra.run.dir={out}", cwd=tmp_path)
    line = "config error: train.log_every=0: must be an int >= 1"
    assert error_line(proc) == line
    assert (out / "train.log").read_text().strip().endswith(f"[train][ERROR] - {line}")
    assert json.loads((out / "failure.json").read_text())["message"] == line


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
    logged = [row["trainer/step"] for row in read_run(runs[0]).history if "train/loss" in row]
    again = [row["trainer/step"] for row in last.history if "train/loss" in row]
    assert sorted(logged + again) == list(range(10, 401, 10))  # every training step in exactly one of the two runs
    assert ma["train_wall_s_total"] > ma["train_wall_s"] > 0  # the killed segment's time up to its checkpoint counts

    kept = sorted(p.name for p in (whole / "checkpoints").iterdir())
    assert kept == ["last.pt", "last_step00000360.pt", "last_step00000400.pt"]
    assert load_checkpoint(whole / "checkpoints" / "last_step00000360.pt")["step"] == 360


# ------------------------------------------------------------------------------------- SIGTERM (preemption) and resume

PREEMPT = ["train.steps=600", "train.ckpt_every=100", "train.log_every=10", "logger=none"]


def _equal_states(a: dict, b: dict) -> bool:
    """Bitwise equal weights, EMA, Adam moments and loss history."""
    same = [torch.equal(a[key][k], b[key][k]) for key in ("model", "ema") for k in b[key]]
    moments = [torch.equal(s[m], b["optimizer"]["state"][i][m]) for i, s in a["optimizer"]["state"].items()
               for m in ("exp_avg", "exp_avg_sq")]  # fmt: skip
    return all(same + moments) and torch.equal(a["loss_history"], b["loss_history"])


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_and_resume_auto_equals_the_uninterrupted_run(tmp_path):
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    cmd = [sys.executable, str(ROOT / "experiments" / "train.py"), *TINY, *PREEMPT, f"hydra.run.dir={stopped}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=app_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    ckpt = stopped / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # the first periodic checkpoint (step 100): training is under way
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == -signal.SIGTERM  # ended by the signal itself, as a launcher expects
    step = load_checkpoint(ckpt)["step"]
    assert 100 <= step < 600 and not (stopped / "metrics.json").exists()
    assert f"stopped by SIGTERM after step {step}: saved {ckpt}" in (stopped / "train.log").read_text()

    resumed = run_app("train.py", *TINY, *PREEMPT, "train.resume=auto", f"hydra.run.dir={stopped}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {step} of {ckpt}" in (stopped / "train.log").read_text()
    full = run_app("train.py", *TINY, *PREEMPT, f"hydra.run.dir={whole}", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    a, b = load_checkpoint(ckpt), load_checkpoint(whole / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 600 and len(b["loss_history"]) == 60 and _equal_states(a, b)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (stopped, whole))
    assert ma["samplers"] == {k: v | {"wall_s": ma["samplers"][k]["wall_s"]} for k, v in mb["samplers"].items()}


# ------------------------------------------------------------------------------------------------ bad checkpoints


class Exploit:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_checkpoint(path: Path, kind: str, marker: Path) -> Path:
    if kind == "truncated":
        t = mlp_trainer(steps=3)
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
    with pytest.raises(RunError) as info:
        run_job("train", *TINY, f"train.resume={path}", out=out)
    line = str(info.value)
    assert line.startswith(f"checkpoint {path}: ") and problem in line and "\n" not in line, line
    assert not marker.exists() and not out.exists()
    with pytest.raises(ValueError, match="refused|corrupt|missing keys"):  # load_run refuses it the same way
        load_run(path)
    assert not marker.exists()
    if kind in ("pickle", "torch_save"):  # the file is a working exploit: an unsafe load does run it
        with contextlib.suppress(Exception):  # os.system's return value may break the rest of the load
            torch.load(path, weights_only=False)
        assert marker.exists()


def test_checkpoint_of_another_model_names_the_keys_and_config_values_that_differ(tmp_path):
    cfg = compose_job("train", *TINY, "model.hidden=8")
    with open_dict(cfg):
        del cfg["hydra"]
    built = build(cfg)
    t = Trainer(built.model, built.sde, built.data, steps=2, batch_size=8, progress=False)
    t.fit()
    path = tmp_path / "other.pt"
    save_checkpoint(path, t.state_dict() | {"config": OmegaConf.to_container(cfg, resolve=True), "wandb_run_id": None})
    with pytest.raises(RunError) as info:
        run_job("train", *TINY, f"train.resume={path}", "logger=none", out=tmp_path / "run")
    line = str(info.value)
    assert line.startswith(f"checkpoint {path}: checkpoint's 'model' does not fit this model")
    assert "net.net.0.weight: (8, 66) vs (16, 66)" in line  # the checkpoint's shape vs this model's
    assert "config keys that differ (checkpoint -> this run): model.hidden: 8 -> 16" in line


# ------------------------------------------------------------------------------------------------- NaN guard

NAN_DATA = ["data._target_=conftest.NaNAt", "+data.at=[13]", "train.ckpt_every=5"]


def test_nan_in_the_data_stops_naming_the_step_and_keeps_a_loadable_state(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RunError) as info:
        run_job("train", *TINY, *NAN_DATA, "logger=none", out=out)
    line = str(info.value)
    assert "non-finite loss at step 13" in line and "the data batch contains NaN/Inf" in line, line
    assert f"saved to {out / 'checkpoints' / 'last.pt'}" in line
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["step"] == 12 and not (out / "metrics.json").exists()
    model, _, _, _ = load_run(out / "checkpoints" / "last.pt")
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_huge_learning_rate_trips_the_guard_naming_the_learning_rate(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RunError) as info:
        run_job("train", *TINY, "train.lr=1e12", "train.warmup=0", "logger=none", out=out)
    line = str(info.value)
    assert "non-finite loss at step" in line and "training diverged: lower the learning rate (lr=" in line
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert f"at step {state['step'] + 1} " in line and state["step"] >= 1
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())


def test_skip_policy_counts_and_logs_skipped_steps(tmp_path, caplog):
    out = tmp_path / "run"
    run_job("train", *TINY, "data._target_=conftest.NaNAt", "+data.at=[13,17]", "train.nan_policy=skip", out=out)
    assert "skipped 2 steps with a non-finite loss or gradient" in caplog.text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_steps"] == 2 and metrics["train_steps"] == 30
    assert load_checkpoint(out / "checkpoints" / "last.pt")["skipped_steps"] == 2
    (path,) = find_run_files(out / "wandb")
    assert read_run(path).series("train/skipped_steps") == [0, 0, 1, 2, 2, 2]  # logged at steps 5, 10, ..., 30


def test_stop_rewinds_the_failed_step_so_the_saved_state_is_the_last_good_one():
    stopped, clean = mlp_trainer(data=NaNAt([3])), mlp_trainer(data=NaNAt([]))
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


def test_unwritable_wandb_dir_warns_once_and_the_run_finishes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "wandb").write_text("a file where wandb wants its directory")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_job("train", *TINY, out=out)
    assert sum("wandb could not start" in str(w.message) for w in caught) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["samplers"]) == ["euler_maruyama", "dpm_solver"] and metrics["train_steps"] == 30
    assert metrics["main_metric"]["value"] == metrics["samplers"]["euler_maruyama"]["nll_excess"]
    assert all(Path(p).is_file() for p in metrics["plots"]) and len(metrics["plots"]) == 3  # samples, loss, score_error
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["step"] == 30 and state["wandb_run_id"] is None and len(state["loss_history"]) == 6


def test_failing_evaluation_sampler_is_one_line_and_the_trained_state_is_kept(tmp_path, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\n(details)")

    monkeypatch.setattr(evaluator, "sample", out_of_memory)
    out = tmp_path / "run"
    with pytest.raises(RunError) as info:
        run_job("train", *TINY, "logger=none", out=out)
    assert str(info.value) == (
        "evaluation sampler eval.samplers.euler_maruyama (euler_maruyama) failed at training step 30: CUDA out of "
        "memory. Tried to allocate 2.00 GiB (the trained state is in checkpoints/last.pt; a smaller eval.batch_size "
        "bounds memory)"
    )
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
