"""VDM's schedule invariance with the exact score (Kingma et al. 2021, §5.1): under an objective and a time grid
defined in λ = log(s/σ), two β(t) with the same endpoints (λ_min, λ_max) give the same samples and the same expected
loss; the classical sweep (ε-MSE with t ~ U, a grid in t) moves with β(t). Prints the tables of docs/sweeps.md and
writes its figure.

    OMP_NUM_THREADS=1 python experiments/beta_invariance.py [--n 4000] [--seeds 3] [--out docs/beta_invariance.png]

β(t): the five presets of conf/schedule/ (linear, cosine, polynomial, sigmoid, learned at its initial shape), on both
exact oracles (8-Gaussians, the 16-D mixture), VP SDE.

fixed (β(t)-free): every β(t) cut to the λ-range all five share, [λ_min, λ_max] = [max λ(T), min λ(1e-3)]: the SDE
starts at t_start with λ(t_start) = λ_min (N(0, I) there) and the solver stops at t_end with λ(t_end) = λ_max;
DPM-Solver++ (its defaults at `steps`) on the logSNR grid; the loss is EDM's weighting with λ uniform on the range
(`build_objective(sde, "edm", "uniform")`, σ_d and P_mean from the data).
own ends: the same objective and grid on each β(t)'s own [1e-3, T = 1], whose λ-ends differ (the trained sweep's
setting).
classical: every β(t) on its own [1e-3, T = 1]; DPM-Solver++ on the time-quadratic grid (a grid in t); the loss is
L_simple, the ε-MSE with t ~ U(1e-5, 1) (Ho et al. 2020, eq. 14).

Sample metrics: SW2 to a data draw over the floor (two data draws), and the mode-weight error, mean ± sd over
`--seeds` noise draws x_T (the same x_T for every β(t)); "max |Δx|" is the largest distance of a sample from linear
β's sample of the same x_T. The loss is that of one fixed model, the exact score of the oracle with its component
covariances doubled (a function of x and λ alone), E[loss] ± its MC standard error over `--loss-draws` draws, an
independent draw for each β(t).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sde_diffusion import VPSDE, eight_gaussians, mixture
from sde_diffusion.core.analytic import GaussianMixture
from sde_diffusion.core.metrics import mode_weight_error, sliced_wasserstein
from sde_diffusion.data.scale import edm_p_mean
from sde_diffusion.objectives import build_objective
from sde_diffusion.sampling import SampleSetup, sample

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

T_MIN = 1e-3  # the solvers' end time (the train app's evaluation samplers')
LOSS_T_MIN = 1e-5  # L_simple's (conf/loss/simple.yaml)
SCHEDULES = ("linear", "cosine", "polynomial", "sigmoid", "learned")
CONF = Path(__file__).resolve().parents[1] / "conf" / "schedule"


def schedule(name: str) -> torch.nn.Module:
    """The β(t) preset conf/schedule/<name>.yaml at T = 1."""
    node = OmegaConf.load(CONF / f"{name}.yaml")
    node.T = 1.0
    return instantiate(node)


def common_range(sdes: dict[str, VPSDE], t_min: float) -> tuple[float, float]:
    """[λ_min, λ_max] that every SDE covers on [t_min, T]: (max of λ(T), min of λ(t_min))."""
    ends = [sde.log_snr_range(t_min) for sde in sdes.values()]
    return max(lo for lo, _ in ends), min(hi for _, hi in ends)


def cut(sde: VPSDE, lam_min: float, lam_max: float) -> tuple[VPSDE, float]:
    """The SDE of the same β(t) started at t_start, λ(t_start) = lam_min, and the end time t_end, λ(t_end) = lam_max."""
    t_start, t_end = (float(sde.log_snr_inverse(torch.tensor(v, dtype=torch.float64))) for v in (lam_min, lam_max))
    return VPSDE(sde.schedule, T=t_start), t_end


def sweeps() -> dict[str, dict[str, tuple[VPSDE, float]]]:
    """{"fixed": {β: (SDE cut to the common λ-range, t_end)}, "own ends" and "classical": {β: (SDE on [0, 1],
    T_MIN)}}: "own ends" is the fixed sweep's objective and grid on each β(t)'s own λ-range, as the trained
    experiment=train/beta_sweep runs them."""
    full = {name: VPSDE(schedule(name)) for name in SCHEDULES}
    lam_min, lam_max = common_range(full, T_MIN)
    own = {k: (sde, T_MIN) for k, sde in full.items()}
    return {"fixed": {k: cut(sde, lam_min, lam_max) for k, sde in full.items()}, "own ends": own, "classical": own}


def sample_row(
    oracle: GaussianMixture, sde: VPSDE, t_end: float, spacing: str, steps: int, x_T: list[torch.Tensor]
) -> tuple[dict[str, float], list[torch.Tensor]]:
    """SW2 (over the floor) and mode-weight error of DPM-Solver++ on `spacing` at `steps` from each x_T, mean and
    sd, and the samples."""
    gen = torch.Generator().manual_seed(123)
    refs = [oracle.sample(len(x_T[0]), gen).float() for _ in range(3)]
    floor = (sliced_wasserstein(refs[1], refs[0]) + sliced_wasserstein(refs[2], refs[0])) / 2
    xs = [
        sample(
            sde, oracle.score_fn(sde), x.shape, "dpm_solver", steps, t_end, spacing=spacing, setup=SampleSetup(x_T=x)
        ).x
        for x in x_T
    ]
    sw = torch.tensor([sliced_wasserstein(x, refs[0]) / floor for x in xs])
    mw = torch.tensor([mode_weight_error(oracle, x) for x in xs])
    return {"sw2": float(sw.mean()), "sw2_sd": float(sw.std()), "mw": float(mw.mean()), "mw_sd": float(mw.std())}, xs


def fixed_model(oracle: GaussianMixture) -> GaussianMixture:
    """A wrong model that is a function of x and λ alone: the oracle with its covariances doubled."""
    return GaussianMixture(oracle.weights, oracle.means, 2 * oracle.covs)


def expected_loss(
    oracle: GaussianMixture, sde: VPSDE, t_end: float, sweep: str, draws: int, seed: int = 0
) -> tuple[float, float]:
    """E[loss] ± MC standard error of the fixed model under the sweep's objective (module docstring)."""
    cov = oracle.covariance
    sigma_data = math.sqrt(float(cov.trace()) / cov.shape[0])
    if sweep != "classical":
        objective = build_objective(
            sde, "edm", "uniform", t_min=t_end, sigma_data=sigma_data, p_mean=edm_p_mean(sigma_data)
        )
    else:
        objective = build_objective(sde, "simple", "schedule", t_min=LOSS_T_MIN)
    gen = torch.Generator().manual_seed(seed)
    x0 = oracle.sample(draws, gen).float()
    loss = objective(fixed_model(oracle).score_fn(sde), x0, generator=gen).double()
    return float(loss.mean()), float(loss.std() / math.sqrt(draws))


def table(oracle_name: str, oracle: GaussianMixture, args: argparse.Namespace) -> dict:
    """Every row of one oracle's tables: {(sweep, β, steps): metrics}, printed as markdown."""
    gen = torch.Generator().manual_seed(0)
    x_T = [torch.randn(args.n, oracle.dim, generator=gen) for _ in range(args.seeds)]
    rows = {}
    print(f"\n{oracle_name}: sweep | β(t) | λ range | DPM 10: SW2/floor, mode-w err | DPM 20: same, max |Δx| | E[loss]")
    print("|---|---|---|---|---|---|")
    for sweep, runs in sweeps().items():
        spacing, linear = ("time_quadratic" if sweep == "classical" else "logsnr"), {}
        for name, (sde, t_end) in runs.items():
            cells, lo_hi = [], sde.log_snr_range(t_end)
            for steps in (10, 20):
                row, xs = sample_row(oracle, sde, t_end, spacing, steps, x_T)
                linear.setdefault(steps, xs)
                row["dx"] = max(float((x - y).norm(dim=1).max()) for x, y in zip(xs, linear[steps], strict=True))
                rows[(sweep, name, steps)] = row
                cells.append(f"{row['sw2']:.3f} ± {row['sw2_sd']:.3f}, {row['mw']:.4f} ± {row['mw_sd']:.4f}")
            mean, se = expected_loss(oracle, sde, t_end, sweep, args.loss_draws, seed=SCHEDULES.index(name))
            rows[(sweep, name, "loss")] = (mean, se)
            print(
                f"| {sweep} | {name} | [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}] | {cells[0]} | {cells[1]}, "
                f"{rows[(sweep, name, 20)]['dx']:.1e} | {mean:.5f} ± {se:.5f} |"
            )
    return rows


LABELS = {
    "fixed": "λ-defined loss and grid, equal λ ends",
    "own ends": "the same, each β(t)'s own λ ends",
    "classical": "L_simple, t-grid (classical)",
}


def figure(results: dict[str, dict], path: Path) -> None:
    """Per β(t), each sweep: SW2/floor at 10 steps (top) and E[loss] over linear β's (bottom),
    one column per oracle."""
    fig, axes = plt.subplots(2, len(results), figsize=(5 * len(results), 6.4), squeeze=False)
    x = range(len(SCHEDULES))
    for col, (oracle_name, rows) in enumerate(results.items()):
        for offset, (sweep, label) in zip((-0.2, 0.0, 0.2), LABELS.items(), strict=True):
            sw = [rows[(sweep, k, 10)] for k in SCHEDULES]
            axes[0, col].errorbar(
                [i + offset for i in x],
                [r["sw2"] for r in sw],
                [r["sw2_sd"] for r in sw],
                fmt="o",
                capsize=3,
                label=label,
            )
            ref = rows[(sweep, "linear", "loss")][0]
            loss = [rows[(sweep, k, "loss")] for k in SCHEDULES]
            axes[1, col].errorbar(
                [i + offset for i in x],
                [m / ref for m, _ in loss],
                [se / ref for _, se in loss],
                fmt="o",
                capsize=3,
                label=label,
            )
        axes[0, col].set_title(f"{oracle_name}, exact score")
        axes[0, col].set_ylabel("SW2 / floor, DPM-Solver++ 10 steps")
        axes[1, col].set_ylabel("E[loss] of a fixed model / linear β's")
        for ax in axes[:, col]:
            ax.set_xticks(list(x), SCHEDULES)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="samples per x_T draw")
    parser.add_argument("--seeds", type=int, default=3, help="x_T draws")
    parser.add_argument("--loss-draws", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("beta_invariance.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    oracles = {"8-Gaussians": eight_gaussians(), "16-D mixture": mixture()}
    results = {name: table(name, oracle, args) for name, oracle in oracles.items()}
    figure(results, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
