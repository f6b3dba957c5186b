"""NLL and bits/dim of a trained checkpoint on held-out data, or of the exact oracle, via the probability-flow ODE
or the ELBO.

    python experiments/likelihood.py                                    # exact score of the 16-D mixture
    python experiments/likelihood.py likelihood.method=elbo             # the −ELBO bound, importance-sampled time
    python experiments/likelihood.py data=eight_gaussians sde=ve
    torchrun --standalone --nproc_per_node=2 experiments/likelihood.py  # examples split across 2 processes
    python experiments/likelihood.py checkpoint=outputs/train/<date>/checkpoints/last.pt
    python experiments/likelihood.py checkpoint=outputs/digits_unet/<date>/checkpoints/last.pt  # dequantised bpd

Output dir (Hydra's): metrics.json — mean NLL in nats per example with its standard error (image data, which is
discrete: also bits/dim of the dequantised bound; continuous data: nats only, as bits/dim of a density have no
meaning), mean score calls per sample (`nfe`), wall time (the slowest rank's); for data with an oracle also the
true NLL of the same points, mean |log p̂ − log p| per dimension and (ODE) the part of it due to the N(0, σ_T² I)
prior; and an offline wandb run (`likelihood/*`). The oracle is evaluated in float64, a checkpoint's network in
float32. `likelihood.divergence=auto` takes the exact trace for vector data and Hutchinson's estimator for images
(the exact one costs D backward passes per NFE: 64 for digits). With method=elbo, nll is the −ELBO (an upper bound)
and `mc_sem_per_sample` its MC error per example. Returns the main metric (bits/dim for image data, else NLL in
nats) for Hydra sweepers.

Under torchrun each process evaluates its share of the n examples (distributed.split) with no collective inside the
loop, so ranks may take different numbers of steps (RK45 adapts per batch); one gather at the end brings the rows
to every rank, and rank 0 alone writes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sde_diffusion import distributed
from sde_diffusion.apps import (
    RunError,
    argument_error,
    build_sde,
    config_error,
    hydra_app,
    instantiate_node,
    load_run,
    output_dir,
    require_choice,
    require_number,
    require_run,
    require_values,
    start_tracker,
)
from sde_diffusion.checkpoint import CheckpointError
from sde_diffusion.checks import ArgumentError
from sde_diffusion.dequantise import DEQUANTISATIONS
from sde_diffusion.likelihood import DIVERGENCES, NOISES, SOLVERS
from sde_diffusion.likelihood_evaluation import METHODS, NLLEstimator, per_sample_nll, summarise
from sde_diffusion.runtime import resolve_device

log = logging.getLogger("likelihood")


def check(cfg: DictConfig) -> None:
    """The `likelihood` node and `checkpoint`: every bad value is a ConfigError naming the key."""
    require_values(cfg)
    for key in ("n", "batch_size", "steps", "n_draws", "n_t"):
        require_number(cfg, f"likelihood.{key}", integer=True, ge=1)
    require_number(cfg, "likelihood.seed", integer=True, ge=0)
    require_number(cfg, "likelihood.control_variate", gt=0, optional=True)
    for key in ("rtol", "atol", "t_min", "tau"):
        require_number(cfg, f"likelihood.{key}", gt=0)
    require_choice(cfg, "likelihood.method", METHODS)
    require_choice(cfg, "likelihood.importance", (True, False))
    require_choice(cfg, "progress", (True, False))
    require_choice(cfg, "likelihood.dequantisation", DEQUANTISATIONS)
    require_choice(cfg, "likelihood.divergence", ("auto", *DIVERGENCES))
    require_choice(cfg, "likelihood.noise", NOISES)
    require_choice(cfg, "likelihood.solver", SOLVERS)
    require_run(cfg, "checkpoint")


def estimator_options(cfg: DictConfig, discrete: bool) -> tuple[str | None, dict]:
    """The divergence actually used (ODE only) and the keyword options of the chosen estimator."""
    lc = cfg.likelihood
    if lc.method == "elbo":
        opts = {"t_min": lc.t_min, "n_t": lc.n_t, "importance": lc.importance}
        if discrete:
            return None, opts | {"dequantisation": lc.dequantisation, "tau": lc.tau}
        return None, opts | {"control_variate": lc.control_variate}
    divergence = lc.divergence if lc.divergence != "auto" else "hutchinson" if discrete else "exact"
    opts = {"divergence": divergence, "noise": lc.noise, "solver": lc.solver, "rtol": lc.rtol, "atol": lc.atol}
    return divergence, opts | {"t_min": lc.t_min, "steps": lc.steps}


def load_score(cfg: DictConfig, device: torch.device) -> tuple:
    """(score_fn, sde, data, dtype): the oracle's exact score in float64, or a checkpoint's network in float32."""
    if cfg.checkpoint is None:
        sde, data = build_sde(cfg), instantiate_node(cfg, "data")
        if data.oracle is None:
            raise config_error("data", cfg.data._target_, "without a checkpoint, a data set with an exact oracle")
        return data.oracle.score_fn(sde), sde, data, torch.float64
    try:
        score_fn, sde, data, _ = load_run(cfg.checkpoint, device)
    except CheckpointError as err:
        raise RunError(str(err)) from err
    return score_fn, sde, data, torch.float32


def evaluate_share(cfg: DictConfig, ctx: distributed.Context, score_fn, sde, data, x: torch.Tensor) -> dict:
    """This rank's share of x (contiguous, distributed.split), evaluated without collectives, then one gather of the
    per-sample rows to every rank and the summary of all of them."""
    lc, ws = cfg.likelihood, ctx.world_size
    counts = [distributed.split(x.shape[0], r, ws) for r in range(ws)]
    start = sum(counts[: ctx.rank])
    divergence, opts = estimator_options(cfg, data.scaler is not None)
    began = time.perf_counter()
    oracle = data.oracle if data.scaler is None else None
    estimate = NLLEstimator(sde, score_fn, lc.method, data.scaler, oracle, lc.n_draws, opts)
    rows, nfe = per_sample_nll(
        estimate, x[start : start + counts[ctx.rank]], lc.batch_size,
        generator=torch.Generator(ctx.device).manual_seed(distributed.rank_seed(lc.seed + 1, ctx.rank)),
        progress=cfg.progress and ctx.is_main,
    )  # fmt: skip
    wall = distributed.all_reduce_max(round(1e3 * (time.perf_counter() - began))) / 1e3
    rows = {k: distributed.gather(v.to(ctx.device)).cpu() for k, v in rows.items()}
    nfe = distributed.gather(nfe.to(ctx.device)).cpu()
    result = summarise(rows, nfe, x[0].numel(), data.scaler is not None, wall)
    return result | {"divergence": divergence, "processes": ws}


@hydra_app("likelihood")
def main(cfg: DictConfig) -> float:
    """The app: check, join the processes (torchrun), evaluate, leave."""
    check(cfg)
    try:
        device = resolve_device(cfg.device)
    except ArgumentError as err:
        raise argument_error("", err) from None
    ctx = distributed.init(device)
    try:
        return run(cfg, ctx)
    finally:
        distributed.cleanup()


def run(cfg: DictConfig, ctx: distributed.Context) -> float:
    """Load the score (checkpoint or oracle), evaluate on held-out data; rank 0 writes and logs."""
    out = Path(distributed.broadcast_object(str(output_dir())))
    lc = cfg.likelihood
    score_fn, sde, data, dtype = load_score(cfg, ctx.device)
    if not lc.t_min < sde.T:
        raise config_error("likelihood.t_min", lc.t_min, f"must be < the SDE's T = {sde.T}")
    if lc.method == "elbo" and data.scaler is not None and lc.n_draws < 2:
        raise config_error("likelihood.n_draws", lc.n_draws, ">= 2 for the ELBO of discrete data (its SE needs two)")
    if lc.n < ctx.world_size:
        raise config_error("likelihood.n", lc.n, f">= the number of processes, {ctx.world_size}")
    x = data.reference(lc.n, torch.Generator().manual_seed(lc.seed)).to(ctx.device, dtype)
    result = evaluate_share(cfg, ctx, score_fn, sde, data, x)
    result |= {
        "source": "oracle" if cfg.checkpoint is None else str(cfg.checkpoint),
        "sde": repr(sde),
        "dequantised": data.scaler is not None,
        "settings": OmegaConf.to_container(lc),
    }
    main = "bpd" if "bpd" in result else "nll"
    result["main_metric"] = {"name": main, "value": result[main]}
    if ctx.is_main:
        write(cfg, out, result, main)
    return float(result[main])


def write(cfg: DictConfig, out: Path, result: dict, main: str) -> None:
    """metrics.json, the log line and the offline wandb run."""
    with start_tracker(cfg, out, job_type="likelihood") as tracker:
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        log.info("%s", ", ".join(f"{k}={v:.6g}" for k, v in result.items() if isinstance(v, float)))
        log.info("wrote %s", out / "metrics.json")
        series = {f"likelihood/{k}": v for k, v in result.items() if isinstance(v, int | float)}
        tracker.log(series)
        tracker.summary({**series, "main_metric": result[main]})


if __name__ == "__main__":
    main()
