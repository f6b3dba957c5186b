"""Compare samplers × step counts on the exact Gaussian-mixture oracle or a trained run: quality per NFE, and the
sampling floor.

    python experiments/compare_samplers.py                       # default grid, VP linear β(t), both oracles
    python experiments/compare_samplers.py grid=dpm_study schedule=cosine
    python experiments/compare_samplers.py checkpoint=outputs/train/DATE/checkpoints/last.pt   # a trained model
    python experiments/compare_samplers.py -m sampler=euler_maruyama,pc,rk45,dpm_solver sampler.steps=10,20,50,100,1000
    python experiments/compare_samplers.py experiment=compare/oracle_study  # β(t) × sampler × steps, no training
    python experiments/compare_samplers.py -m experiment=compare/beta_search  # Optuna search over β(t) (docs/sweeps.md)

For each run: every metric of sde_diffusion.evaluation against an independent true set, the flow error of the
deterministic samplers on oracles (RMS distance to the exact probability-flow map of the same noise; not on a
`checkpoint`, whose own flow differs from the oracle's by the model's error), and the wall time over
NFE × one score call; the floor is the same metrics between independent true sets (mean ± sd). The seeds are
evaluation's: prior noise `seed`, a sampler's own noise `seed + 1`, reference `seed + 500`, floor draw k
`seed + 1000 + k`. Writes comparison.csv, comparison.md, quality_vs_nfe.png and metrics.json into Hydra's
output directory, and logs the table and the plot to one wandb run (offline by default; in a multirun one run
per job, one group per sweep; `python experiments/summarize.py MULTIRUN_DIR` tabulates the jobs).

`sampler=NAME` (a conf/sampler/ file) replaces the grid with that one sampler at `sampler.steps`, so each job of a
multirun is one point; `schedules` (set by the oracle_study preset) repeats the grid for every β(t) listed.
With `sampler=NAME`, `timesteps=tuned` runs it on the grid experiments/tune_timesteps.py tuned for the checkpoint at
sampler.steps steps (`timesteps=PATH`: any timesteps.json of it). metrics.json and comparison.md name the model (the
oracles, or the checkpoint with its run's config) and carry a legend of the metrics (sde_diffusion.evaluation).
`objective=METRIC` (e.g. flow_error, energy) on a run of one row (one sampler, one oracle or checkpoint): main()
returns that metric for a Hydra sweeper (Optuna), and metrics.json records it as `main_metric`.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import hydra
import matplotlib
import matplotlib.ticker
import torch
from omegaconf import DictConfig, OmegaConf

from sde_diffusion import analytic
from sde_diffusion.apps import (
    build_sde,
    check_run,
    config_error,
    instantiate_node,
    load_score,
    output_dir,
    require_values,
    run_weights,
    start_tracker,
    tuned_run,
)
from sde_diffusion.apps.guard import check_samples
from sde_diffusion.checks import ArgumentError
from sde_diffusion.evaluation import Draw, Evaluator, SamplerRun, legend
from sde_diffusion.sde import SDE, ScoreFn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HEAD = ["data", "schedule", "sampler", "steps", "nfe"]
Floors = dict[str, tuple[dict[str, float], dict[str, float]]]  # {data set: (mean, sd) of every metric}


def columns(rows: list[dict]) -> list[str]:
    """HEAD, every metric the rows hold (evaluation's, in its order), then time_ratio."""
    seen = dict.fromkeys(k for r in rows for k in r)
    return HEAD + [k for k in seen if k not in HEAD and k not in ("wall_s", "time_ratio")] + ["time_ratio"]


def score_call_seconds(score_fn: ScoreFn, x: torch.Tensor, repeats: int = 5) -> float:
    """Median wall time of one score call on the batch x."""
    t = torch.full((x.shape[0],), 0.5, dtype=x.dtype)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        score_fn(x, t)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _is_nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _fmt_row(row: dict, cols: list[str]) -> str:
    return " | ".join(_fmt(row.get(c, "")) for c in cols)


def to_markdown(rows: list[dict], floors: Floors) -> str:
    """The table plus, per data set, the floor as mean ± sd over the true-vs-true draws."""
    cols = columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + _fmt_row(r, cols) + " |" for r in rows]
    lines += ["", "Sampling floor (true vs true, mean ± sd):", ""]
    for data, (mean, sd) in floors.items():
        lines.append(f"- {data}: " + ", ".join(f"{k} {m:.3g} ± {sd[k]:.2g}" for k, m in mean.items()))
    return "\n".join(lines) + "\n"


def schedule_table(rows: list[dict], floors: Floors, metrics: tuple[str, ...] = ("sw2", "flow_error")) -> str:
    """The β(t) study: per data set and metric, the metric of every (sampler, steps) under each schedule side by
    side, the best schedule of each row in bold (rows where the metric is undefined are left out)."""
    schedules = list(dict.fromkeys(r["schedule"] for r in rows))
    lines = []
    for data, (floor_mean, _) in floors.items():
        for metric in metrics:
            cells: dict[tuple, dict[str, float]] = {}
            for r in rows:
                if r["data"] == data and not _is_nan(r.get(metric, math.nan)):
                    cells.setdefault((r["sampler"], r["steps"]), {})[r["schedule"]] = r.get(metric, math.nan)
            if not cells:
                continue
            floor = f" (floor {floor_mean[metric]:.3g})" if metric in floor_mean else ""
            lines += [f"### {data}: {metric}{floor}", "", "| sampler | steps | " + " | ".join(schedules) + " |"]
            lines.append("|" + "---|" * (2 + len(schedules)))
            for (label, steps), by in cells.items():
                best = min(by, key=by.__getitem__)
                vals = [f"**{_fmt(by[k])}**" if k == best else _fmt(by.get(k, math.nan)) for k in schedules]
                lines.append(f"| {label} | {steps} | " + " | ".join(vals) + " |")
            lines.append("")
    return "\n".join(lines)


def _log_axes(ax: plt.Axes, metric: str) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if metric in ("mmd2", "energy"):  # unbiased estimates, below zero near the floor: linear around 0
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylim(bottom=-1e-3)
    else:
        ax.set_yscale("log")


def plot(rows: list[dict], floors: Floors, path: Path, metrics: tuple[str, ...] = ("sw2", "mmd2",
         "flow_error")) -> None:  # fmt: skip
    """Metric vs NFE (log x), one line per sampler, one row per data set; the floor's mean dashed."""
    datas = list(floors)
    labels = list(dict.fromkeys(r["sampler"] for r in rows))
    color = {label: plt.get_cmap("tab20")(k % 20) for k, label in enumerate(labels)}
    fig, axes = plt.subplots(len(datas), len(metrics), figsize=(5 * len(metrics), 4.5 * len(datas)), squeeze=False)
    for i, data in enumerate(datas):
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            for label in labels:
                pts = sorted(
                    (r["nfe"], r.get(metric, math.nan)) for r in rows if r["data"] == data and r["sampler"] == label
                )
                pts = [p for p in pts if not math.isnan(p[1])]
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", ms=3, color=color[label], label=label)
            if metric in floors[data][0]:
                ax.axhline(floors[data][0][metric], color="k", ls="--", label="floor")
            if not ax.lines:  # e.g. flow_error on a checkpoint, whose own flow is not the oracle's exact one
                note = "deterministic samplers of an exact score only" if metric == "flow_error" else "none measured"
                ax.text(0.5, 0.5, f"{metric}: {note}", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            _log_axes(ax, metric)
            ax.set(xlabel="NFE", ylabel=metric, title=f"{data}: {metric}")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_schedules(rows: list[dict], floors: Floors, path: Path, metric: str = "sw2") -> None:
    """The β(t) study: `metric` vs NFE, one panel per (data set, sampler), one line per schedule; floor dashed."""
    datas, labels = list(floors), list(dict.fromkeys(r["sampler"] for r in rows))
    schedules = list(dict.fromkeys(r["schedule"] for r in rows))
    fig, axes = plt.subplots(len(datas), len(labels), figsize=(3.6 * len(labels), 3.3 * len(datas)), squeeze=False)
    for i, data in enumerate(datas):
        for j, label in enumerate(labels):
            ax = axes[i, j]
            for k, schedule in enumerate(schedules):
                pts = sorted(
                    (r["nfe"], r.get(metric, math.nan))
                    for r in rows
                    if (r["data"], r["sampler"], r["schedule"]) == (data, label, schedule)
                    and not math.isnan(r.get(metric, math.nan))
                )
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", ms=3, color=f"C{k}", label=schedule)
            ax.axhline(floors[data][0][metric], color="k", ls="--", lw=1, label="floor")
            _log_axes(ax, metric)
            ax.set_title(f"{data}: {label}", fontsize=9)
            ax.set(xlabel="NFE", ylabel=metric if j == 0 else None)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def metrics_tree(rows: list[dict], floors: Floors, keys: list[str]) -> dict:
    """metrics.json: the metric columns of each row nested by `keys` (e.g. data / sampler / steps), and the floor's
    mean per data set; `python experiments/summarize.py` flattens it to columns like `eight_gaussians/sw2`."""
    tree: dict = {}
    for r in rows:
        node = tree
        for key in keys:
            node = node.setdefault(str(r[key]), {})
        node.update({c: r[c] for c in columns(rows)[len(HEAD) - 1 :] if not _is_nan(r[c])})  # JSON has no NaN
    tree["floor"] = {data: mean for data, (mean, _) in floors.items()}
    return tree


def _runs(cfg: DictConfig) -> list[tuple[str, str, SamplerRun]]:
    """(label, config key, run) of every run: the one sampler of `sampler` at `sampler.steps`, or every
    (entry, steps) of `grids[grid]` with `eps` and `denoise`."""
    if cfg.get("sampler") is not None:
        sc = OmegaConf.to_container(cfg.sampler, resolve=True)
        return [(sc["name"], "sampler", SamplerRun(**sc))]
    if cfg.grid not in cfg.grids:
        raise config_error("grid", cfg.grid, "allowed: " + ", ".join(cfg.grids))
    grid = OmegaConf.to_container(cfg.grids[cfg.grid], resolve=True)
    return [
        (e.get("label", e["name"]), f"grids.{cfg.grid}.{i}", SamplerRun(e["name"], steps, cfg.eps, cfg.denoise,
                                                                         e.get("options", {})))
        for i, e in enumerate(grid)
        for steps in e["steps"]
    ]  # fmt: skip


def _sdes(cfg: DictConfig) -> dict[str, SDE]:
    """{schedule label: SDE}: `sde` as configured, or one per entry of `schedules` (the β(t) study)."""
    if not cfg.get("schedules"):
        sde = build_sde(cfg)
        return {type(sde.schedule).__name__ if hasattr(sde, "schedule") else "-": sde}
    return {label: build_sde(cfg, schedule=instantiate_node(cfg, f"schedules.{label}")) for label in cfg.schedules}


def _problems(cfg: DictConfig) -> Iterator[tuple[str, str, SDE, ScoreFn, Draw, tuple[int, ...], object]]:
    """Yield (data name, schedule label, sde, score_fn, draw, shape, oracle): every oracle under every SDE, or the
    trained run of `checkpoint` with its own SDE and data set."""
    if cfg.get("checkpoint") is not None:
        if cfg.get("schedules"):
            raise config_error("schedules", "...", "must be empty with checkpoint= (the run fixes its SDE)")
        yield _trained(None, cfg.checkpoint, "checkpoint")
        return
    for data in cfg.oracles:
        if not hasattr(analytic, data):
            raise config_error(
                "oracles", data, "entries must be sde_diffusion.analytic functions, e.g. eight_gaussians"
            )
    sdes = _sdes(cfg)
    perturbations = OmegaConf.to_container(cfg.perturbations, resolve=True) if cfg.get("perturbations") else {}
    for data in cfg.oracles:
        oracle = getattr(analytic, data)()
        for schedule, sde in sdes.items():
            yield data, schedule, sde, oracle.score_fn(sde), oracle.sample, (oracle.dim,), oracle
            for label, kwargs in perturbations.items():
                try:
                    score_fn = analytic.PerturbedScore(oracle, sde, **kwargs)
                except (TypeError, ValueError) as err:
                    raise config_error(f"perturbations.{label}", kwargs, str(err).splitlines()[0]) from None
                yield f"{data} {label}", schedule, sde, score_fn, oracle.sample, (oracle.dim,), oracle
    for label, path in (cfg.get("checkpoints") or {}).items():
        yield _trained(label, path, f"checkpoints.{label}")


def _trained(label: str | None, path: str, key: str) -> tuple[str, str, SDE, ScoreFn, Draw, tuple[int, ...], object]:
    """(label, schedule, sde, score_fn, draw, shape, oracle) of the trained run at `path` (a checkpoint or export),
    labelled by its data set's class unless `label` is given."""
    if not Path(str(path)).exists():
        raise config_error(key, path, "the path of a checkpoint of experiments/train.py or a folder of export.py")
    score_fn, sde, data = load_score(path)
    schedule = type(sde.schedule).__name__ if hasattr(sde, "schedule") else "-"
    return label or type(data).__name__, schedule, sde, score_fn, data.reference, tuple(data.shape), data.oracle


def _tuned(cfg: DictConfig, runs: list[tuple[str, str, SamplerRun]], sdes: list[SDE]) -> tuple[list, dict | None]:
    """The one run of `sampler` on the grid that `timesteps` names (apps.tuned_run: tuned, beside the checkpoint, or
    a path), checked against every SDE, labelled "<sampler> tuned"; and the record of that grid (None without)."""
    if cfg.get("timesteps") is None:
        return runs, None
    if cfg.get("sampler") is None:
        raise config_error("timesteps", cfg.timesteps, "needs sampler=NAME: one sampler at one budget (sampler.steps)")
    ((label, key, run),) = runs
    for sde in sdes:
        tuned, record = tuned_run(run, sde, cfg.timesteps, cfg.get("checkpoint"))
    return [(f"{label} tuned", key, tuned)], record


def _model(cfg: DictConfig) -> dict:
    """What the samplers ran on, for metrics.json: the oracles' exact scores, or the checkpoint and its run's config."""
    if cfg.get("checkpoint") is None:
        perturbed = ", perturbed: " + ", ".join(cfg.perturbations) if cfg.get("perturbations") else ""
        trained = {label: str(path) for label, path in (cfg.get("checkpoints") or {}).items()}
        record = {"source": f"oracle: {', '.join(cfg.oracles)} (exact score{perturbed})"}
        return record | ({"checkpoints": trained} if trained else {})
    return {"source": str(cfg.checkpoint), "config": run_weights(cfg.checkpoint)[1]}


def _model_line(model: dict, data: str, sde: SDE) -> str:
    """comparison.md's line naming the model: the oracles, or the checkpoint with its data, SDE, network and steps."""
    if "config" not in model:
        return f"Model: {model['source']}."
    net, steps = model["config"].get("model", {}).get("_target_"), model["config"].get("train", {}).get("steps")
    return f"Model: checkpoint `{model['source']}` ({data}, {sde!r}; {net}, {steps} training steps)."


def _legend_lines(keys: list[str]) -> str:
    """The legend of the table's metrics (evaluation.LEGEND), as markdown lines under it."""
    return "\nLegend:\n\n" + "".join(f"- {k}: {text}\n" for k, text in legend(keys).items())


def _evaluator(cfg: DictConfig, runs: list[tuple[str, str, SamplerRun]], sdes: list[SDE]) -> Evaluator:
    """The Evaluator of every run, each checked against every SDE first (a bad value names its config key)."""
    for _, key, run in runs:
        for sde in sdes:
            check_run(run, sde, key)
    try:
        return Evaluator({str(i): run for i, (_, _, run) in enumerate(runs)}, n_samples=cfg.n, seed=cfg.seed,
                         floor_repeats=cfg.floor_repeats, flow_error=cfg.get("checkpoint") is None)  # fmt: skip
    except ArgumentError as err:
        key = {"n_samples": "n"}.get(err.name, err.name)  # compare.yaml's name of the argument
        raise config_error(key, err.value, f"must be {err.allowed}") from None


def _objective(cfg: DictConfig, rows: list[dict]) -> float | None:
    """The `objective` metric of the one row, or None without an objective; undefined (NaN) is a ConfigError."""
    if cfg.objective is None:
        return None
    value = rows[0].get(cfg.objective, math.nan)
    if not isinstance(value, int | float) or math.isnan(value):
        defined = [c for c in columns(rows)[len(HEAD) :] if not _is_nan(rows[0][c])]
        raise config_error("objective", cfg.objective, "must be a metric this run defines: " + ", ".join(defined))
    return float(value)


@hydra.main(config_path="../conf", config_name="compare", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run every (problem, sampler run), write the outputs; returns the `objective` metric, if one is set."""
    require_values(cfg)
    out = output_dir()
    runs = _runs(cfg)
    problems = list(_problems(cfg))  # validates and builds everything before the tracker starts
    if cfg.objective is not None and len(runs) * len(problems) != 1:
        raise config_error(
            "objective",
            cfg.objective,
            "needs a run of one row: sampler=NAME, one oracle "
            f"(oracles=[NAME]) or a checkpoint, no schedules (this run has {len(runs) * len(problems)})",
        )
    runs, grid = _tuned(cfg, runs, [p[2] for p in problems])
    model = _model(cfg)
    evaluator = _evaluator(cfg, runs, [p[2] for p in problems])
    with start_tracker(cfg, out, job_type="compare") as tracker:
        rows, floors = [], {}
        for data, schedule, sde, score_fn, draw, shape, oracle in problems:
            print(f"\n## {data} ({math.prod(shape)}-D), {sde} {schedule}", flush=True)
            ev = evaluator(sde, score_fn, draw, shape, oracle)
            check_samples({label: x for (label, _, _), x in zip(runs, ev.samples.values(), strict=True)}, ev.reference)
            x_T = sde.prior_sampling((cfg.n, *shape), generator=torch.Generator().manual_seed(cfg.seed))
            one_call = score_call_seconds(score_fn, x_T)
            for (label, _, _), r in zip(runs, ev.rows.values(), strict=True):
                time_ratio = r["wall_s"] / (r["nfe"] * one_call)
                rows.append({"data": data, "schedule": schedule, **r, "sampler": label, "time_ratio": time_ratio})
            floors.setdefault(data, (ev.floor, ev.floor_sd))
        rows = [{c: r.get(c, math.nan) for c in columns(rows)} for r in rows]
        objective = _objective(cfg, rows)
        study = len({r["schedule"] for r in rows}) > 1
        table = to_markdown(rows, floors)
        if study:
            table = schedule_table(rows, floors) + "\n" + table
        print("\n" + table)
        title = "β(t) study" if study else f"Sampler comparison: {problems[0][2]}"
        head = f"# {title}\n\n{_model_line(model, problems[0][0], problems[0][2])}\n\n"
        (out / "comparison.md").write_text(head + table + _legend_lines(columns(rows)))
        with open(out / "comparison.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns(rows))
            writer.writeheader()
            writer.writerows(rows)
        if study:
            plot_schedules(rows, floors, out / "quality_vs_nfe.png")
        else:
            plot(rows, floors, out / "quality_vs_nfe.png", tuple(cfg.plot_metrics))
        one_point = cfg.get("sampler") is not None  # a multirun job: metrics.json per data set only
        keys = ["data"] + (["schedule"] if study else []) + ([] if one_point else ["sampler", "steps"])
        metrics = metrics_tree(rows, floors, keys)
        if objective is not None:
            metrics["main_metric"] = {"name": f"{rows[0]['data']}/{cfg.objective}", "value": objective}
        extra = {"model": model, "legend": legend(columns(rows))} | ({"timesteps": grid} if grid else {})
        (out / "metrics.json").write_text(json.dumps(metrics | extra, indent=2))
        print(f"wrote {out}/comparison.csv, comparison.md, quality_vs_nfe.png, metrics.json")

        floor_means = [{"data": d, "sampler": "floor (true vs true)", **m} for d, m in metrics["floor"].items()]
        tracker.log_table("comparison", rows + floor_means)
        tracker.log_images({"quality_vs_nfe": out / "quality_vs_nfe.png"})
        if one_point:
            tracker.summary({f"{d}/{k}": v for d, m in metrics.items() if d not in ("floor", "main_metric")
                             for k, v in m.items()})  # fmt: skip
        if objective is not None:
            tracker.summary({"main_metric": objective})
    return objective


if __name__ == "__main__":
    main()
