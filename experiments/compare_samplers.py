"""Compare samplers × step counts on the exact Gaussian-mixture oracle: quality per NFE, and the sampling floor.

    python experiments/compare_samplers.py                       # default grid, VP linear, both oracles
    python experiments/compare_samplers.py grid=dpm_study sde.schedule._target_=sde_diffusion.CosineBeta

For each run: SW₂ and unbiased MMD² to an independent true set, the mode-weight error, and for the deterministic
samplers the flow error (RMS distance to the exact probability-flow map of the same noise), plus the wall time
over NFE × one score call. The floor is the same metrics between independent true sets. Writes comparison.csv,
comparison.md and quality_vs_nfe.png into Hydra's output directory.
"""

from __future__ import annotations

import csv
import math
import statistics
import time
from pathlib import Path

import hydra
import matplotlib
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sde_diffusion import analytic
from sde_diffusion.analytic import GaussianMixture
from sde_diffusion.metrics import exact_flow_map, flow_error, mmd2, mode_weight_error, sliced_wasserstein
from sde_diffusion.sampling import DETERMINISTIC, sample
from sde_diffusion.sde import SDE, ScoreFn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = ["data", "sampler", "steps", "nfe", "sw2", "mmd2", "mode_error", "flow_error", "time_ratio"]


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
    exact = exact_flow_map(sde, oracle, x_T, eps, denoise=denoise) if oracle is not None else None
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


def floor_rows(oracle: GaussianMixture, reference: torch.Tensor, repeats: int, seed: int) -> list[dict]:
    """The sampling floor: the metrics of `repeats` independent true sets against the reference."""
    rows = []
    for k in range(repeats):
        y = oracle.sample(reference.shape[0], torch.Generator().manual_seed(seed + 1000 + k))
        rows.append(
            {
                "sw2": sliced_wasserstein(y, reference),
                "mmd2": mmd2(y, reference),
                "mode_error": mode_weight_error(oracle, y),
            }
        )
    return rows


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
        stats = {k: (statistics.mean(r[k] for r in fl), statistics.stdev(r[k] for r in fl)) for k in fl[0]}
        lines.append(f"- {data}: " + ", ".join(f"{k} {m:.3g} ± {s:.2g}" for k, (m, s) in stats.items()))
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], floors: dict[str, list[dict]], path: Path) -> None:
    """Metric vs NFE (log x), one line per sampler, one row per data set; the floor's mean dashed."""
    datas, metrics = list(floors), ["sw2", "mmd2", "flow_error"]
    labels = list(dict.fromkeys(r["sampler"] for r in rows))
    color = {label: plt.get_cmap("tab20")(k % 20) for k, label in enumerate(labels)}
    fig, axes = plt.subplots(len(datas), 3, figsize=(15, 4.5 * len(datas)), squeeze=False)
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
            ax.set_xscale("log")
            ax.set_yscale("log" if metric != "mmd2" else "symlog", **({"linthresh": 1e-4} if metric == "mmd2" else {}))
            ax.set(xlabel="NFE", ylabel=metric, title=f"{data}: {metric}")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@hydra.main(config_path="../conf", config_name="compare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    sde = instantiate(cfg.sde)
    if cfg.grid not in cfg.grids:
        raise ValueError(f"grid must be one of {list(cfg.grids)}, got {cfg.grid!r}")
    grid = OmegaConf.to_container(cfg.grids[cfg.grid], resolve=True)
    rows, floors = [], {}
    for data in cfg.oracles:
        if not hasattr(analytic, data):
            raise ValueError(f"oracles entries must be sde_diffusion.analytic functions, got {data!r}")
        oracle = getattr(analytic, data)()
        reference = oracle.sample(cfg.n, torch.Generator().manual_seed(cfg.seed + 500)).float()
        print(f"\n## {data} ({oracle.dim}-D), {sde}\n" + " | ".join(COLUMNS))
        new = evaluate_grid(sde, oracle.score_fn(sde), reference, oracle, grid, eps=cfg.eps, denoise=cfg.denoise,
                            seed=cfg.seed)  # fmt: skip
        rows += [{"data": data, **r} for r in new]
        floors[data] = floor_rows(oracle, reference.double(), cfg.floor_repeats, cfg.seed)
    table = to_markdown(rows, floors)
    print("\n" + table)
    (out / "comparison.md").write_text(f"# Sampler comparison: {sde}\n\n" + table)
    with open(out / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, floors, out / "quality_vs_nfe.png")
    print(f"wrote {out}/comparison.csv, comparison.md, quality_vs_nfe.png")


if __name__ == "__main__":
    main()
