"""Running the apps of experiments/: in a subprocess for the end-to-end tests, or one job in this process."""

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))  # the apps' modules, for run_job
CONFIG_NAMES = {
    "train": "train",
    "compare_samplers": "compare",
    "likelihood": "likelihood",
    "tune_timesteps": "tune_timesteps",
    "sample": "sample",
    "export": "export",
    "inpaint": "inpaint",
}

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


def compose_job(config_name: str, *overrides: str, out: Path | None = None) -> DictConfig:
    """The config Hydra composes for `config_name` with `overrides`, with its `hydra` node (output dir `out`)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
    return cfg


def run_job(app: str, *overrides: str, out: Path) -> Any:
    """`experiments/<app>.py`'s main on one job's config, in this process, as Hydra runs a job (HydraConfig set, the
    `hydra` node removed) but without its logging setup or its error handling: a bad config raises its ConfigError
    here, a fault its RunError."""
    cfg = compose_job(CONFIG_NAMES[app], *overrides, out=out)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        return importlib.import_module(app).main(cfg)
    finally:
        HydraConfig.instance().cfg = None
