"""Export a trained run to safetensors + JSON: nothing pickled, loadable without this project's checkpoint format.

    python experiments/export.py checkpoint=outputs/train/<date_time>/checkpoints/last.pt out=my_model
    python experiments/sample.py checkpoint=my_model        # any app that takes checkpoint= takes the folder too

Writes `out`/model.safetensors (the EMA weights, checkpoint.export_safetensors) and `out`/config.json (the run's
resolved config), then rebuilds the score model from the folder (apps.load_run) to check that the two fit. A Hydra
app like the others, so a bad value is the same one-line error; `out=null` writes into the job's output dir.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from sde_diffusion.apps import RunError, hydra_app, load_run, output_dir, require_file, require_values, start_tracker
from sde_diffusion.infra.checkpoint import CheckpointError, export_safetensors, load_checkpoint

log = logging.getLogger("export")


@hydra_app("export")
def main(cfg: DictConfig) -> None:
    """Check, read the checkpoint, write the folder, load it back."""
    require_values(cfg)
    require_file(cfg, "checkpoint", "the path of a checkpoint file of experiments/train.py", also=())
    out = Path(cfg.out) if cfg.out is not None else output_dir()
    try:
        state = load_checkpoint(cfg.checkpoint)
        if state.get("config") is None:
            raise CheckpointError(f"checkpoint {cfg.checkpoint}: holds no 'config'; was it written by train.py?")
        export_safetensors(state, state["config"], out)
        load_run(out)
    except CheckpointError as err:
        raise RunError(str(err)) from err
    log.info("wrote %s and %s", out / "model.safetensors", out / "config.json")
    with start_tracker(cfg, output_dir(), job_type="export") as tracker:  # the export as a "model" artifact
        tracker.log_artifact(
            [out / "model.safetensors", out / "config.json"],
            f"export-{state.get('wandb_run_id')}",
            "model",
            {"checkpoint": str(cfg.checkpoint), "step": state.get("step")},
        )


if __name__ == "__main__":
    main()
