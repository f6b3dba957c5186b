"""Sampler overhead: wall time / (NFE × one score call) for a 3×256 MLP score at batch 10 000 (a ratio table).

    OMP_NUM_THREADS=1 python experiments/bench_samplers.py [--batch 10000] [--steps 20]

The score is `ScoreModel(MLP((2,)), VPSDE())` with random weights: the cost per call is what matters here.
A ratio near 1 means the sampler adds nothing to the network's own cost; fixed-step samplers target ≤ 1.10.
"""

from __future__ import annotations

import argparse
import time

import torch

from sde_diffusion import VPSDE
from sde_diffusion.models import MLP, ScoreModel
from sde_diffusion.sampling import sample

RUNS = [
    ("euler_maruyama", {}),
    ("pc", {}),
    ("ancestral", {}),
    ("ode_euler", {}),
    ("ode_heun", {}),
    ("dpm_solver", {}),
    ("dpm_solver", {"method": "singlestep"}),
    ("torchsde", {}),
    ("ddim", {}),
    ("sde_dpm_solver", {}),
    ("sde_dpm_solver", {"method": "singlestep"}),
    ("sa_solver", {}),
    ("edm", {}),
    ("adaptive_sde", {}),
    ("rk45", {}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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
    for name, opts in RUNS:
        steps = max(args.steps, 50) if name == "ancestral" else args.steps  # DDPM needs β(t)·T/N < 1
        walls = []
        for _ in range(args.repeats):
            g = torch.Generator().manual_seed(0)
            t0 = time.perf_counter()
            r = sample(sde, model, (args.batch, 2), sampler=name, steps=steps, generator=g, **opts)
            walls.append(time.perf_counter() - t0)
        wall = min(walls)
        print(f"| {name} | {opts or ''} | {steps} | {r.nfe} | {wall:.2f} | {wall / (r.nfe * one):.3f} |", flush=True)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
