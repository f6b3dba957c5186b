"""compare_samplers.py's rendering: its rows (one per problem × sampler run) as comparison.md (the table, the floor,
the β(t) study's side-by-side tables, the model and a legend), comparison.csv, quality_vs_nfe.png and metrics.json."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

from ..evaluation.evaluator import legend

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HEAD = ["data", "schedule", "sampler", "kind", "steps", "nfe"]  # kind: SDE (stochastic) or ODE (probability flow)
STYLE = {"SDE": ("-", "o"), "ODE": ("--", "s")}  # quality_vs_nfe.png: (line style, marker) per kind
Floors = dict[str, tuple[dict[str, float], dict[str, float]]]  # {data set: (mean, sd) of every metric}


def columns(rows: list[dict]) -> list[str]:
    """HEAD, every metric the rows hold (evaluation's, in its order), then time_ratio."""
    seen = dict.fromkeys(k for r in rows for k in r)
    return HEAD + [k for k in seen if k not in HEAD and k not in ("wall_s", "time_ratio")] + ["time_ratio"]


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
    elif metric in ("oracle_nll", "nll_excess"):  # nats, of either sign, tens of them at a few NFE
        ax.set_yscale("symlog", linthresh=1.0)
    else:
        ax.set_yscale("log")


def plot(
    rows: list[dict], floors: Floors, path: Path, metrics: tuple[str, ...] = ("sw2", "mmd2", "flow_error")
) -> None:
    """Metric vs NFE (log x), one line per sampler (SDE samplers solid with circles, ODE ones dashed with squares),
    one row per data set; the floor's mean as a grey line with its ± sd band."""
    datas = list(floors)
    labels = list(dict.fromkeys(r["sampler"] for r in rows))
    kind = {r["sampler"]: r.get("kind", "SDE") for r in rows}
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
                    ls, marker = STYLE[kind[label]]
                    ax.plot(
                        *zip(*pts, strict=True),
                        ls=ls,
                        marker=marker,
                        ms=3,
                        color=color[label],
                        label=f"{label} ({kind[label]})",
                    )
            if metric in floors[data][0]:
                mean, sd = floors[data][0][metric], floors[data][1].get(metric, 0.0)
                ax.axhspan(mean - sd, mean + sd, color="0.5", alpha=0.2, lw=0)
                ax.axhline(mean, color="0.3", ls=":", label="floor (± sd)")
            if not ax.lines:  # e.g. flow_error on a checkpoint, whose own flow is not the oracle's exact one
                note = "deterministic samplers of an exact score only" if metric == "flow_error" else "none measured"
                ax.text(0.5, 0.5, f"{metric}: {note}", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            _log_axes(ax, metric)
            ax.set(xlabel="NFE", ylabel=metric, title=f"{data}: {metric}")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(
        "solid, circles: SDE samplers (stochastic) · dashed, squares: ODE samplers (probability flow)", fontsize=9
    )
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


def model_line(model: dict, data: str, sde: str) -> str:
    """comparison.md's line naming the model: the oracles, or the checkpoint with its data, SDE, network and steps."""
    if "config" not in model:
        return f"Model: {model['source']}."
    net, steps = model["config"].get("model", {}).get("_target_"), model["config"].get("train", {}).get("steps")
    return f"Model: checkpoint `{model['source']}` ({data}, {sde}; {net}, {steps} training steps)."


def legend_lines(keys: list[str]) -> str:
    """The legend of the table's metrics (evaluation.LEGEND), as markdown lines under it."""
    return "\nLegend:\n\n" + "".join(f"- {k}: {text}\n" for k, text in legend(keys).items())


def write(
    out: Path,
    rows: list[dict],
    floors: Floors,
    model: dict,
    sde: str,
    plot_metrics: tuple[str, ...],
    one_point: bool,
    extra: dict,
) -> dict:
    """comparison.md (titled with `sde`, naming the `model`), comparison.csv, quality_vs_nfe.png and metrics.json
    (with the model, a legend and `extra`: main_metric, timesteps) into `out`; returns the metrics' tree. A β(t)
    study (several schedules) gets its own table and plot; `one_point` (a job of a sampler sweep) nests metrics.json
    by data set only."""
    study = len({r["schedule"] for r in rows}) > 1
    table = (schedule_table(rows, floors) + "\n" if study else "") + to_markdown(rows, floors)
    print("\n" + table)
    title = "β(t) study" if study else f"Sampler comparison: {sde}"
    head = f"# {title}\n\n{model_line(model, rows[0]['data'], sde)}\n\n"
    (out / "comparison.md").write_text(head + table + legend_lines(columns(rows)))
    with open(out / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns(rows))
        writer.writeheader()
        writer.writerows(rows)
    if study:
        plot_schedules(rows, floors, out / "quality_vs_nfe.png")
    else:
        plot(rows, floors, out / "quality_vs_nfe.png", plot_metrics)
    keys = ["data"] + (["schedule"] if study else []) + ([] if one_point else ["sampler", "steps"])
    metrics = metrics_tree(rows, floors, keys)
    record = metrics | extra | {"model": model, "legend": legend(columns(rows))}
    (out / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out}/comparison.csv, comparison.md, quality_vs_nfe.png, metrics.json")
    return metrics
