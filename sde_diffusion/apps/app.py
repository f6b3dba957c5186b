"""How every app of experiments/ runs: `@hydra_app("sample")` is `hydra.main` on conf/ with the apps' policy
(`apply_policy`: torch threads, plain warnings), after the sampler-option keys of the command line are checked against
the samplers' specs and every other key against the composed config (`keys.check_key_overrides`), so that a typo
gets the project's line listing the valid keys instead of Hydra's struct error (whose "use +train.stpes=100" is the
wrong fix). A single run's config or run error is one line on stderr (no Hydra wrapper), also written to the job's
log and failure.json. `QuietSweeps` (conf/hydra/default.yaml) keeps Hydra's and Optuna's setup lines and colour
codes out of a sweep's log."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ..core.checks import check_number
from ..sampling import SAMPLERS
from .errors import ConfigError, RunError, config_error, config_errors
from .keys import check_key_overrides
from .runs import write_failure

OPTION = re.compile(r"^(?P<node>.+)\.options\.(?P<option>[^.]+)$")  # <sampler node>.options.<option>
SETUP_LINES = ("Joblib.Parallel(", "Study name:", "Storage:", "Sampler:", "Directions:", "A new study created")


def apply_policy(threads: int | None = 1, key: str = "threads") -> None:
    """The apps' runtime policy (one call at the start of a job): `threads` torch CPU threads (config key `key`;
    None: torch's default, all cores), and warnings printed as `Category: message`, without the file and line of
    the code that raised them (inside Hydra that is Hydra's instantiate, not the user's config)."""
    with config_errors():
        check_number(key, threads, integer=True, ge=1, optional=True)
    if threads:
        torch.set_num_threads(threads)
    warnings.formatwarning = lambda message, category, *_, **__: f"{category.__name__}: {message}\n"


def hydra_app(
    config_name: str, threads: str = "threads"
) -> Callable[[Callable[[DictConfig], Any]], Callable[..., Any]]:
    """`hydra.main(config_path="../conf", config_name=...)` for an app in experiments/: on the command line its
    sampler-option overrides are checked first (`check_option_overrides`), and every job runs under `apply_policy`
    with the config's key `threads` (absent: 1). Called with a config (as tests do), it runs the job on it directly."""

    def wrap(task: Callable[[DictConfig], Any]) -> Callable[..., Any]:
        conf = Path(task.__code__.co_filename).resolve().parents[1] / "conf"
        cli = False  # run from the command line: a single run's error is one line, not Hydra's report

        @functools.wraps(task)
        def job(cfg: DictConfig) -> Any:
            try:
                apply_policy(OmegaConf.select(cfg, threads, default=1), threads)
                return task(cfg)
            except (ConfigError, RunError) as err:
                if not cli or HydraConfig.get().mode == RunMode.MULTIRUN or os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise  # a sweep's other jobs still run (RecordFailure records this one), or a traceback is wanted
                write_failure(Path(HydraConfig.get().runtime.output_dir), err, HydraConfig.get().overrides.task)
                raise SystemExit(str(err)) from None  # past Hydra's "Error executing job" and HYDRA_FULL_ERROR lines

        main = hydra.main(version_base="1.3", config_path=str(conf), config_name=config_name)(job)

        @functools.wraps(task)
        def entry(cfg: DictConfig | None = None) -> Any:
            nonlocal cli
            if cfg is None:
                try:
                    check_option_overrides(sys.argv[1:], conf, config_name)
                    check_key_overrides(sys.argv[1:], conf, config_name)
                except ConfigError as err:
                    sys.exit(f"{err}")  # before Hydra composes: nothing is written
                cli = True
            return main(cfg)

        return entry

    return wrap


def check_option_overrides(overrides: list[str], conf: Path, config_name: str) -> None:
    """Each `<node>.options.<key>=...` override (not `+`/`~`) names an option of the sampler(s) its node will hold:
    the command line's `sampler[@node]=NAME[,NAME...]`, else the preset's or the app's default. Else a ConfigError
    listing that sampler's options. A node whose sampler cannot be told is left to Hydra."""
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in overrides if "=" in a and a[0] != "-"])
    except HydraException:
        return  # Hydra reports a malformed override itself
    for override in parsed:
        match = OPTION.match(override.key_or_group)
        if match is None or override.is_add() or override.is_delete() or override.is_force_add():
            continue
        node, option = match["node"], match["option"]
        for name in _samplers_of(node, parsed, conf, config_name):
            spec = SAMPLERS.get(name)
            if spec is not None and option not in spec.options:
                value = override.value() if not override.is_sweep_override() else override.get_value_element_as_str()
                raise config_error(override.key_or_group, value, f"{name} takes options: {', '.join(spec.options)}")


def _samplers_of(node: str, parsed: list, conf: Path, config_name: str) -> list[str]:
    """The conf/sampler/ names that config node `node` will hold (module docstring of check_option_overrides)."""
    for o in parsed:
        if o.key_or_group == "sampler" and (o.package or "sampler") == node and not o.is_delete():
            return list(o.sweep_string_iterator()) if o.is_sweep_override() else [str(o.value())]
    presets = [
        f"experiment/{o.value()}" for o in parsed if (o.key_or_group, o.is_sweep_override()) == ("experiment", False)
    ]
    for name in (*presets, config_name):  # a preset's `override /sampler` wins over the app's default
        for entry in _defaults(conf / f"{name}.yaml"):
            for key, value in entry.items():
                group, _, package = str(key).removeprefix("override ").lstrip("/").partition("@")
                if group == "sampler" and (package or "sampler") == node and value is not None:
                    return [str(value)]
    return []


def _defaults(path: Path) -> Iterator[dict]:
    """The `group: option` entries of a config file's defaults list."""
    if path.is_file():
        for entry in OmegaConf.load(path).get("defaults") or []:
            if OmegaConf.is_dict(entry):
                yield OmegaConf.to_container(entry)


class QuietSweeps(Callback):
    """Hydra callback (conf/hydra/default.yaml): in a multirun, Optuna's log lines go through Hydra's log (plain
    text, no colour codes; its study-setup line dropped like Hydra's, by `SetupLines`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Route Optuna's logger through the root logger when the sweeper is Optuna's."""
        if "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).lower():
            import optuna

            optuna.logging.disable_default_handler()
            optuna.logging.enable_propagation()


class SetupLines(logging.Filter):
    """Drops the sweepers' and launchers' plugin-setup lines (SETUP_LINES) from Hydra's console log."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a setup line."""
        return not str(record.getMessage()).lstrip().startswith(SETUP_LINES)
