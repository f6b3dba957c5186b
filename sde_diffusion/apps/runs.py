"""A job's surroundings: its output dir, its tracker (wandb run) and names, the run-only keys a resumed run may
change, and the Hydra callback that records a failed job."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..core.checks import ArgumentError
from ..infra.tracking import Tracker
from .build import argument_error


def output_dir() -> Path:
    """This job's output dir (Hydra's run or sweep subdir)."""
    return Path(HydraConfig.get().runtime.output_dir)


def run_only_keys() -> list[str]:
    """Keys that change neither the trained state nor the results: left out of a job's run name, and free to change
    when a run resumes. One list, `hydra.job.config.override_dirname.exclude_keys` in conf/hydra/default.yaml."""
    return list(HydraConfig.get().job.config.override_dirname.exclude_keys)


def config_diff(old: dict, new: dict, skip: Sequence[str] = (), prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs between two plain configs, except keys in or under `skip`."""
    out = []
    for k in sorted(old.keys() | new.keys(), key=str):
        key, a, b = f"{prefix}{k}", old.get(k, "<absent>"), new.get(k, "<absent>")
        if any(key == s or key.startswith(f"{s}.") for s in skip):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, skip, f"{key}.")
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def run_names(cfg: DictConfig) -> tuple[str, str]:
    """(wandb group, run name): `logger.group`/`logger.name` if set; otherwise the group is the experiment
    `name` (in a multirun, `name` + the sweep directory's name, so one sweep = one group) and the run name is
    the job's command-line overrides (e.g. "schedule=cosine"), or `name` without overrides."""
    name = str(cfg.get("name", "run"))
    group, run_name = name, name
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            group = f"{name}-{Path(hc.sweep.dir).name}"
        run_name = hc.job.override_dirname or name
    logger = cfg.get("logger") or {}
    return logger.get("group") or group, logger.get("name") or run_name


def sweep_run_name(cfg: DictConfig) -> str | None:
    """The run name of a job of a sweep, for figure titles (two jobs of one sweep must be told apart); None in a
    single run, whose title needs no command line."""
    return run_names(cfg)[1] if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN else None


def start_tracker(
    cfg: DictConfig, output_dir: str | Path, job_type: str, resume_id: str | None = None, history: Sequence = ()
) -> Tracker:
    """Instantiate `cfg.logger` (sde_diffusion.infra.tracking.start_run) with files in `output_dir`, the resolved
    config, the names of `run_names`, and `resume_id` to continue a run (with its checkpoint's `history` rows,
    tracking.start_run); use it as `with start_tracker(...) as t:` (the run ends with exit code 1 if the block
    raises). A bad logger argument is a ConfigError."""
    if cfg.get("logger") is None:
        return Tracker()
    group, name = run_names(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    start = instantiate(cfg.logger, _partial_=True, _convert_="all")
    try:
        kw = {"history": history} if history else {}
        return start(
            dir=str(output_dir), config=config, group=group, name=name, job_type=job_type, resume_id=resume_id, **kw
        )
    except ArgumentError as err:
        raise argument_error("logger", err) from None


def write_failure(out: Path, err: BaseException, overrides: Sequence[str]) -> None:
    """`out`/failure.json (error type, message, overrides) and the error as one ERROR record in the job's log file
    (`<job>.log`, Hydra's file handler; the console gets the line from the app)."""
    _write_record(out, err, overrides)
    file_log(HydraConfig.get().job.name, logging.ERROR, str(err))


def file_log(name: str, level: int, message: str) -> None:
    """One record of logger `name` to the log files only (the job's `<job>.log`, flushed per record), not the
    console: the training steps as they go (the console shows the progress bar), a single run's error (the console
    gets its one line from the app)."""
    record = logging.LogRecord(name, level, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _write_record(out: Path, err: BaseException, overrides: Sequence[str]) -> dict[str, Any]:
    record = {"error": type(err).__name__, "message": str(err), "overrides": list(overrides)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "failure.json").write_text(json.dumps(record, indent=2))
    return record


class RecordFailure(Callback):
    """Hydra callback (`hydra.callbacks` in conf/hydra/default.yaml): a job of a multirun that raises writes
    `failure.json` (error type, message, overrides) to its output dir and logs the error to the job's log. Hydra's
    launchers run every job of a sweep and re-raise only the first failure at the end, so this is how
    experiments/summarize.py names every failed job. A single run from the command line records its error itself
    (apps.hydra_app) and prints it as one line."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Write the record if the job failed."""
        if job_return.status != JobStatus.FAILED:
            return
        out, err = Path(config.hydra.runtime.output_dir), job_return._return_value
        record = _write_record(out, err, job_return.overrides or [])
        if config.hydra.mode == RunMode.MULTIRUN:
            logging.getLogger(config.hydra.job.name).error("job failed: %s: %s", record["error"], record["message"])
