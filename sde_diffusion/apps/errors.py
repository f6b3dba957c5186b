"""The apps' two one-line errors. Hydra prints a CompactHydraException as its message alone and exits with status 1
(the traceback with HYDRA_FULL_ERROR=1); in a multirun the other jobs still run. The library validates every value
once and raises a ValueError naming its argument; `config_errors` surfaces it as `config error: <key>=<value>: ...`
under the config node it was built from, so an app never checks a value the library checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hydra.errors import CompactHydraException

from ..core.checks import ArgumentError
from ..sampling import SamplerArgError


class ConfigError(CompactHydraException, ValueError):
    """A bad config value, reported as one line: `config error: <key>=<value>: <what is allowed>`."""


class RunError(CompactHydraException, RuntimeError):
    """A fault while running (divergence, unreadable checkpoint), reported as one line like a ConfigError."""


def config_error(key: str, value: Any, allowed: str) -> ConfigError:
    """The one-line error for `key` holding `value`, saying what is allowed."""
    return ConfigError(f"config error: {key}={value!r}: {allowed}")


def argument_error(node: str, err: ArgumentError | SamplerArgError) -> ConfigError:
    """The library's error for one argument (checks.ArgumentError, sampling.SamplerArgError) as the ConfigError of
    key `<node>.<argument>` ("" for the root)."""
    if isinstance(err, SamplerArgError):
        name, allowed = err.key, err.allowed
    else:
        name, allowed = err.name, f"must be {err.allowed}"
    return config_error(f"{node}.{name}" if node else name, err.value, allowed)


@contextmanager
def config_errors(node: str = "") -> Iterator[None]:
    """Run the block; a library argument error in it becomes `argument_error(node, err)`."""
    try:
        yield
    except (ArgumentError, SamplerArgError) as err:
        raise argument_error(node, err) from None
