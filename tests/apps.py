"""Running the apps of experiments/ in a subprocess, for the end-to-end tests."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The smallest train.py run every end-to-end test can share: 30 steps of a 16-unit MLP, a loss row every 5 steps, a
# checkpoint every 10, and a cheap evaluation. A test that needs more adds its overrides after these (the last wins).
TINY = [
    "train.steps=30",
    "train.log_every=5",
    "train.ckpt_every=10",
    "train.batch_size=64",
    "train.progress=false",
    "model.hidden=16",
    "model.layers=1",
    "eval.n_samples=64",
    "eval.mmd_samples=64",
    "eval.n_projections=16",
    "eval.samplers.euler_maruyama.steps=5",
    "eval.samplers.dpm_solver.steps=3",
]


def app_env(cwd: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, one thread, wandb's home dirs under `cwd`, then `env`; HYDRA_FULL_ERROR only from `env`, so
    errors are the app's one line unless a test asks for the traceback."""
    out = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"OMP_NUM_THREADS": "1"}
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        out[var] = str(cwd / "wandb_home" / var.lower())
    return out | (env or {})


def run_app(
    script: str, *overrides: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python experiments/<script> <overrides>` in `cwd` with `app_env`, its output captured as text."""
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), *overrides],
        cwd=cwd,
        env=app_env(cwd, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
