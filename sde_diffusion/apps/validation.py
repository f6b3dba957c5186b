"""Checks of the config keys that only an app reads, with the library's own checks (checks.check_number,
check_choice) and its words; every other value is checked once, by the library object built from it. Each takes the
config and a dotted key, skips an absent key, and raises a one-line ConfigError: `config error: <key>=<value>: ...`;
a path that does not exist says `not found: PATH`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..core.checks import check_choice, check_number
from .errors import config_error, config_errors

_ABSENT = object()


def require_values(cfg: DictConfig) -> None:
    """No mandatory value (`???`) is left unset."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise config_error(missing[0], "???", f"a value is required: add {missing[0]}=... to the command line")


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=_ABSENT)


def require_number(cfg: DictConfig, key: str, **bounds: Any) -> None:
    """`key`, if present, passes `checks.check_number(**bounds)`."""
    value = _get(cfg, key)
    if value is not _ABSENT:
        with config_errors():
            check_number(key, value, **bounds)


def require_choice(cfg: DictConfig, key: str, choices: Sequence[Any]) -> None:
    """`key`, if present, is one of `choices` (e.g. a library constant such as likelihood.SOLVERS)."""
    value = _get(cfg, key)
    if value is not _ABSENT:
        with config_errors():
            check_choice(key, value, choices)


def require_run(cfg: DictConfig, key: str = "checkpoint", also: Sequence[Any] = (None,)) -> None:
    """`key`, if present, is one of `also` or a trained run: a checkpoint file of experiments/train.py or a folder
    of experiments/export.py (what apps.load_run reads)."""
    value = _get(cfg, key)
    if value is not _ABSENT and value not in also and not Path(str(value)).exists():
        allowed = "the path of a checkpoint file of experiments/train.py or of a folder of experiments/export.py"
        allowed = " or ".join([*(repr(v) if v is not None else "null" for v in also), allowed])
        raise config_error(key, value, f"not found: {Path(str(value)).resolve()}; allowed: {allowed}")


def require_file(cfg: DictConfig, key: str, allowed: str, also: Sequence[Any] = (None,)) -> None:
    """`key`, if present, is one of `also` or the path of an existing file; else `allowed` says what may go there
    (after "not found: PATH" or "not a file: PATH")."""
    value = _get(cfg, key)
    if value is not _ABSENT and value not in also and not Path(str(value)).is_file():
        path = Path(str(value)).resolve()
        raise config_error(key, value, f"{'not a file' if path.exists() else 'not found'}: {path}; {allowed}")
