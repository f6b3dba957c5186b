"""Compare samplers × step counts on the exact Gaussian-mixture oracle or a trained run: quality per NFE, and the
sampling floor.

    python experiments/compare_samplers.py                       # default grid, VP linear β(t), both oracles
    python experiments/compare_samplers.py grid=dpm_study schedule=cosine   # a conf/grid/ file
    python experiments/compare_samplers.py checkpoint=outputs/train/DATE/checkpoints/last.pt   # a trained model
    python experiments/compare_samplers.py -m sampler=euler_maruyama,pc,rk45,dpm_solver sampler.steps=10,20,50,100,1000
    python experiments/compare_samplers.py experiment=compare/oracle_study  # β(t) × sampler × steps, no training
    python experiments/compare_samplers.py -m experiment=compare/beta_search  # Optuna search over β(t) (docs/sweeps.md)

Problems (the scores to sample), runs (sampler × steps) and rendering (sde_diffusion.apps.comparison) are apart. For
each run: every metric of sde_diffusion.evaluation.evaluator against an independent true set, the flow error of the
deterministic samplers on oracles (RMS distance to the exact probability-flow map of the same noise; not on a
`checkpoint`, whose own flow differs from the oracle's by the model's error), and the wall time over
NFE × one score call; the floor is the same metrics between independent true sets (mean ± sd). The `eval` node is
train.yaml's (the same keys); its seeds: prior noise `seed`, a sampler's own noise `seed + 1`, reference
`seed + 500`, floor draw k `seed + 1000 + k`. Writes comparison.csv, comparison.md, quality_vs_nfe.png and
metrics.json into Hydra's output directory, and logs the table and the plot to one wandb run (offline by default; in a
multirun one run per job, one group per sweep; `python experiments/summarize.py MULTIRUN_DIR` tabulates the jobs). A
log line per problem and a progress bar per run show the work.

`sampler=NAME` (a conf/sampler/ file) replaces the grid with that one sampler at `sampler.steps`, so each job of a
multirun is one point; `schedules` (set by the oracle_study preset) repeats the grid for every β(t) listed.
With `sampler=NAME`, `timesteps=tuned` runs it on the grid experiments/tune_timesteps.py tuned for the checkpoint at
sampler.steps steps (`timesteps=PATH`: a timesteps.json of it, or its run dir). metrics.json and comparison.md name
the model (the oracles, or the checkpoint with its run's config) and carry a legend of the metrics.
`objective=METRIC` (e.g. flow_error, energy) on a run of one row (one sampler, one oracle or checkpoint): main()
returns that metric for a Hydra sweeper (Optuna), and metrics.json records it as `main_metric`.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sde_diffusion.apps import (
    build_sde,
    check_run,
    config_error,
    config_errors,
    hydra_app,
    instantiate_node,
    load_score,
    output_dir,
    require_run,
    require_values,
    run_weights,
    start_tracker,
    tuned_run,
)
from sde_diffusion.apps.comparison import HEAD, Floors, columns, write
from sde_diffusion.apps.guard import check_samples
from sde_diffusion.core import analytic, metrics
from sde_diffusion.core.sde import SDE, ScoreFn
from sde_diffusion.evaluation.diagnosis import excess_loss_by_level
from sde_diffusion.evaluation.evaluator import Draw, Evaluator
from sde_diffusion.evaluation.plots import level_error_curves
from sde_diffusion.infra.runtime import resolve_device
from sde_diffusion.infra.tracking import Tracker
from sde_diffusion.sampling import SAMPLERS, SamplerRun

log = logging.getLogger("compare")


@dataclass
class Problem:
    """A score to sample: its data set's label, the β(t) label, the SDE, the score, the data's draw, one example's
    shape and the exact oracle (None for a trained run of data without one)."""

    data: str
    schedule: str
    sde: SDE
    score_fn: ScoreFn
    draw: Draw
    shape: tuple[int, ...]
    oracle: analytic.GaussianMixture | None
    device: torch.device = torch.device("cpu")  # where score_fn runs


@dataclass
class Run:
    """One row per problem: the label in the tables, the config key its values come from, the sampler run."""

    label: str
    key: str
    run: SamplerRun


# ------------------------------------------------------------------------------------------------------ problems


def schedule_label(sde: SDE) -> str:
    """The β(t) class of a VP/sub-VP SDE, "-" for one without (VE)."""
    return type(sde.schedule).__name__ if hasattr(sde, "schedule") else "-"


def sdes(cfg: DictConfig) -> dict[str, SDE]:
    """{schedule label: SDE}: `sde` as configured, or one per entry of `schedules` (the β(t) study)."""
    if not cfg.get("schedules"):
        sde = build_sde(cfg)
        return {schedule_label(sde): sde}
    return {label: build_sde(cfg, schedule=instantiate_node(cfg, f"schedules.{label}")) for label in cfg.schedules}


def problems(cfg: DictConfig) -> list[Problem]:
    """Every oracle under every SDE (and again with each perturbed score), then each trained run of `checkpoints`;
    or only the trained run of `checkpoint`, with its own SDE and data set."""
    if cfg.get("checkpoint") is not None:
        if cfg.get("schedules"):
            raise config_error("schedules", "...", "must be empty with checkpoint= (the run fixes its SDE)")
        return [trained(None, cfg, "checkpoint")]
    for data in cfg.oracles:
        if not hasattr(analytic, data):
            raise config_error(
                "oracles", data, "entries must be sde_diffusion.core.analytic functions, e.g. eight_gaussians"
            )
    perturbations = OmegaConf.to_container(cfg.perturbations, resolve=True) if cfg.get("perturbations") else {}
    out = []
    for data in cfg.oracles:
        oracle = getattr(analytic, data)()
        for schedule, sde in sdes(cfg).items():
            out.append(Problem(data, schedule, sde, oracle.score_fn(sde), oracle.sample, (oracle.dim,), oracle))
            for label, kwargs in perturbations.items():
                try:
                    score_fn = analytic.PerturbedScore(oracle, sde, **kwargs)
                except (TypeError, ValueError) as err:
                    raise config_error(f"perturbations.{label}", kwargs, str(err).splitlines()[0]) from None
                out.append(Problem(f"{data} {label}", schedule, sde, score_fn, oracle.sample, (oracle.dim,), oracle))
    return out + [trained(label, cfg, f"checkpoints.{label}") for label in cfg.get("checkpoints") or {}]


def trained(label: str | None, cfg: DictConfig, key: str) -> Problem:
    """The trained run at config key `key` (a checkpoint or export), labelled by its data set's class unless
    `label` is given."""
    require_run(cfg, key, also=())
    with config_errors():
        device = resolve_device(cfg.device)
    score_fn, sde, data = load_score(OmegaConf.select(cfg, key), device)
    label = label or type(data).__name__
    return Problem(label, schedule_label(sde), sde, score_fn, data.reference, tuple(data.shape), data.oracle, device)


def model_record(cfg: DictConfig) -> dict:
    """What the samplers ran on, for metrics.json: the oracles' exact scores, or the checkpoint and its run's config."""
    if cfg.get("checkpoint") is None:
        perturbed = ", perturbed: " + ", ".join(cfg.perturbations) if cfg.get("perturbations") else ""
        trained = {label: str(path) for label, path in (cfg.get("checkpoints") or {}).items()}
        record = {"source": f"oracle: {', '.join(cfg.oracles)} (exact score{perturbed})"}
        return record | ({"checkpoints": trained} if trained else {})
    return {"source": str(cfg.checkpoint), "config": run_weights(cfg.checkpoint)[1]}


# ---------------------------------------------------------------------------------------------------------- runs


def runs(cfg: DictConfig, sdes: list[SDE]) -> tuple[list[Run], dict | None]:
    """Every run, each checked against every SDE (a bad value names its key): the one sampler of `sampler` at
    `sampler.steps` (on the grid `timesteps` names, if set), or every (entry, steps) of `grid.runs` with `t_min` and
    `denoise`; and the record of the tuned grid (None without)."""
    if cfg.get("sampler") is not None:
        one = [Run(cfg.sampler.name, "sampler", SamplerRun(**OmegaConf.to_container(cfg.sampler, resolve=True)))]
    else:
        if cfg.get("timesteps") is not None:
            raise config_error("timesteps", cfg.timesteps, "needs sampler=NAME: one sampler at one budget")
        entries = OmegaConf.to_container(cfg.grid.runs, resolve=True)
        one = [
            Run(
                e.get("label", e["name"]),
                f"grid.runs.{i}",
                SamplerRun(e["name"], steps, e.get("t_min", cfg.t_min), cfg.denoise, e.get("options", {})),
            )
            for i, e in enumerate(entries)
            for steps in e["steps"]
        ]
    for r in one:
        for sde in sdes:
            check_run(r.run, sde, r.key)
    if cfg.get("timesteps") is None:
        return one, None
    for sde in sdes:
        tuned, record = tuned_run(one[0].run, sde, cfg.timesteps, cfg.get("checkpoint"))
    return [Run(f"{one[0].label} tuned", "sampler", tuned)], record


def score_call_seconds(score_fn: ScoreFn, x: torch.Tensor, repeats: int = 5) -> float:
    """Median wall time of one score call on the batch x."""
    t = torch.full((x.shape[0],), 0.5, dtype=x.dtype, device=x.device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        score_fn(x, t)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rows_of(cfg: DictConfig, evaluator: Evaluator, all_runs: list[Run], todo: list[Problem]) -> tuple[list, Floors]:
    """One row per (problem, run): every metric, the NFE and the wall time over NFE × one score call; and the floor
    (mean, sd) per data set. A log line per problem, a progress bar per run (`progress`)."""
    rows, floors = [], {}
    for k, p in enumerate(todo):
        log.info("problem %d/%d: %s (%d-D), %r", k + 1, len(todo), p.data, math.prod(p.shape), p.sde)
        ev = evaluator(p.sde, p.score_fn, p.draw, p.shape, p.oracle, p.device, progress=cfg.progress)
        x_T = p.sde.prior_sampling((evaluator.n, *p.shape), generator=torch.Generator().manual_seed(evaluator.seed))
        x_T = x_T.to(p.device)
        one_call = score_call_seconds(p.score_fn, x_T)
        prior = metrics.sliced_wasserstein(x_T.float().cpu(), ev.reference, seed=evaluator.seed)  # no sampling at all
        for r, row in zip(all_runs, ev.rows.values(), strict=True):
            time_ratio = row["wall_s"] / (row["nfe"] * one_call)
            kind = "SDE" if SAMPLERS[r.run.name].stochastic else "ODE"
            rows.append(
                {
                    "data": p.data,
                    "schedule": p.schedule,
                    **row,
                    "sampler": r.label,
                    "kind": kind,
                    "time_ratio": time_ratio,
                    "diverged": row["sw2"] > prior,
                }
            )
            if rows[-1]["diverged"]:
                log.warning(
                    "%s, %s at %d steps: diverged, SW2 %.3g is worse than its prior noise x_T's (%.3g): "
                    "its metrics measure no quality (more steps, or a lower solver order, may converge)",
                    p.data,
                    r.label,
                    r.run.steps,
                    row["sw2"],
                    prior,
                )
        floors.setdefault(p.data, (ev.floor, ev.floor_sd))
        check_samples({r.label: x for r, x in zip(all_runs, ev.samples.values(), strict=True)}, ev.reference)
    return [{c: r.get(c, math.nan) for c in columns(rows)} for r in rows], floors


def objective(cfg: DictConfig, rows: list[dict]) -> float | None:
    """The `objective` metric of the one row, or None without an objective; undefined (NaN) is a ConfigError."""
    if cfg.objective is None:
        return None
    value = rows[0].get(cfg.objective, math.nan)
    if not isinstance(value, int | float) or math.isnan(value):
        defined = [c for c in columns(rows)[len(HEAD) :] if not math.isnan(rows[0][c])]
        raise config_error("objective", cfg.objective, "must be a metric this run defines: " + ", ".join(defined))
    return float(value)


def level_errors(cfg: DictConfig, todo: list[Problem], out: Path, tracker: Tracker) -> dict:
    """Each trained run's (checkpoint=, checkpoints:) excess loss over the exact score per λ-bin, when its data has an
    oracle (evaluation.diagnosis): {"score_error": {run: {lam, excess, se}}} for metrics.json, score_error.png."""
    trained = 1 if cfg.get("checkpoint") is not None else len(cfg.get("checkpoints") or {})
    curves = {
        p.data: excess_loss_by_level(p.sde, p.score_fn, p.oracle, generator=torch.Generator().manual_seed(cfg.seed))
        for p in todo[len(todo) - trained :]
        if p.oracle is not None
    }
    if not curves:
        return {}
    path = level_error_curves(curves, out / "score_error.png", "excess loss over the exact score per λ")
    tracker.log_images({"score_error": path})
    return {"score_error": {k: c.as_dict() for k, c in curves.items()}}


def plot_panels(names: tuple[str, ...], flow_error: bool, oracle: bool) -> tuple[str, ...]:
    """quality_vs_nfe.png's panels: `plot_metrics`, where a trained model has no flow_error (its flow is not the
    oracle's) the NLL under the exact density (an oracle's data) or the energy distance instead, which tell SDE from
    ODE samples apart where SW2 and MMD² cannot."""
    return tuple(("oracle_nll" if oracle else "energy") if m == "flow_error" and not flow_error else m for m in names)


@hydra_app("compare")
def main(cfg: DictConfig) -> float | None:
    """Build and check every problem and run, evaluate them, write the outputs; returns the `objective` metric."""
    require_values(cfg)
    out = output_dir()
    todo = problems(cfg)  # validates and builds everything before the tracker starts
    all_runs, grid = runs(cfg, [p.sde for p in todo])
    if cfg.objective is not None and len(all_runs) * len(todo) != 1:
        one_row = "needs a run of one row: sampler=NAME, one oracle (oracles=[NAME]) or a checkpoint, no schedules"
        raise config_error("objective", cfg.objective, f"{one_row} (this run has {len(all_runs) * len(todo)})")
    samplers = {str(i): asdict(r.run) for i, r in enumerate(all_runs)}
    flow_error = cfg.get("checkpoint") is None and not cfg.get("checkpoints")  # a model's flow is not the oracle's
    panels = plot_panels(tuple(cfg.plot_metrics), flow_error, all(p.oracle is not None for p in todo))
    evaluator = instantiate_node(cfg, "eval", samplers=samplers, flow_error=flow_error, _convert_="all")
    with start_tracker(cfg, out, job_type="compare") as tracker:
        rows, floors = rows_of(cfg, evaluator, all_runs, todo)
        value = objective(cfg, rows)
        main_metric = {"main_metric": {"name": f"{rows[0]['data']}/{cfg.objective}", "value": value}} if value else {}
        one_point = cfg.get("sampler") is not None  # a multirun job: metrics.json per data set only
        extra = main_metric | ({"timesteps": grid} if grid else {}) | level_errors(cfg, todo, out, tracker)
        extra |= {"diverged": [f"{r['data']} {r['sampler']} {r['steps']}" for r in rows if r["diverged"]]}
        tree = write(out, rows, floors, model_record(cfg), repr(todo[0].sde), panels, one_point, extra)
        floor_means = [{"data": d, "sampler": "floor (true vs true)", **m} for d, m in tree["floor"].items()]
        tracker.log_table("comparison", rows + floor_means)
        tracker.log_images({"quality_vs_nfe": out / "quality_vs_nfe.png"})
        if one_point:
            tracker.summary({f"{d}/{k}": v for d, m in tree.items() if d != "floor" for k, v in m.items()})
        if value is not None:
            tracker.summary({"main_metric": value})
    return value


if __name__ == "__main__":
    main()
