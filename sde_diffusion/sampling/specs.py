"""Samplers declared as specs: what each one is, how `steps` maps to NFE, what it needs, and its allowed options.

A sampler module registers its function with `@register(name, …)`; the registry `SAMPLERS`, the list of
deterministic samplers, `sample`'s validation, the apps' config validation, the README table (`sampler_table`)
and the tests' parametrisation are all read off these specs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..sde import SDE
from .timesteps import SPACINGS

SAMPLERS: dict[str, SamplerSpec] = {}


@dataclass(frozen=True)
class Option:
    """An option's allowed values: one of `choices`, an instance of `types`, or a number in [low, high] (an end
    is open if `open_low`/`open_high`; an int if `integer`)."""

    choices: tuple[Any, ...] = ()
    types: tuple[type, ...] = ()
    low: float = -math.inf
    high: float = math.inf
    integer: bool = False
    open_low: bool = False
    open_high: bool = False

    def accepts(self, value: Any) -> bool:
        """Whether `value` is allowed."""
        if self.choices:
            return any(value == c and type(value) is type(c) for c in self.choices)
        if self.types:
            return isinstance(value, self.types)
        if isinstance(value, bool) or not isinstance(value, int if self.integer else int | float):
            return False
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return math.isfinite(value) and above and below

    def allowed(self) -> str:
        """What is allowed, in words: "one of [1, 2, 3]", "a number in [0, 1]", "an int >= 0"."""
        if self.choices:
            return f"one of {list(self.choices)}"
        if self.types:
            names = ["None" if t is type(None) else t.__name__ for t in self.types]
            return " or ".join(names)
        kind = "an int" if self.integer else "a number"
        lo, hi = math.isfinite(self.low), math.isfinite(self.high)
        if lo and hi:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            return f"{kind} in {left}{self.low:g}, {self.high:g}{right}"
        if lo:
            return f"{kind} {'>' if self.open_low else '>='} {self.low:g}"
        if hi:
            return f"{kind} {'<' if self.open_high else '<='} {self.high:g}"
        return kind


POSITIVE = Option(low=0.0, open_low=True)
# The options of every sampler that runs on a `timesteps` grid: spacing, rho, and the grid itself when custom.
GRID = {"spacing": Option(choices=SPACINGS), "rho": POSITIVE, "timesteps": Option(types=(list, tuple, type(None)))}


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler: `fn(sde, score_fn, x, steps, eps, *, generator, progress, **options) -> (x, t_final)`, whether it
    draws noise, the smallest `steps`, its NFE without the final Tweedie step (`nfe(steps, options)`, None when
    adaptive; `nfe_text` in words), the SDE class it needs (None: any linear SDE), and its options."""

    name: str
    fn: Callable[..., Any]
    stochastic: bool
    nfe: Callable[[int, Mapping[str, Any]], int | None]
    nfe_text: str
    min_steps: int = 1
    requires: type[SDE] | None = None
    options: Mapping[str, Option] = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        """Each option's default, read off the function's signature."""
        params = inspect.signature(self.fn).parameters
        return {k: params[k].default for k in self.options}

    def summary(self) -> str:
        """The first line of the function's docstring."""
        return (self.fn.__doc__ or "").strip().splitlines()[0]


class SamplerArgError(ValueError):
    """A bad sampler argument: `key` ("name", "steps", "eps" or "options.<option>") held `value`; `allowed` says
    what may go there."""

    def __init__(self, sampler: str, key: str, value: Any, allowed: str):
        super().__init__(f"{sampler}: {key}={value!r}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


def register(
    name: str,
    *,
    stochastic: bool,
    nfe: Callable[[int, Mapping[str, Any]], int | None],
    nfe_text: str,
    min_steps: int = 1,
    requires: type[SDE] | None = None,
    **options: Option,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare the decorated function as sampler `name` (see SamplerSpec); the options are its keyword-only
    arguments, each with its allowed values."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = inspect.signature(fn).parameters
        declared = {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY} - {"generator", "progress"}
        if declared != set(options):
            raise TypeError(f"sampler {name}: options {sorted(options)} must be its keyword-only arguments")
        SAMPLERS[name] = SamplerSpec(name, fn, stochastic, nfe, nfe_text, min_steps, requires, options)
        return fn

    return wrap


def check_sampler(
    name: str, *, steps: Any, eps: Any, options: Mapping[str, Any], sde_type: type[SDE], T: float
) -> SamplerSpec:
    """The spec of sampler `name` after checking every argument against it; the first bad one raises
    SamplerArgError (a ValueError) naming the key, the value and what is allowed."""
    if name not in SAMPLERS:
        raise SamplerArgError("sample", "name", name, f"one of {list(SAMPLERS)}")
    spec = SAMPLERS[name]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < spec.min_steps:
        raise SamplerArgError(name, "steps", steps, f"an int >= {spec.min_steps}")
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < T:
        raise SamplerArgError(name, "eps", eps, f"a number in (0, T={T:g})")
    if spec.requires is not None and not issubclass(sde_type, spec.requires):
        raise SamplerArgError(
            name, "name", name, f"needs a {spec.requires.__name__}, got {sde_type.__name__}: use another sampler"
        )
    for key, value in options.items():
        if key not in spec.options:
            raise SamplerArgError(name, f"options.{key}", value, f"{name} takes options: {', '.join(spec.options)}")
        if not spec.options[key].accepts(value):
            raise SamplerArgError(name, f"options.{key}", value, spec.options[key].allowed())
    return spec


def sampler_table() -> str:
    """The markdown table of every sampler's spec (README.md carries it; a test keeps the two equal)."""
    rows = ["| sampler | kind | NFE (+1 with denoise) | needs | time grid | options |", "|---|---|---|---|---|---|"]
    for s in sorted(SAMPLERS.values(), key=lambda s: (not s.stochastic, s.name)):
        own = ", ".join(f"`{k}` {o.allowed()}" for k, o in s.options.items() if k not in GRID) or "—"
        grid = "`spacing`, `rho`, `timesteps`" if GRID.keys() <= s.options.keys() else "—"
        needs = s.requires.__name__ if s.requires else "any SDE"
        rows.append(f"| `{s.name}` | {'SDE' if s.stochastic else 'ODE'} | {s.nfe_text} | {needs} | {grid} | {own} |")
    return "\n".join(rows) + "\n"
