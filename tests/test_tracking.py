"""The wandb tracker: an offline run read back from its .wandb file holds what was logged; failures degrade to a
no-op with one warning."""

import json
import warnings

import pytest
from wandb_reader import find_run_files, read_run

from sde_diffusion.infra.tracking import STEP_METRIC, Tracker, start_run


def test_offline_run_reads_back(tmp_path):
    losses = [0.9, 0.5, 0.25]
    tracker = start_run(dir=tmp_path, config={"train": {"lr": 0.003}}, group="sweep-1", name="lr=0.003", tags=["t"])
    assert tracker.active
    for i, loss in enumerate(losses):
        tracker.log({"train/loss": loss}, step=10 * (i + 1))
    tracker.log_table("eval/samplers", [{"sampler": "em", "sw2": 0.1}, {"sampler": "ode", "sw2": 0.2}])
    tracker.summary({"eval/em/sw2": 0.1})
    run_id = tracker.run_id
    tracker.finish()
    assert not tracker.active

    (path,) = find_run_files(tmp_path)
    run = read_run(path)
    assert (run.run_id, run.group, run.name, run.job_type, run.tags) == (run_id, "sweep-1", "lr=0.003", "train", ["t"])
    assert run.config["train"] == {"lr": 0.003}
    assert run.series("train/loss") == losses
    assert run.series(STEP_METRIC)[:3] == [10, 20, 30]
    assert run.summary["eval/em/sw2"] == 0.1
    assert run.summary["eval/samplers.nrows"] == 2
    assert run.exit_code == 0


def test_resume_continues_the_same_run(tmp_path):
    first = start_run(dir=tmp_path, config={})
    first.log({"train/loss": 1.0}, step=1)
    run_id = first.run_id
    first.finish()
    second = start_run(dir=tmp_path, config={}, resume_id=run_id)
    assert second.run_id == run_id
    second.finish()


def test_a_resumed_run_skips_the_steps_it_logged_and_records_its_job_type_and_artifacts(tmp_path):
    """A run killed after logging step 30 but resumed from a checkpoint at step 10 logs 20 and 30 again (bitwise the
    same): they are skipped, step 40 is not; rows sharing a new step all land. The recorded config's
    logger.job_type is the app's; a file is an offline artifact with its metadata."""
    checkpoint = tmp_path / "ck.pt"
    checkpoint.write_bytes(b"weights")
    first = start_run(dir=tmp_path, config={"logger": {"job_type": None}}, job_type="sample")
    for step in (10, 20, 30):
        first.log({"train/loss": float(step)}, step=step)
    run_id = first.run_id
    first.log_artifact(checkpoint, f"model-{run_id}", "model", {"step": 30})
    first.finish()
    second = start_run(dir=tmp_path, config={}, resume_id=run_id)
    for step in (20, 30, 40):
        second.log({"train/loss": step + 0.5}, step=step)
    second.log({"eval/sw2": 0.1}, step=40)
    second.finish()
    a, b = (read_run(p) for p in find_run_files(tmp_path))
    assert a.series("train/loss") == [10.0, 20.0, 30.0] and b.series("train/loss") == [40.5]
    assert b.series(STEP_METRIC) == [40, 40] and b.series("eval/sw2") == [0.1]
    assert a.config["logger"] == {"job_type": "sample"} and a.job_type == "sample"
    ((artifact),) = a.artifacts
    assert artifact["name"] == f"model-{a.run_id}" and artifact["type"] == "model"
    assert json.loads(artifact["metadata"]) == {"step": 30}
    assert [f["path"] for f in artifact["manifest"]["contents"]] == ["ck.pt"]


def test_unstartable_wandb_warns_once_and_is_a_noop(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(UserWarning, match="wandb could not start"):
        tracker = start_run(dir=blocker / "sub", config={})
    assert not tracker.active and tracker.run_id is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.log({"train/loss": 1.0}, step=1)
        tracker.finish()


class _BrokenRun:
    id = "broken"
    calls = 0

    def log(self, row):
        raise OSError("disk full")

    def finish(self, exit_code=0):
        self.calls += 1


def test_failing_write_warns_once_then_stops_calling_wandb():
    run = _BrokenRun()
    tracker = Tracker(run)
    with pytest.warns(UserWarning, match="wandb log failed.*disk full"):
        tracker.log({"train/loss": 1.0}, step=1)
    assert not tracker.active and run.calls == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.log({"train/loss": 2.0}, step=2)
        tracker.summary({"x": 1})
        tracker.finish()
