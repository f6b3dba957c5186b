"""Likelihood estimators on the 16-D mixture with the exact score, one torch thread: three tables.

    OMP_NUM_THREADS=1 python experiments/bench_likelihood.py [--n 128] [--repeats 16]

1. PF-ODE (RK45, default tolerances): NFE, wall time per sample and |log p̂ − log p|/D, exact vs Hutchinson divergence.
2. ELBO, importance-sampled λ vs uniform t at equal score calls (n_t stratified draws per sample), VP with linear
   and cosine β: the per-sample standard error, measured as the sd of `repeats` independent estimates of each sample.
3. Cost at a useful SE: ELBO score calls per sample (importance sampling, without and with the control variate
   v = 0.1) against the per-sample SE (sd over `repeats`), beside the ODE's score calls (forward + VJPs) and the
   Hutchinson ODE's own per-sample error (rms of log p̂ − log p). "Useful": the ELBO's SE ≤ Hutchinson's error.
4. Bits/dim of a quantised 2-D diagonal mixture on 17 levels (exact PMF): each bound's gap to the exact −log P(k),
   with the unquantised mixture's exact score as the model.

    python experiments/bench_likelihood.py --tables 4      # one table
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from sde_diffusion import VPSDE, CosineBeta, GaussianMixture, LinearBeta, mixture
from sde_diffusion.data import Scaler
from sde_diffusion.likelihood import FlowOptions, bits_per_dim, discrete_elbo, log_likelihood, quantised_log_pmf
from sde_diffusion.objectives.elbo import elbo


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
            res = log_likelihood(sde, mix.score_fn(sde), x, FlowOptions(name), torch.Generator().manual_seed(r))
            walls.append(time.perf_counter() - start)
        err = float((res.log_p - true).abs().mean()) / mix.dim
        vjps = mix.dim if name == "exact" else 1
        print(f"{name:12s} {res.nfe:5d} {vjps:9d} {1e3 * min(walls) / x.shape[0]:10.3f} {err:10.2e}")
        nfe[name] = res.nfe
    nfe["hutchinson_rms"] = float((res.log_p - true).pow(2).mean().sqrt()) / mix.dim
    return nfe


def per_sample_se(sde: VPSDE, mix, x: torch.Tensor, n_t: int, importance: bool, repeats: int) -> tuple[float, float]:
    """Mean over samples of the sd of `repeats` independent n_t-draw estimates, and the mean estimate."""
    runs = torch.stack(
        [
            elbo(
                sde, mix.score_fn(sde), x, n_t=n_t, importance=importance, generator=torch.Generator().manual_seed(r)
            ).nll
            for r in range(repeats)
        ]
    )
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
    print(
        f"   ODE calls/sample (forward + VJPs): exact {exact_calls}, Hutchinson {hutch_calls:.0f} whose own"
        f" per-sample rms error is {ode['hutchinson_rms']:.3f} nats/dim"
    )
    print(f"{'n_t':>4s} {'SE plain':>9s} {'SE cv=0.1':>10s} {'calls / exact ODE':>18s} {'calls / Hutch. ODE':>19s}")
    for n_t in (4, 8, 16, 32, 64):
        se = []
        for cv in (None, 0.1):
            runs = torch.stack(
                [
                    elbo(
                        sde,
                        mix.score_fn(sde),
                        x,
                        n_t=n_t,
                        control_variate=cv,
                        generator=torch.Generator().manual_seed(100 + r),
                    ).nll
                    for r in range(repeats)
                ]
            )
            se.append(float(runs.std(0).mean()) / mix.dim)
        flag = " <- useful" if se[1] <= ode["hutchinson_rms"] else ""
        print(f"{n_t:4d} {se[0]:9.3f} {se[1]:10.3f} {n_t / exact_calls:18.4f} {n_t / hutch_calls:19.4f}{flag}")


def dequantisation_table(n: int) -> None:
    """Table 4."""
    w = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)
    mu = torch.tensor([[4.0, 5.0], [10.0, 11.5], [12.0, 3.0]], dtype=torch.float64)
    sd = torch.tensor([[1.2, 2.0], [1.5, 1.0], [0.8, 1.8]], dtype=torch.float64)
    scaler, gen, sde = Scaler(17), torch.Generator().manual_seed(0), VPSDE()
    grid = torch.cartesian_prod(*[torch.arange(17, dtype=torch.float64)] * 2)
    lp = quantised_log_pmf(grid, w, mu, sd, 17)
    entropy = float(-(lp.exp() * lp).sum()) / (2 * math.log(2))
    comp = torch.multinomial(w, n, replacement=True, generator=gen)
    k = (mu[comp] + sd[comp] * torch.randn(n, 2, generator=gen, dtype=torch.float64)).round().clamp(0, 16)
    x, nll = scaler.to_model(k), -quantised_log_pmf(k, w, mu, sd, 17) / (2 * math.log(2))
    model = GaussianMixture(w, scaler.to_model(mu), torch.diag_embed((scaler.slope * sd) ** 2))
    score = model.score_fn(sde)

    def t_at(ratio: float) -> float:  # t_min where σ/s = ratio × the level spacing a
        return float(sde.log_snr_inverse(torch.tensor(-math.log(ratio * scaler.slope), dtype=torch.float64)))

    rows = {"ODE, uniform (RK45, exact div.)": lambda g: bits_per_dim(sde, score, x, scaler, 4, g).bpd}
    for name, deq, t_min in (
        ("ELBO, uniform", "uniform", 1e-5),
        ("ELBO, truncnormal τ=0.25", "truncnormal", 1e-5),
        ("ELBO, discretised σ/s=a/2", "discretised", t_at(0.5)),
        ("ELBO, discretised σ/s=a/4", "discretised", t_at(0.25)),
    ):
        rows[name] = lambda g, d=deq, t=t_min: discrete_elbo(sde, score, x, scaler, d, 4, t, 16, generator=g).bpd
    print(f"\n4. Bits/dim, quantised 2-D mixture on 17 levels, {n} draws: exact entropy {entropy:.4f} bits/dim")
    print(f"{'bound':32s} {'bits/dim':>9s} {'gap to −log₂P(k)/D':>19s} {'SE':>6s} {'calls/sample':>13s}")
    for name, run in rows.items():
        bpd = run(torch.Generator().manual_seed(1))
        gap = bpd - nll
        calls = "4×NFE" if name.startswith("ODE") else "64"
        print(
            f"{name:32s} {float(bpd.mean()):9.4f} {float(gap.mean()):19.4f} "
            f"{float(gap.std()) / math.sqrt(n):6.4f} {calls:>13s}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=16)
    parser.add_argument("--tables", default="1234", help="which tables to print, e.g. 24 (3 needs 1)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    mix = mixture(dim=16, k=10)
    x = mix.sample(args.n, torch.Generator().manual_seed(0))
    nfe = ode_table(VPSDE(), mix, x, 1) if set("13") & set(args.tables) else {}
    if "2" in args.tables:
        variance_table(mix, x, args.repeats)
    if "3" in args.tables:
        cost_table(mix, x, args.repeats, nfe)
    if "4" in args.tables:
        dequantisation_table(1024)


if __name__ == "__main__":
    main()
