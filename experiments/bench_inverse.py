"""Inverse-problem methods against the exact posterior at about 100 and 1000 NFE (a table per problem).

    OMP_NUM_THREADS=1 python experiments/bench_inverse.py [--n 2048] [--particles 16] [--seed 0]

Problems, with the exact score of the prior (VP, linear β): the 16-D mixture with its even coordinates observed and
8-Gaussians with its first coordinate observed, y = A x + 0.05·n for a seeded prior draw x. Per method: the energy
distance of n samples to n exact posterior draws (`GaussianMixture.posterior(...).sample`), the error of their mean
‖x̄ − E[x | y]‖, the consistency error ‖A x − y‖ (RMS per coordinate), NFE (+ backward passes) and wall time. The
reference rows: the DDIM (η = 1) sampler of the exact posterior score, and a second set of exact draws (the floor).
DPS's ζ is tuned per budget against the oracle (best energy distance over ZETAS on separate seeds, n/4 samples),
which a user without one cannot do; the other methods run at their papers' defaults.
"""

from __future__ import annotations

import argparse
import time

import torch

from sde_diffusion import VPSDE, eight_gaussians, mixture
from sde_diffusion.core.metrics import energy_distance
from sde_diffusion.sampling import SampleSetup, sample
from sde_diffusion.sampling.inverse import Measurement

NOISE_STD = 0.05
ZETAS = (0.03, 0.1, 0.3, 1.0)
# Per budget: steps of the one-pass methods (NFE = steps + 1) and RePaint's (steps, jump_length, resample).
BUDGETS = {100: (99, (20, 5, 5)), 1000: (999, (100, 10, 10))}


def problems(seed: int):
    """(name, prior, A, y) for the 16-D mixture (even coordinates observed) and 8-Gaussians (x₁ observed)."""
    g = torch.Generator().manual_seed(seed)
    for name, prior, observed in (
        ("16-D mixture, 8 of 16 coordinates observed", mixture(dim=16, k=10), torch.arange(16) % 2 == 0),
        ("8-Gaussians, x₁ observed", eight_gaussians(), torch.tensor([True, False])),
    ):
        A = torch.eye(prior.dim, dtype=torch.float64)[observed]
        y = A @ prior.sample(1, generator=g)[0] + NOISE_STD * torch.randn(len(A), generator=g, dtype=torch.float64)
        yield name, prior, A, y


def metrics(x: torch.Tensor, exact: torch.Tensor, post, A: torch.Tensor, y: torch.Tensor) -> tuple[float, ...]:
    """Energy distance to the exact draws, posterior-mean error, consistency RMS."""
    x = x.to(torch.float64)
    return energy_distance(x, exact), float((x.mean(0) - post.mean).norm()), float((x @ A.T - y).square().mean().sqrt())


def methods(sde, prior, post, A, y, shape, budget: int, zeta: float, particles: int):
    """(method, options, run(generator) -> result) for one NFE budget."""
    steps, (rp_steps, jump, resample) = BUDGETS[budget]
    score, m = prior.score_fn(sde), Measurement(A, y, NOISE_STD)

    def solve(name: str, n_steps: int = steps, **options):
        return lambda g: sample(
            sde, score, shape, name, n_steps, measurement=m, setup=SampleSetup(generator=g), **options
        )

    return [
        (
            "exact score (DDIM)",
            "η=1",
            lambda g: sample(sde, post.score_fn(sde), shape, "ddim", steps, setup=SampleSetup(generator=g)),
        ),
        ("replacement", "η=1", solve("replacement")),
        (
            "RePaint",
            f"{rp_steps} steps, jump {jump}, resample {resample}, η=1",
            solve("repaint", rp_steps, jump_length=jump, resample=resample),
        ),
        ("DPS", f"ζ={zeta:g} (tuned), η=1", solve("dps", zeta=zeta)),
        ("TDS", f"{particles} particles, η=1", solve("tds", particles=particles)),
    ]


def tuned_zeta(sde, prior, post, A, y, n: int, steps: int, seed: int) -> float:
    """DPS's ζ in ZETAS with the least energy distance to exact draws, on n samples and seeds of its own."""

    def energy(zeta: float) -> float:
        g = torch.Generator().manual_seed(seed)
        m = Measurement(A, y, NOISE_STD)
        x = sample(
            sde,
            prior.score_fn(sde),
            (n, prior.dim),
            "dps",
            steps,
            measurement=m,
            zeta=zeta,
            setup=SampleSetup(generator=g),
        ).x
        return energy_distance(x.double(), post.sample(n, generator=g))

    return min(ZETAS, key=energy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--particles", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sde = VPSDE()
    for name, prior, A, y in problems(args.seed):
        post, shape = prior.posterior(A, y, NOISE_STD), (args.n, prior.dim)
        exact = post.sample(args.n, generator=torch.Generator().manual_seed(args.seed + 1))
        heavy = int((post.weights > 1e-3).sum())
        print(f"\n{name}, noise_std {NOISE_STD}: the posterior has {heavy} component(s) of weight > 1e-3")
        print("| method | options | NFE (+ backward) | energy distance | mean error | consistency RMS | wall (s) |")
        print("|---|---|---|---|---|---|---|")
        row = metrics(post.sample(args.n, generator=torch.Generator().manual_seed(args.seed + 2)), exact, post, A, y)
        print(f"| exact draws (floor) | | 0 | {row[0]:.4f} | {row[1]:.3f} | {row[2]:.3f} | |")
        for budget in BUDGETS:
            zeta = tuned_zeta(sde, prior, post, A, y, args.n // 4, BUDGETS[budget][0], args.seed + 3)
            for method, options, run in methods(sde, prior, post, A, y, shape, budget, zeta, args.particles):
                t0 = time.perf_counter()
                r = run(torch.Generator().manual_seed(args.seed + 4))
                wall = time.perf_counter() - t0
                ed, err, cons = metrics(r.x, exact, post, A, y)
                nfe = f"{r.nfe}" + (f" (+ {r.vjp})" if getattr(r, "vjp", 0) else "")
                print(f"| {method} | {options} | {nfe} | {ed:.4f} | {err:.3f} | {cons:.3f} | {wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
