"""Read an offline wandb run file (`run-<id>.wandb`) with wandb's own decoder, `wandb leet inspect --json`.

wandb >= 0.31 prints one JSON object per record of the log, with every `value_json` already decoded, nested
keys joined by "." (a table logged as `eval/samplers` has summary keys `eval/samplers.nrows`, …) and NaN / ±inf
as the strings "NaN" / "Infinity" / "-Infinity". The tests read every run they start through it.
Corrupt data (wandb skips it with a warning and exits 0) is an error here; a truncated log reads up to its end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class OfflineRun:
    """What a run file holds: run id, group, name, job type, tags, config, history rows, the final summary and the
    artifacts logged (name, type, metadata, manifest)."""

    run_id: str = ""
    group: str = ""
    name: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None

    def series(self, key: str) -> list[Any]:
        """The values of one logged key, in logging order (rows without it skipped)."""
        return [row[key] for row in self.history if key in row]


def read_run(path: str | Path) -> OfflineRun:
    """Decode a `run-<id>.wandb` file into an `OfflineRun` through `python -m wandb leet inspect --json`."""
    out = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0 or "corrupt" in out.stderr:
        raise ValueError(f"{path}: wandb leet inspect failed ({out.returncode}): {out.stderr.strip()[-300:]}")
    run = OfflineRun()
    for line in out.stdout.splitlines():
        record = json.loads(line)
        kind = record["type"]
        body = record.get(kind, {})
        if kind == "run":
            run.run_id, run.group = body.get("run_id", ""), body.get("run_group", "")
            run.name, run.job_type = body.get("display_name", ""), body.get("job_type", "")
            run.tags = list(body.get("tags", []))
            run.config.update(body.get("config", {}).get("update", {}))
        elif kind == "config":
            run.config.update(body.get("update", {}))
        elif kind == "history":
            run.history.append(body.get("item", {}))
        elif kind == "summary":
            run.summary.update(body.get("update", {}))
        elif kind == "artifact":
            run.artifacts.append(body)
        elif kind == "exit":
            run.exit_code = body.get("exit_code", 0)
    run.config.pop("_wandb", None)
    return run


def find_run_files(root: str | Path) -> list[Path]:
    """Every `run-*.wandb` file below `root`, sorted by path (so by start time), without wandb's `latest-run` link."""
    return sorted(p for p in Path(root).rglob("run-*.wandb") if "latest-run" not in p.parts)
