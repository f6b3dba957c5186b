"""The apps' side: the Hydra glue that experiments/ shares. It runs each app under one policy (threads, warnings,
quiet sweeps), surfaces the library's argument errors as one config-error line naming the key, checks the keys only
apps read, builds library objects from config nodes, reloads trained runs (and finds their tuned time grids), starts
the tracker and records failed jobs. The library never imports this package, and nothing else in it imports hydra or
omegaconf."""

from .app import apply_policy, hydra_app
from .build import (
    Built,
    build,
    build_evaluator,
    build_sde,
    check_run,
    instantiate_node,
    load_run,
    load_score,
    run_weights,
)
from .errors import ConfigError, RunError, argument_error, config_error, config_errors
from .runs import (
    RecordFailure,
    config_diff,
    file_log,
    output_dir,
    run_names,
    run_only_keys,
    start_tracker,
    sweep_run_name,
)
from .tuned import tuned_run
from .validation import require_choice, require_file, require_number, require_run, require_values

__all__ = [
    "Built",
    "ConfigError",
    "RecordFailure",
    "RunError",
    "apply_policy",
    "argument_error",
    "build",
    "build_evaluator",
    "build_sde",
    "check_run",
    "config_diff",
    "config_error",
    "config_errors",
    "file_log",
    "hydra_app",
    "instantiate_node",
    "load_run",
    "load_score",
    "output_dir",
    "require_choice",
    "require_file",
    "require_number",
    "require_run",
    "require_values",
    "run_names",
    "run_only_keys",
    "run_weights",
    "start_tracker",
    "sweep_run_name",
    "tuned_run",
]
