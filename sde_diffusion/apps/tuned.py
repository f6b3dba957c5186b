"""A time grid tuned by experiments/tune_timesteps.py, used by another app's sampler run: `timesteps=tuned` reads
timesteps_<sampler>.json beside the checkpoint or in its export folder (where tune_timesteps.py writes it),
`timesteps=PATH` any timesteps.json it wrote. The file holds one grid per NFE budget; the grid with as many steps as
the run replaces the run's spacing (spacing="custom", timesteps=[T, …, eps]), so `steps` picks the budget."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..evaluation import SamplerRun
from ..sampling.specs import GRID
from ..sampling.timesteps import timesteps
from ..sde import SDE
from .errors import config_error

log = logging.getLogger(__name__)


def tuned_path(checkpoint: str | Path, sampler: str) -> Path:
    """Where a checkpoint's grids for `sampler` lie: timesteps_<sampler>.json beside the checkpoint file, or inside
    the folder of an export (experiments/export.py)."""
    checkpoint = Path(checkpoint)
    return (checkpoint if checkpoint.is_dir() else checkpoint.parent) / f"timesteps_{sampler}.json"


def tuned_file(value: str, sampler: str, checkpoint: str | Path | None, key: str = "timesteps") -> Path:
    """The file `value` names: tuned -> `tuned_path(checkpoint, sampler)`, else the path itself; a ConfigError
    naming `key` if there is none."""
    if value == "tuned" and checkpoint is None:
        raise config_error(key, value, "needs checkpoint=PATH (its grids lie beside it), else a timesteps.json's path")
    path = tuned_path(str(checkpoint), sampler) if value == "tuned" else Path(str(value))
    if not path.is_file():
        how = f"tune one with experiments/tune_timesteps.py checkpoint={checkpoint} sampler={sampler}"
        raise config_error(key, value, f"{path} not found: {how}, or give null (the sampler's own spacing)")
    return path


def tuned_run(
    run: SamplerRun, sde: SDE, value: str, checkpoint: str | Path | None, key: str = "timesteps"
) -> tuple[SamplerRun, dict[str, Any]]:
    """`run` on the grid of `value` (module docstring) and what was used: {file, budget, timesteps}. A missing file
    or budget, another sampler's or eps's grid, or one that does not fit `sde` is a one-line ConfigError naming
    `key`, the file and the budgets it has."""
    path = tuned_file(value, run.name, checkpoint, key)
    try:
        saved = json.loads(path.read_text())
        grids = {int(budget): [float(t) for t in grid] for budget, grid in saved["grids"].items()}
        name, eps, options = saved["sampler"], float(saved["eps"]), dict(saved.get("options", {}))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise config_error(key, value, f"{path}: not a timesteps.json of tune_timesteps.py ({err!r})") from None
    if name != run.name:
        raise config_error(key, value, f"{path} holds grids for sampler {name}, not {run.name}")
    have = ", ".join(f"{budget} NFE (steps={len(grid) - 1})" for budget, grid in sorted(grids.items()))
    budget = next((b for b, grid in sorted(grids.items()) if len(grid) - 1 == run.steps), None)
    if budget is None:
        raise config_error(key, value, f"{path} has no grid of {run.steps} steps; it has {have}")
    if abs(run.t_min - eps) > 1e-12:
        raise config_error(key, value, f"{path}'s grids end at eps={eps:g}, this run's sampler.eps is {run.t_min:g}")
    try:
        timesteps(sde, run.steps, run.t_min, "custom", custom=grids[budget])
    except ValueError as err:
        raise config_error(key, value, f"{path}'s grid for {budget} NFE does not fit {sde!r}: {err}") from None
    own = {k: v for k, v in run.options.items() if k not in GRID}
    if any(options.get(k, v) != v for k, v in own.items()):
        log.warning("%s was tuned for %s options %s; this run has %s", path, name, options, own)
    record = {"file": str(path), "budget": budget, "timesteps": grids[budget]}
    return replace(run, options=own | {"spacing": "custom", "timesteps": grids[budget]}), record
