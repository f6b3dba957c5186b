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
and `mc_sem_per_sample` its MC error per example; on vector data `likelihood.control_variate=auto` (the default)
subtracts the mean-zero control variate with v = the data's variance per dimension within a mode (the oracle's, else
the held-out draw's), which cuts that error several-fold (docs/likelihood.md); `null` is the plain estimate, and the
log line says which was used. metrics.json carries a `legend`; per_example.csv holds every example's NLL (and the
true one, the MC error) by its index in the held-out draw, which depends only on `seed` and `n`: two runs with both
equal (ODE and ELBO, say) pair up row by row. Returns the main metric (bits/dim for image data, else NLL in nats) for
Hydra sweepers.

Under torchrun each process evaluates its share of the n examples (distributed.split) with no collective inside the
loop, so ranks may take different numbers of steps (RK45 adapts per batch); one gather at the end brings the rows
to every rank, and rank 0 alone writes.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sde_diffusion.apps import (
    RunError,
    argument_error,
    build_sde,
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
)
from sde_diffusion.core.checks import ArgumentError
from sde_diffusion.evaluation.likelihood import METHODS, NLLEstimator, per_sample_nll, summarise
from sde_diffusion.infra import distributed
from sde_diffusion.infra.checkpoint import CheckpointError
from sde_diffusion.infra.runtime import resolve_device
from sde_diffusion.likelihood import DEQUANTISATIONS, DIVERGENCES, FlowOptions

log = logging.getLogger("likelihood")


def check(cfg: DictConfig) -> None:
    """The `likelihood` node and `checkpoint`: every bad value is a ConfigError naming the key."""
    require_values(cfg)
    for key in ("n", "batch_size", "n_draws", "n_t"):
        require_number(cfg, f"likelihood.{key}", integer=True, ge=1)
    require_number(cfg, "likelihood.seed", integer=True, ge=0)
    if OmegaConf.select(cfg, "likelihood.control_variate") != "auto":
        require_number(cfg, "likelihood.control_variate", gt=0, optional=True)
    for key in ("t_min", "tau"):
        require_number(cfg, f"likelihood.{key}", gt=0)
    require_choice(cfg, "likelihood.method", METHODS)
    require_choice(cfg, "likelihood.importance", (True, False))
    require_choice(cfg, "progress", (True, False))
    require_choice(cfg, "likelihood.dequantisation", DEQUANTISATIONS)
    require_choice(cfg, "likelihood.divergence", ("auto", *DIVERGENCES))
    with config_errors("likelihood"):  # the library's own checks of the PF-ODE's options (for either method)
        FlowOptions(**estimator_options(OmegaConf.merge(cfg, {"likelihood": {"method": "ode"}}), discrete=False)[1])
    require_run(cfg, "checkpoint")


def control_variate(cfg: DictConfig, data, x: torch.Tensor) -> float | None:
    """The ELBO's control-variate v on vector data: `likelihood.control_variate`, where `auto` is the data's variance
    per dimension within a mode (Σ_k w_k tr Σ_k / D of the oracle; without one the held-out draw's variance per
    dimension, an over-estimate that still removes most of the noise at high SNR); None when it does not apply."""
    v = cfg.likelihood.control_variate
    if cfg.likelihood.method != "elbo" or data.scaler is not None or v != "auto":
        return v if cfg.likelihood.method == "elbo" and data.scaler is None else None
    if data.oracle is not None:
        o = data.oracle
        return float((o.weights[:, None] * torch.diagonal(o.covs, dim1=1, dim2=2)).sum() / o.dim)
    return float(x.flatten(1).double().var(0).mean())


def estimator_options(cfg: DictConfig, discrete: bool, v: float | None = None) -> tuple[str | None, dict]:
    """The divergence actually used (ODE only) and the keyword options of the chosen estimator (`v`: the ELBO's
    control variate on vector data, `control_variate`)."""
    lc = cfg.likelihood
    if lc.method == "elbo":
        opts = {"t_min": lc.t_min, "n_t": lc.n_t, "importance": lc.importance}
        if discrete:
            return None, opts | {"dequantisation": lc.dequantisation, "tau": lc.tau}
        return None, opts | {"control_variate": v}
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


def evaluate_share(cfg: DictConfig, ctx: distributed.Context, score_fn, sde, data, x: torch.Tensor) -> tuple:
    """This rank's share of x (contiguous, distributed.split), evaluated without collectives, then one gather of the
    per-sample rows to every rank: (the summary of all of them, the rows)."""
    lc, ws = cfg.likelihood, ctx.world_size
    counts = [distributed.split(x.shape[0], r, ws) for r in range(ws)]
    start = sum(counts[: ctx.rank])
    v = control_variate(cfg, data, x)
    divergence, opts = estimator_options(cfg, data.scaler is not None, v)
    began = time.perf_counter()
    oracle = data.oracle if data.scaler is None else None
    estimate = NLLEstimator(sde, score_fn, lc.method, data.scaler, oracle, lc.n_draws, opts)
    rows, nfe = per_sample_nll(
        estimate,
        x[start : start + counts[ctx.rank]],
        lc.batch_size,
        generator=torch.Generator(ctx.device).manual_seed(distributed.rank_seed(lc.seed + 1, ctx.rank)),
        progress=cfg.progress and ctx.is_main,
    )
    wall = distributed.all_reduce_max(round(1e3 * (time.perf_counter() - began))) / 1e3
    rows = {k: distributed.gather(v.to(ctx.device)).cpu() for k, v in rows.items()}
    nfe = distributed.gather(nfe.to(ctx.device)).cpu()
    result = summarise(rows, nfe, x[0].numel(), data.scaler is not None, wall)
    cv = {"control_variate": v} if lc.method == "elbo" and data.scaler is None else {}
    return result | {"divergence": divergence, "processes": ws} | cv, rows


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
    result, rows = evaluate_share(cfg, ctx, score_fn, sde, data, x)
    result |= {
        "source": "oracle" if cfg.checkpoint is None else str(cfg.checkpoint),
        "sde": repr(sde),
        "dequantised": data.scaler is not None,
        "settings": OmegaConf.to_container(lc),
    }
    main = "bpd" if "bpd" in result else "nll"
    result["main_metric"] = {"name": main, "value": result[main]}
    result["legend"] = {k: text for k, text in LEGEND.items() if k in result}
    if ctx.is_main:
        write(cfg, out, result, main, rows)
    return float(result[main])


LEGEND = {
    "n": "held-out examples (data.reference with `seed`: the same seed and n, the same examples)",
    "dim": "dimensions D of one example",
    "nll": "mean negative log-likelihood in nats per example: the PF-ODE's −log p̂ (method=ode) or the −ELBO, an "
    "upper bound (method=elbo); discrete data: of the dequantised bound",
    "nll_sem": "standard error of nll over the examples (with the ELBO's Monte Carlo noise): its resolution",
    "mc_sem_per_sample": "ELBO only: the mean per-example Monte Carlo error of the bound (part of nll_sem)",
    "control_variate": "ELBO on vector data: v of the control variate c(λ)(‖ε‖² − D) (null: none); it cuts "
    "mc_sem_per_sample, it does not move the bound's mean",
    "bpd": "bits/dim of discrete data: nll / (D log 2)",
    "bpd_sem": "standard error of bpd",
    "nfe": "mean score calls per example",
    "wall_s": "wall time of the evaluation (the slowest process)",
    "wall_s_per_sample": "wall_s / n",
    "oracle_nll": "the data's true mean NLL of the same examples under the exact density (data with an oracle)",
    "abs_error_per_dim": "mean over examples of |nll − true NLL| / D: the estimate's error per dimension",
    "prior_mismatch_per_dim": "ODE only: the part of abs_error_per_dim due to the N(0, σ_T² I) prior, "
    "mean |log π(x_T) − log p_T(x_T)| / D",
    "divergence": "ODE only: the divergence used (exact trace or Hutchinson's estimator)",
    "processes": "processes the examples were split over (torchrun)",
    "source": "the score: the oracle's exact one, or the checkpoint's path",
    "main_metric": "bpd for discrete data, else nll",
}


def write_examples(path: Path, rows: dict[str, torch.Tensor]) -> None:
    """One line per example: its index in the held-out draw and every per-example value (nll, and where measured
    oracle_nll, mc_sem, mismatch), in nats."""
    columns = {k: v.tolist() for k, v in rows.items() if v.dim() == 1 and len(v) == len(rows["nll"])}
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", *columns])
        writer.writerows([i, *values] for i, values in enumerate(zip(*columns.values(), strict=True)))


def write(cfg: DictConfig, out: Path, result: dict, main: str, rows: dict) -> None:
    """metrics.json, per_example.csv (every example's row by its index), the log lines and the offline wandb run."""
    with start_tracker(cfg, out, job_type="likelihood") as tracker:
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        write_examples(out / "per_example.csv", rows)
        log.info("%s", ", ".join(f"{k}={v:.6g}" for k, v in result.items() if isinstance(v, float)))
        if "control_variate" in result:
            v = result["control_variate"]
            cv = f"with the control variate v = {v:.3g}" if v else "without a control variate (plain)"
            alt = "likelihood.control_variate=null: the plain estimate" if v else "likelihood.control_variate=auto"
            log.info(
                "ELBO %s: SE of the mean NLL %.3g, MC error %.3g nats per example (%s; the MC error falls as "
                "1/√likelihood.n_t, n_t=%d now)",
                cv,
                result["nll_sem"],
                result["mc_sem_per_sample"],
                alt,
                cfg.likelihood.n_t,
            )
        log.info("wrote %s and per_example.csv", out / "metrics.json")
        series = {f"likelihood/{k}": v for k, v in result.items() if isinstance(v, int | float)}
        tracker.log(series)
        tracker.summary({**series, "main_metric": result[main]})


if __name__ == "__main__":
    main()
