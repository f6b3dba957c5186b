"""Time grids tuned per NFE budget for a deterministic sampler, on the exact oracle or a trained run (LD3).

    python experiments/tune_timesteps.py                              # 8-Gaussians, exact score, 3M, 5/10/20 NFE
    python experiments/tune_timesteps.py data=mixture sampler.options.order=2 budgets=[10,20]
    python experiments/tune_timesteps.py checkpoint=outputs/train/<date>/checkpoints/last.pt

For each budget, `sampling.optimize_timesteps` tunes the grid of the largest `steps` whose NFE (+1 Tweedie step)
fits, with the sampler's other options (conf/sampler/), on `n_train` noise paths, against the exact flow map of the
oracle or, for a checkpoint, RK45 at rtol = atol = 1e-7; every built-in spacing (the sampler config's own is the
"default") and the tuned grid are then scored on `n_held_out` other paths (flow error: RMS distance to the
reference). Writes into its own run dir only: timesteps.json (the grids by NFE, the sampler, t_min and the checkpoint
they were tuned for: sample.py and compare_samplers.py find it with timesteps=tuned, or take its path), grids.png
(each tuned grid in λ beside the uniform-λ `logsnr` grid), metrics.json (flow errors before and after) and an offline
wandb run; a progress bar per budget counts score calls. Returns the tuned grid's held-out flow error at the first
budget, for Hydra sweepers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import matplotlib
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from sde_diffusion.apps import (
    build_sde,
    config_error,
    config_errors,
    hydra_app,
    instantiate_node,
    load_score,
    output_dir,
    require_choice,
    require_number,
    require_run,
    require_values,
    start_tracker,
)
from sde_diffusion.apps.tuned import tuned_record
from sde_diffusion.core.analytic import exact_flow_map
from sde_diffusion.core.sde import SDE, ScoreFn
from sde_diffusion.evaluation.plots import describe
from sde_diffusion.infra.runtime import resolve_device
from sde_diffusion.infra.tracking import Tracker
from sde_diffusion.sampling import SAMPLERS, check_sampler, optimize_timesteps
from sde_diffusion.sampling.optimize import BUILT_IN, rk45_reference, tunable
from sde_diffusion.sampling.specs import GRID
from sde_diffusion.sampling.timesteps import timesteps

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger("tune_timesteps")


def check(cfg: DictConfig) -> None:
    """The keys only this app reads: every bad value is a ConfigError naming the key."""
    require_values(cfg)
    require_run(cfg, "checkpoint")
    require_choice(cfg, "sampler.name", tunable())
    for key in ("n_train", "n_held_out", "iters"):
        require_number(cfg, key, integer=True, ge=1)
    require_number(cfg, "seed", integer=True, ge=0)
    require_number(cfg, "lr", gt=0)
    require_choice(cfg, "progress", (True, False))
    if not OmegaConf.is_list(cfg.budgets) or not cfg.budgets:
        raise config_error("budgets", cfg.budgets, "a non-empty list of NFE budgets, e.g. [5, 10, 20]")
    for i in range(len(cfg.budgets)):
        require_number(cfg, f"budgets.{i}", integer=True, ge=2)


def steps_for(cfg: DictConfig, sde: SDE, budget: int) -> int:
    """The largest `steps` whose NFE + 1 (the Tweedie step) fits `budget`, checked with the sampler's options
    against its spec (a bad value names its key)."""
    spec, options = SAMPLERS[cfg.sampler.name], OmegaConf.to_container(cfg.sampler.options)
    with config_errors("sampler"):
        check_sampler(
            spec.name, steps=spec.min_steps, t_min=cfg.sampler.t_min, options=options, sde_type=type(sde), T=sde.T
        )
    fits = [n for n in range(spec.min_steps, budget) if spec.nfe(n, spec.defaults() | options) + 1 <= budget]
    if not fits:
        raise config_error("budgets", budget, f"too small for {cfg.sampler.name} with options {options}")
    return fits[-1]


def plot_grids(sde: SDE, grids: dict[int, list[float]], t_min: float, title: str, path: Path) -> None:
    """One row of ticks in λ per budget: the tuned grid, and the uniform-λ `logsnr` grid of as many steps below it."""
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.7 * len(grids)))
    labels = []
    for row, (nfe, grid) in enumerate(grids.items()):
        builtin = timesteps(sde, len(grid) - 1, t_min, "logsnr")
        for k, (t, color) in enumerate(((torch.tensor(grid, dtype=torch.float64), "C0"), (builtin, "0.6"))):
            lam = sde.log_snr(t).tolist()
            ax.plot(lam, [2 * row + k] * len(lam), "|", color=color, ms=14, mew=2)
        labels += [f"{nfe} NFE tuned", f"{nfe} NFE logsnr"]
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set(xlabel="λ = log(s/σ)   (noise at the left, data at the right)", title=title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


class Progress:
    """score_fn with a progress bar of its calls (one bar per budget: about `iters` + 2·(built-in spacings + 1)
    passes of `nfe` calls each)."""

    def __init__(self, score_fn: ScoreFn, total: int, desc: str, enabled: bool):
        self.score_fn, self.bar = score_fn, tqdm(total=total, desc=desc, unit="call", disable=not enabled)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.bar.update()
        return self.score_fn(x, t)


def problem(cfg: DictConfig, device: torch.device) -> tuple[ScoreFn, SDE, object, Callable, str]:
    """(score_fn, sde, data, reference flow map, source): the oracle's exact score and flow map, or the checkpoint's
    frozen model and RK45 at rtol = atol = 1e-7."""
    t_min = cfg.sampler.t_min
    if cfg.checkpoint is None:
        sde, data = build_sde(cfg), instantiate_node(cfg, "data")
        if data.oracle is None:
            raise config_error("data", cfg.data._target_, "without a checkpoint, a data set with an exact oracle")
        return (
            data.oracle.score_fn(sde),
            sde,
            data,
            partial(exact_flow_map, sde, data.oracle, t_min=t_min, denoise=True),
            "oracle",
        )
    score_fn, sde, data = load_score(cfg.checkpoint, device)  # frozen: only the grid is differentiated
    return score_fn, sde, data, rk45_reference(sde, score_fn, t_min), str(cfg.checkpoint)


def tune(
    cfg: DictConfig, sde: SDE, score_fn: ScoreFn, noise: dict, targets: dict, steps: dict, tracker: Tracker
) -> tuple[dict, dict]:
    """A grid per budget (sampling.optimize_timesteps on noise["train"], scored on noise["held_out"]; `targets`:
    {id(noise): its reference}): ({budget: grid}, {budget: flow errors before and after}), each logged as it ends."""
    name, options = cfg.sampler.name, tuned_options(cfg)
    grids, results = {}, {}
    for budget, n in steps.items():
        default = default_spacing(cfg, n)
        passes = cfg.iters + 2 * (len(BUILT_IN) + 1)
        counted = Progress(score_fn, passes * budget, f"{budget} NFE", cfg.progress)
        r = optimize_timesteps(
            sde,
            counted,
            name,
            n,
            noise["train"],
            lambda z: targets[id(z)],
            t_min=cfg.sampler.t_min,
            options=options,
            iters=cfg.iters,
            lr=cfg.lr,
            held_out=noise["held_out"],
        )
        counted.bar.close()
        grids[budget] = r.timesteps
        built_in = {k: v for k, v in r.held_out.items() if k != "tuned"}
        best = min(built_in, key=built_in.get)
        results[str(budget)] = {
            "steps": n,
            "init": r.init,
            "default_spacing": default,
            "best_built_in": best,
            "held_out": r.held_out,
            "train": r.train,
            "final_loss": r.losses[-1],
        }
        log.info(
            "%d NFE: held-out flow error default (%s) %.4g, best built-in (%s) %.4g, tuned %.4g",
            budget,
            default,
            r.held_out[default],
            best,
            built_in[best],
            r.held_out["tuned"],
        )
        tracker.log(
            {
                "tune/nfe": budget,
                "tune/default": r.held_out[default],
                "tune/best_built_in": built_in[best],
                "tune/tuned": r.held_out["tuned"],
            }
        )
    return grids, results


def tuned_options(cfg: DictConfig) -> dict:
    """The sampler's options without the grid's (spacing, rho, timesteps: what is tuned)."""
    return {k: v for k, v in OmegaConf.to_container(cfg.sampler.options).items() if k not in GRID}


def default_spacing(cfg: DictConfig, steps: int) -> str:
    """The "default" grid the tuned one is compared with: the sampler config's spacing, else the sampler's own at
    `steps` (its defaults depend on the budget)."""
    given = cfg.sampler.options.get("spacing")
    return given if given in BUILT_IN else SAMPLERS[cfg.sampler.name].defaults(steps)["spacing"]


@hydra_app("tune_timesteps")
def main(cfg: DictConfig) -> float:
    """The app: check, load the score and its reference, tune a grid per budget, write and log."""
    check(cfg)
    out = output_dir()
    with config_errors():
        device = resolve_device(cfg.device)
    score_fn, sde, data, reference, source = problem(cfg, device)
    steps = {budget: steps_for(cfg, sde, budget) for budget in cfg.budgets}
    shape, name, t_min = tuple(data.shape), cfg.sampler.name, cfg.sampler.t_min
    noise = {
        k: sde.prior_sampling((n, *shape), torch.Generator().manual_seed(cfg.seed + i), torch.float64).to(device)
        for i, (k, n) in enumerate((("train", cfg.n_train), ("held_out", cfg.n_held_out)))
    }
    with start_tracker(cfg, out, job_type="tune_timesteps") as tracker:
        log.info("references of %d + %d noise paths (%s)", cfg.n_train, cfg.n_held_out, source)
        targets = {id(z): reference(z) for z in noise.values()}  # each solved once
        grids, results = tune(cfg, sde, score_fn, noise, targets, steps, tracker)
        saved = {
            "sampler": name,
            "options": tuned_options(cfg),
            "t_min": t_min,
            "sde": repr(sde),
            "source": source,
            "checkpoint": tuned_record(cfg.checkpoint),
        } | {"grids": {str(b): g for b, g in grids.items()}}
        (out / "timesteps.json").write_text(json.dumps(saved, indent=2))
        plot_grids(
            sde, grids, t_min, describe(type(data).__name__, sde, f"{name} {saved['options']}"), out / "grids.png"
        )
        first = results[str(cfg.budgets[0])]["held_out"]["tuned"]
        metrics = {k: saved[k] for k in ("source", "sde", "sampler", "options", "t_min")}
        metrics |= {
            "n_train": cfg.n_train,
            "n_held_out": cfg.n_held_out,
            "budgets": results,
            "main_metric": {"name": f"flow_error_tuned_{cfg.budgets[0]}", "value": first},
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("wrote %s", ", ".join(str(out / f) for f in ("timesteps.json", "grids.png", "metrics.json")))
        tracker.log_table(
            "grids", [{"nfe": b, "steps": steps[b], "timesteps": json.dumps(g)} for b, g in grids.items()]
        )
        tracker.log_images({"grids": out / "grids.png"})
        tracker.summary(
            {f"nfe{b}/{k}": v for b, m in results.items() for k, v in m["held_out"].items()} | {"main_metric": first}
        )
        return float(first)


if __name__ == "__main__":
    main()
