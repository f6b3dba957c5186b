"""Summarize a Hydra multirun (any app, any launcher): summary.csv with every numeric leaf of each job's metrics.json
(flattened with "/", its `main_metric` a column), summary.md and summary.png with the `--metrics` selection beside
the sampling floor ± sd, the swept keys as columns, failed jobs with their error (failure.json or the log). An
Optuna sweep (optimization_results.yaml) names its best trial and plots the objective against each parameter. Jobs
on data with an oracle add score_error.png: each job's excess loss over the exact score per λ, one curve per job.
`final_loss` across different β(t) or SDEs is labelled not comparable (the DSM loss's scale depends on both).

    python experiments/summarize.py multirun/train/2026-01-01_12-00-00              # summary.csv/.md/.png there
    python experiments/summarize.py DIR --metrics '*/mmd2' 'final_loss' --x schedule.beta_max
    python experiments/summarize.py DIR --log offline        # + a wandb run (job_type "summary") in the sweep's group
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker
from omegaconf import OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sde_diffusion.evaluation.diagnosis import LevelError  # noqa: E402
from sde_diffusion.evaluation.plots import level_error_curves  # noqa: E402

DEFAULT_METRICS = ("main_metric", "main_metric_recall", "*sw2")
RECALL = "main_metric_recall"  # the headline's recall pair (train.py: the mode-weight error beside the NLL excess)
FAIR_PRESET = "experiment=train/fair_schedule_sweep"
LOSS_CAVEAT = "not comparable across β(t)/SDEs"


@dataclass
class Job:
    """One job of a sweep: its dir, its command-line overrides, its config (unresolved), its flattened metrics and
    the name of its main metric, or its error."""

    dir: Path
    overrides: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, int | float] = field(default_factory=dict)
    main_name: str = ""
    recall_name: str = ""
    status: str = "ok"  # ok | failed | no result
    error: str = ""

    @property
    def label(self) -> str:
        """The job's dir relative to the sweep (Hydra's job number for the basic and joblib launchers)."""
        return self.dir.name


def flatten(tree: Any, prefix: str = "") -> dict[str, int | float]:
    """The numeric leaves of a JSON tree as {"a/b/c": value}, integers kept; booleans, strings and lists skipped."""
    if isinstance(tree, dict):
        out: dict[str, int | float] = {}
        for key, value in tree.items():
            out |= flatten(value, f"{prefix}{key}/")
        return out
    if isinstance(tree, int | float) and not isinstance(tree, bool):
        return {prefix[:-1]: tree}
    return {}


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """Hydra override strings ("key=value", "+key=value", "~key") as {key: value}, in order."""
    out = {}
    for line in lines:
        key, _, value = line.partition("=")
        out[key.lstrip("+")] = value if _ else "(deleted)"
    return out


def _last_error_line(job_dir: Path) -> str:
    for log in sorted(job_dir.glob("*.log")):
        errors = [line for line in log.read_text(errors="replace").splitlines() if "][ERROR]" in line]
        if errors:
            return errors[-1].split("] - ", 1)[-1]
    return ""


def read_job(job_dir: Path) -> Job:
    """A job dir's overrides and config, and its metrics.json or, failing that, its error."""
    overrides = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    job = Job(dir=job_dir, overrides=parse_overrides([str(o) for o in overrides]))
    if (job_dir / ".hydra" / "config.yaml").is_file():
        job.config = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "config.yaml"))
    if (job_dir / "metrics.json").is_file():
        tree = json.loads((job_dir / "metrics.json").read_text())
        main = tree.pop("main_metric", None)
        for context in ("model", "legend"):  # what the job ran on and what its metrics mean: not results
            tree.pop(context, None)
        job.metrics = flatten(tree)
        if main is not None:
            recall = {RECALL: main["recall"]["value"]} if "recall" in main else {}
            job.metrics = {"main_metric": main["value"], **recall, **job.metrics}
            job.main_name, job.recall_name = main["name"], main.get("recall", {}).get("name", "")
    elif (job_dir / "failure.json").is_file():
        record = json.loads((job_dir / "failure.json").read_text())
        job.status, job.error = "failed", f"{record['error']}: {record['message']}"
    else:
        line = _last_error_line(job_dir)
        job.status = "failed" if line else "no result"
        job.error = line or "no metrics.json and no recorded error (still running, killed, or out of time?)"
    return job


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job dir below `sweep_dir` (those holding .hydra/overrides.yaml), in job-number order."""
    dirs = [p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml") if ".submitit" not in p.parts]
    dirs = [d for d in dirs if d != sweep_dir] or dirs  # a single run dir summarizes itself

    def order(d: Path) -> tuple:
        rel = d.relative_to(sweep_dir).parts
        return tuple((0, int(p)) if p.isdigit() else (1, p) for p in rel)

    return [read_job(d) for d in sorted(dirs, key=order)]


def swept_keys(jobs: list[Job]) -> tuple[list[str], dict[str, str]]:
    """(keys whose values differ between jobs, {key: value} of the overrides shared by every job)."""
    keys = list(dict.fromkeys(k for j in jobs for k in j.overrides))
    swept = [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]
    if len(jobs) == 1:
        swept = keys
    fixed = {k: jobs[0].overrides[k] for k in keys if k not in swept}
    return swept, fixed


@dataclass
class Search:
    """A single-objective Optuna sweep (hydra-optuna-sweeper's optimization_results.yaml: best_params,
    best_value) and the job of its best trial (None if no finished job holds best_params)."""

    params: dict[str, Any]
    value: float
    best: Job | None


def _same(override: str | None, value: Any) -> bool:
    """Whether an override's string holds `value` (numbers compared as numbers)."""
    if override is None:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number(override) == value
    return override == str(value)


def read_search(sweep_dir: Path, jobs: list[Job]) -> Search | None:
    """The Optuna result in `sweep_dir`, if any (a multi-objective one, a Pareto front, is not read). Its best trial
    is the finished job whose overrides hold best_params; of several, the one whose main_metric is nearest
    best_value."""
    path = sweep_dir / "optimization_results.yaml"
    if not path.is_file():
        return None
    result = OmegaConf.to_container(OmegaConf.load(path))
    if "best_params" not in result:
        return None
    params, value = result["best_params"], float(result["best_value"])
    matches = [j for j in jobs if j.status == "ok" and all(_same(j.overrides.get(k), v) for k, v in params.items())]
    best = min(matches, key=lambda j: abs(j.metrics.get("main_metric", math.inf) - value), default=None)
    return Search(params, value, best)


def labels(jobs: list[Job], metrics: list[str]) -> dict[str, str]:
    """Each metric's label in the table and the plot: `main_metric` with the metric it is, `final_loss` marked as not
    comparable when the jobs' β(t), SDE or objective (`loss`) configs differ (the loss's scale depends on each)."""
    out = {m: m for m in metrics}
    for column, attr in (("main_metric", "main_name"), (RECALL, "recall_name")):
        names = sorted({getattr(j, attr) for j in jobs if getattr(j, attr)})
        floor = _floor([j for j in jobs if j.status == "ok"], names[0]) if len(names) == 1 else None
        sd = f"; floor sd {floor[1]:.2g}" if floor and floor[1] else ""
        if column in out and names:
            out[column] = f"{column} ({', '.join(names)}{sd})"
    configs = [j.config for j in jobs if j.config]
    if "final_loss" in out and any(
        len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1 for k in ("schedule", "sde", "loss")
    ):
        out["final_loss"] = f"final_loss ({LOSS_CAVEAT})"
    return out


def schedule_caveat(jobs: list[Job], swept: list[str]) -> str:
    """A sweep over β(t) (`schedule`, `schedule.*`) whose jobs train with a λ-density set by β(t)
    (`loss.density=schedule`, loss=simple's) or sample on a grid in t (an eval sampler's spacing other than logsnr)
    compares β(t) together with what moves with it: the warning saying so and naming the fair preset; else ""."""
    if not any(k == "schedule" or k.startswith("schedule.") for k in swept):
        return ""
    configs = [j.config for j in jobs if j.config]
    density = any((c.get("loss") or {}).get("density") == "schedule" for c in configs)
    samplers = [s for c in configs for s in ((c.get("eval") or {}).get("samplers") or {}).values()]
    grid = any(((s or {}).get("options") or {}).get("spacing") != "logsnr" for s in samplers)
    moving = [
        what
        for what, on in (
            ("the training objective's λ-density (loss.density=schedule)", density),
            ("the samplers' time grid (spacing other than logsnr)", grid),
        )
        if on
    ]
    if not moving:
        return ""
    return (
        f"Caution: β(t) is swept while {' and '.join(moving)} move with it, so these jobs compare β(t) together "
        f"with them. To compare β(t) alone: `python experiments/train.py -m {FAIR_PRESET}` (docs/training.md, "
        "choosing an objective)."
    )


def select(columns: list[str], patterns: list[str] | tuple[str, ...]) -> list[str]:
    """The columns matching any of the fnmatch `patterns`, in pattern order, then column order."""
    out = [c for p in patterns for c in columns if fnmatch.fnmatchcase(c, p)]
    return list(dict.fromkeys(out))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def to_markdown(
    jobs: list[Job], swept: list[str], fixed: dict[str, str], metrics: list[str], title: str, search: Search | None
) -> str:
    """The table (job, status, swept keys, selected metrics), the fixed overrides, an Optuna search's best trial,
    the failed jobs."""
    names = labels(jobs, metrics)
    header = ["job", "status", *swept, *names.values()]
    lines = [f"# {title}", ""]
    caveat = schedule_caveat(jobs, swept)
    if caveat:
        lines += [f"> {caveat}", ""]
    if fixed:
        lines += ["Fixed: " + " ".join(f"`{k}={v}`" for k, v in fixed.items()), ""]
    if search is not None:
        params = " ".join(f"`{k}={_fmt(v)}`" for k, v in search.params.items())
        where = f"job {search.best.label} (`{search.best.dir}`)" if search.best else "no job of this dir"
        lines += [f"Optuna search: best value {search.value:.4g} in {where}: {params}", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    searched = set(search.params) if search is not None else set()
    for j in jobs:
        cells = [j.label, j.status]
        for k in swept:  # Optuna's numbers to 4 digits (summary.csv has them all)
            v = j.overrides.get(k, "")
            cells.append(_fmt(_number(v)) if k in searched and _number(v) is not None else v)
        cells += [_fmt(j.metrics.get(m, math.nan)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    lines += seed_table(jobs, swept, metrics, names)
    failed = [j for j in jobs if j.status != "ok"]
    if failed:
        lines += ["", f"Failed jobs ({len(failed)} of {len(jobs)}):", ""]
        for j in failed:
            lines.append(
                f"- job {j.label} ({' '.join(f'{k}={j.overrides[k]}' for k in swept if k in j.overrides)}): {j.error}"
            )
    return "\n".join(lines) + "\n"


def seed_table(jobs: list[Job], swept: list[str], metrics: list[str], names: dict[str, str]) -> list[str]:
    """When a seed is swept (`seed`, `*.seed`) beside other keys or alone: each selected metric as mean ± sd over the
    seeds of every combination of the other swept keys (markdown lines; none without a swept seed)."""
    seeds = [k for k in swept if k == "seed" or k.endswith(".seed")]
    if not seeds:
        return []
    others = [k for k in swept if k not in seeds]
    groups: dict[tuple, list[Job]] = {}
    for j in jobs:
        if j.status == "ok":
            groups.setdefault(tuple(j.overrides.get(k, "") for k in others), []).append(j)
    lines = [
        "",
        f"Over the seeds ({', '.join(seeds)}): mean ± sd",
        "",
        "| " + " | ".join([*others, "jobs", *names.values()]) + " |",
        "|" + "---|" * (len(others) + 1 + len(metrics)),
    ]
    for key, group in groups.items():
        cells = [*key, str(len(group))]
        for m in metrics:
            values = [float(j.metrics[m]) for j in group if m in j.metrics]
            sd = statistics.stdev(values) if len(values) > 1 else math.nan
            cells.append(f"{_fmt(statistics.mean(values))} ± {_fmt(sd) or '–'}" if values else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_csv(jobs: list[Job], swept: list[str], path: Path) -> list[dict[str, Any]]:
    """Every metric of every job, one row per job; returns the rows."""
    metric_cols = list(dict.fromkeys(m for j in jobs for m in j.metrics))
    rows = [
        {
            "job": j.label,
            "status": j.status,
            **{k: j.overrides.get(k, "") for k in swept},
            **j.metrics,
            "error": j.error,
        }
        for j in jobs
    ]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["job", "status", *swept, *metric_cols, "error"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _log_range(values: list[float]) -> bool:
    """Whether a log axis suits `values`: all positive, spanning more than 10x."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def _log_x(ax: plt.Axes) -> None:
    """A log x axis labelled at 1, 2 and 5 times each power of ten, as plain numbers."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _positions(values: list[str]) -> tuple[list[float], list[str] | None]:
    """Axis positions of override strings: the numbers, or (all not numeric) category indices and the categories."""
    numbers = [_number(v) for v in values]
    if all(n is not None for n in numbers):
        return numbers, None
    categories = list(dict.fromkeys(values))
    return [categories.index(v) for v in values], categories


def _floor(jobs: list[Job], metric: str) -> tuple[float, float] | None:
    """The sampling floor of `metric` (a column, or the last part of one) and its sd (0 if not recorded), from the
    first job holding it."""
    for j in jobs:
        for name in (metric, metric.rsplit("/", 1)[-1]):
            if f"floor/{name}" in j.metrics:
                return j.metrics[f"floor/{name}"], j.metrics.get(f"floor_sd/{name}", 0.0)
    return None


def _draw_floor(ax: plt.Axes, floor: tuple[float, float] | None) -> list[float]:
    """The floor as a dashed line inside its ± 1 sd and ± 2 sd bands (its spread: a value inside the outer band is
    not resolved from a perfect sampler's); the values to fit on the axis."""
    if floor is None:
        return []
    mean, sd = floor
    ax.axhspan(mean - 2 * sd, mean + 2 * sd, color="k", alpha=0.07, lw=0, label="floor ± 2 sd" if sd else None)
    ax.axhspan(mean - sd, mean + sd, color="k", alpha=0.12, lw=0, label="floor ± 1 sd" if sd else None)
    ax.axhline(mean, color="k", ls="--", lw=1, label=None if sd else "floor")
    return [mean - 2 * sd, mean + 2 * sd] if mean - 2 * sd > 0 else [mean]


def _log_searched(job: Job) -> set[str]:
    """The parameters an Optuna sweep searched on a log scale (`tag(log, …)` in hydra.sweeper.params)."""
    path = job.dir / ".hydra" / "hydra.yaml"
    params = OmegaConf.load(path).hydra.sweeper.get("params") if path.is_file() else None
    return {k for k, v in (params or {}).items() if "log" in str(v)}


def plot_search(jobs: list[Job], search: Search, label: str, path: Path) -> Path:
    """An Optuna sweep: the objective (main_metric) against each searched parameter, one panel each, the trials
    coloured by their number and the best one starred, the objective's sampling floor (if the jobs hold one) dashed
    in its ± sd band; log x axes where the search was log, category axes for categorical parameters."""
    ok = [j for j in jobs if j.status == "ok" and "main_metric" in j.metrics and set(search.params) <= set(j.overrides)]
    ys = [j.metrics["main_metric"] for j in ok]
    floor, logs = _floor(ok, ok[0].main_name) if ok and ok[0].main_name else None, _log_searched(ok[0]) if ok else set()
    fig, axes = plt.subplots(1, len(search.params), figsize=(4.2 * len(search.params), 3.6), squeeze=False)
    for ax, key in zip(axes[0], search.params, strict=True):
        xs, categories = _positions([j.overrides[key] for j in ok])
        points = ax.scatter(xs, ys, c=range(len(ok)), cmap="viridis", s=18, zorder=3)
        if search.best in ok:
            i = ok.index(search.best)
            ax.plot(xs[i], ys[i], "*", ms=15, mfc="none", mec="red", label=f"best (job {search.best.label})")
        if categories is not None:
            ax.set_xticks(range(len(categories)), categories, rotation=20, fontsize=8)
        elif key in logs or _log_range(xs):
            _log_x(ax)
        fit = _draw_floor(ax, floor)
        if search.best in ok or floor:
            ax.legend(fontsize=7)
        if _log_range(ys + fit):
            ax.set_yscale("log")
        ax.set(
            xlabel=key + (" (log search)" if key in logs else ""),
            ylabel=label,
            title=f"{label.split(' (')[0]} vs {key}",
        )
        ax.grid(alpha=0.3)
    bar = fig.colorbar(points, ax=axes[0, -1], label="trial")
    bar.locator = matplotlib.ticker.MaxNLocator(integer=True)
    bar.update_ticks()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot(jobs: list[Job], swept: list[str], metrics: list[str], path: Path, x: str | None = None) -> Path:
    """One panel per metric (its floor/* and floor_sd/* columns drawn as a dashed line in a ± sd band in the panel of
    the same metric; main_metric left out when it repeats a panel): the metric against `x` (default: the first swept
    key with numeric values, else the first swept key as categories, as points), one line per combination of the
    other swept keys. Log axes where the values are positive and span > 10x."""
    ok = [j for j in jobs if j.status == "ok"]
    panels = [m for m in metrics if not m.startswith(("floor/", "floor_sd/"))] or metrics
    mains = {j.main_name for j in ok if j.main_name}
    if "main_metric" in panels and len(mains) == 1 and any(p.endswith(f"/{m}") for m in mains for p in panels):
        panels.remove("main_metric")  # it repeats the panel of its metric (e.g. samplers/euler_maruyama/sw2)
    titles = labels(jobs, panels)
    if x is None:
        numeric = [k for k in swept if all(_number(j.overrides.get(k, "")) is not None for j in ok)]
        x = (numeric or swept or [None])[0]
    others = [k for k in swept if k != x]

    def x_value(j: Job) -> str:
        return j.overrides.get(x, "") if x in swept or x not in j.metrics else j.metrics[x]

    xs = [x_value(j) for j in ok]
    is_numeric = x is not None and all(_number(str(v)) is not None for v in xs)
    categories = list(dict.fromkeys(map(str, xs)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], panels, strict=True):
        lines: dict[str, list[tuple[float, float]]] = {}
        for j in ok:
            if metric in j.metrics:
                key = ", ".join(f"{k}={j.overrides.get(k, '')}" for k in others) or metric
                xv = _number(str(x_value(j))) if is_numeric else categories.index(str(x_value(j)))
                lines.setdefault(key, []).append((xv, j.metrics[metric]))
        for key, pts in lines.items():
            ax.plot(*zip(*sorted(pts), strict=True), marker="o", ms=4, ls="-" if is_numeric else "none", label=key)
        recalls = {j.recall_name for j in ok if j.recall_name}
        named = {"main_metric": mains, RECALL: recalls}.get(metric, set())
        floor = _floor(ok, next(iter(named)) if len(named) == 1 else metric)
        fit = _draw_floor(ax, floor)
        if _log_range([v for pts in lines.values() for _, v in pts] + fit):
            ax.set_yscale("log")
        if is_numeric and _log_range([float(v) for v in xs]):
            _log_x(ax)
        if not is_numeric:
            ax.set_xticks(range(len(categories)), categories, rotation=20, fontsize=8)
        ax.set(xlabel=x or "job", title=titles[metric].replace(" (", "\n("))
        ax.grid(alpha=0.3)
        if len(lines) > 1 or floor:
            ax.legend(fontsize=7)
    caveat = schedule_caveat(jobs, swept)
    if caveat:
        fig.suptitle(caveat.split(" To compare")[0] + f"\nfair comparison: {FAIR_PRESET}", fontsize=8, color="C3")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_score_errors(jobs: list[Job], swept: list[str], path: Path) -> Path | None:
    """score_error.png: each job's excess ε-loss over the exact score per λ at its last evaluation (runs on data with
    an oracle, evaluation.diagnosis), one curve per job named by its swept values; None when no job has one."""
    curves = {}
    for job in jobs:
        levels = json.loads((job.dir / "metrics.json").read_text()).get("score_error") if job.status == "ok" else None
        if levels:
            last = levels[max(levels, key=int)]
            name = " ".join(f"{k}={job.overrides[k]}" for k in swept if k in job.overrides) or job.label
            curves[name] = LevelError(last["lam"], last["excess"], last["se"])
    if not curves:
        return None
    return level_error_curves(curves, path, "excess loss over the exact score per λ, last evaluation")


def log_to_wandb(sweep_dir: Path, jobs: list[Job], rows: list[dict], plot_path: Path, mode: str) -> str | None:
    """A wandb run (job_type "summary") in the sweep's group with the table and the plot; returns the group."""
    from sde_diffusion.infra.tracking import start_run

    cfg = OmegaConf.load(jobs[0].dir / ".hydra" / "config.yaml")
    hydra_cfg = OmegaConf.load(jobs[0].dir / ".hydra" / "hydra.yaml").hydra
    logger = cfg.get("logger") or {}
    group = logger.get("group") or f"{cfg.get('name', 'run')}-{Path(str(hydra_cfg.sweep.dir)).name}"
    tracker = start_run(
        dir=sweep_dir,
        config={"sweep_dir": str(sweep_dir), "jobs": len(jobs), "failed": sum(j.status != "ok" for j in jobs)},
        project=logger.get("project", "sde-diffusion"),
        entity=logger.get("entity"),
        group=group,
        name="summary",
        job_type="summary",
        mode=mode,
        series=(),
    )
    tracker.log_table("summary", rows)
    tracker.log_images({"summary_plot": plot_path})
    tracker.finish()
    return group


def summarize(
    sweep_dir: Path, metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS, x: str | None = None, log: str = "disabled"
) -> list[Job]:
    """Write summary.csv, summary.md and summary.png (for an Optuna sweep its objective against each parameter), and
    score_error.png for jobs with the oracle's diagnosis, into `sweep_dir`, and a wandb summary run unless `log` is
    "disabled"; returns the jobs."""
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise ValueError(f"sweep_dir={sweep_dir}: no job dirs (with .hydra/overrides.yaml) below it")
    swept, fixed = swept_keys(jobs)
    columns = list(dict.fromkeys(m for j in jobs for m in j.metrics))
    selected = select(columns, metrics)
    if columns and not selected:
        raise ValueError(f"metrics={list(metrics)}: match none of the metric columns {columns}")
    if x is not None and x not in swept and x not in columns:
        raise ValueError(f"x={x!r}: must be a swept key {swept} or a metric column")
    search = read_search(sweep_dir, jobs)
    table = to_markdown(jobs, swept, fixed, selected, f"Sweep {sweep_dir}", search)
    (sweep_dir / "summary.md").write_text(table)
    rows = write_csv(jobs, swept, sweep_dir / "summary.csv")
    plot_path = sweep_dir / "summary.png"
    if search is not None:
        plot_search(jobs, search, labels(jobs, ["main_metric"])["main_metric"], plot_path)
    elif selected:
        plot(jobs, swept, selected, plot_path, x=x)
    plot_score_errors(jobs, swept, sweep_dir / "score_error.png")
    print(table)
    if log != "disabled" and (selected or search is not None):
        group = log_to_wandb(sweep_dir, jobs, rows, plot_path, log)
        print(f"wandb summary run in group {group!r} under {sweep_dir / 'wandb'}")
    failed = [j for j in jobs if j.status != "ok"]
    if failed:
        print(f"{len(failed)} of {len(jobs)} jobs failed: " + ", ".join(j.label for j in failed), file=sys.stderr)
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun dir (hydra.sweep.dir)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="fnmatch patterns of columns")
    parser.add_argument("--x", default=None, help="x axis of the plot: a swept key or a metric column")
    parser.add_argument("--log", choices=["disabled", "offline", "online"], default="disabled", help="wandb mode")
    args = parser.parse_args(argv)
    try:
        summarize(args.sweep_dir, args.metrics, x=args.x, log=args.log)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
