"""Train a score model, sample it with the evaluation samplers, and write everything to the job's output dir.

    python experiments/train.py                                   # the README's main job (eight_gaussians, ~2 min)
    python experiments/train.py +experiment=digits_unet           # 8x8 digits with a U-Net
    python experiments/train.py -m schedule=linear,cosine,constant  # one job (and wandb run) per β(t)

Output dir (Hydra's run/sweep dir): metrics.json (per sampler: NFE, wall time, SW2, MMD², the oracle's exact
metrics where the data set has one, each beside the sampling floor = the same metrics between two independent
data draws of the same size), samples.png (2-D scatter against the data) or samples_<sampler>.png (image grids),
loss.png, checkpoints/last.pt (model, EMA, optimiser, scheduler, step, RNG states, config, wandb run id),
wandb/ (offline run; `wandb sync` it). Returns the first evaluation sampler's SW2 for Hydra sweepers.

    torchrun --standalone --nproc_per_node=2 experiments/train.py hydra.run.dir=outputs/ddp   # DDP (docs/scaling.md)

Under torchrun (or the submitit_*_ddp launchers) every process runs this script: train.batch_size is the global
batch, evaluation sampling is split across the processes, and only rank 0 writes files and the wandb run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sde_diffusion import distributed, metrics, plots
from sde_diffusion.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sde_diffusion.config import RunError, build, config_error, start_tracker, validate
from sde_diffusion.sampling import sample
from sde_diffusion.tracking import Tracker
from sde_diffusion.training import NonFiniteLossError, Trainer, resolve_device, seed_everything

log = logging.getLogger("train")


def sample_metrics(x: torch.Tensor, reference: torch.Tensor, oracle: Any, cfg: DictConfig) -> dict[str, float]:
    """SW2 and MMD² of samples `x` against `reference` (MMD² on the first eval.mmd_samples points: its cost is
    quadratic); with an oracle, the mode-weight error and the mean negative log-likelihood of `x` under the exact
    density."""
    out = {
        "sw2": metrics.sliced_wasserstein(x, reference, n_projections=cfg.eval.n_projections, seed=cfg.eval.seed),
        "mmd2": metrics.mmd2(x[: cfg.eval.mmd_samples], reference[: cfg.eval.mmd_samples]),
    }
    if oracle is not None:
        out["mode_weight_error"] = metrics.mode_weight_error(oracle, x)
        out["oracle_nll"] = float(-oracle.log_prob(x.flatten(1).double()).mean())
    return out


def evaluate(cfg: DictConfig, trainer: Trainer, data: Any, sde: Any, out: Path) -> dict | None:
    """Sample n points with every evaluation sampler from the EMA model; metrics against a held-out draw of the
    data, and the floor = the metrics of a second, independent data draw. With several processes each samples its
    share of the n points (rank-aware seeds) and rank 0 gathers them and returns the result; the others None."""
    n = cfg.eval.n_samples
    rank, world_size = distributed.rank(), distributed.world_size()
    if rank == 0:
        gen = torch.Generator().manual_seed(cfg.eval.seed)
        reference, second = data.reference(n, gen), data.reference(n, gen)
        result: dict[str, Any] = {"n_samples": n, "floor": sample_metrics(second, reference, data.oracle, cfg)}
    model, device = trainer.ema_model.eval(), trainer.device
    samples, rows = {}, {}
    for i, (slot, sc) in enumerate(cfg.eval.samplers.items()):
        generator = torch.Generator(device).manual_seed(distributed.rank_seed(cfg.eval.seed + 1 + i, rank))
        start = time.perf_counter()
        try:
            with torch.no_grad():
                res = sample(
                    sde,
                    model,
                    (distributed.split(n, rank, world_size), *data.shape),
                    sampler=sc.name,
                    steps=sc.steps,
                    eps=sc.eps,
                    denoise=sc.denoise,
                    generator=generator,
                    device=device,
                    batch_size=cfg.eval.batch_size,
                    **sc.options,
                )
        except (RuntimeError, ValueError) as err:  # SamplingError (rk45), out of memory, a bad option
            raise RunError(
                f"evaluation sampler eval.samplers.{slot} ({sc.name}) failed at training step {trainer.step}: "
                f"{str(err).splitlines()[0]} (the trained state is in checkpoints/last.pt; "
                "a smaller eval.batch_size bounds memory)"
            ) from err
        x, nfe = distributed.gather(res.x.float()).cpu(), distributed.all_reduce_max(res.nfe)
        wall = time.perf_counter() - start
        if rank > 0:
            continue
        samples[slot] = x
        row = {"sampler": sc.name, "steps": sc.steps, "nfe": nfe, "wall_s": wall}
        row |= sample_metrics(x, reference, data.oracle, cfg)
        row["sw2_over_floor"] = row["sw2"] / result["floor"]["sw2"]
        rows[slot] = row
        log.info("%s: %s", slot, _fmt(row))
    if rank > 0:
        return None
    result["samplers"] = rows
    if data.scaler is not None and len(data.shape) == 3:
        result["plots"] = [str(plots.image_grid(reference[:64], out / "samples_data.png", "data", scaler=data.scaler))]
        for slot, x in samples.items():
            title = f"{slot} ({rows[slot]['nfe']} NFE)"
            result["plots"].append(
                str(plots.image_grid(x[:64], out / f"samples_{slot}.png", title, scaler=data.scaler))
            )
    else:
        titled = {
            f"{k}\n{rows[k]['nfe']} NFE, SW2 = {rows[k]['sw2_over_floor']:.2f}x floor": x for k, x in samples.items()
        }
        result["plots"] = [str(plots.scatter_panels(titled, reference, out / "samples.png"))]
    return result


def _checkpoint(trainer: Trainer, cfg: DictConfig, path: Path, run_id: str | None, history: list) -> None:
    if distributed.rank() > 0:  # every rank holds the same state (docs/scaling.md): rank 0 writes it
        return
    state = trainer.state_dict()
    state["config"] = OmegaConf.to_container(cfg, resolve=True)
    state["wandb_run_id"] = run_id
    state["loss_history"] = torch.tensor(history, dtype=torch.float64).reshape(-1, 2)
    save_checkpoint(path, state, keep_last=cfg.train.get("keep_last", 0))


def _resume_state(cfg: DictConfig, ckpt_path: Path) -> tuple[Path, dict] | None:
    """(path, state) of the checkpoint to resume: train.resume=auto -> this run dir's last.pt if it exists."""
    resume = cfg.train.resume
    if resume is None or (resume == "auto" and not ckpt_path.is_file()):
        return None
    path = ckpt_path if resume == "auto" else Path(resume)
    try:
        return path, load_checkpoint(path)
    except CheckpointError as err:
        raise RunError(str(err)) from err


# Keys that do not change what a run computes: a resumed run may change them freely.
_RUN_ONLY = ("train.resume", "train.progress", "train.device", "train.threads", "train.compile", "train.log_every",
             "train.eval_every", "train.ckpt_every", "train.keep_last", "logger", "eval")  # fmt: skip


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs between two plain configs (outside `_RUN_ONLY`)."""
    out = []
    for k in sorted(old.keys() | new.keys(), key=str):
        key, a, b = f"{prefix}{k}", old.get(k, "<absent>"), new.get(k, "<absent>")
        if key.startswith(_RUN_ONLY):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{key}.")
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def train(cfg: DictConfig) -> float:
    """The app: validate, build, (resume,) train with callbacks, evaluate, write and log the results."""
    validate(cfg)
    t = cfg.train
    ctx = distributed.init(resolve_device(t.device))
    try:
        return _train(cfg, ctx)
    finally:
        distributed.cleanup()


def _train(cfg: DictConfig, ctx: distributed.Context) -> float:
    t = cfg.train
    if t.batch_size % ctx.world_size:
        raise config_error("train.batch_size", t.batch_size, f"must be divisible by the {ctx.world_size} processes")
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 logs the run
    out = Path(distributed.broadcast_object(HydraConfig.get().runtime.output_dir))  # rank 0's, if they differ
    ckpt_path = out / "checkpoints" / "last.pt"
    seed_everything(t.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    built = build(cfg)
    if t.threads:
        torch.set_num_threads(t.threads)
    resume_path, state = _resume_state(cfg, ckpt_path) or (None, {})  # a bare trainer state: no history, id, config
    history: list[tuple[int, float]] = [tuple(r) for r in state.get("loss_history", torch.zeros(0, 2)).tolist()]
    resume_id = state.get("wandb_run_id")
    tracker = start_tracker(cfg, out, job_type="train", resume_id=resume_id) if ctx.is_main else Tracker()
    window: list[float] = []

    def on_step(trainer: Trainer, logs: dict) -> None:
        step = logs["step"]
        window.append(float(logs["loss"]))
        if step % t.log_every == 0 or step == t.steps:
            loss = sum(window) / len(window)
            window.clear()
            history.append((step, loss))
            row = {"train/loss": loss, "train/lr": logs["lr"], "train/grad_norm": float(logs["grad_norm"])}
            if "skipped_steps" in logs:
                row["train/skipped_steps"] = logs["skipped_steps"]
            tracker.log(row, step=step)
        if t.eval_every and step % t.eval_every == 0 and step < t.steps:
            result = evaluate(cfg, trainer, built.data, built.sde, out)
            if result is not None:
                tracker.log(_eval_series(result), step=step)
        if t.ckpt_every and step % t.ckpt_every == 0 and step < t.steps:
            _checkpoint(trainer, cfg, ckpt_path, tracker.run_id, history)

    exit_code = 1
    try:
        trainer = Trainer(
            built.model,
            built.sde,
            built.data,
            steps=t.steps,
            batch_size=t.batch_size,
            lr=t.lr,
            weight_decay=t.weight_decay,
            warmup=t.warmup,
            grad_clip=t.grad_clip,
            ema_decay=t.ema_decay,
            loss_eps=t.loss_eps,
            weighting=t.weighting,
            seed=t.seed,
            nan_policy=t.nan_policy,
            device=ctx.device,
            callbacks=[on_step],
            progress=t.progress and ctx.is_main,
            precision=t.precision,
            compile=t.compile,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        if resume_path is not None:
            diff = config_diff(state["config"], OmegaConf.to_container(cfg, resolve=True)) if "config" in state else []
            try:
                trainer.load_state_dict(state)
            except (CheckpointError, KeyError, RuntimeError, ValueError) as err:
                differs = f"; config keys that differ (checkpoint -> this run): {'; '.join(diff)}" if diff else ""
                raise RunError(f"checkpoint {resume_path}: {str(err).splitlines()[0]}{differs}") from err
            if diff:
                log.warning("resuming with a config that differs from the checkpoint's: %s", "; ".join(diff))
            log.info("resumed from step %d of %s", trainer.step, resume_path)
        start = time.perf_counter()
        try:
            trainer.fit()
        except NonFiniteLossError as err:
            _checkpoint(trainer, cfg, ckpt_path, tracker.run_id, history)
            raise RunError(
                f"{err}; that state is saved to {ckpt_path} (continue with train.resume=auto, e.g. with a lower lr)"
            ) from err
        train_wall = time.perf_counter() - start
        _checkpoint(trainer, cfg, ckpt_path, tracker.run_id, history)

        result = evaluate(cfg, trainer, built.data, built.sde, out)
        if result is None:  # ranks > 0: rank 0 writes and logs the results
            exit_code = 0
            return float(distributed.broadcast_object(None))
        result |= {"train_steps": trainer.step, "train_wall_s": train_wall, "final_loss": history[-1][1]}
        result["skipped_steps"] = trainer.skipped_steps
        if trainer.skipped_steps:
            log.warning("skipped %d steps with a non-finite loss or gradient", trainer.skipped_steps)
        first = next(iter(result["samplers"]))
        result["main_metric"] = {"name": f"{first}/sw2", "value": result["samplers"][first]["sw2"]}
        result["plots"].append(str(plots.loss_curve(*zip(*history, strict=True), out / "loss.png")))
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        log.info("floor: %s", result["floor"])
        log.info("wrote %s", out / "metrics.json")

        tracker.log(_eval_series(result), step=trainer.step)
        tracker.log_table(
            "eval/samplers",
            [{"slot": k, **v} for k, v in result["samplers"].items()]
            + [{"slot": "floor (data vs data)", **result["floor"]}],
        )
        tracker.log_images({f"eval/{Path(p).stem}": p for p in result["plots"]}, step=trainer.step)
        tracker.summary(
            {**_eval_series(result), "main_metric": result["main_metric"]["value"], "train_wall_s": train_wall}
        )
        exit_code = 0
        return float(distributed.broadcast_object(result["main_metric"]["value"]))
    finally:
        tracker.finish(exit_code=exit_code)


def _fmt(row: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def _eval_series(result: dict) -> dict[str, float]:
    """Flatten an evaluation to wandb series eval/<sampler>/<metric> and eval/floor/<metric>."""
    row = {f"eval/floor/{k}": v for k, v in result["floor"].items()}
    for slot, metrics_ in result["samplers"].items():
        row |= {f"eval/{slot}/{k}": v for k, v in metrics_.items() if isinstance(v, int | float)}
    return row


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    main()
