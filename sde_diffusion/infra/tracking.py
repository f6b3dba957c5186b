"""Experiment tracking with Weights & Biases, reduced to what the apps need and tolerant of wandb failing: a fault
warns once and the tracker becomes a no-op. Series are logged against `trainer/step`; every logged step is also
written to `<dir>/wandb/last_step-<id>`, so a run resumed from an earlier checkpoint skips the steps it already
logged (bitwise the same) instead of logging them twice. The only module that imports wandb.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.checks import check_choice

STEP_METRIC = "trainer/step"
MODES = ("offline", "online", "disabled")


class Tracker:
    """One wandb run (or none). Every method is a no-op once the run is gone; the first failure warns once."""

    def __init__(self, run: Any = None, durable: Iterable[tuple[int, str]] = ()):
        self._run, self._durable = run, set(durable)  # (trainer/step, key) that earlier files of this run hold
        self.history: list[tuple[int, dict[str, Any]]] = []  # the scalar rows logged with a step, for checkpoints

    @property
    def active(self) -> bool:
        """Whether a wandb run is live."""
        return self._run is not None

    @property
    def run_id(self) -> str | None:
        """The wandb run id, stored in checkpoints so a resumed job continues the same run."""
        return self._run.id if self._run is not None else None

    @property
    def run_dir(self) -> str | None:
        """The run's local files directory (`.../wandb/offline-run-*/files`)."""
        return self._run.dir if self._run is not None else None

    def _call(self, what: str, fn: Callable[[Any], None]) -> None:
        if self._run is None:
            return
        try:
            fn(self._run)
        except Exception as err:  # noqa: BLE001 - any logger fault must not stop the job
            warnings.warn(f"wandb {what} failed ({type(err).__name__}: {err}); continuing without wandb", stacklevel=3)
            run, self._run = self._run, None
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass

    def _new(self, row: Mapping[str, Any], step: int | None) -> dict[str, Any]:
        """The keys of `row` at `step` that no earlier file of this run durably holds."""
        return {k: v for k, v in row.items() if step is None or (step, k) not in self._durable}

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log scalars; `step` is recorded as `trainer/step` and the row kept in `history` (a checkpoint stores
        it). A key an earlier file of this run holds at `step` is skipped (module docstring)."""
        row = self._new(metrics, step)
        if not row or self._run is None:
            return
        if step is not None:
            self.history.append((step, row))
            row = row | {STEP_METRIC: step}
        self._call("log", lambda run: run.log(row))

    def replay(self, rows: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        """Log a checkpoint's `history` rows, each key not durably held already (a resume's first call)."""
        for step, row in rows:
            self.log(row, step=int(step))

    def log_images(self, images: Mapping[str, str | os.PathLike], step: int | None = None) -> None:
        """Log image files (PNG paths) as `wandb.Image`s."""

        def _log(run: Any) -> None:
            import wandb

            row: dict[str, Any] = {key: wandb.Image(str(path), caption=Path(path).name) for key, path in images.items()}
            if step is not None:
                row[STEP_METRIC] = step
            run.log(row)

        if self._new(images, step):
            self._call("log_images", _log)

    def log_artifact(
        self, paths: str | os.PathLike | Sequence[str | os.PathLike], name: str, type: str, metadata: Mapping = ()
    ) -> None:
        """Log files or directories as one wandb artifact `name` of `type` (e.g. "model"): in an offline run it is
        stored with the run and uploaded by `wandb sync`."""

        def _log(run: Any) -> None:
            import wandb

            artifact = wandb.Artifact(name, type=type, metadata=dict(metadata))
            for path in [paths] if isinstance(paths, str | os.PathLike) else paths:
                (artifact.add_dir if Path(path).is_dir() else artifact.add_file)(str(path))
            run.log_artifact(artifact)

        self._call("log_artifact", _log)

    def log_table(self, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Log a list of dicts as one `wandb.Table` (columns = the union of keys, in first-seen order)."""

        def _log(run: Any) -> None:
            import wandb

            columns = list(dict.fromkeys(k for row in rows for k in row))
            run.log({key: wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])})

        self._call("log_table", _log)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Set final values in the run summary (shown in the runs table)."""
        self._call("summary", lambda run: run.summary.update(dict(values)))

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (always call it, e.g. in `finally`, so each multirun job is its own run) and shut wandb's
        service down, which is what waits until the run file is fully written (a bare `run.finish()` may return
        earlier for the second run of a process); the next `start_run` starts a fresh service."""

        def _finish(run: Any) -> None:
            import wandb

            run.finish(exit_code=exit_code)
            wandb.teardown()

        self._call("finish", _finish)
        self._run = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


def start_run(
    *,
    dir: str | os.PathLike,
    config: Mapping[str, Any],
    project: str = "sde-diffusion",
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    job_type: str = "train",
    tags: Iterable[str] = (),
    mode: str = "offline",
    resume_id: str | None = None,
    history: Iterable[tuple[int, Mapping[str, Any]]] = (),
    series: Iterable[str] = ("train/*", "eval/*"),
) -> Tracker:
    """`wandb.init` with everything explicit: files under `dir` (wandb's cache and config dirs too, unless set),
    offline by default, `resume="allow"` with `resume_id` so a resumed job continues its run, logging the rows of
    `history` (its checkpoint's) that the run's earlier files lack and none they hold (module docstring). The
    recorded config's `logger.job_type` is `job_type`, the app's own. On any failure, warn once and return a no-op
    `Tracker`. A `mode` outside MODES raises checks.ArgumentError."""
    check_choice("mode", mode, MODES)
    if mode == "disabled":
        return Tracker()
    root = Path(dir)
    config = dict(config)
    if isinstance(config.get("logger"), Mapping):
        config["logger"] = {**config["logger"], "job_type": job_type}
    try:
        root.mkdir(parents=True, exist_ok=True)
        for var, sub in (("WANDB_CACHE_DIR", ".cache"), ("WANDB_CONFIG_DIR", ".config"), ("WANDB_DATA_DIR", ".data")):
            os.environ.setdefault(var, str(root / "wandb" / sub))
        import wandb

        durable = durable_rows(run_files(root, resume_id)) if resume_id else set()
        run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            name=name,
            job_type=job_type,
            tags=list(tags),
            config=dict(config),
            dir=str(root),
            mode=mode,
            id=resume_id,
            resume="allow" if resume_id else None,
            reinit="create_new",
            settings=wandb.Settings(silent=True, x_disable_stats=True, init_timeout=60),
        )
        run.define_metric(STEP_METRIC)
        for pattern in series:
            run.define_metric(pattern, step_metric=STEP_METRIC)
    except Exception as err:  # noqa: BLE001 - wandb must never stop a job
        warnings.warn(f"wandb could not start ({type(err).__name__}: {err}); continuing without wandb", stacklevel=2)
        return Tracker()
    tracker = Tracker(run, durable)
    tracker.replay(history)
    return tracker


def run_files(root: str | os.PathLike, run_id: str) -> list[Path]:
    """The `.wandb` files of run `run_id` under `root`/wandb (one per process that ran it), oldest first."""
    return sorted(
        p for p in Path(root, "wandb").glob(f"*-{run_id}/run-{run_id}.wandb") if p.parent.name != "latest-run"
    )


def durable_rows(paths: Iterable[Path]) -> set[tuple[int, str]]:
    """Every (trainer/step, key) that the history records of these run files hold, read with wandb's own decoder
    (`wandb leet inspect --json`; a file cut off by a kill reads up to its last whole record). A nested key counts
    with each of its prefixes (an image `k` reads as `k._type`, ...). A file it cannot read warns: its rows may be
    logged again."""
    out: set[tuple[int, str]] = set()
    for path in paths:
        cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)]
        try:
            lines = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
        except (OSError, subprocess.SubprocessError) as err:
            warnings.warn(f"could not read {path} back ({err}); its steps may be logged again", stacklevel=2)
            continue
        for record in map(json.loads, lines):
            item = record.get("history", {}).get("item", {}) if record.get("type") == "history" else {}
            if STEP_METRIC in item:
                step = int(item[STEP_METRIC])
                out |= {(step, ".".join(k.split(".")[:i])) for k in item for i in range(1, k.count(".") + 2)}
    return out
