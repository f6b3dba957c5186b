"""The apps' one-line errors: Hydra prints a CompactHydraException raised from a task function as its message
alone and exits with status 1 (the traceback with HYDRA_FULL_ERROR=1); in a multirun the other jobs still run."""

from __future__ import annotations

from typing import Any

from hydra.errors import CompactHydraException


class ConfigError(CompactHydraException, ValueError):
    """A bad config value, reported as one line: `config error: <key>=<value>: <what is allowed>`."""


class RunError(CompactHydraException, RuntimeError):
    """A fault while running (divergence, unreadable checkpoint), reported as one line like a ConfigError."""


def config_error(key: str, value: Any, allowed: str) -> ConfigError:
    """The one-line error for `key` holding `value`, saying what is allowed."""
    return ConfigError(f"config error: {key}={value!r}: {allowed}")
