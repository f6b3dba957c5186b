"""VDM's learned schedule with the exact score of the 16-D mixture: its shape trained to minimise the variance of the
uniform-t ELBO estimator (Kingma et al. 2021, §5.3), then its endpoints on the ELBO; the ELBO depends on the endpoints
only.

    OMP_NUM_THREADS=1 python experiments/learned_schedule.py [--steps 300] [--out docs/learned_schedule.png]

The per-sample loss is VDM's estimator L̂(x) = KL prior + reconstruction + (T − t_min)·w(t)‖ε + σ s(x_t, t)‖² with t
uniform (stratified across the batch, VDM's low-discrepancy sampler) and w = g²/(2σ²). Since E[L̂] does not depend on
the shape of γ(t), only on γ₀ and γ₁, the shape parameters get the gradient of E[L̂²] = Var L̂ + E[L̂]² (2L̂·∂L̂ per
sample) and the endpoints that of E[L̂]. Prints the tables of docs/likelihood.md and writes the figure: γ(t) before
and after, and the estimator's variance over training.
"""

from __future__ import annotations

import argparse
import math

import matplotlib
import torch

from sde_diffusion import VPSDE, CosineBeta, LinearBeta, mixture
from sde_diffusion.core.learned_schedule import LearnedBeta
from sde_diffusion.objectives.elbo import elbo, negative_elbo, prior_kl

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

T_MIN = 1e-5


def uniform_t_loss(sde: VPSDE, score_fn, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """VDM's per-sample L̂(x), t stratified over the batch: t_i = t_min + (T − t_min)·((u₀ + i/n) mod 1)."""
    n = x.shape[0]
    u = (torch.rand((), generator=generator, dtype=x.dtype) + torch.arange(n, dtype=x.dtype) / n) % 1
    t = T_MIN + (sde.T - T_MIN) * u
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    r = noise + sde.sigma(t)[:, None] * score_fn(sde.perturb(x, t, noise), t)
    w = sde.g(t) ** 2 / (2 * sde.sigma(t) ** 2)
    return negative_elbo(sde, x, (sde.T - T_MIN) * w * r.pow(2).sum(1), T_MIN)


def variance(sde: VPSDE, mix, x: torch.Tensor, seed: int) -> tuple[float, float, float]:
    """Var L̂ over (x, t, ε), its mean and the mean's SE, from 8 stratified passes over x (no gradients)."""
    with torch.no_grad():
        losses = torch.cat(
            [uniform_t_loss(sde, mix.score_fn(sde), x, torch.Generator().manual_seed(seed + r)) for r in range(8)]
        )
    return float(losses.var()), float(losses.mean()), float(losses.std() / math.sqrt(losses.numel()))


def train(schedule: LearnedBeta, mix, steps: int, endpoints: bool, history: list) -> None:
    """Adam on the shape (gradient of E[L̂²]) and, with `endpoints`, on γ₀, γ₁ (gradient of E[L̂])."""
    sde = VPSDE(schedule)
    opt = torch.optim.Adam(
        [
            {"params": schedule.shape_parameters(), "lr": 2e-2},
            {"params": schedule.endpoint_parameters(), "lr": 2e-2 if endpoints else 0.0},
        ]
    )
    gen = torch.Generator().manual_seed(1)
    eval_x = mix.sample(512, torch.Generator().manual_seed(2))
    offset = history[-1][0] + 1 if history else 0
    for step in range(steps):
        x = mix.sample(256, gen)
        loss = uniform_t_loss(sde, mix.score_fn(sde), x, gen)
        shape_grads = torch.autograd.grad(loss.pow(2).mean(), schedule.shape_parameters(), retain_graph=True)
        end_grads = torch.autograd.grad(loss.mean(), schedule.endpoint_parameters())
        for p, g in zip(
            [*schedule.shape_parameters(), *schedule.endpoint_parameters()], [*shape_grads, *end_grads], strict=True
        ):
            p.grad = g
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            var, mean, _ = variance(sde, mix, eval_x, 1000 + step)
            history.append((offset + step, var, mean))
            print(
                f"  step {step:4d}  Var L̂ {var:10.1f}  E L̂ {mean:8.3f}  γ0 {float(schedule.gamma_0.detach()):.3f} "
                f"γ1 {float(schedule.gamma_1.detach()):.3f}"
            )


def elbo_at(sde: VPSDE, mix, x: torch.Tensor, lam_hi: float) -> tuple[float, float, float]:
    """Mean −ELBO (importance-sampled, 64 draws, control variate v = 0.1) with t_min at λ(t_min) = lam_hi, and the mean
    gap −ELBO + log p(x) over the same x with its SE."""
    t_min = float(sde.log_snr_inverse(torch.tensor(lam_hi, dtype=torch.float64)))
    res = elbo(
        sde, mix.score_fn(sde), x, t_min=t_min, n_t=64, generator=torch.Generator().manual_seed(3), control_variate=0.1
    )
    gap = res.nll + mix.log_prob(x)
    return float(res.nll.mean()), float(gap.mean()), float(gap.std() / math.sqrt(x.shape[0]))


def invariance_table(mix, schedules: dict) -> None:
    """−ELBO of schedules sharing λ(t_min) (t_min chosen per schedule), and their λ(T) and prior terms."""
    x = mix.sample(2048, torch.Generator().manual_seed(4))
    lam_hi = float(VPSDE().log_snr(torch.tensor(T_MIN, dtype=torch.float64)))
    print(
        f"\n−ELBO with the exact score at λ(t_min) = {lam_hi:.3f} (2 048 points, 64 draws each); E[−log p] = "
        f"{float(-mix.log_prob(x).mean()):.3f}"
    )
    print(f"{'schedule':26s} {'λ(T)':>8s} {'prior KL':>9s} {'−ELBO':>9s} {'−ELBO + log p':>14s} {'SE':>6s}")
    for name, sch in schedules.items():
        sde = VPSDE(sch)
        with torch.no_grad():
            lam_T = float(sde.log_snr(torch.tensor(sde.T, dtype=torch.float64)))
            kl = float(prior_kl(sde, x).mean())
            nll, gap, se = elbo_at(sde, mix, x, lam_hi)
        print(f"{name:26s} {lam_T:8.3f} {kl:9.4f} {nll:9.3f} {gap:14.3f} {se:6.3f}")


def figure(before: LearnedBeta, after: LearnedBeta, history: list, linear_var: float, path: str) -> None:
    t = torch.linspace(1e-4, 1, 400, dtype=torch.float64)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    with torch.no_grad():
        for name, sch in (("linear β", LinearBeta()), ("learned, init", before), ("learned, trained", after)):
            a.plot(t, -2 * VPSDE(sch).log_snr(t), label=name)
    a.set(xlabel="t", ylabel="−log SNR = −2λ(t)", title="schedule")
    a.legend()
    steps, var = [h[0] for h in history], [h[1] for h in history]
    b.semilogy(steps, var, label="learned (uniform t)")
    b.axhline(linear_var, color="k", ls="--", label="linear β (uniform t)")
    b.set(xlabel="step", ylabel="Var L̂", title="ELBO estimator variance")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--endpoint-steps", type=int, default=100)
    parser.add_argument("--out", default="docs/learned_schedule.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    mix = mixture(dim=16, k=10)
    eval_x = mix.sample(512, torch.Generator().manual_seed(2))
    lam = VPSDE().log_snr(torch.tensor([T_MIN, 1.0], dtype=torch.float64))  # linear β's λ(t_min), λ(T)
    rho = torch.tensor([T_MIN, 1.0], dtype=torch.float64) / (torch.tensor([T_MIN, 1.0], dtype=torch.float64) + 1e-7)
    g = (-2 * lam - rho.log()).tolist()  # γ(t_min) ≈ γ₀ (γ̃(t_min) ≈ 0), γ(T) = γ₁
    ends = {"gamma_0": g[0], "gamma_1": g[1]}
    learned, init = LearnedBeta(**ends, trainable=True), LearnedBeta(**ends)
    with torch.no_grad():
        lin_var, lin_mean, lin_se = variance(VPSDE(), mix, eval_x, 0)
        var0, mean0, se0 = variance(VPSDE(init), mix, eval_x, 0)
    print(f"linear β: Var L̂ {lin_var:.1f}, E L̂ {lin_mean:.3f} ± {lin_se:.3f}; learned at init: {var0:.1f}")
    print("shape only (endpoints fixed at linear β's):")
    history: list = []
    train(learned, mix, args.steps, endpoints=False, history=history)
    with torch.no_grad():
        var1, mean1, se1 = variance(VPSDE(learned), mix, eval_x, 0)
    print(f"\n{'schedule':22s} {'Var L̂':>10s} {'vs linear':>10s} {'E L̂ (uniform t)':>16s} {'SE':>6s}")
    for name, v, m, s in (
        ("linear β", lin_var, lin_mean, lin_se),
        ("learned, init", var0, mean0, se0),
        ("learned, shape trained", var1, mean1, se1),
    ):
        print(f"{name:22s} {v:10.1f} {lin_var / v:10.1f} {m:16.3f} {s:6.3f}")
    shaped = LearnedBeta(**ends)
    shaped.load_state_dict(learned.state_dict())
    print("\nthen the endpoints too (on the ELBO):")
    train(learned, mix, args.endpoint_steps, endpoints=True, history=history)
    invariance_table(
        mix,
        {
            "linear β": LinearBeta(),
            "cosine β": CosineBeta(),
            "learned, init": init,
            "learned, shape trained": shaped,
            "learned, endpoints trained": learned,
        },
    )
    figure(init, learned, history, lin_var, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
