"""Samplers declared as specs: what each one is, how `steps` maps to NFE, what it needs, and its allowed options.

A sampler module registers its function with `@register(name, …)`; the registries `SAMPLERS` (of the prior) and
`INVERSE` (of a posterior p(x | y): the samplers that take a `measurement`), the list of deterministic samplers,
`sample`'s validation, the apps' config validation, the README table (`sampler_table`) and the tests'
parametrisation are all read off these specs.

One protocol (k-diffusion's samplers on `sigmas`): every sampler is `fn(run, x, t, **options) -> x`, with `run` a
`common.Reverse` (the SDE, the score, the noise generator, the callback, the progress bar), x the state at t[0] = T
and t the descending float64 times its spec builds (`SamplerSpec.times`): the grid T = t_0 > … > t_steps = t_min
of a grid sampler, [T, t_min] for an adaptive one (no `steps`), the DDPM chain's own times for `ancestral` (no
`t_min`); it returns the state at t[-1], which `sample` then denoises.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..core.sde import SDE
from .timesteps import SPACINGS, timesteps

SAMPLERS: dict[str, SamplerSpec] = {}
INVERSE: dict[str, SamplerSpec] = {}


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
    infinite: bool = False  # +inf is allowed too (a bound that may be switched off)

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
        return (math.isfinite(value) or (self.infinite and value == math.inf)) and above and below

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
            unbounded = " (inf: unbounded)" if self.infinite else ""
            return f"{kind} {'>' if self.open_low else '>='} {self.low:g}{unbounded}"
        if hi:
            return f"{kind} {'<' if self.open_high else '<='} {self.high:g}"
        return kind


POSITIVE = Option(low=0.0, open_low=True)
# The options of every sampler that walks a time grid, which `sample` builds from them: spacing, rho, custom times.
GRID = {"spacing": Option(choices=SPACINGS), "rho": POSITIVE, "timesteps": Option(types=(list, tuple, type(None)))}
RHO = 7.0  # EDM's ρ of the karras spacing (Karras et al. 2022, eq. 5)
STEPS, T_MIN = 1000, 1e-3  # `steps` and `t_min` when given as None, for the samplers that take them
# How a sampler's times are built (`SamplerSpec.times`): "grid" from steps, t_min and the GRID options; "span" is
# [T, t_min] (adaptive: no steps); or a function (sde, steps) -> times of its own (ancestral's DDPM chain: no t_min).
TIMES = ("grid", "span")
REQUIRED = inspect.Parameter.empty  # the default of an option that must be given (an inverse method's measurement)


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler, whether it draws noise, the smallest `steps`, its NFE without the final Tweedie step
    (`nfe(steps, options)`, None when adaptive; `nfe_text` in words), the SDE class it needs (None: any linear SDE),
    its options, how its times are built (`times`, one of TIMES), for a grid sampler the grid's default `spacing`
    and its `by_steps` defaults, and whether it samples a posterior (`measured`: it takes a `measurement` and ends
    with its own Tweedie step). `by_steps` maps a largest `steps` to the options that are best up to it
    (ascending; chosen by experiments/bench_samplers.py). The protocol of `fn`: the module docstring.
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
    times: str | Callable[[SDE, int], Tensor] = "grid"

    @property
    def takes_steps(self) -> bool:
        """Whether `steps` sets its times (not for an adaptive sampler)."""
        return self.times != "span"

    @property
    def takes_t_min(self) -> bool:
        """Whether `t_min` sets its last time (not for the DDPM chain's own times)."""
        return not callable(self.times)

    @property
    def measured(self) -> bool:
        """Whether it samples p(x | y) of a `measurement` (an inverse method, in `INVERSE`)."""
        return "measurement" in self.options

    def defaults(self, steps: int | None = None) -> dict[str, Any]:
        """Each option's default at `steps`: the function's signature (and the grid's spacing, ρ = 7, no custom
        times), overridden by the first `by_steps` entry that covers `steps` (none when steps is None). A required
        option (the measurement) has none."""
        params = inspect.signature(self.fn).parameters
        grid = {"spacing": self.spacing, "rho": RHO, "timesteps": None} if self.spacing else {}
        own = {k: params[k].default for k in self.options if k not in grid}
        out = grid | {k: v for k, v in own.items() if v is not REQUIRED}
        covering = [opts for most, opts in self.by_steps.items() if steps is not None and steps <= most]
        return out | dict(covering[0] if covering else {})

    def resolve(self, steps: int, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every option at `steps`: the given ones, and the defaults (`defaults(steps)`) for the rest and for those
        given as None (a config lists every option as null to leave it to the sampler)."""
        return self.defaults(steps) | {k: v for k, v in options.items() if v is not None}

    def summary(self) -> str:
        """The first line of the function's docstring."""
        return (self.fn.__doc__ or "").strip().splitlines()[0]

    def grid(self, sde: SDE, steps: int | None, t_min: float | None, options: Mapping[str, Any]) -> Timed:
        """The float64 CPU times this sampler walks (module docstring) and its other options, from checked arguments
        (`check_sampler`; None: STEPS, T_MIN). `timesteps` given without `spacing` means "custom"."""
        steps, t_min = STEPS if steps is None else steps, T_MIN if t_min is None else t_min
        opts = self.resolve(steps, options)
        if self.times == "span":
            return Timed(torch.tensor([sde.T, t_min], dtype=torch.float64), opts)
        if callable(self.times):
            return Timed(self.times(sde, steps), opts)
        if options.get("timesteps") is not None and options.get("spacing") is None:
            opts["spacing"] = "custom"
        spacing, rho, custom = (opts.pop(k) for k in GRID)
        if not self.options["spacing"].accepts(spacing):
            raise SamplerArgError(self.name, "options.spacing", spacing, self.options["spacing"].allowed())
        return Timed(timesteps(sde, steps, t_min, spacing, rho, custom=custom), opts)


@dataclass(frozen=True)
class Timed:
    """A sampler's times t (module docstring) and the options it is called with besides them."""

    t: Tensor
    options: dict[str, Any]


class SamplerArgError(ValueError):
    """A bad sampler argument: `key` ("name", "steps", "t_min", "options.<option>", one of `sample`'s own or, for an
    inverse method, "measurement.<field>") held `value`; `allowed` says what may go there."""

    def __init__(self, sampler: str, key: str, value: Any, allowed: str):
        super().__init__(f"{sampler}: {key}={value!r}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


def register(
    name: str,
    *,
    stochastic: bool,
    nfe: Callable[[int, Mapping[str, Any]], int | None],
    nfe_text: str,
    grid: str | Callable[[SDE, int], Tensor],
    requires: type[SDE] | None = None,
    by_steps: Mapping[int, Mapping[str, Any]] | None = None,
    **options: Option,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare the decorated function as sampler `name` (see SamplerSpec; in INVERSE if it takes a `measurement`):
    the options are its keyword-only arguments, each with its allowed values. `grid`: the default spacing of a grid
    sampler (which also takes GRID's options; one given here narrows GRID's), "span" for an adaptive one, or a
    function (sde, steps) -> times of its own, `steps` times (so at least 2: one step)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = inspect.signature(fn).parameters
        declared = {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
        spaced = isinstance(grid, str) and grid in SPACINGS
        own = {k: v for k, v in options.items() if not (spaced and k in GRID)}
        if declared != set(own) or list(params)[:3] != ["run", "x", "t"]:
            raise TypeError(f"sampler {name}: fn(run, x, t, *, <options {sorted(own)}>) is the protocol")
        allowed = own | ({k: options.get(k, v) for k, v in GRID.items()} if spaced else {})
        times = "grid" if spaced else grid
        if not (callable(times) or times in TIMES):
            raise TypeError(f"sampler {name}: grid={grid!r}: a spacing of {SPACINGS}, 'span' or a function")
        min_steps = 2 if callable(times) else 1
        spec = SamplerSpec(name, fn, stochastic, nfe, nfe_text, min_steps, requires, allowed,
                           grid if spaced else None, by_steps or {}, times)  # fmt: skip
        for most, opts in spec.by_steps.items():
            bad = {k: v for k, v in opts.items() if k not in allowed or not allowed[k].accepts(v)}
            if bad or list(spec.by_steps) != sorted(spec.by_steps):
                raise TypeError(f"sampler {name}: by_steps[{most}] = {dict(opts)}: bad {bad} or not ascending")
        (INVERSE if spec.measured else SAMPLERS)[name] = spec
        return fn

    return wrap


def _check_steps(spec: SamplerSpec, steps: Any, t_min: Any, T: float) -> None:
    """`steps` and `t_min` as the sampler's times take them (module docstring): None where it takes none."""
    if not spec.takes_steps:
        if steps is not None:
            raise SamplerArgError(spec.name, "steps", steps, "None: an adaptive sampler picks its own steps")
    elif not (steps is None or (not isinstance(steps, bool) and isinstance(steps, int) and steps >= spec.min_steps)):
        raise SamplerArgError(spec.name, "steps", steps, f"an int >= {spec.min_steps}")
    if not spec.takes_t_min:
        if t_min is not None:
            raise SamplerArgError(spec.name, "t_min", t_min, "None: its last time is its chain's, set by steps")
    elif t_min is not None and (isinstance(t_min, bool) or not isinstance(t_min, int | float) or not 0 < t_min < T):
        raise SamplerArgError(spec.name, "t_min", t_min, f"a number in (0, T={T:g})")


def check_sampler(
    name: str, *, steps: Any, t_min: Any, options: Mapping[str, Any], sde_type: type[SDE], T: float
) -> SamplerSpec:
    """The spec of sampler `name` (in SAMPLERS or INVERSE) after checking every argument against it (an option
    given as None takes its default; steps and t_min given as None take STEPS and T_MIN where the sampler takes
    them); the first bad one raises SamplerArgError (a ValueError) naming the key, the value and what is allowed."""
    spec = SAMPLERS.get(name) or INVERSE.get(name)
    if spec is None:
        raise SamplerArgError("sample", "name", name, f"one of {[*SAMPLERS, *INVERSE]}")
    _check_steps(spec, steps, t_min, T)
    if spec.requires is not None and not issubclass(sde_type, spec.requires):
        raise SamplerArgError(
            name, "name", name, f"needs a {spec.requires.__name__}, got {sde_type.__name__}: use another sampler"
        )
    for key, value in options.items():
        if key not in spec.options:
            raise SamplerArgError(name, f"options.{key}", value, f"{name} takes options: {', '.join(spec.options)}")
        if value is not None and not spec.options[key].accepts(value):
            raise SamplerArgError(name, f"options.{key}", value, spec.options[key].allowed())
    for key in spec.options.keys() - spec.defaults().keys():
        if options.get(key) is None:
            raise SamplerArgError(name, f"options.{key}", None, spec.options[key].allowed())
    return spec


def sampler_table() -> str:
    """The markdown table of every sampler's spec, the inverse methods last (README.md carries it; a test keeps
    the two equal)."""
    rows = [
        "| sampler | kind | NFE (+1 with denoise) | needs | time grid | options | defaults by steps |",
        "|---|---|---|---|---|---|---|",
    ]
    specs = sorted([*SAMPLERS.values(), *INVERSE.values()], key=lambda s: (s.measured, not s.stochastic, s.name))
    for s in specs:
        own = ", ".join(f"`{k}` {o.allowed()}" for k, o in s.options.items() if k not in GRID) or "—"
        spacings = "" if s.options.get("spacing") in (None, GRID["spacing"]) else f": {s.options['spacing'].allowed()}"
        moved = any("spacing" in o for o in s.by_steps.values())
        beyond = f" beyond {max(s.by_steps)} steps; below, the last column's" if moved else ""
        spaced = f"`spacing` ({s.spacing}{spacings}{beyond}), `rho`, `timesteps`"
        grid = {"grid": spaced, "span": "[T, `t_min`], adaptive"}
        needs = s.requires.__name__ if s.requires else "any SDE"
        by = "; ".join(f"≤ {n}: " + ", ".join(f"{k}={v}" for k, v in o.items()) for n, o in s.by_steps.items())
        kind = "inverse" if s.measured else "SDE" if s.stochastic else "ODE"
        times = grid.get(s.times) if isinstance(s.times, str) else (s.times.__doc__ or "").strip().splitlines()[0]
        rows.append(f"| `{s.name}` | {kind} | {s.nfe_text} | {needs} | {times} | {own} | {by or '—'} |")
    return "\n".join(rows) + "\n"
