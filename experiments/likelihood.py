"""NLL and bits/dim of a trained checkpoint on held-out data, or of the exact oracle, via the probability-flow ODE.

    python experiments/likelihood.py                                    # exact score of the 16-D mixture
    python experiments/likelihood.py data=eight_gaussians sde=ve
    python experiments/likelihood.py checkpoint=outputs/train/<date>/checkpoints/last.pt
    python experiments/likelihood.py checkpoint=outputs/digits_unet/<date>/checkpoints/last.pt  # dequantised bpd

Output dir (Hydra's): metrics.json — mean NLL in nats per example with its standard error (image data, which is
discrete: also bits/dim of the dequantised bound; continuous data: nats only, as bits/dim of a density have no
meaning), mean NFE per ODE solve, wall time; for data with an oracle also the true NLL of the same points, mean
|log p̂ − log p| per dimension and the part of it due to the N(0, σ_T² I) prior; and an offline wandb run
(`likelihood/*`). The oracle
is evaluated in float64, a checkpoint's network in float32. `likelihood.divergence=auto` takes the exact trace
for vector data and Hutchinson's estimator for images (the exact one costs D backward passes per NFE: 64 for
digits). Returns the main metric (bits/dim for image data, else NLL in nats) for Hydra sweepers.
"""

from __future__ import annotations

import json
import logging

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from sde_diffusion.apps import (
    RunError,
    argument_error,
    build_sde,
    config_error,
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
from sde_diffusion.likelihood import DIVERGENCES, NOISES, SOLVERS, evaluate_likelihood
from sde_diffusion.runtime import resolve_device

log = logging.getLogger("likelihood")


def check(cfg: DictConfig) -> None:
    """The `likelihood` node and `checkpoint`: every bad value is a ConfigError naming the key."""
    require_values(cfg)
    for key in ("n", "batch_size", "steps", "n_draws"):
        require_number(cfg, f"likelihood.{key}", integer=True, ge=1)
    require_number(cfg, "likelihood.seed", integer=True, ge=0)
    for key in ("rtol", "atol"):
        require_number(cfg, f"likelihood.{key}", gt=0)
    require_number(cfg, "likelihood.t_min", gt=0)
    require_choice(cfg, "likelihood.divergence", ("auto", *DIVERGENCES))
    require_choice(cfg, "likelihood.noise", NOISES)
    require_choice(cfg, "likelihood.solver", SOLVERS)
    require_run(cfg, "checkpoint")


@hydra.main(version_base="1.3", config_path="../conf", config_name="likelihood")
def main(cfg: DictConfig) -> float:
    """The app: check, load the score (checkpoint or oracle), evaluate on held-out data, write and log."""
    check(cfg)
    out = output_dir()
    try:
        device = resolve_device(cfg.device)
    except ArgumentError as err:
        raise argument_error("", err) from None
    lc = cfg.likelihood
    if cfg.checkpoint is None:
        sde, data = build_sde(cfg), instantiate_node(cfg, "data")
        if data.oracle is None:
            raise config_error("data", cfg.data._target_, "without a checkpoint, a data set with an exact oracle")
        score_fn, dtype = data.oracle.score_fn(sde), torch.float64
    else:
        try:
            score_fn, sde, data, _ = load_run(cfg.checkpoint, device)
        except CheckpointError as err:
            raise RunError(str(err)) from err
        dtype = torch.float32
    if not lc.t_min < sde.T:
        raise config_error("likelihood.t_min", lc.t_min, f"must be < the SDE's T = {sde.T}")
    x = data.reference(lc.n, torch.Generator().manual_seed(lc.seed)).to(device, dtype)
    divergence = lc.divergence if lc.divergence != "auto" else "exact" if data.scaler is None else "hutchinson"
    with start_tracker(cfg, out, job_type="likelihood") as tracker:
        result = evaluate_likelihood(
            sde,
            score_fn,
            x,
            scaler=data.scaler,
            oracle=data.oracle if data.scaler is None else None,
            batch_size=lc.batch_size,
            n_draws=lc.n_draws,
            generator=torch.Generator(device).manual_seed(lc.seed + 1),
            divergence=divergence,
            noise=lc.noise,
            solver=lc.solver,
            rtol=lc.rtol,
            atol=lc.atol,
            eps=lc.t_min,
            steps=lc.steps,
        )
        result |= {
            "source": "oracle" if cfg.checkpoint is None else str(cfg.checkpoint),
            "sde": repr(sde),
            "dequantised": data.scaler is not None,
            "divergence": divergence,
            "settings": OmegaConf.to_container(lc),
        }
        main = "bpd" if "bpd" in result else "nll"
        result["main_metric"] = {"name": main, "value": result[main]}
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        log.info("%s", ", ".join(f"{k}={v:.6g}" for k, v in result.items() if isinstance(v, float)))
        log.info("wrote %s", out / "metrics.json")
        series = {f"likelihood/{k}": v for k, v in result.items() if isinstance(v, int | float)}
        tracker.log(series)
        tracker.summary({**series, "main_metric": result[main]})
        return float(result[main])


if __name__ == "__main__":
    main()
