"""Checks of the config keys that only an app reads; every other value is checked once, by the library object
built from it (`build.instantiate_node` names the key of a failing argument).

Each check takes the config and a dotted key, skips an absent key, and raises a ConfigError in one line:
`config error: <key>=<value>: <what is allowed>`, in the words of the library's own checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..checks import ArgumentError, check_choice, check_number
from .errors import config_error

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
        try:
            check_number(key, value, **bounds)
        except ArgumentError as err:
            raise config_error(key, value, f"must be {err.allowed}") from None


def require_choice(cfg: DictConfig, key: str, choices: Sequence[Any]) -> None:
    """`key`, if present, is one of `choices` (e.g. a library constant such as likelihood.SOLVERS)."""
    value = _get(cfg, key)
    if value is not _ABSENT:
        try:
            check_choice(key, value, choices)
        except ArgumentError as err:
            raise config_error(key, value, f"must be {err.allowed}") from None


def require_run(cfg: DictConfig, key: str = "checkpoint", also: Sequence[Any] = (None,)) -> None:
    """`key`, if present, is one of `also` or a trained run: a checkpoint file of experiments/train.py or a folder
    of experiments/export.py (what apps.load_run reads)."""
    value = _get(cfg, key)
    if value is not _ABSENT and value not in also and not Path(str(value)).exists():
        allowed = "the path of a checkpoint file of experiments/train.py or of a folder of experiments/export.py"
        raise config_error(key, value, " or ".join([*(repr(v) if v is not None else "null" for v in also), allowed]))


def require_file(cfg: DictConfig, key: str, allowed: str, also: Sequence[Any] = (None,)) -> None:
    """`key`, if present, is one of `also` or the path of an existing file; else `allowed` says what may go there."""
    value = _get(cfg, key)
    if value is not _ABSENT and value not in also and not Path(str(value)).is_file():
        raise config_error(key, value, allowed)
