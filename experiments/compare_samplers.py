"""Compare samplers × step counts on the exact Gaussian-mixture oracle or a trained run: quality per NFE, and the
sampling floor.

    python experiments/compare_samplers.py                       # default grid, VP linear β(t), both oracles
    python experiments/compare_samplers.py grid=dpm_study schedule=cosine
    python experiments/compare_samplers.py checkpoint=outputs/train/DATE/checkpoints/last.pt   # a trained model
    python experiments/compare_samplers.py -m sampler=euler_maruyama,pc,rk45,dpm_solver sampler.steps=10,20,50,100,1000
    python experiments/compare_samplers.py +experiment=oracle_study  # β(t) × sampler × steps, no training

For each run: SW₂ and unbiased MMD² to an independent true set, the mode-weight error, and for the deterministic
samplers the flow error (RMS distance to the exact probability-flow map of the same noise), plus the wall time
over NFE × one score call. The floor is the same metrics between independent true sets. Seeds: the prior noise
x_T is drawn with `seed`, a sampler's own noise with `seed + 1`, the reference set with `seed + 500`, floor draw
k with `seed + 1000 + k`. Writes comparison.csv, comparison.md, quality_vs_nfe.png and metrics.json into Hydra's
output directory, and logs the table and the plot to one wandb run (offline by default; in a multirun one run
per job, one group per sweep; `python experiments/summarize.py MULTIRUN_DIR` tabulates the jobs).

`sampler=NAME` (a conf/sampler/ file) replaces the grid with that one sampler at `sampler.steps`, so each job of a
multirun is one point; `schedules` (set by the oracle_study preset) repeats the grid for every β(t) listed.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import hydra
import matplotlib
import matplotlib.ticker
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sde_diffusion import analytic
from sde_diffusion.analytic import GaussianMixture, exact_flow_map
from sde_diffusion.config import check_sampler, config_error, instantiate_node, load_run, start_tracker
from sde_diffusion.metrics import flow_error, mmd2, mode_weight_error, sliced_wasserstein
from sde_diffusion.sampling import DETERMINISTIC, sample
from sde_diffusion.sde import SDE, ScoreFn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = ["data", "schedule", "sampler", "steps", "nfe", "sw2", "mmd2", "mode_error", "flow_error", "time_ratio"]


def score_call_seconds(score_fn: ScoreFn, x: torch.Tensor, repeats: int = 5) -> float:
    """Median wall time of one score call on the batch x."""
    t = torch.full((x.shape[0],), 0.5, dtype=x.dtype)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        score_fn(x, t)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def evaluate_grid(
    sde: SDE,
    score_fn: ScoreFn,
    reference: torch.Tensor,
    oracle: GaussianMixture | None,
    grid: list[dict],
    *,
    eps: float = 1e-3,
    denoise: bool = True,
    seed: int = 0,
) -> list[dict]:
    """One row per (grid entry, steps): quality metrics to `reference` and, with an oracle, the mode and flow errors.

    All runs start from the same prior noise (seeded), so flow errors and stochastic runs are comparable.
    """
    shape = tuple(reference.shape)
    x_T = sde.prior_sampling(shape, generator=torch.Generator().manual_seed(seed))
    deterministic = any(entry["name"] in DETERMINISTIC for entry in grid)
    exact = exact_flow_map(sde, oracle, x_T, eps, denoise=denoise) if oracle is not None and deterministic else None
    one_call = score_call_seconds(score_fn, x_T)
    rows = []
    for entry in grid:
        name, options = entry["name"], dict(entry.get("options", {}))
        for steps in entry["steps"]:
            g = torch.Generator().manual_seed(seed + 1)
            t0 = time.perf_counter()
            r = sample(sde, score_fn, shape, sampler=name, steps=steps, eps=eps, denoise=denoise, x_T=x_T,
                       generator=g, **options)  # fmt: skip
            wall = time.perf_counter() - t0
            x = r.x.double()
            rows.append(
                {
                    "sampler": entry.get("label", name),
                    "steps": steps,
                    "nfe": r.nfe,
                    "sw2": sliced_wasserstein(x, reference),
                    "mmd2": mmd2(x, reference),
                    "mode_error": mode_weight_error(oracle, x) if oracle is not None else math.nan,
                    "flow_error": flow_error(x, exact) if exact is not None and name in DETERMINISTIC else math.nan,
                    "time_ratio": wall / (r.nfe * one_call),
                }
            )
            print(_fmt_row(rows[-1]), flush=True)
    return rows


def floor_rows(
    draw: Callable[[int, torch.Generator], torch.Tensor],
    reference: torch.Tensor,
    oracle: GaussianMixture | None,
    repeats: int,
    seed: int,
) -> list[dict]:
    """The sampling floor: the metrics of `repeats` independent true sets `draw(n, generator)` against the
    reference."""
    rows = []
    for k in range(repeats):
        y = draw(reference.shape[0], torch.Generator().manual_seed(seed + 1000 + k)).double()
        row = {"sw2": sliced_wasserstein(y, reference), "mmd2": mmd2(y, reference)}
        if oracle is not None:
            row["mode_error"] = mode_weight_error(oracle, y)
        rows.append(row)
    return rows


def _is_nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _fmt_row(row: dict) -> str:
    return " | ".join(_fmt(row.get(c, "")) for c in COLUMNS)


def to_markdown(rows: list[dict], floors: dict[str, list[dict]]) -> str:
    """The table plus, per data set, the floor as mean ± std over the true-vs-true draws."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + _fmt_row(r) + " |" for r in rows]
    lines += ["", "Sampling floor (true vs true, mean ± std):", ""]
    for data, fl in floors.items():
        stats = {
            k: (statistics.mean(r[k] for r in fl), statistics.stdev(r[k] for r in fl) if len(fl) > 1 else 0.0)
            for k in fl[0]
        }
        lines.append(f"- {data}: " + ", ".join(f"{k} {m:.3g} ± {s:.2g}" for k, (m, s) in stats.items()))
    return "\n".join(lines) + "\n"


def schedule_table(
    rows: list[dict], floors: dict[str, list[dict]], metrics: tuple[str, ...] = ("sw2", "flow_error")
) -> str:
    """The β(t) study: per data set and metric, the metric of every (sampler, steps) under each schedule side by
    side, the best schedule of each row in bold (rows where the metric is undefined are left out)."""
    schedules = list(dict.fromkeys(r["schedule"] for r in rows))
    lines = []
    for data, fl in floors.items():
        for metric in metrics:
            cells: dict[tuple, dict[str, float]] = {}
            for r in rows:
                if r["data"] == data and not _is_nan(r[metric]):
                    cells.setdefault((r["sampler"], r["steps"]), {})[r["schedule"]] = r[metric]
            if not cells:
                continue
            floor = f" (floor {statistics.mean(f[metric] for f in fl):.3g})" if metric in fl[0] else ""
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
    ax.set_yscale("log" if metric != "mmd2" else "symlog", **({"linthresh": 1e-4} if metric == "mmd2" else {}))


def plot(rows: list[dict], floors: dict[str, list[dict]], path: Path, metrics: tuple[str, ...] = ("sw2", "mmd2",
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
                pts = sorted((r["nfe"], r[metric]) for r in rows if r["data"] == data and r["sampler"] == label)
                pts = [p for p in pts if not math.isnan(p[1])]
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", ms=3, color=color[label], label=label)
            if metric in floors[data][0]:
                ax.axhline(statistics.mean(r[metric] for r in floors[data]), color="k", ls="--", label="floor")
            _log_axes(ax, metric)
            ax.set(xlabel="NFE", ylabel=metric, title=f"{data}: {metric}")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_schedules(rows: list[dict], floors: dict[str, list[dict]], path: Path, metric: str = "sw2") -> None:
    """The β(t) study: `metric` vs NFE, one panel per (data set, sampler), one line per schedule; floor dashed."""
    datas, labels = list(floors), list(dict.fromkeys(r["sampler"] for r in rows))
    schedules = list(dict.fromkeys(r["schedule"] for r in rows))
    fig, axes = plt.subplots(len(datas), len(labels), figsize=(3.6 * len(labels), 3.3 * len(datas)), squeeze=False)
    for i, data in enumerate(datas):
        for j, label in enumerate(labels):
            ax = axes[i, j]
            for k, schedule in enumerate(schedules):
                pts = sorted(
                    (r["nfe"], r[metric])
                    for r in rows
                    if (r["data"], r["sampler"], r["schedule"]) == (data, label, schedule) and not math.isnan(r[metric])
                )
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", ms=3, color=f"C{k}", label=schedule)
            ax.axhline(statistics.mean(r[metric] for r in floors[data]), color="k", ls="--", lw=1, label="floor")
            _log_axes(ax, metric)
            ax.set_title(f"{data}: {label}", fontsize=9)
            ax.set(xlabel="NFE", ylabel=metric if j == 0 else None)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def metrics_tree(rows: list[dict], floors: dict[str, list[dict]], keys: list[str]) -> dict:
    """metrics.json: the metric columns of each row nested by `keys` (e.g. data / sampler / steps), and the floor's
    mean per data set; `python experiments/summarize.py` flattens it to columns like `eight_gaussians/sw2`."""
    tree: dict = {}
    for r in rows:
        node = tree
        for key in keys:
            node = node.setdefault(str(r[key]), {})
        node.update({c: r[c] for c in COLUMNS[COLUMNS.index("nfe") :] if not _is_nan(r[c])})  # JSON has no NaN
    tree["floor"] = {data: {k: statistics.mean(f[k] for f in fl) for k in fl[0]} for data, fl in floors.items()}
    return tree


def _grid(cfg: DictConfig) -> tuple[list[dict], float, bool]:
    """(grid, eps, denoise): the one sampler of `sampler` at `sampler.steps`, or `grids[grid]` with `eps`/`denoise`."""
    if cfg.get("sampler") is not None:
        check_sampler(cfg, "sampler")
        sc = OmegaConf.to_container(cfg.sampler, resolve=True)
        return [{"name": sc["name"], "steps": [sc["steps"]], "options": sc["options"]}], sc["eps"], sc["denoise"]
    if cfg.grid not in cfg.grids:
        raise config_error("grid", cfg.grid, "allowed: " + ", ".join(cfg.grids))
    return OmegaConf.to_container(cfg.grids[cfg.grid], resolve=True), cfg.eps, cfg.denoise


def _sdes(cfg: DictConfig) -> dict[str, SDE]:
    """{schedule label: SDE}: `sde` as configured, or one per entry of `schedules` (the β(t) study)."""
    if not cfg.get("schedules"):
        sde = instantiate_node(cfg, "sde")
        return {type(sde.schedule).__name__ if hasattr(sde, "schedule") else "-": sde}
    return {
        label: instantiate_node(cfg, "sde", schedule=instantiate_node(cfg, f"schedules.{label}"))
        for label in cfg.schedules
    }


def _problems(cfg: DictConfig):
    """Yield (data name, schedule label, sde, score_fn, reference, oracle, draw): every oracle under every SDE, or the
    trained run of `checkpoint` with its own SDE and data set."""
    if cfg.get("checkpoint") is not None:
        if cfg.get("schedules"):
            raise config_error("schedules", "...", "must be empty with checkpoint= (the run fixes its SDE)")
        if not Path(str(cfg.checkpoint)).is_file():
            raise config_error("checkpoint", cfg.checkpoint, "the path of a checkpoint written by experiments/train.py")
        model, sde, data, _ = load_run(cfg.checkpoint)

        def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model(x.float(), t.float()).to(x.dtype)

        reference = data.reference(cfg.n, torch.Generator().manual_seed(cfg.seed + 500)).float()
        schedule = type(sde.schedule).__name__ if hasattr(sde, "schedule") else "-"
        yield type(data).__name__, schedule, sde, score_fn, reference, data.oracle, data.reference
        return
    for data in cfg.oracles:
        if not hasattr(analytic, data):
            raise config_error(
                "oracles", data, "entries must be sde_diffusion.analytic functions, e.g. eight_gaussians"
            )
    sdes = _sdes(cfg)
    for data in cfg.oracles:
        oracle = getattr(analytic, data)()
        reference = oracle.sample(cfg.n, torch.Generator().manual_seed(cfg.seed + 500)).float()
        for schedule, sde in sdes.items():
            yield data, schedule, sde, oracle.score_fn(sde), reference, oracle, oracle.sample


@hydra.main(config_path="../conf", config_name="compare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    grid, eps, denoise = _grid(cfg)
    problems = list(_problems(cfg))  # validates and builds everything before the tracker starts
    tracker = start_tracker(cfg, out, job_type="compare")
    exit_code = 1
    try:
        rows, floors = [], {}
        for data, schedule, sde, score_fn, reference, oracle, draw in problems:
            print(f"\n## {data} ({reference[0].numel()}-D), {sde} {schedule}\n" + " | ".join(COLUMNS))
            new = evaluate_grid(sde, score_fn, reference, oracle, grid, eps=eps, denoise=denoise, seed=cfg.seed)
            rows += [{"data": data, "schedule": schedule, **r} for r in new]
            if data not in floors:
                floors[data] = floor_rows(draw, reference.double(), oracle, cfg.floor_repeats, cfg.seed)
        study = len({r["schedule"] for r in rows}) > 1
        table = to_markdown(rows, floors)
        if study:
            table = schedule_table(rows, floors) + "\n" + table
        print("\n" + table)
        title = "β(t) study" if study else f"Sampler comparison: {problems[0][2]}"
        (out / "comparison.md").write_text(f"# {title}\n\n" + table)
        with open(out / "comparison.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        (plot_schedules if study else plot)(rows, floors, out / "quality_vs_nfe.png")
        one_point = cfg.get("sampler") is not None  # a multirun job: metrics.json per data set only
        keys = ["data"] + (["schedule"] if study else []) + ([] if one_point else ["sampler", "steps"])
        metrics = metrics_tree(rows, floors, keys)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print(f"wrote {out}/comparison.csv, comparison.md, quality_vs_nfe.png, metrics.json")

        floor_means = [{"data": d, "sampler": "floor (true vs true)", **m} for d, m in metrics["floor"].items()]
        tracker.log_table("comparison", rows + floor_means)
        tracker.log_images({"quality_vs_nfe": out / "quality_vs_nfe.png"})
        if one_point:
            tracker.summary({f"{d}/{k}": v for d, m in metrics.items() if d != "floor" for k, v in m.items()})
        exit_code = 0
    finally:
        tracker.finish(exit_code=exit_code)


if __name__ == "__main__":
    main()
