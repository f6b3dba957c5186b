"""Likelihood estimators on the 16-D mixture with the exact score, one torch thread: three tables.

    OMP_NUM_THREADS=1 python experiments/bench_likelihood.py [--n 128] [--repeats 16]

1. PF-ODE (RK45, default tolerances): NFE, wall time per sample and |log p̂ − log p|/D, exact vs Hutchinson divergence.
2. ELBO, importance-sampled λ vs uniform t at equal score calls (n_t stratified draws per sample), VP with linear
   and cosine β: the per-sample standard error, measured as the sd of `repeats` independent estimates of each sample.
3. Cost at a useful SE: ELBO score calls per sample (importance sampling, without and with the control variate
   v = 0.1) against the per-sample SE (sd over `repeats`), beside the ODE's score calls (forward + VJPs) and the
   Hutchinson ODE's own per-sample error (rms of log p̂ − log p). "Useful": the ELBO's SE ≤ Hutchinson's error.
"""

from __future__ import annotations

import argparse
import time

import torch

from sde_diffusion import VPSDE, CosineBeta, LinearBeta, mixture
from sde_diffusion.elbo import elbo
from sde_diffusion.likelihood import log_likelihood


def ode_table(sde: VPSDE, mix, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Table 1; returns each divergence's NFE and Hutchinson's rms error per dimension."""
    true = mix.log_prob(x)
    print(f"\n1. PF-ODE, VP linear, RK45 rtol=atol=1e-5, batch {x.shape[0]}, best of {repeats}")
    print(f"{'divergence':12s} {'NFE':>5s} {'VJPs/NFE':>9s} {'ms/sample':>10s} {'|err|/dim':>10s}")
    nfe = {}
    for name in ("exact", "hutchinson"):
        walls = []
        for r in range(repeats):
            start = time.perf_counter()
            res = log_likelihood(sde, mix.score_fn(sde), x, divergence=name, generator=torch.Generator().manual_seed(r))
            walls.append(time.perf_counter() - start)
        err = float((res.log_p - true).abs().mean()) / mix.dim
        vjps = mix.dim if name == "exact" else 1
        print(f"{name:12s} {res.nfe:5d} {vjps:9d} {1e3 * min(walls) / x.shape[0]:10.3f} {err:10.2e}")
        nfe[name] = res.nfe
    nfe["hutchinson_rms"] = float((res.log_p - true).pow(2).mean().sqrt()) / mix.dim
    return nfe


def per_sample_se(sde: VPSDE, mix, x: torch.Tensor, n_t: int, importance: bool, repeats: int) -> tuple[float, float]:
    """Mean over samples of the sd of `repeats` independent n_t-draw estimates, and the mean estimate."""
    runs = torch.stack([
        elbo(sde, mix.score_fn(sde), x, n_t=n_t, importance=importance, generator=torch.Generator().manual_seed(r)).nll
        for r in range(repeats)
    ])  # fmt: skip
    return float(runs.std(0).mean()), float(runs.mean())


def variance_table(mix, x: torch.Tensor, repeats: int) -> None:
    """Table 2."""
    print(f"\n2. ELBO per-sample SE (nats), {x.shape[0]} samples x {repeats} repeats, stratified draws")
    head = f"{'schedule':9s} {'n_t':>4s} {'uniform t':>10s} {'importance':>11s} {'ratio':>6s}"
    print(f"{head} {'mean −ELBO (u / i)':>20s}")
    for name, schedule in (("linear", LinearBeta()), ("cosine", CosineBeta())):
        sde = VPSDE(schedule)
        for n_t in (4, 16, 64):
            se_u, m_u = per_sample_se(sde, mix, x, n_t, False, repeats)
            se_i, m_i = per_sample_se(sde, mix, x, n_t, True, repeats)
            print(f"{name:9s} {n_t:4d} {se_u:10.2f} {se_i:11.2f} {se_u / se_i:6.1f} {m_u:9.2f} / {m_i:8.2f}")


def cost_table(mix, x: torch.Tensor, repeats: int, ode: dict[str, float]) -> None:
    """Table 3."""
    sde = VPSDE()
    exact_calls, hutch_calls = ode["exact"] * (1 + mix.dim), ode["hutchinson"] * 2  # forward + VJPs
    print(f"\n3. ELBO per-sample SE (nats/dim, sd over {repeats} repeats) vs score calls; VP linear")
    print(f"   ODE calls/sample (forward + VJPs): exact {exact_calls}, Hutchinson {hutch_calls:.0f} whose own"
          f" per-sample rms error is {ode['hutchinson_rms']:.3f} nats/dim")  # fmt: skip
    print(f"{'n_t':>4s} {'SE plain':>9s} {'SE cv=0.1':>10s} {'calls / exact ODE':>18s} {'calls / Hutch. ODE':>19s}")
    for n_t in (4, 8, 16, 32, 64):
        se = []
        for cv in (None, 0.1):
            runs = torch.stack([
                elbo(sde, mix.score_fn(sde), x, n_t=n_t, control_variate=cv,
                     generator=torch.Generator().manual_seed(100 + r)).nll
                for r in range(repeats)
            ])  # fmt: skip
            se.append(float(runs.std(0).mean()) / mix.dim)
        flag = " <- useful" if se[1] <= ode["hutchinson_rms"] else ""
        print(f"{n_t:4d} {se[0]:9.3f} {se[1]:10.3f} {n_t / exact_calls:18.4f} {n_t / hutch_calls:19.4f}{flag}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    mix = mixture(dim=16, k=10)
    x = mix.sample(args.n, torch.Generator().manual_seed(0))
    nfe = ode_table(VPSDE(), mix, x, 1)
    variance_table(mix, x, args.repeats)
    cost_table(mix, x, args.repeats, nfe)


if __name__ == "__main__":
    main()
