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
# The options of every sampler that walks a time grid, which `sample` builds from them: spacing, rho, custom times.
GRID = {"spacing": Option(choices=SPACINGS), "rho": POSITIVE, "timesteps": Option(types=(list, tuple, type(None)))}
RHO = 7.0  # EDM's ρ of the karras spacing (Karras et al. 2022, eq. 5)


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler, whether it draws noise, the smallest `steps`, its NFE without the final Tweedie step
    (`nfe(steps, options)`, None when adaptive; `nfe_text` in words), the SDE class it needs (None: any linear SDE),
    its options, and, for a sampler that walks a time grid, the grid's default `spacing` and its `by_steps` defaults.

    A grid sampler is `fn(sde, score_fn, x, t, *, generator, progress, **options) -> x` on the descending float64
    times t = (T, …, t_min) that `sample` builds (k-diffusion's samplers on `sigmas`); any other sampler is
    `fn(sde, score_fn, x, steps, t_min, *, generator, progress, **options) -> (x, t_final)`. `by_steps` maps a
    largest `steps` to the options that are best up to it (ascending; chosen by experiments/bench_samplers.py).
    """

    name: str
    fn: Callable[..., Any]
    stochastic: bool
    nfe: Callable[[int, Mapping[str, Any]], int | None]
    nfe_text: str
    min_steps: int = 1
    requires: type[SDE] | None = None
    options: Mapping[str, Option] = field(default_factory=dict)
    spacing: str | None = None
    by_steps: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)

    def defaults(self, steps: int | None = None) -> dict[str, Any]:
        """Each option's default at `steps`: the function's signature (and the grid's spacing, ρ = 7, no custom
        times), overridden by the first `by_steps` entry that covers `steps` (none when steps is None)."""
        params = inspect.signature(self.fn).parameters
        grid = {"spacing": self.spacing, "rho": RHO, "timesteps": None} if self.spacing else {}
        out = grid | {k: params[k].default for k in self.options if k not in grid}
        covering = [opts for most, opts in self.by_steps.items() if steps is not None and steps <= most]
        return out | dict(covering[0] if covering else {})

    def resolve(self, steps: int, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every option at `steps`: the given ones, and the defaults (`defaults(steps)`) for the rest and for those
        given as None (a config lists every option as null to leave it to the sampler)."""
        return self.defaults(steps) | {k: v for k, v in options.items() if v is not None}

    def summary(self) -> str:
        """The first line of the function's docstring."""
        return (self.fn.__doc__ or "").strip().splitlines()[0]


class SamplerArgError(ValueError):
    """A bad sampler argument: `key` ("name", "steps", "t_min" or "options.<option>") held `value`; `allowed` says
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
    spacing: str | None = None,
    by_steps: Mapping[int, Mapping[str, Any]] | None = None,
    **options: Option,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare the decorated function as sampler `name` (see SamplerSpec); the options are its keyword-only
    arguments, each with its allowed values, plus GRID's when it walks a grid of default `spacing`."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = inspect.signature(fn).parameters
        declared = {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY} - {"generator", "progress"}
        if declared != set(options):
            raise TypeError(f"sampler {name}: options {sorted(options)} must be its keyword-only arguments")
        allowed = options | (GRID if spacing else {})
        spec = SamplerSpec(name, fn, stochastic, nfe, nfe_text, min_steps, requires, allowed, spacing, by_steps or {})
        for most, opts in spec.by_steps.items():
            bad = {k: v for k, v in opts.items() if k not in allowed or not allowed[k].accepts(v)}
            if bad or list(spec.by_steps) != sorted(spec.by_steps):
                raise TypeError(f"sampler {name}: by_steps[{most}] = {dict(opts)}: bad {bad} or not ascending")
        SAMPLERS[name] = spec
        return fn

    return wrap


def check_sampler(
    name: str, *, steps: Any, t_min: Any, options: Mapping[str, Any], sde_type: type[SDE], T: float
) -> SamplerSpec:
    """The spec of sampler `name` after checking every argument against it (an option given as None takes its
    default); the first bad one raises SamplerArgError (a ValueError) naming the key, the value and what is allowed."""
    if name not in SAMPLERS:
        raise SamplerArgError("sample", "name", name, f"one of {list(SAMPLERS)}")
    spec = SAMPLERS[name]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < spec.min_steps:
        raise SamplerArgError(name, "steps", steps, f"an int >= {spec.min_steps}")
    if isinstance(t_min, bool) or not isinstance(t_min, int | float) or not 0 < t_min < T:
        raise SamplerArgError(name, "t_min", t_min, f"a number in (0, T={T:g})")
    if spec.requires is not None and not issubclass(sde_type, spec.requires):
        raise SamplerArgError(
            name, "name", name, f"needs a {spec.requires.__name__}, got {sde_type.__name__}: use another sampler"
        )
    for key, value in options.items():
        if key not in spec.options:
            raise SamplerArgError(name, f"options.{key}", value, f"{name} takes options: {', '.join(spec.options)}")
        if value is not None and not spec.options[key].accepts(value):
            raise SamplerArgError(name, f"options.{key}", value, spec.options[key].allowed())
    return spec


def sampler_table() -> str:
    """The markdown table of every sampler's spec (README.md carries it; a test keeps the two equal)."""
    rows = [
        "| sampler | kind | NFE (+1 with denoise) | needs | time grid | options | defaults by steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in sorted(SAMPLERS.values(), key=lambda s: (not s.stochastic, s.name)):
        own = ", ".join(f"`{k}` {o.allowed()}" for k, o in s.options.items() if k not in GRID) or "—"
        beyond = f"beyond {max(s.by_steps)} steps; below, the last column's" if any(
            "spacing" in o for o in s.by_steps.values()) else ""  # fmt: skip
        grid = f"`spacing` ({s.spacing}{' ' + beyond if beyond else ''}), `rho`, `timesteps`" if s.spacing else "—"
        needs = s.requires.__name__ if s.requires else "any SDE"
        by = "; ".join(f"≤ {n}: " + ", ".join(f"{k}={v}" for k, v in o.items()) for n, o in s.by_steps.items())
        kind = "SDE" if s.stochastic else "ODE"
        rows.append(f"| `{s.name}` | {kind} | {s.nfe_text} | {needs} | {grid} | {own} | {by or '—'} |")
    return "\n".join(rows) + "\n"
