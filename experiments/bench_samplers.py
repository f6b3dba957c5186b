"""Sampler benchmarks that print tables within one run: the overhead per NFE, and the defaults study.

    OMP_NUM_THREADS=1 python experiments/bench_samplers.py overhead [--batch 10000] [--steps 20]
    OMP_NUM_THREADS=1 python experiments/bench_samplers.py defaults [--budgets 5 10 20 50] [--n 1000]

overhead: wall time / (NFE × one score call) for a 3×256 MLP score (`ScoreModel(MLP((2,)), VPSDE())`, random
weights) at batch 10 000; a ratio near 1 means the sampler adds nothing to the network's own cost.

defaults: the flow error (RMS distance to the exact probability-flow map of the same noise, Tweedie's step included,
`analytic.exact_flow_map`) of every setting of each deterministic grid sampler at each NFE budget (Tweedie's step
counted) on both exact oracles, 8-Gaussians and the 16-D mixture (VP, linear β(t)), over two noise draws of `--n`
each (seeds 0 and 1; on the 16-D mixture a single sample that lands in another mode can dominate one draw's RMS).
The table gives each oracle's best setting, and as ratios to it the spec's defaults at that `steps` and the minimax
setting, whose worst ratio over both oracles is smallest. The specs' `by_steps` defaults are the minimax settings.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import torch

from sde_diffusion import VPSDE, eight_gaussians, mixture
from sde_diffusion.core.analytic import exact_flow_map
from sde_diffusion.core.metrics import flow_error
from sde_diffusion.models import MLP, ScoreModel
from sde_diffusion.sampling import SAMPLERS, SampleSetup, sample

T_MIN = 1e-3
SPACINGS = ("time_uniform", "logsnr", "time_quadratic", "karras")
# the settings the defaults study tries, per deterministic grid sampler (every product of the listed values)
SETTINGS = {
    "dpm_solver": {
        "order": (2, 3),
        "method": ("multistep", "singlestep"),
        "algorithm": ("dpmsolver++", "dpmsolver"),
        "spacing": SPACINGS,
    },
    "ode_heun": {"spacing": SPACINGS},
    "ode_euler": {"spacing": SPACINGS},
}


def overhead(args: argparse.Namespace) -> None:
    """The overhead table: every sampler at its defaults for `--steps`."""
    torch.manual_seed(0)
    sde = VPSDE()
    model = ScoreModel(MLP((2,), hidden=256, layers=3), sde).eval()
    x = torch.randn(args.batch, 2)
    t = torch.full((args.batch,), 0.5)
    with torch.no_grad():
        for _ in range(3):
            model(x, t)
        one = min(_timed(lambda: model(x, t)) for _ in range(10))  # min, like the sampler walls below
    print(f"one score call (3×256 MLP, batch {args.batch}, {torch.get_num_threads()} thread(s)): {one * 1e3:.1f} ms\n")
    print("| sampler | options | steps | NFE | wall (s) | wall / (NFE × call) |\n|---|---|---|---|---|---|")
    runs = [(name, {}) for name in SAMPLERS] + [(n, {"method": "singlestep"}) for n in ("dpm_solver", "sde_dpm_solver")]
    for name, opts in runs:
        steps = max(args.steps, 50) if name == "ancestral" else args.steps  # DDPM needs β(t)·T/N < 1
        steps = steps if SAMPLERS[name].takes_steps else None  # adaptive: no steps
        walls = []
        for _ in range(args.repeats):
            g = torch.Generator().manual_seed(0)
            t0 = time.perf_counter()
            r = sample(sde, model, (args.batch, 2), sampler=name, steps=steps, setup=SampleSetup(generator=g), **opts)
            walls.append(time.perf_counter() - t0)
        wall = min(walls)
        print(f"| {name} | {opts or ''} | {steps} | {r.nfe} | {wall:.2f} | {wall / (r.nfe * one):.3f} |", flush=True)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def settings(name: str) -> list[dict]:
    """Every combination of SETTINGS[name]."""
    grid = SETTINGS[name]
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def steps_for(name: str, budget: int) -> int:
    """The largest `steps` whose NFE, the Tweedie step included, fits the budget."""
    spec = SAMPLERS[name]
    return max(n for n in range(spec.min_steps, budget + 1) if spec.nfe(n, spec.defaults(n)) + 1 <= budget)


def label(opts: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in opts.items()) or "defaults"


def flow_errors(name: str, steps: int, runs: list[dict], n: int) -> dict[tuple[str, int], list[float]]:
    """(oracle, seed) ↦ the flow error of each run's options, on n noise draws of that seed."""
    sde, out = VPSDE(), {}
    for data, oracle in {"8-Gaussians": eight_gaussians(), "16-D mixture": mixture(dim=16, k=10)}.items():
        for seed in (0, 1):
            x_T = torch.randn(n, oracle.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            exact = exact_flow_map(sde, oracle, x_T, T_MIN, denoise=True)
            out[data, seed] = [
                flow_error(
                    sample(
                        sde,
                        oracle.score_fn(sde),
                        (n, oracle.dim),
                        name,
                        steps,
                        T_MIN,
                        setup=SampleSetup(x_T=x_T, dtype=torch.float64),
                        **opts,
                    ).x,
                    exact,
                )
                for opts in runs
            ]
    return out


def defaults(args: argparse.Namespace) -> None:
    """Per sampler and budget: each oracle's best setting, and as ratios to it the spec's defaults at these steps and
    the minimax setting (the smallest worst ratio over both oracles), on the flow error over both noise draws."""
    print(
        "| sampler | NFE | steps | oracle | best setting | best | defaults / best | minimax / best | minimax setting |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.samplers:
        for budget in args.budgets:
            steps, runs = steps_for(name, budget), settings(name)
            err = flow_errors(name, steps, [*runs, {}], args.n)  # the last run: the spec's defaults at `steps`
            oracles = sorted({data for data, _ in err})
            pooled = {o: [math.hypot(a, b) / math.sqrt(2) for a, b in zip(err[o, 0], err[o, 1], strict=True)]
                      for o in oracles}  # fmt: skip
            worst = [max(pooled[o][k] / min(pooled[o][:-1]) for o in oracles) for k in range(len(runs))]
            pick = min(range(len(runs)), key=worst.__getitem__)
            for o in oracles:
                e = pooled[o]
                best = min(range(len(runs)), key=e.__getitem__)
                row = f"{e[best]:.2e} | {e[-1] / e[best]:.2f} | {e[pick] / e[best]:.2f} | {label(runs[pick])}"
                print(f"| {name} | {budget} | {steps} | {o} | {label(runs[best])} | {row} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("overhead", help="wall / (NFE × one score call)")
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("defaults", help="flow error of every setting per budget on both oracles")
    p.add_argument("--samplers", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--budgets", type=int, nargs="+", default=[5, 10, 20, 50])
    p.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    {"overhead": overhead, "defaults": defaults}[args.bench](args)


if __name__ == "__main__":
    main()
