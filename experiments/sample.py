"""Sample a trained run (a checkpoint of experiments/train.py, or a folder of experiments/export.py) with any sampler.

    python experiments/sample.py checkpoint=outputs/train/<date_time>/checkpoints/last.pt
    python experiments/sample.py checkpoint=... sampler=ddim steps=50 sampler.options.eta=0.5 n=10000 metrics=true
    python experiments/sample.py checkpoint=... sampler=dpm_solver steps=9 timesteps=tuned  # tune_timesteps.py's grid
    python experiments/sample.py checkpoint=... labels=all w=2  # a class-conditional run: n/C of every class, guided
    python experiments/sample.py checkpoint=... labels=all w=2 guidance=auto guide=RUN/checkpoints/guide.pt
    python experiments/sample.py checkpoint=... labels=all w=3 guidance=apg guidance.interval=[-2,1]
    python experiments/sample.py -m checkpoint=... sampler=ddim,dpm_solver steps=10,20      # one job per pair

The sampler is a conf/sampler/ file with its options; `steps` is its number of steps (`steps=10` is
`sampler.steps=10`). Output dir (Hydra's): samples.npz (`x`: the samples in data space, i.e. raw levels for data
with a scaler such as images, as sampled, and then also `quantised`: rounded and clipped to the integer levels;
`labels` when labels were asked for), samples.png (an image grid, one row per class with labels=all, or a scatter
beside a held-out data draw; titled with data, SDE, β(t), sampler and NFE), metrics.json (sampler, steps, NFE, wall
time, the tuned grid if any; with metrics=true every metric of evaluation.evaluator against a held-out draw of n
points, the floor and a legend) and an offline wandb run. NFE counts score calls; with labels each is two network
evaluations for classifier-free guidance (`guidance` picks the method, conf/guidance/; metrics.json's `network_evals`
counts the model's and the guide's evaluations per sample). The seeds are sde_diffusion.evaluation.evaluator's: x_T from
`seed`, the sampler's noise from `seed + 1`, the held-out draw from `seed + 500`, so an unconditional run draws what
train.py's evaluation with eval.seed = seed draws. `eval` is train.yaml's node (evaluation.evaluator.Evaluator)
with n, seed and batch_size from here. A progress bar counts samples (chunks) or steps. Returns SW₂ with
metrics=true (for Hydra sweepers), else None.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from sde_diffusion.apps import (
    RunError,
    check_run,
    config_error,
    config_errors,
    hydra_app,
    instantiate_node,
    load_run,
    output_dir,
    require_choice,
    require_number,
    require_run,
    require_values,
    start_tracker,
    sweep_run_name,
    tuned_run,
)
from sde_diffusion.apps.guard import check_samples
from sde_diffusion.core.sde import SDE
from sde_diffusion.evaluation import plots
from sde_diffusion.evaluation.evaluator import legend
from sde_diffusion.infra.checkpoint import CheckpointError
from sde_diffusion.infra.runtime import resolve_device
from sde_diffusion.sampling import SamplerRun, SampleSetup
from sde_diffusion.sampling.guidance.guided import Guidance, guided_sample

log = logging.getLogger("sample")


def check(cfg: DictConfig) -> None:
    """The keys only this app reads (the sampler, labels and eval are checked by the library once the run is
    loaded)."""
    require_values(cfg)
    require_run(cfg, "checkpoint", also=())
    require_choice(cfg, "metrics", (True, False))
    require_choice(cfg, "progress", (True, False))
    require_number(cfg, "n", integer=True, ge=1)
    require_number(cfg, "batch_size", integer=True, ge=1, optional=True)
    require_number(cfg, "seed", integer=True, ge=0)
    require_number(cfg, "w", ge=0)
    require_run(cfg, "guide")


def guidance(cfg: DictConfig, model: torch.nn.Module, run: SamplerRun, labels: torch.Tensor | None, device):
    """The `guidance` method (conf/guidance/) at scale w and the weak guide of guide=PATH (loaded, or None); a
    setting that cannot apply is a one-line error naming its key."""
    with config_errors("guidance"):
        g = Guidance(w=float(cfg.w), **OmegaConf.to_container(cfg.guidance, resolve=True))
    if labels is None and (g.method != "cfg" or g.interval is not None or cfg.guide is not None):
        raise config_error("labels", None, "must be a class or 'all' for guidance other than cfg, an interval, a guide")
    if g.method == "cfgpp" and run.name != "ddim":
        raise config_error("sampler", run.name, "must be ddim for guidance=cfgpp (CFG++ is defined for DDIM's step)")
    if (g.method == "auto") != (cfg.guide is not None):
        raise config_error("guide", cfg.guide, "must be a checkpoint with guidance=auto, and null with any other")
    if cfg.guide is None:
        return g, None
    try:
        guide = load_run(cfg.guide, device)[0]
    except CheckpointError as err:
        raise RunError(str(err)) from err
    if guide.num_classes != model.num_classes:
        raise config_error("guide", cfg.guide, f"must be conditional on the run's {model.num_classes} classes, has "
                           f"num_classes={guide.num_classes}")  # fmt: skip
    return g, guide


def sampler_run(cfg: DictConfig, sde: SDE) -> tuple[SamplerRun, dict | None]:
    """The `sampler` at `steps` (= sampler.steps), checked against its spec and `sde` (a bad value names its key
    under `sampler`), on the tuned grid of `timesteps` if set; and the record of that grid (None without)."""
    run = SamplerRun(**(OmegaConf.to_container(cfg.sampler, resolve=True) | {"steps": cfg.steps}))
    check_run(run, sde, "sampler")
    if cfg.timesteps is None:
        return run, None
    return tuned_run(run, sde, cfg.timesteps, cfg.checkpoint)


def class_labels(cfg: DictConfig, num_classes: int | None) -> torch.Tensor | None:
    """The class of each of the n samples: None (unconditional), one class for all, or n/C of each class in turn."""
    if cfg.labels is None:
        if cfg.w != 0:
            raise config_error("w", cfg.w, "must be 0 without labels (guidance needs labels=CLASS or labels=all)")
        return None
    if num_classes is None:
        raise config_error("labels", cfg.labels, "must be null: this run's model is unconditional (no num_classes)")
    if cfg.labels == "all":
        if cfg.n % num_classes:
            raise config_error("n", cfg.n, f"must be a multiple of num_classes={num_classes} with labels=all")
        return torch.arange(num_classes).repeat_interleave(cfg.n // num_classes)
    if isinstance(cfg.labels, bool) or not isinstance(cfg.labels, int) or not 0 <= cfg.labels < num_classes:
        raise config_error("labels", cfg.labels, f"must be null, 'all' or a class index in [0, {num_classes - 1}]")
    return torch.full((cfg.n,), cfg.labels, dtype=torch.long)


def draw(
    cfg: DictConfig, model: torch.nn.Module, sde: SDE, run: SamplerRun, shape: tuple[int, ...],
    labels: torch.Tensor | None, device: torch.device, guided: tuple[Guidance, torch.nn.Module | None],
) -> tuple[torch.Tensor, int, float, dict]:  # fmt: skip
    """n samples of `run` (model space, on the CPU) from x_T (seed `seed`) with the sampler's noise (`seed + 1`),
    `batch_size` at a time, each chunk guided (`guided`: the method and its guide) with its own labels; their NFE,
    the wall time in seconds and, with labels, the network evaluations per sample of the model and the guide."""
    x_T = sde.prior_sampling((cfg.n, *shape), generator=torch.Generator().manual_seed(cfg.seed))
    generator = torch.Generator(device).manual_seed(cfg.seed + 1)
    chunks, outs, nfe, done, evals = x_T.split(cfg.batch_size or cfg.n), [], 0, 0, {}
    start = time.perf_counter()
    with tqdm(total=cfg.n, unit="sample", desc=run.name, disable=not cfg.progress or len(chunks) == 1) as bar:
        for chunk in chunks:
            setup = SampleSetup(generator, chunk, device=device, progress=cfg.progress and len(chunks) == 1)
            if labels is None:
                res = run.sample(sde, model, tuple(chunk.shape), setup)
            else:
                y = labels[done : done + len(chunk)].to(device)
                res, e = guided_sample(guided[0], sde, model, y, model.num_classes, run, guided[1], setup=setup)
                evals = {k: max(v, evals.get(k, 0.0)) for k, v in e.items()}
            outs.append(res.x.float().cpu())
            nfe, done = max(nfe, res.nfe), done + len(chunk)
            bar.update(len(chunk))
    return torch.cat(outs), nfe, time.perf_counter() - start, evals


def data_space(x: torch.Tensor, scaler) -> dict[str, np.ndarray]:
    """samples.npz's arrays: `x` in data space (raw levels with a scaler) and, with a scaler, `quantised`."""
    if scaler is None:
        return {"x": x.numpy()}
    raw = scaler.to_raw(x)
    levels = raw.round().clamp(0, scaler.levels - 1).to(torch.uint8 if scaler.levels <= 256 else torch.int32)
    return {"x": raw.numpy(), "quantised": levels.numpy()}


def figure(x: torch.Tensor, data, labels: torch.Tensor | None, cfg: DictConfig, title: str, path: Path) -> Path:
    """An image grid of the samples (10 per class, a row each, with labels=all; else the first 64), or a scatter of
    them beside a held-out data draw."""
    if len(data.shape) == 3:
        if cfg.labels == "all":
            c = int(labels.max()) + 1
            show = min(10, cfg.n // c)
            return plots.image_grid(x.view(c, -1, *x.shape[1:])[:, :show].flatten(0, 1), path, title, nrow=show,
                                    scaler=data.scaler)  # fmt: skip
        return plots.image_grid(x[:64], path, title, scaler=data.scaler)
    reference = data.reference(cfg.n, torch.Generator().manual_seed(cfg.seed + 500))
    return plots.scatter_panels({title.splitlines()[-1]: x}, reference, path, title.splitlines()[0])


@hydra_app("sample")
def main(cfg: DictConfig) -> float | None:
    """Check and load everything (every bad value fails here, before any output), sample, write and log."""
    check(cfg)
    out = output_dir()
    with config_errors():
        device = resolve_device(cfg.device)
    try:
        model, sde, data, _ = load_run(cfg.checkpoint, device)
    except CheckpointError as err:
        raise RunError(str(err)) from err
    run, grid = sampler_run(cfg, sde)
    labels = class_labels(cfg, model.num_classes)
    guided = guidance(cfg, model, run, labels, device)
    evaluator = None
    if cfg.metrics:
        evaluator = instantiate_node(cfg, "eval", samplers={run.name: asdict(run)}, _convert_="all")
    shape = tuple(data.shape)
    out.mkdir(parents=True, exist_ok=True)
    with start_tracker(cfg, out, job_type="sample") as tracker:
        x, nfe, wall, evals = draw(cfg, model, sde, run, shape, labels, device, guided)
        arrays = data_space(x, data.scaler) | ({"labels": labels.numpy()} if labels is not None else {})
        np.savez(out / "samples.npz", **arrays)
        result = {"source": str(cfg.checkpoint), "sampler": run.name, "steps": run.steps, "t_min": run.t_min,
                  "denoise": run.denoise, "options": dict(run.options), "timesteps": grid, "nfe": nfe, "wall_s": wall,
                  "n": cfg.n, "seed": cfg.seed, "labels": cfg.labels, "w": cfg.w}  # fmt: skip
        if labels is not None:
            result |= {"guidance": asdict(guided[0]) | {"guide": cfg.guide}, "network_evals": evals}
        if evaluator is not None:
            reference = evaluator.reference(data.reference)
            floor, floor_sd = evaluator.floor(data.reference, reference, data.oracle)
            row = evaluator.metrics(x, reference, floor, data.oracle)
            result |= {"metrics": row, "floor": floor, "floor_sd": floor_sd, "legend": legend(row)}
            result["main_metric"] = {"name": "sw2", "value": row["sw2"]}
        method = guided[0].method + (f" λ∈{list(guided[0].interval)}" if guided[0].interval is not None else "")
        guided_text = f", labels={cfg.labels}, {method} w={cfg.w:g}" if labels is not None else ""
        tuned = f" (grid tuned for {grid['budget']} NFE)" if grid else ""
        title = plots.describe(type(data).__name__, sde, sweep_run_name(cfg))
        title += f"\n{run.name}, {run.steps} steps{tuned}, {nfe} NFE{guided_text}"
        png = figure(x, data, labels, cfg, title, out / "samples.png")
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        log.info("%d samples of %s: %d NFE, %.1f s; wrote %s", cfg.n, run.name, nfe, wall,
                 ", ".join(str(out / f) for f in ("samples.npz", png.name, "metrics.json")))  # fmt: skip
        summary = {"sample/nfe": nfe, "sample/wall_s": wall}
        summary |= {f"sample/{k}": v for k, v in result.get("metrics", {}).items()}
        summary |= {f"sample/floor/{k}": v for k, v in result.get("floor", {}).items()}
        tracker.log_images({"samples": png})
        tracker.summary(summary | ({"main_metric": result["main_metric"]["value"]} if evaluator else {}))
        check_samples({run.name: x}, data.reference)
        return result["main_metric"]["value"] if evaluator else None


if __name__ == "__main__":
    main()
