"""Train a score model by denoising score matching (Song et al. 2021, eq. 7), sample it with the evaluation
samplers, and write metrics.json (every metric beside the sampling floor, mean ± sd, and a legend), samples.png or
samples_<sampler>.png, loss.png, checkpoints/last.pt and an offline wandb run to the job's output dir; a
class-conditional run adds guided grids and their class accuracy. Returns the first sampler's headline metric
(evaluation.headline) for sweepers.

    python experiments/train.py                                     # the README's main job (eight_gaussians)
    python experiments/train.py experiment=train/digits_unet        # 8x8 digits with a U-Net
    python experiments/train.py -m schedule=linear,cosine,constant  # one job (and wandb run) per β(t)
    torchrun --standalone --nproc_per_node=2 experiments/train.py   # DDP: rank 0 writes (docs/scaling.md)

SIGTERM or SIGUSR1 (under submitit: its signal) stops training at the next step boundary: checkpoints/last.pt is
saved and the process ends by that signal for the launcher to requeue; train.resume=auto continues bitwise
(docs/reliability.md).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sde_diffusion.apps import (
    Built,
    RunError,
    build,
    build_evaluator,
    check_run,
    config_diff,
    file_log,
    hydra_app,
    instantiate_node,
    output_dir,
    require_file,
    require_number,
    require_values,
    run_only_keys,
    start_tracker,
    sweep_run_name,
)
from sde_diffusion.apps.build import argument_error
from sde_diffusion.apps.guard import check_samples
from sde_diffusion.core.checks import ArgumentError
from sde_diffusion.evaluation import plots
from sde_diffusion.evaluation.class_eval import GuidedEvaluation
from sde_diffusion.evaluation.diagnosis import LevelError, excess_loss_by_level
from sde_diffusion.evaluation.evaluator import Evaluation, Evaluator, SamplerFailed, headline, legend
from sde_diffusion.infra import distributed
from sde_diffusion.infra.checkpoint import CheckpointError, RunState, load_checkpoint, save_checkpoint
from sde_diffusion.infra.runtime import resolve_device, seed_everything
from sde_diffusion.infra.tracking import Tracker
from sde_diffusion.training import NonFiniteLossError, Preempted, StopOnSignal, Trainer

log = logging.getLogger("train")

# train.*: not the Trainer's
LOOP_KEYS = ("log_every", "eval_every", "ckpt_every", "keep_last", "guide_at", "threads", "resume")


def check(cfg: DictConfig) -> None:
    """The keys this app reads itself (the Trainer, Evaluator and the rest check theirs when they are built)."""
    require_values(cfg)
    require_number(cfg, "train.seed", integer=True, ge=0)  # seeds the initial weights before the Trainer exists
    require_number(cfg, "train.log_every", integer=True, ge=1)
    for key in ("eval_every", "ckpt_every", "keep_last"):
        require_number(cfg, f"train.{key}", integer=True, ge=0)
    require_number(cfg, "train.threads", integer=True, ge=1, optional=True)
    require_number(cfg, "train.guide_at", integer=True, ge=1, optional=True)
    guide_at, steps = cfg.train.get("guide_at"), cfg.train.steps
    if isinstance(guide_at, int) and isinstance(steps, int) and guide_at > steps:
        log.warning("train.guide_at=%d is past train.steps=%d: no guide is saved", guide_at, steps)
    require_file(cfg, "train.resume", "allowed: null, auto, or the path of an existing checkpoint file", (None, "auto"))


@hydra_app("train", threads="train.threads")
def main(cfg: DictConfig) -> float:
    """Check, join the processes (torchrun), train; returns the main metric for Hydra sweepers."""
    check(cfg)
    try:
        device = resolve_device(cfg.train.device)
    except ArgumentError as err:  # a dotted name is a whole key already (loss.density)
        raise argument_error("" if "." in err.name else "train", err) from None
    ctx = distributed.init(device)
    try:
        return train(cfg, ctx)
    except Preempted as stop:  # last.pt is saved: hand the signal on (the launcher requeues), docs/reliability.md
        distributed.cleanup()
        stop.resend()
    finally:
        distributed.cleanup()


def train(cfg: DictConfig, ctx: distributed.Context) -> float:
    """Build everything (every bad value fails here, before any output), resume, train, evaluate, report."""
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 logs the run
    out = Path(distributed.broadcast_object(str(output_dir())))  # rank 0's, if they differ
    seed_everything(cfg.train.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    built = build(cfg)
    evaluator = build_evaluator(cfg, built.sde)
    guided = instantiate_node(cfg, "guidance", _convert_="all")
    check_run(guided.sampler, built.sde, "guidance.sampler")
    resume_path, run = resume_state(cfg, out / "checkpoints" / "last.pt")
    hooks, stop = StepHooks(cfg, out, run, evaluator, built), StopOnSignal()
    trainer = build_trainer(cfg, built, ctx, [hooks, stop])
    if resume_path is not None:
        load(trainer, run, resume_path, cfg)
    name_run(cfg)
    tracker = start_tracker(cfg, out, "train", run.wandb_run_id, run.wandb_history) if ctx.is_main else Tracker()
    hooks.tracker = tracker
    with hooks.tracker:
        hooks.start = time.perf_counter()
        try:
            with stop:  # SIGTERM/SIGUSR1: stop at the next step boundary; one after the last step acts after the save
                trainer.fit()
                wall = time.perf_counter() - hooks.start
                hooks.save(trainer)
        except NonFiniteLossError as err:
            hooks.save(trainer)
            raise RunError(
                f"{err}; that state is saved to {hooks.path} (continue with train.resume=auto, e.g. with a lower lr)"
            ) from err
        except Preempted as err:
            hooks.save(trainer)
            distributed.barrier()  # every rank exits after rank 0's save
            log.warning("%s: saved %s; train.resume=auto continues from there", err, hooks.path)
            raise
        hooks.tracker.log_artifact(hooks.path, f"model-{hooks.tracker.run_id}", "model", {"step": trainer.step})
        evaluation = hooks.evaluate(trainer)
        main_metric = headline(evaluation)
        if ctx.is_main:
            title = plots.describe(type(built.data).__name__, built.sde, sweep_run_name(cfg))
            walls = {"train_wall_s": wall, "train_wall_s_total": run.train_wall_s + wall}
            result = report(evaluation, trainer, run.loss_history, walls, built, out, hooks.tracker, title)
            if hooks.level_errors:
                result |= level_report(hooks.level_errors, out, hooks.tracker, title, result["plots"])
            samples = dict(evaluation.samples)
            if built.model.num_classes is not None:
                ev = guided(trainer.ema_model.sde, trainer.ema_model, built.data, trainer.device)
                result |= guided_report(ev, built, out, hooks.tracker, title, trainer.step, result["plots"])
                samples |= {f"guided w={w:g}": x for w, x in ev.samples.items()}
            (out / "metrics.json").write_text(json.dumps(result, indent=2))  # once, with every part
            log.info("wrote %s", out / "metrics.json")
            check_samples(samples, evaluation.reference)
    return main_metric["value"]


def name_run(cfg: DictConfig) -> None:
    """logger.name, when null: data, SDE, β(t) and loss weighting (the config groups chosen), then the job's
    overrides if any (a sweep's runs differ by them), e.g. "eight_gaussians vp linear-β simple-loss"."""
    if cfg.get("logger") is None or "name" not in cfg.logger or cfg.logger.name is not None:
        return
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    choices, overrides = (hydra_cfg.runtime.choices, hydra_cfg.job.override_dirname) if hydra_cfg else ({}, "")
    parts = [choices.get(k) or cfg[k]._target_.rsplit(".", 1)[-1] for k in ("data", "sde")]
    if "schedule" in cfg.sde:
        parts.append(f"{choices.get('schedule') or cfg.schedule._target_.rsplit('.', 1)[-1]}-β")
    parts.append(f"{choices.get('loss') or cfg.train.get('weighting', 'dsm')}-loss")
    cfg.logger.name = " ".join([*parts, *([overrides] if overrides else [])])


def build_trainer(cfg: DictConfig, built: Built, ctx: distributed.Context, callbacks: list) -> Trainer:
    """The Trainer of `train` (`_target_` + `_partial_`, without the app's LOOP_KEYS) for this process."""
    node = OmegaConf.create(OmegaConf.to_container(cfg.train, resolve=True))  # ${seed}, ${device} from the root
    partial = hydra.utils.instantiate(OmegaConf.masked_copy(node, [k for k in node if k not in LOOP_KEYS]))
    try:
        return partial(
            built.model,
            built.sde,
            built.data,
            objective=instantiate_node(cfg, "loss", sde=built.sde),
            device=ctx.device,
            callbacks=callbacks,
            progress=cfg.train.progress if ctx.is_main else False,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
    except ArgumentError as err:  # a dotted name is a whole key already (loss.density)
        raise argument_error("" if "." in err.name else "train", err) from None


def resume_state(cfg: DictConfig, last: Path) -> tuple[Path | None, RunState]:
    """(path, state) of the checkpoint to resume, train.resume=auto -> this run dir's `last` if it exists; or
    (None, an empty state) for a fresh run."""
    resume = cfg.train.resume
    if resume is None or (resume == "auto" and not last.is_file()):
        return None, RunState({})
    path = last if resume == "auto" else Path(resume)
    try:
        return path, RunState.from_state(load_checkpoint(path))
    except CheckpointError as err:
        raise RunError(str(err)) from err


def load(trainer: Trainer, run: RunState, path: Path, cfg: DictConfig) -> None:
    """Continue from `run`; a state that does not fit names the config keys that differ from its run's."""
    new = OmegaConf.to_container(cfg, resolve=True)
    diff = config_diff(run.config, new, run_only_keys()) if run.config is not None else []
    try:
        trainer.load_state_dict(run.trainer)
    except (CheckpointError, KeyError, RuntimeError, ValueError) as err:
        differs = f"; config keys that differ (checkpoint -> this run): {'; '.join(diff)}" if diff else ""
        raise RunError(f"checkpoint {path}: {str(err).splitlines()[0]}{differs}") from err
    if diff:
        log.warning("resuming with a config that differs from the checkpoint's: %s", "; ".join(diff))
    log.info("resumed from step %d of %s", trainer.step, path)


class StepHooks:
    """The Trainer's callback: every train.log_every steps the mean loss to the history and the tracker, every
    eval_every steps an evaluation, every ckpt_every steps a checkpoint (rank 0 writes it)."""

    def __init__(self, cfg: DictConfig, out: Path, run: RunState, evaluator: Evaluator, built: Built):
        self.cfg, self.run, self.evaluator, self.built = cfg, run, evaluator, built
        self.path, self.tracker, self.window = out / "checkpoints" / "last.pt", Tracker(), run.loss_window
        self.level_errors: dict[int, LevelError] = {}  # step -> excess loss per λ-bin (data with an oracle)
        self.start = time.perf_counter()  # this segment's start (train() resets it just before fit)

    def __call__(self, trainer: Trainer, logs: dict) -> None:
        t, step = self.cfg.train, logs["step"]
        self.window.append(float(logs["loss"]))
        if step % t.log_every == 0 or step == t.steps:
            self.run.loss_history.append((step, sum(self.window) / len(self.window)))
            self.window.clear()
            row = {"loss": self.run.loss_history[-1][1], "lr": logs["lr"], "grad_norm": float(logs["grad_norm"])}
            row["skipped_steps"] = logs["skipped_steps"]
            self.tracker.log({f"train/{k}": v for k, v in row.items()}, step=step)
            elapsed = time.perf_counter() - self.start
            values = ", ".join(f"{k} {v:.4g}" for k, v in row.items())
            file_log(log.name, logging.INFO, f"step {step}/{t.steps}: {values} ({elapsed:.1f} s)")
        if t.eval_every and step % t.eval_every == 0 and step < t.steps:
            self.tracker.log(series(self.evaluate(trainer)), step=step)
        if t.ckpt_every and step % t.ckpt_every == 0 and step < t.steps:
            self.save(trainer)
        if step == t.get("guide_at"):  # autoguidance's weak guide: this run's own early state (Karras et al. 2024)
            self.save(trainer, self.path.with_name("guide.pt"))
            log.info(
                "saved the weak guide (step %d of %d, no extra training) to %s",
                step,
                t.steps,
                self.path.with_name("guide.pt"),
            )

    def evaluate(self, trainer: Trainer) -> Evaluation:
        """Every evaluation sampler on the EMA model (progress bars with train.progress, on rank 0); a failing one is
        a RunError naming its slot."""
        b, sde = self.built, trainer.ema_model.sde  # the EMA's own copy: a trained schedule=learned is averaged too
        if b.data.oracle is not None and trainer.rank == 0:
            gen = torch.Generator().manual_seed(self.cfg.eval.seed)
            c = excess_loss_by_level(
                sde, trainer.ema_model, b.data.oracle, trainer.objective.t_min, generator=gen, device=trainer.device
            )
            self.level_errors[trainer.step] = c
            row = {f"score_error/lam{lam:+.2f}": v for lam, v in zip(c.lam, c.excess, strict=True)}
            self.tracker.log(row, step=trainer.step)
        try:
            return self.evaluator(
                sde,
                trainer.ema_model,
                b.data.reference,
                tuple(b.data.shape),
                b.data.oracle,
                trainer.device,
                progress=self.cfg.train.progress and trainer.rank == 0,
            )
        except SamplerFailed as err:
            raise RunError(
                f"evaluation sampler eval.samplers.{err.slot} ({err.name}) failed at training step {trainer.step}: "
                f"{str(err.__cause__).splitlines()[0]} (the trained state is in checkpoints/last.pt; "
                "a smaller eval.batch_size bounds memory)"
            ) from err

    def save(self, trainer: Trainer, path: Path | None = None) -> None:
        """checkpoints/last.pt, or `path` (rank 0: every rank holds the same state, docs/scaling.md)."""
        if trainer.rank == 0:
            config = OmegaConf.to_container(self.cfg, resolve=True)
            wall = self.run.train_wall_s + time.perf_counter() - self.start  # every segment up to this state
            state = RunState(
                trainer.state_dict(),
                config,
                self.tracker.run_id,
                self.run.loss_history,
                self.window,
                self.tracker.history,
                wall,
            )
            keep = self.cfg.train.keep_last if path is None else 0
            save_checkpoint(path or self.path, state.to_state(), keep_last=keep)


def report(
    ev: Evaluation, trainer: Trainer, history: list, walls: dict, built: Built, out: Path, tracker: Tracker, title: str
) -> dict:
    """metrics.json's content (returned), the sample and loss plots (under `title`), and the tracker's final series,
    table, images and summary. `walls`: this segment's training time and every segment's (a resumed run)."""
    result = {"n_samples": len(ev.reference), "floor": ev.floor, "floor_sd": ev.floor_sd, "samplers": ev.rows}
    result |= {"train_steps": trainer.step, **walls, "final_loss": history[-1][1]}
    result |= {"skipped_steps": trainer.skipped_steps, "main_metric": headline(ev)}
    result["legend"] = legend(k for row in ev.rows.values() for k in row) | LEGEND
    if trainer.skipped_steps:
        log.warning("skipped %d steps with a non-finite loss or gradient", trainer.skipped_steps)
    result["plots"] = [str(p) for p in sample_plots(ev, built, out, title)]
    result["plots"].append(str(plots.loss_curve(*zip(*history, strict=True), out / "loss.png", title)))
    for slot, row in ev.rows.items():
        log.info(
            "%s: %s", slot, ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        )
    log.info("floor: %s", ev.floor)
    main = result["main_metric"]
    log.info(
        "main metric %s = %.4g (floor sd %.2g); trained %.1f s (%.1f s over every segment)",
        main["name"],
        main["value"],
        main["floor_sd"],
        walls["train_wall_s"],
        walls["train_wall_s_total"],
    )
    tracker.log(series(ev), step=trainer.step)
    floor_rows = [{"slot": "floor (data vs data)", **ev.floor}, {"slot": "floor sd", **ev.floor_sd}]
    tracker.log_table("eval/samplers", [{"slot": k, **v} for k, v in ev.rows.items()] + floor_rows)
    tracker.log_images({f"eval/{Path(p).stem}": p for p in result["plots"]}, step=trainer.step)
    tracker.summary({**series(ev), "main_metric": main["value"], "main_metric_floor_sd": main["floor_sd"], **walls})
    return result


LEGEND = {
    "main_metric": "the headline (evaluation.evaluator.headline) of the first sampler: nll_excess with an oracle "
    "(beside its recall pair, mode_weight_error), else sw2; floor_sd is its resolution",
    "train_wall_s": "training time of this process (a resumed run: its last segment)",
    "train_wall_s_total": "training time of every segment up to the final state (time lost after a kill's last "
    "checkpoint not counted)",
}


def sample_plots(ev: Evaluation, built: Built, out: Path, title: str) -> list[Path]:
    """Image grids (samples_data.png, samples_<slot>.png) for image data, else one scatter panel per sampler;
    every figure titled with the data, SDE, β(t) and run (`title`), and each sampler's panel with its NFE."""
    scaler = built.data.scaler
    if scaler is not None and len(built.data.shape) == 3:
        grids = [plots.image_grid(ev.reference[:64], out / "samples_data.png", f"{title}\ndata", scaler=scaler)]
        return grids + [
            plots.image_grid(
                x[:64],
                out / f"samples_{k}.png",
                f"{title}\n{k}: {ev.rows[k]['nfe']} NFE, {quality(ev, k, ', ')}",
                scaler=scaler,
            )
            for k, x in ev.samples.items()
        ]
    titled = {f"{k}: {ev.rows[k]['nfe']} NFE\n{quality(ev, k)}": x for k, x in ev.samples.items()}
    return [plots.scatter_panels(titled, ev.reference, out / "samples.png", title)]


def quality(ev: Evaluation, slot: str, sep: str = "\n") -> str:
    """A sampler's quality as its figure states it, the headline first: with an oracle the NLL excess over the data's
    and the mode-weight error, each beside the floor's sd; else SW2 over the floor and the energy distance, which
    sees mass between the modes that SW2 misses."""
    row, floor, sd = ev.rows[slot], ev.floor, ev.floor_sd
    if "nll_excess" in row:
        mwe = f"mode-weight error {row['mode_weight_error']:.3f} (floor {floor['mode_weight_error']:.3f} ± "
        return f"NLL excess {row['nll_excess']:+.2f} ± {sd['nll_excess']:.2f}{sep}{mwe}{sd['mode_weight_error']:.3f})"
    line = f"SW2 {row['sw2_over_floor']:.2f}× floor (± {sd['sw2'] / floor['sw2']:.2f})"
    return line + f"{sep}energy {row['energy']:.2g} (floor {floor['energy']:.2g} ± {sd['energy']:.1g})"


def guided_report(
    ev: GuidedEvaluation, built: Built, out: Path, tracker: Tracker, title: str, step: int, plot_paths: list
) -> dict:
    """The guided samples' grids (one row per class; first 10 per class) or scatter (appended to `plot_paths`),
    their accuracy per guidance scale beside the judge's on held-out data: metrics.json's "guidance" (returned), and
    to the tracker."""
    c, scaler = built.model.num_classes, built.data.scaler
    judge = f"judged by {ev.judge.name}: {ev.judge.held_out_accuracy:.1%} on held-out data"
    if scaler is not None and len(built.data.shape) == 3:
        show = min(10, len(ev.labels) // c)
        paths = [
            plots.image_grid(
                x.view(c, -1, *x.shape[1:])[:, :show].flatten(0, 1),
                out / f"guided_w{w:g}.png",
                f"{title}\nguidance w = {w:g}: one row per class, accuracy {ev.rows[w]['accuracy']:.1%} ({judge})",
                nrow=show,
                scaler=scaler,
                row_labels=[f"class {i}" for i in range(c)],
            )
            for w, x in ev.samples.items()
        ]
    else:
        titled = {f"w = {w:g}: accuracy {ev.rows[w]['accuracy']:.1%}": x for w, x in ev.samples.items()}
        data = built.data.reference(len(ev.labels), torch.Generator().manual_seed(0))
        paths = [plots.scatter_panels(titled, data, out / "guided.png", f"{title}\n{judge}")]
    result = {
        "guidance": {
            "judge": ev.judge.name,
            "judge_held_out_accuracy": ev.judge.held_out_accuracy,
            "scales": {f"{w:g}": row for w, row in ev.rows.items()},
        }
    }
    plot_paths += [str(p) for p in paths]
    for w, row in ev.rows.items():
        log.info("guidance w=%g: accuracy %.3f (%d NFE, %.1f s)", w, row["accuracy"], row["nfe"], row["wall_s"])
    log.info("%s", judge)
    row = {f"guidance/w{w:g}/accuracy": r["accuracy"] for w, r in ev.rows.items()}
    row["guidance/judge_held_out_accuracy"] = ev.judge.held_out_accuracy
    tracker.log(row, step=step)
    tracker.log_images({f"guidance/{Path(p).stem}": p for p in paths}, step=step)
    tracker.summary(row)
    return result


def level_report(curves: dict[int, LevelError], out: Path, tracker: Tracker, title: str, plot_paths: list) -> dict:
    """The excess loss over the exact score per λ-bin (evaluation.diagnosis) at each evaluation: metrics.json's
    "score_error" (per step: lam, excess, se; returned), score_error.png (appended to `plot_paths`), and a tracker
    table."""
    path = plots.level_error_curves(curves, out / "score_error.png", f"{title}\nexcess loss over the exact score per λ")
    plot_paths.append(str(path))
    rows = [
        {"step": k, "lam": lam, "excess": e, "se": se}
        for k, c in curves.items()
        for lam, e, se in zip(c.lam, c.excess, c.se, strict=True)
    ]
    tracker.log_table("eval/score_error", rows)
    tracker.log_images({"eval/score_error_plot": path})  # not the table's key: one key holds one kind
    return {"score_error": {str(step): c.as_dict() for step, c in curves.items()}}


def series(ev: Evaluation) -> dict[str, float]:
    """An evaluation as wandb series eval/<slot>/<metric>, eval/floor/<metric> and eval/floor_sd/<metric>."""
    row = {f"eval/floor/{k}": v for k, v in ev.floor.items()}
    row |= {f"eval/floor_sd/{k}": v for k, v in ev.floor_sd.items()}
    for slot, metrics in ev.rows.items():
        row |= {f"eval/{slot}/{k}": v for k, v in metrics.items() if isinstance(v, int | float)}
    return row


if __name__ == "__main__":
    main()
