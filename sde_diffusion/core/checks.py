"""Argument checks whose error names the parameter, the bad value and what is allowed.

A constructor checks its own arguments with these; an app that builds it from a config node turns the
`ArgumentError` into a one-line error naming the config key (`<node>.<name>`), so nothing is checked twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


class ArgumentError(ValueError):
    """`name` held `value`; `allowed` says what may go there ("an int >= 1", "one of ['stop', 'skip']")."""

    def __init__(self, name: str, value: Any, allowed: str):
        super().__init__(f"{name} must be {allowed}, got {value!r}")
        self.name, self.value, self.allowed = name, value, allowed


def check_number(
    name: str,
    value: Any,
    *,
    integer: bool = False,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    optional: bool = False,
) -> None:
    """`value` is a finite number (an int if `integer`; never a bool) within the given bounds, or None if
    `optional`; else ArgumentError."""
    if optional and value is None:
        return
    kind = "an int" if integer else "a number"
    low = (f"> {gt:g}", f"({gt:g}") if gt is not None else (f">= {ge:g}", f"[{ge:g}") if ge is not None else None
    high = (f"< {lt:g}", f"{lt:g})") if lt is not None else (f"<= {le:g}", f"{le:g}]") if le is not None else None
    if low and high:
        allowed = f"{kind} in {low[1]}, {high[1]}"
    else:
        allowed = " ".join([kind, *(bound[0] for bound in (low, high) if bound)])
    allowed += " or None" if optional else ""
    ok = not isinstance(value, bool) and isinstance(value, int if integer else int | float) and math.isfinite(value)
    if not (
        ok
        and (gt is None or value > gt)
        and (ge is None or value >= ge)
        and (lt is None or value < lt)
        and (le is None or value <= le)
    ):
        raise ArgumentError(name, value, allowed)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """`value` is one of `choices` (of the same type: 1 is not True); else ArgumentError."""
    if not any(value == c and type(value) is type(c) for c in choices):
        raise ArgumentError(name, value, f"one of {list(choices)}")
