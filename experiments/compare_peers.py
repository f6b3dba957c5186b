"""This project's samplers beside k-diffusion's and diffusers' on the same exact score (VP, linear β(t)).

    pip install --no-deps k-diffusion torchdiffeq && pip install diffusers     # the peers; not project dependencies
    OMP_NUM_THREADS=1 python experiments/compare_peers.py --mode sde         # energy distance at ≤ 10/20/50 NFE
    OMP_NUM_THREADS=1 python experiments/compare_peers.py --mode ode         # flow error at 5/10/20 NFE
    OMP_NUM_THREADS=1 python experiments/compare_peers.py --mode ode --tuned # + dpm_solver on a tuned grid

Every sampler sees the same exact Gaussian-mixture score: this project's through `score_fn`, k-diffusion's through
`interop.as_denoiser` in σ̃ = σ/s space, diffusers' schedulers through ε̂ = −σ(t)∇log p_t at the continuous time t
whose ᾱ(t) is the scheduler's ᾱ_k (DDPM's 1000-step linear chain is this SDE's discretisation). NFE counts every
score call, the final denoising step included. `sde` mode: each sampler and option setting runs at the largest
step count within each budget; the table keeps each sampler's best setting by energy distance to a fresh data
set (floor: two data sets, mean ± sd over 5 draws) and reports its mode-weight error. `ode` mode: flow error =
RMS distance to the exact probability-flow map of the same noise (with Tweedie's step at the end time, which is
what every peer's last step to σ = 0 computes); with --tuned also dpm_solver (2M and 3M, the better on the training
noise) on a grid from `optimize_timesteps` tuned on other noise of the same size. k-diffusion's `sampling.py` is
loaded alone: its package `__init__` imports torchvision, which does not load beside the CPU build of torch. Writes
outputs/peers/<mode>.md.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import inspect
import math
import sys
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from sde_diffusion import VPSDE, eight_gaussians, mixture
from sde_diffusion.core.analytic import GaussianMixture, exact_flow_map
from sde_diffusion.core.metrics import energy_distance, flow_error, mode_weight_error
from sde_diffusion.models.interop import as_denoiser
from sde_diffusion.sampling import SAMPLERS, SampleSetup, optimize_timesteps, sample
from sde_diffusion.sampling.ancestral import chain_times
from sde_diffusion.sampling.optimize import BUILT_IN

EPS = 1e-3
# (label, sampler, options): the settings tried at every budget; unregistered names are skipped.
PROJECT_SDE = [
    ("euler_maruyama", "euler_maruyama", {}),
    ("euler_maruyama logsnr", "euler_maruyama", {"spacing": "logsnr"}),
    ("pc", "pc", {}),
    ("ancestral", "ancestral", {}),
    ("ddim η=1 logsnr", "ddim", {"eta": 1.0, "spacing": "logsnr"}),
    ("ddim η=1 karras", "ddim", {"eta": 1.0, "spacing": "karras"}),
    ("ddim η=0.5 logsnr", "ddim", {"eta": 0.5, "spacing": "logsnr"}),
    ("sde_dpm_solver (defaults: 3M η=0.5 time_quadratic)", "sde_dpm_solver", {}),
    ("sde_dpm_solver 3M η=1 logsnr", "sde_dpm_solver", {"eta": 1.0, "spacing": "logsnr"}),
    ("sde_dpm_solver 2M", "sde_dpm_solver", {"order": 2, "method": "multistep"}),
    ("sde_dpm_solver 3M", "sde_dpm_solver", {"order": 3, "method": "multistep"}),
    ("sde_dpm_solver 2S", "sde_dpm_solver", {"order": 2, "method": "singlestep"}),
    ("sde_dpm_solver 2M karras", "sde_dpm_solver", {"order": 2, "method": "multistep", "spacing": "karras"}),
    ("sde_dpm_solver 3M karras", "sde_dpm_solver", {"order": 3, "method": "multistep", "spacing": "karras"}),
    ("edm (churn 2)", "edm", {}),
    ("edm churn 0.5", "edm", {"s_churn": 0.5}),
    ("sa_solver", "sa_solver", {}),
    ("adaptive_sde", "adaptive_sde", {}),
]
PROJECT_ODE = [
    ("dpm_solver (defaults)", "dpm_solver", {}),
    *[(f"dpm_solver {s}", "dpm_solver", {"spacing": s}) for s in ("time_uniform", "time_quadratic", "karras")],
    *[(f"dpm_solver 2M {s}", "dpm_solver", {"order": 2, "spacing": s}) for s in BUILT_IN],
]


def oracles() -> dict[str, GaussianMixture]:
    return {"8-Gaussians": eight_gaussians(), "16-D mixture": mixture(dim=16, k=10)}


def load_k_diffusion() -> types.ModuleType:
    """k_diffusion/sampling.py alone, with the one helper it takes from k_diffusion.utils (append_dims)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        sys.exit("k-diffusion is not installed: pip install --no-deps k-diffusion torchdiffeq")
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    package = types.ModuleType("k_diffusion")
    package.__path__, package.utils = list(spec.submodule_search_locations), utils
    sys.modules.update({"k_diffusion": package, "k_diffusion.utils": utils})
    path = Path(spec.submodule_search_locations[0]) / "sampling.py"
    module_spec = importlib.util.spec_from_file_location("k_diffusion.sampling", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


class Counted:
    """A function with a call counter."""

    def __init__(self, fn: Callable[..., Tensor]):
        self.fn, self.calls = fn, 0

    def __call__(self, *args: Tensor, **kwargs: object) -> Tensor:
        self.calls += 1
        return self.fn(*args, **kwargs)


def sigma_range(sde: VPSDE) -> tuple[float, float]:
    """k-diffusion's sigma_min, sigma_max: σ̃ = σ/s at eps and at T."""
    lam = sde.log_snr(torch.tensor([EPS, sde.T], dtype=torch.float64))
    return float(torch.exp(-lam[0])), float(torch.exp(-lam[1]))


def k_diffusion_runs(K: types.ModuleType, mode: str) -> list[tuple[str, Callable, dict]]:
    """(label, sampler function, kwargs incl. the σ schedule name) for the peers of `mode`."""
    runs = []
    schedules = ("karras", "exponential")
    if mode == "sde":
        for name in ("euler_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_sde"):
            for eta in (1.0, 0.5):
                for sched in schedules:
                    runs.append((f"k-diffusion {name} η={eta} {sched}", getattr(K, f"sample_{name}"), {"eta": eta,
                                 "schedule": sched}))  # fmt: skip
    else:
        for name in ("dpmpp_2m", "heun", "lms"):
            for sched in schedules:
                runs.append((f"k-diffusion {name} {sched}", getattr(K, f"sample_{name}"), {"schedule": sched}))
        for sched in schedules:
            runs.append(
                (f"k-diffusion dpmpp_3m_sde η=0 {sched}", K.sample_dpmpp_3m_sde, {"eta": 0.0, "schedule": sched})
            )
    return runs


def run_k_diffusion(K, fn, kwargs: dict, sde: VPSDE, score, x_T: Tensor, budget: int, seed: int) -> tuple[Tensor, int]:
    """The largest step count whose NFE fits the budget; x̃_T = x_T/s(T), output x̃ at σ = 0 = x₀ space."""
    kwargs = dict(kwargs)
    schedule = kwargs.pop("schedule")
    s_min, s_max = sigma_range(sde)
    s_T = float(sde.scale(torch.tensor([sde.T], dtype=torch.float64)))
    n = budget
    while n > 0:  # the largest step count whose NFE fits: from a run's calls per step, then down one at a time
        denoiser = Counted(as_denoiser(score, sde))
        torch.manual_seed(seed)  # k-diffusion's noise comes from the global generator
        with torch.no_grad():
            x = fn(denoiser, x_T / s_T, getattr(K, f"get_sigmas_{schedule}")(n, s_min, s_max), disable=True, **kwargs)
        if denoiser.calls <= budget:
            return x, denoiser.calls
        n = min(n - 1, n * budget // denoiser.calls)
    return None


def run_diffusers(name: str, options: dict, sde: VPSDE, score, x_T: Tensor, budget: int, seed: int):
    """A diffusers scheduler (DDPM's linear 1000-step chain = this SDE) stepped with the exact ε̂."""
    import diffusers

    cls = getattr(diffusers, name)
    chain = sde.discretize(1000)
    t_of_k = chain_times(sde, chain)
    scheduler = cls(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, **options)
    scheduler.set_timesteps(budget)
    g = torch.Generator().manual_seed(seed)
    calls, x = 0, x_T.clone()
    with torch.no_grad():
        for k in scheduler.timesteps:
            t = t_of_k[int(k)].to(x.dtype).expand(x.shape[0])
            eps_hat = -sde.sigma(t)[:, None].to(x.dtype) * score(x, t)
            calls += 1
            noise = {"generator": g} if "generator" in inspect.signature(scheduler.step).parameters else {}
            x = scheduler.step(eps_hat, k, x, **noise).prev_sample
    return x, calls, float(t_of_k[int(scheduler.timesteps[0])])


def project_run(sampler: str, options: dict, sde: VPSDE, score, x_T: Tensor, budget: int, seed: int):
    """The largest `steps` whose NFE (+1 Tweedie step) fits the budget."""
    spec = SAMPLERS[sampler]
    full, t_min = spec.defaults() | options, EPS if spec.takes_t_min else None
    if not spec.takes_steps:  # adaptive: its own tolerance decides
        r = sample(
            sde,
            score,
            tuple(x_T.shape),
            sampler,
            None,
            t_min,
            setup=SampleSetup(x_T=x_T, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)),
            **options,
        )
        return (r.x, r.nfe) if r.nfe <= budget else None
    fits = [n for n in range(spec.min_steps, budget + 1) if spec.nfe(n, full) + 1 <= budget]
    if not fits:
        return None
    try:
        r = sample(
            sde,
            score,
            tuple(x_T.shape),
            sampler,
            max(fits),
            t_min,
            setup=SampleSetup(x_T=x_T, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)),
            **options,
        )
    except ValueError:  # e.g. a DDPM chain too short for this β(t)
        return None
    return r.x, r.nfe


def sde_table(n: int, budgets: list[int], seed: int) -> str:
    K = load_k_diffusion()
    sde = VPSDE()
    lines = []
    for data, oracle in oracles().items():
        score = oracle.score_fn(sde)
        ref = oracle.sample(n, torch.Generator().manual_seed(seed + 500))
        draws = [oracle.sample(n, torch.Generator().manual_seed(seed + 1000 + k)) for k in range(5)]
        floor = torch.tensor([energy_distance(y, ref) for y in draws])
        x_T = torch.randn(n, oracle.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        lines += [
            f"\n### {data} (n = {n}; floor: energy distance {floor.mean():.2e} ± {floor.std():.1e})\n",
            "| budget | who | best setting | NFE | energy distance | mode error |",
            "|---|---|---|---|---|---|",
        ]
        for budget in budgets:
            runs = [("sde-diffusion", label, project_run(name, options, sde, score, x_T, budget, seed + 1))
                    for label, name, options in PROJECT_SDE if name in SAMPLERS]  # fmt: skip
            runs += [(label.split(" η")[0], label, run_k_diffusion(K, fn, kw, sde, score, x_T, budget, seed + 1))
                     for label, fn, kw in k_diffusion_runs(K, "sde")]  # fmt: skip
            for label, (name, options) in {
                "diffusers DDPM": ("DDPMScheduler", {"clip_sample": False}),  # its default clips x̂₀ to [−1, 1]
                "diffusers DDPM trailing": ("DDPMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"}),
                "diffusers SDE-DPM-Solver++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
            }.items():
                runs.append((label.removesuffix(" trailing"), label, run_diffusers(name, options, sde, score, x_T,
                             budget, seed + 1)[:2]))  # fmt: skip
            best: dict[str, tuple] = {}
            for who, label, out in runs:
                if out is None:
                    continue
                ed = energy_distance(out[0], ref)
                print(f"  {data} ≤{budget} {label}: NFE {out[1]}, energy distance {ed:.3e}", flush=True)
                if math.isfinite(ed) and (who not in best or ed < best[who][2]):
                    best[who] = (label, out[1], ed, mode_weight_error(oracle, out[0]))
            for who, (label, nfe, ed, me) in sorted(best.items(), key=lambda kv: kv[1][2]):
                lines.append(f"| ≤ {budget} | {who} | {label} | {nfe} | {ed:.2e} | {me:.3f} |")
    return "\n".join(lines) + "\n"


def ode_table(n: int, budgets: list[int], seed: int, tuned: bool = False) -> str:
    K = load_k_diffusion()
    sde = VPSDE()
    lines = []
    for data, oracle in oracles().items():
        score = oracle.score_fn(sde)
        x_T = torch.randn(n, oracle.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        exact = exact_flow_map(sde, oracle, x_T, EPS, denoise=True)
        x_train = torch.randn(n, oracle.dim, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
        reference = functools.partial(exact_flow_map, sde, oracle, t_min=EPS, denoise=True)
        lines += [f"\n### {data} (n = {n}; flow error to the exact PF-ODE map of the same noise)\n",
                  "| NFE ≤ | who | setting | NFE | flow error |", "|---|---|---|---|---|"]  # fmt: skip
        for budget in budgets:
            rows = []
            for label, name, options in PROJECT_ODE:
                out = project_run(name, options, sde, score, x_T, budget, seed)
                if out is not None:
                    rows.append(("sde-diffusion", label, out[1], flow_error(out[0], exact)))
            if tuned:  # steps = budget − 1: the Tweedie step is the last NFE
                fits = {o: optimize_timesteps(sde, score, "dpm_solver", budget - 1, x_train, reference, t_min=EPS,
                                              options={"order": o}) for o in (2, 3)}  # fmt: skip
                order = min(fits, key=lambda o: fits[o].train["tuned"])
                out = project_run("dpm_solver", {"order": order, "spacing": "custom",
                                  "timesteps": fits[order].timesteps}, sde, score, x_T, budget, seed)  # fmt: skip
                rows.append(("sde-diffusion tuned", f"dpm_solver {order}M tuned", out[1], flow_error(out[0], exact)))
            for label, fn, kwargs in k_diffusion_runs(K, "ode"):
                out = run_k_diffusion(K, fn, kwargs, sde, score, x_T, budget, seed)
                if out is not None:
                    rows.append(("k-diffusion", label.removeprefix("k-diffusion "), out[1], flow_error(out[0], exact)))
            for label, (name, options) in {
                "UniPC": ("UniPCMultistepScheduler", {"timestep_spacing": "trailing"}),
                "DPM-Solver++ 2M": ("DPMSolverMultistepScheduler", {"timestep_spacing": "trailing"}),
                "DPM-Solver++ 3M": ("DPMSolverMultistepScheduler", {"timestep_spacing": "trailing", "solver_order": 3}),
            }.items():
                x, calls, t_start = run_diffusers(name, options, sde, score, x_T, budget, seed)
                ref = exact_flow_map(sde, oracle, x_T, EPS, denoise=True, T=t_start)
                rows.append(("diffusers", label, calls, flow_error(x, ref)))
            best = {}
            for who, label, nfe, err in rows:
                print(f"  {data} ≤{budget} {who} {label}: NFE {nfe}, flow error {err:.3e}", flush=True)
                if who not in best or err < best[who][2]:
                    best[who] = (label, nfe, err)
            default = next(r for r in rows if r[1] == "dpm_solver (defaults)")
            lines.append(f"| {budget} | sde-diffusion default | {default[1]} | {default[2]} | {default[3]:.2e} |")
            for who, (label, nfe, err) in sorted(best.items(), key=lambda kv: kv[1][2]):
                lines.append(f"| {budget} | {who} best | {label} | {nfe} | {err:.2e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("sde", "ode"), default="sde")
    parser.add_argument("--n", type=int, default=None, help="samples (default 4000 for sde, 1000 for ode)")
    parser.add_argument("--budgets", type=int, nargs="+", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tuned", action="store_true", help="ode: also dpm_solver on a tuned grid")
    args = parser.parse_args()
    if args.mode == "sde":
        table = sde_table(args.n or 4000, args.budgets or [10, 20, 50], args.seed)
    else:
        table = ode_table(args.n or 1000, args.budgets or [5, 10, 20], args.seed, args.tuned)
    out = Path("outputs/peers") / f"{args.mode}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
