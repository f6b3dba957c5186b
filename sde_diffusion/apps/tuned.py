"""A time grid tuned by experiments/tune_timesteps.py, used by another app's sampler run. Tuning writes
timesteps.json into its own run dir only, recording the checkpoint it was tuned for; `timesteps=tuned` finds the
newest such file for this checkpoint and sampler under TUNED_RUNS, `timesteps=PATH` takes a timesteps.json or a
tune_timesteps run dir. The file holds one grid per NFE budget; the grid with as many steps as the run replaces the
run's spacing (spacing="custom", timesteps=[T, …, t_min]), so `steps` picks the budget."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..core.sde import SDE
from ..sampling import SamplerRun
from ..sampling.specs import GRID
from ..sampling.timesteps import timesteps
from .errors import config_error

log = logging.getLogger(__name__)


TUNED_RUNS = ("outputs/tune_timesteps", "multirun/tune_timesteps")  # its run and sweep dirs (conf/hydra/)


def tuned_record(checkpoint: str | Path | None) -> str | None:
    """How timesteps.json names the checkpoint it was tuned for (`find_tuned` matches it): its absolute path."""
    return None if checkpoint is None else str(Path(checkpoint).resolve())


def find_tuned(checkpoint: str | Path, sampler: str, roots: tuple[str, ...] = TUNED_RUNS) -> Path | None:
    """The newest timesteps.json under `roots` (relative to the working dir) tuned for `checkpoint` and `sampler`."""
    found = []
    for path in (p for root in roots for p in Path(root).rglob("timesteps.json")):
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(saved, dict) and (saved.get("checkpoint"), saved.get("sampler")) == (
            tuned_record(checkpoint),
            sampler,
        ):
            found.append(path.resolve())
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def tuned_file(value: str, sampler: str, checkpoint: str | Path | None, key: str = "timesteps") -> Path:
    """The file `value` names: tuned -> `find_tuned(checkpoint, sampler)`, a run dir -> its timesteps.json, else
    the path itself; a ConfigError naming `key` if there is none."""
    if value == "tuned":
        if checkpoint is None:
            raise config_error(key, value, "needs checkpoint=PATH (the run it was tuned for), else a timesteps.json")
        path = find_tuned(checkpoint, sampler)
        if path is None:
            how = f"tune one with experiments/tune_timesteps.py checkpoint={checkpoint} sampler={sampler}"
            where = f"{sampler} on {tuned_record(checkpoint)} under {' or '.join(TUNED_RUNS)}"
            raise config_error(
                key, value, f"no timesteps.json for {where}: {how}, give a timesteps.json's path, or null"
            )
        return path
    path = Path(str(value))
    path = path / "timesteps.json" if path.is_dir() else path
    if not path.is_file():
        allowed = "a timesteps.json of tune_timesteps.py or its run dir"
        raise config_error(key, value, f"not found: {path.resolve()}; {allowed}")
    return path


def tuned_run(
    run: SamplerRun, sde: SDE, value: str, checkpoint: str | Path | None, key: str = "timesteps"
) -> tuple[SamplerRun, dict[str, Any]]:
    """`run` on the grid of `value` (module docstring) and what was used: {file, budget, timesteps}. A missing file
    or budget, another sampler's or t_min's grid, or one that does not fit `sde` is a one-line ConfigError naming
    `key`, the file and the budgets it has."""
    path = tuned_file(value, run.name, checkpoint, key)
    try:
        saved = json.loads(path.read_text())
        grids = {int(budget): [float(t) for t in grid] for budget, grid in saved["grids"].items()}
        name, t_min, options = saved["sampler"], float(saved["t_min"]), dict(saved.get("options", {}))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise config_error(key, value, f"{path}: not a timesteps.json of tune_timesteps.py ({err!r})") from None
    if name != run.name:
        raise config_error(key, value, f"{path} holds grids for sampler {name}, not {run.name}")
    have = ", ".join(f"{budget} NFE (steps={len(grid) - 1})" for budget, grid in sorted(grids.items()))
    budget = next((b for b, grid in sorted(grids.items()) if len(grid) - 1 == run.steps), None)
    if budget is None:
        raise config_error(key, value, f"{path} has no grid of {run.steps} steps; it has {have}")
    if abs(run.t_min - t_min) > 1e-12:
        raise config_error(key, value, f"{path}'s grids end at t_min={t_min:g}, this run's is {run.t_min:g}")
    try:
        timesteps(sde, run.steps, run.t_min, "custom", custom=grids[budget])
    except ValueError as err:
        raise config_error(key, value, f"{path}'s grid for {budget} NFE does not fit {sde!r}: {err}") from None
    own = {k: v for k, v in run.options.items() if k not in GRID}
    if any(options.get(k, v) != v for k, v in own.items()):
        log.warning("%s was tuned for %s options %s; this run has %s", path, name, options, own)
    record = {"file": str(path), "budget": budget, "timesteps": grids[budget]}
    return replace(run, options=own | {"spacing": "custom", "timesteps": grids[budget]}), record
