"""Sampler benchmarks that print tables within one run: the overhead per NFE, and the defaults studies.

    OMP_NUM_THREADS=1 python experiments/bench_samplers.py overhead [--batch 10000] [--steps 20]
    OMP_NUM_THREADS=1 python experiments/bench_samplers.py defaults [--budgets 5 10 20] [--n 300]
    OMP_NUM_THREADS=1 python experiments/bench_samplers.py sde_defaults [--n 1000]
    OMP_NUM_THREADS=1 python experiments/bench_samplers.py checkpoint --checkpoint RUN/checkpoints/last.pt

overhead: wall time / (NFE × one score call) for a 3×256 MLP score (`ScoreModel(MLP((2,)), VPSDE())`, random
weights) at batch 10 000; a ratio near 1 means the sampler adds nothing to the network's own cost.

defaults: the median over samples of the distance to the exact probability-flow map of the same x_T (Tweedie's step
included, `analytic.exact_flow_map`, t_min = 1e-3) of every setting of each deterministic grid sampler at each NFE
budget (Tweedie's step counted), on both exact oracles (8-Gaussians, the 16-D mixture) under linear, cosine and
polynomial β(t) (VP), `--n` draws of x_T (seed 0). Each cell's best setting, and as ratios to it the spec's defaults
at that `steps` and the minimax setting among the grids in λ or σ̃ (the same under every β(t)): the smallest worst
ratio over the cells of that budget. The specs' defaults are these minimax settings (docs/samplers.md).
sde_defaults: the same cells for the SDE grid samplers, by SW₂ to an oracle draw (an SDE has no flow map to pair).
checkpoint: dpm_solver's defaults against other settings on a trained checkpoint (SW₂; judge accuracy and FD).
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from sde_diffusion import VPSDE, CosineBeta, LinearBeta, PolynomialBeta, eight_gaussians, mixture
from sde_diffusion.apps import load_run
from sde_diffusion.core.analytic import exact_flow_map
from sde_diffusion.core.metrics import sliced_wasserstein
from sde_diffusion.evaluation.class_coverage import frechet_distance
from sde_diffusion.evaluation.class_eval import fit_judge
from sde_diffusion.models import MLP, ScoreModel
from sde_diffusion.sampling import SAMPLERS, SamplerRun, SampleSetup, sample
from sde_diffusion.sampling.guidance.guided import Guidance, guided_sample

T_MIN = 1e-3
# the grids the defaults study tries: in t (for reference), and in λ or σ̃, the same under every β(t) (a default
# must be one of these: `LAMBDA_GRIDS`)
T_GRIDS = ({"spacing": "time_uniform"}, {"spacing": "time_quadratic"})
LAMBDA_GRIDS = ({"spacing": "logsnr"}, *({"spacing": "karras", "rho": r} for r in (3.0, 5.0, 7.0, 10.0)))
GRIDS = T_GRIDS + LAMBDA_GRIDS
# the settings the defaults study tries, per deterministic grid sampler (every product of the listed values)
SETTINGS = {
    "dpm_solver": {
        "order": (2, 3),
        "method": ("multistep", "singlestep"),
        "algorithm": ("dpmsolver++", "dpmsolver"),
        "grid": GRIDS,
    },
    "ode_heun": {"grid": GRIDS},
    "ode_euler": {"grid": GRIDS},
}
# β(t) of the study: linear (the seed's), cosine (Nichol & Dhariwal 2021) and a parametric one
BETAS = {"linear": LinearBeta(), "cosine": CosineBeta(), "polynomial": PolynomialBeta()}
ORACLES = {"8-Gaussians": eight_gaussians, "16-D mixture": lambda: mixture(dim=16, k=10)}


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
    """Every combination of SETTINGS[name], the grid's entries merged in."""
    grid = SETTINGS[name]
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    return [{k: v for k, v in c.items() if k != "grid"} | c.get("grid", {}) for c in combos]


def steps_for(name: str, budget: int) -> int:
    """The largest `steps` whose NFE, the Tweedie step included, fits the budget."""
    spec = SAMPLERS[name]
    return max(n for n in range(spec.min_steps, budget + 1) if spec.nfe(n, spec.defaults(n)) + 1 <= budget)


def label(opts: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in opts.items()) or "defaults"


def noise(x_T: torch.Tensor) -> SampleSetup:
    """The same x_T and sampler noise (a fresh generator, seed 3) for every setting compared."""
    return SampleSetup(x_T=x_T, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def median_distance(x: torch.Tensor, exact: torch.Tensor) -> float:
    """The median over samples of ‖x − x_exact‖ (robust to the rare sample that a grid sends to another mode)."""
    return float((x - exact).flatten(1).norm(dim=1).median())


def flow_errors(name: str, steps: int, runs: list[dict], n: int, exact: dict) -> dict[tuple[str, str], list[float]]:
    """(β, oracle) ↦ the median distance to the exact flow map of each run's options, on n noise draws (seed 0)."""
    out = {}
    for (beta, data), (sde, oracle, x_T, x_exact) in exact.items():
        setup, score = SampleSetup(x_T=x_T, dtype=torch.float64), oracle.score_fn(sde)
        out[beta, data] = [
            median_distance(sample(sde, score, x_T.shape, name, steps, T_MIN, setup=setup, **opts).x, x_exact)
            for opts in runs
        ]
    return out


def exact_maps(n: int) -> dict:
    """(β, oracle) ↦ (sde, oracle, x_T, the exact flow map of x_T to t_min with Tweedie's step)."""
    out = {}
    for beta, schedule in BETAS.items():
        for data, make in ORACLES.items():
            sde, oracle = VPSDE(schedule), make()
            x_T = torch.randn(n, oracle.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            out[beta, data] = sde, oracle, x_T, exact_flow_map(sde, oracle, x_T, T_MIN, denoise=True)
    return out


def defaults(args: argparse.Namespace) -> None:
    """Per sampler, budget, β(t) and oracle: the best setting, and as ratios to it the spec's defaults at these steps
    and the minimax λ/σ̃-grid setting (the smallest worst ratio over every β(t) and oracle at this budget)."""
    exact = exact_maps(args.n)
    print("| sampler | NFE | steps | β(t) | oracle | best setting | best | defaults / best | minimax / best |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.samplers:
        runs, overall = settings(name), []
        fair = [k for k, r in enumerate(runs) if r["spacing"] in ("logsnr", "karras")]
        for budget in args.budgets:
            steps = steps_for(name, budget)
            err = flow_errors(name, steps, [*runs, {}], args.n, exact)  # the last run: the spec's defaults
            ratio = {cell: [v / min(e[:-1]) for v in e] for cell, e in err.items()}
            overall += ratio.values()
            pick = min(fair, key=lambda k: max(r[k] for r in ratio.values()))
            for (beta, data), e in err.items():
                best = min(range(len(runs)), key=e.__getitem__)
                row = f"{e[best]:.2e} | {ratio[beta, data][-1]:.2f} | {ratio[beta, data][pick]:.2f}"
                print(f"| {name} | {budget} | {steps} | {beta} | {data} | {label(runs[best])} | {row} |", flush=True)
            print(f"minimax λ/σ̃ setting for {name} at {budget} NFE: {label(runs[pick])}", flush=True)
        pick = min(fair, key=lambda k: max(r[k] for r in overall))
        worst = max(r[pick] for r in overall)
        print(f"minimax λ/σ̃ setting for {name} over every budget: {label(runs[pick])} (worst {worst:.2f})\n")


# the SDE grid samplers of the SDE study and their step counts
SDE_STEPS = {"euler_maruyama": (100, 300), "pc": (50, 100), "sde_dpm_solver": (10, 20)}


def sde_defaults(args: argparse.Namespace) -> None:
    """Per SDE grid sampler, steps, β(t) and oracle: SW₂ (in units of the floor: two independent oracle draws) of
    each grid against an oracle draw of the same size, as ratios to the best grid (the flow map has no SDE twin)."""
    print("| sampler | steps | β(t) | oracle | best grid | best SW₂ / floor | " + " | ".join(map(label, GRIDS)) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(GRIDS))
    for name, counts in SDE_STEPS.items():
        worst = [1.0] * len(GRIDS)
        for steps, (beta, schedule), (data, make) in itertools.product(counts, BETAS.items(), ORACLES.items()):
            sde, oracle, n = VPSDE(schedule), make(), args.n
            ref, floor = (oracle.sample(n, torch.Generator().manual_seed(s)).double() for s in (1, 2))
            x_T = torch.randn(n, oracle.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            score = oracle.score_fn(sde)
            sw = [sliced_wasserstein(sample(sde, score, x_T.shape, name, steps, T_MIN, setup=noise(x_T), **g).x, ref)
                  for g in GRIDS]  # fmt: skip
            ratio = [v / min(sw) for v in sw]
            worst = [max(w, r) for w, r in zip(worst, ratio, strict=True)]
            best = min(range(len(GRIDS)), key=sw.__getitem__)
            cells = " | ".join(f"{r:.2f}" for r in ratio)
            head = f"| {name} | {steps} | {beta} | {data} | {label(GRIDS[best])}"
            print(f"{head} | {sw[best] / sliced_wasserstein(floor, ref):.2f} | {cells} |", flush=True)
        fair = [k for k, g in enumerate(GRIDS) if g in LAMBDA_GRIDS]
        pick = min(fair, key=worst.__getitem__)
        print(f"minimax λ/σ̃ grid for {name}: {label(GRIDS[pick])} (worst {worst[pick]:.2f})\n", flush=True)


# the dpm_solver settings tried on a trained checkpoint (every product), beside the spec's defaults
CHECKPOINT_SETTINGS = {
    "order": (2, 3),
    "method": ("multistep", "singlestep"),
    "spacing": ("time_quadratic", "logsnr", "karras"),
}


def checkpoint(args: argparse.Namespace) -> None:
    """Per `steps`: dpm_solver's defaults and CHECKPOINT_SETTINGS on a trained (class-conditional: labels all, w = 0)
    checkpoint, from one x_T: SW₂ to the data, and for labelled data the judge's class accuracy and the FD."""
    model, sde, data, _ = load_run(args.checkpoint)
    real, real_y = data.labelled_examples()
    judge, c = fit_judge(data, seed=args.seed + 7), data.num_classes
    labels = torch.arange(c).repeat_interleave(args.n // c)
    x_T = sde.prior_sampling((len(labels), *data.shape), generator=torch.Generator().manual_seed(args.seed))
    grid = CHECKPOINT_SETTINGS
    runs = [{}, *(dict(zip(grid, v, strict=True)) for v in itertools.product(*grid.values()))]
    print("| steps | NFE | setting | SW₂ | class accuracy | FD |\n|---|---|---|---|---|---|")
    for steps in args.steps:
        for opts in runs:
            with torch.no_grad():
                run = SamplerRun("dpm_solver", steps, options=opts)
                res, _ = guided_sample(Guidance("cfg", 0.0), sde, model, labels, c, run, setup=SampleSetup(x_T=x_T))
            x = res.x.float()
            sw2 = sliced_wasserstein(x, real)
            acc = float((judge.predict(x) == labels).double().mean())
            print(f"| {steps} | {res.nfe} | {label(opts)} | {sw2:.4f} | {acc:.3f} | {frechet_distance(x, real):.3f} |",
                  flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("overhead", help="wall / (NFE × one score call)")
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("defaults", help="flow error of every setting per budget on both oracles")
    p.add_argument("--samplers", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--budgets", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--n", type=int, default=300)
    p = sub.add_parser("sde_defaults", help="SW2 of every grid of the SDE grid samplers on both oracles")
    p.add_argument("--n", type=int, default=1000)
    p = sub.add_parser("checkpoint", help="dpm_solver's defaults against other settings on a trained checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--steps", type=int, nargs="+", default=[4, 6, 10, 20])
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    benches = {"overhead": overhead, "defaults": defaults, "sde_defaults": sde_defaults, "checkpoint": checkpoint}
    benches[args.bench](args)


if __name__ == "__main__":
    main()
