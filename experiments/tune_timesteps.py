"""Time grids tuned per NFE budget for a deterministic sampler, on the exact oracle or a trained run (LD3).

    python experiments/tune_timesteps.py                              # 8-Gaussians, exact score, 3M, 5/10/20 NFE
    python experiments/tune_timesteps.py data=mixture sampler.options.order=2 budgets=[10,20]
    python experiments/tune_timesteps.py checkpoint=outputs/train/<date>/checkpoints/last.pt

For each budget, `sampling.optimize_timesteps` tunes the grid of the largest `steps` whose NFE (+1 Tweedie step)
fits, with the sampler's other options (conf/sampler/), on `n_train` noise paths, against the exact flow map of the
oracle or, for a checkpoint, RK45 at rtol = atol = 1e-7; every built-in spacing (the sampler config's own is the
"default") and the tuned grid are then scored on `n_held_out` other paths (flow error: RMS distance to the
reference). Writes timesteps.json (the grids by NFE; for a checkpoint also next to it, or into its export folder, as
timesteps_<sampler>.json, which sample.py and compare_samplers.py read with timesteps=tuned),
grids.png (each tuned grid in λ beside the uniform-λ `logsnr` grid), metrics.json (flow errors before and after) and
an offline wandb run. Returns the tuned grid's held-out flow error at the first budget, for Hydra sweepers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import matplotlib
import torch
from omegaconf import DictConfig, OmegaConf

from sde_diffusion.analytic import exact_flow_map
from sde_diffusion.apps import (
    argument_error,
    build_sde,
    config_error,
    instantiate_node,
    load_score,
    output_dir,
    require_choice,
    require_number,
    require_run,
    require_values,
    start_tracker,
)
from sde_diffusion.apps.tuned import tuned_path
from sde_diffusion.checks import ArgumentError
from sde_diffusion.plots import describe
from sde_diffusion.runtime import resolve_device
from sde_diffusion.sampling import SAMPLERS, SamplerArgError, check_sampler, optimize_timesteps
from sde_diffusion.sampling.optimize import BUILT_IN, rk45_reference, tunable
from sde_diffusion.sampling.specs import GRID
from sde_diffusion.sampling.timesteps import timesteps
from sde_diffusion.sde import SDE

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
    if not OmegaConf.is_list(cfg.budgets) or not cfg.budgets:
        raise config_error("budgets", cfg.budgets, "a non-empty list of NFE budgets, e.g. [5, 10, 20]")
    for i in range(len(cfg.budgets)):
        require_number(cfg, f"budgets.{i}", integer=True, ge=2)


def steps_for(cfg: DictConfig, sde: SDE, budget: int) -> int:
    """The largest `steps` whose NFE + 1 (the Tweedie step) fits `budget`, checked with the sampler's options
    against its spec (a bad value names its key)."""
    spec, options = SAMPLERS[cfg.sampler.name], OmegaConf.to_container(cfg.sampler.options)
    fits = [n for n in range(spec.min_steps, budget) if spec.nfe(n, spec.defaults() | options) + 1 <= budget]
    if not fits:
        raise config_error("budgets", budget, f"too small for {cfg.sampler.name} with options {options}")
    try:
        check_sampler(spec.name, steps=fits[-1], t_min=cfg.sampler.t_min, options=options, sde_type=type(sde), T=sde.T)
    except SamplerArgError as err:
        key = {"steps": "budgets"}.get(err.key, f"sampler.{err.key}")
        raise config_error(key, err.value, err.allowed) from None
    return fits[-1]


def plot_grids(sde: SDE, grids: dict[int, list[float]], eps: float, title: str, path: Path) -> None:
    """One row of ticks in λ per budget: the tuned grid, and the uniform-λ `logsnr` grid of as many steps below it."""
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.7 * len(grids)))
    labels = []
    for row, (nfe, grid) in enumerate(grids.items()):
        builtin = timesteps(sde, len(grid) - 1, eps, "logsnr")
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="tune_timesteps")
def main(cfg: DictConfig) -> float:
    """The app: check, load the score and its reference, tune a grid per budget, write and log."""
    check(cfg)
    out = output_dir()
    name, eps, given = cfg.sampler.name, cfg.sampler.t_min, OmegaConf.to_container(cfg.sampler.options)
    options = {k: v for k, v in given.items() if k not in GRID}  # the grid is what is tuned
    try:
        device = resolve_device(cfg.device)
    except ArgumentError as err:
        raise argument_error("", err) from None
    if cfg.checkpoint is None:
        sde, data = build_sde(cfg), instantiate_node(cfg, "data")
        if data.oracle is None:
            raise config_error("data", cfg.data._target_, "without a checkpoint, a data set with an exact oracle")
        score_fn, source = data.oracle.score_fn(sde), "oracle"

        def reference(x: torch.Tensor) -> torch.Tensor:
            return exact_flow_map(sde, data.oracle, x, eps, denoise=True)

    else:
        score_fn, sde, data = load_score(cfg.checkpoint, device)  # frozen: only the grid is differentiated
        reference, source = rk45_reference(sde, score_fn, eps), str(cfg.checkpoint)
    steps = {budget: steps_for(cfg, sde, budget) for budget in cfg.budgets}
    shape = tuple(data.shape)

    def noise(n: int, seed: int) -> torch.Tensor:
        return sde.prior_sampling((n, *shape), torch.Generator().manual_seed(seed), torch.float64).to(device)

    x_train, x_held = noise(cfg.n_train, cfg.seed), noise(cfg.n_held_out, cfg.seed + 1)
    default = given.get("spacing") if given.get("spacing") in BUILT_IN else SAMPLERS[name].defaults()["spacing"]
    with start_tracker(cfg, out, job_type="tune_timesteps") as tracker:
        log.info("references of %d + %d noise paths (%s)", len(x_train), len(x_held), source)
        targets = {id(x_train): reference(x_train), id(x_held): reference(x_held)}  # each solved once
        grids, results = {}, {}
        for budget, n in steps.items():
            r = optimize_timesteps(sde, score_fn, name, n, x_train, lambda x: targets[id(x)], t_min=eps,
                                   options=options, iters=cfg.iters, lr=cfg.lr, held_out=x_held)  # fmt: skip
            grids[budget] = r.timesteps
            built_in = {k: v for k, v in r.held_out.items() if k != "tuned"}
            best = min(built_in, key=built_in.get)
            results[str(budget)] = {"steps": n, "init": r.init, "default_spacing": default, "best_built_in": best,
                                    "held_out": r.held_out, "train": r.train, "final_loss": r.losses[-1]}  # fmt: skip
            log.info("%d NFE: held-out flow error default (%s) %.4g, best built-in (%s) %.4g, tuned %.4g", budget,
                     default, r.held_out[default], best, built_in[best], r.held_out["tuned"])  # fmt: skip
            tracker.log({"tune/nfe": budget, "tune/default": r.held_out[default], "tune/best_built_in": built_in[best],
                         "tune/tuned": r.held_out["tuned"]})  # fmt: skip
        saved = {"sampler": name, "options": options, "eps": eps, "sde": repr(sde), "source": source,
                 "grids": {str(b): g for b, g in grids.items()}}  # fmt: skip
        (out / "timesteps.json").write_text(json.dumps(saved, indent=2))
        if cfg.checkpoint is not None:
            tuned_path(cfg.checkpoint, name).write_text(json.dumps(saved, indent=2))
        title = describe(type(data).__name__, sde, f"{name} {options}")
        plot_grids(sde, grids, eps, title, out / "grids.png")
        first = results[str(cfg.budgets[0])]["held_out"]["tuned"]
        metrics = {"source": source, "sde": repr(sde), "sampler": name, "options": options, "eps": eps,
                   "n_train": cfg.n_train, "n_held_out": cfg.n_held_out, "budgets": results,
                   "main_metric": {"name": f"flow_error_tuned_{cfg.budgets[0]}", "value": first}}  # fmt: skip
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("wrote %s", ", ".join(str(out / f) for f in ("timesteps.json", "grids.png", "metrics.json")))
        rows = [{"nfe": b, "steps": steps[b], "timesteps": json.dumps(g)} for b, g in grids.items()]
        tracker.log_table("grids", rows)
        tracker.log_images({"grids": out / "grids.png"})
        tracker.summary({f"nfe{b}/{k}": v for b, m in results.items() for k, v in m["held_out"].items()}
                        | {"main_metric": first})  # fmt: skip
        return float(first)


if __name__ == "__main__":
    main()
