"""The training loop (EDM's training_loop, Karras et al. 2022, in spirit): draw a batch, one AdamW step on the
objective (objectives.Objective; by default the DSM loss of Song et al. 2021, eq. 7) with linear warm-up, cosine
decay and gradient clipping, the EMA update, then the callbacks. DDP, autocast, torch.compile and the NaN guard are
opt-in parts; `state_dict()` holds all a step depends on, so that training N steps equals training k, saving,
loading into a new Trainer and training N − k: bitwise on the CPU."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..core.checks import ArgumentError
from ..core.sde import SDE
from ..infra import distributed
from ..infra.checkpoint import check_fits
from ..infra.runtime import resolve_device, seed_everything
from ..objectives.objective import Draw, Objective, build_objective
from . import rng
from .amp import autocast, grad_scaler
from .ema import EMA
from .guard import NonFiniteLossError, diagnose
from .options import TrainOptions

Callback = Callable[["Trainer", dict], None]


def warmup_cosine(step: int, warmup: int, steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1 over `warmup` steps, then cosine decay to 0 at `steps`
    (Loshchilov & Hutter 2017; Goyal et al. 2017)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(1, steps - warmup), 1.0)
    return 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """Trains a ScoreModel on `data` (an object with `batch(n, generator)`; for a conditional model also
    `batch_with_labels` and `num_classes` equal to the model's) by denoising score matching; `options` are the
    fields of TrainOptions (steps, batch_size, lr, ...).

    `model` is the module trained, `train_model` the one the loss calls (`model`, or its DDP / torch.compile
    wrapper), `ema_model` holds the EMA weights and is the one to sample from. A step draws the batch with the
    data generator and t, ε with the noise generator; a conditional model's labels are replaced by the null label
    ∅ with probability `cond_drop` (Ho & Salimans 2022). With `world_size` > 1 processes (an initialised process
    group) `batch_size` is the global batch: every rank draws all of it and computes the loss on its slice, so the
    run equals one process up to float summation order; the global RNGs (dropout) of rank r > 0 are seeded from
    (seed, r), and from (seed, r, step) on load.
    """

    def __init__(
        self,
        model: nn.Module,
        sde: SDE,
        data: Any,
        *,
        device: str | torch.device = "cpu",
        callbacks: Sequence[Callback] = (),
        rank: int = 0,
        world_size: int = 1,
        objective: Objective | None = None,
        **options: Any,
    ):
        self.options = o = TrainOptions(**options)
        if objective is not None and objective.sde is not sde:
            raise ValueError("objective was built for another SDE: build it with the Trainer's sde")
        self.objective = objective if objective is not None else build_objective(sde)  # default: today's DSM loss
        if world_size > 1 and not self.objective.ddp:
            raise ValueError(f"{type(self.objective).__name__} trains in one process (its gradients are not synced)")
        self.num_classes = _check_labels(model, data, o.cond_drop)
        distributed.check_ranks(rank, world_size)
        self.sde, self.data, self.steps, self.callbacks = sde, data, o.steps, list(callbacks)
        self.device, self.rank, self.world_size = resolve_device(device), rank, world_size
        self.shard = distributed.shard(rank, world_size, o.batch_size)
        self.model = model.to(self.device)
        self.train_model = distributed.wrap(self.model, self.device, world_size)  # DDP: rank 0's weights
        if rank > 0:
            seed_everything(distributed.rank_seed(o.seed, rank))
        if o.compile:
            self.train_model = torch.compile(self.train_model)
        self.scaler = grad_scaler(self.device, o.precision)
        self.ema = EMA(self.model, o.ema_decay)
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=o.lr, weight_decay=o.weight_decay)
        schedule = lambda s: warmup_cosine(s, o.warmup, o.steps)  # noqa: E731
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        data_seed, noise_seed = np.random.SeedSequence(o.seed).generate_state(2)
        self.data_generator = torch.Generator().manual_seed(int(data_seed))
        self.noise_generator = torch.Generator(self.device).manual_seed(int(noise_seed))
        self.step = self.skipped_steps = 0

    @property
    def ema_model(self) -> nn.Module:
        """The EMA of the weights: the model to sample from."""
        return self.ema.model

    def fit(self) -> None:
        """Train from `step` to `steps` (options.steps unless set lower: the LR schedule always spans options.steps),
        calling every callback with the step's logs after each step."""
        self.train_model.train()
        with tqdm(total=self.steps, initial=self.step, disable=not self.options.progress, desc="train") as bar:
            while self.step < self.steps:
                logs = self.train_step()
                for callback in self.callbacks:
                    callback(self, logs)
                bar.update(1)
                if self.step % 100 == 0:
                    bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    def train_step(self) -> dict:
        """One AdamW step on one batch; returns {"step", "loss", "lr", "grad_norm", "skipped_steps"}, the loss being
        the mean over the global batch. A non-finite loss or gradient changes no weight: nan_policy "stop" rewinds
        the step's draws and raises NonFiniteLossError, "skip" (and an fp16 overflow) counts a skipped step."""
        before = self.data_generator.get_state(), self.noise_generator.get_state(), torch.get_rng_state()
        x0, y = self._batch()
        with autocast(self.device, self.options.precision):
            per_sample, draw = self._loss(x0, y)
        loss = per_sample.mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.objective.backward(per_sample, self.scaler.scale)
        self.scaler.unscale_(self.optimizer)
        clipped = self.optimizer.param_groups[0]["params"]  # the network's: an objective's own are not clipped
        grad_norm = nn.utils.clip_grad_norm_(clipped, self.options.grad_clip or math.inf)
        loss_value, grad_value = distributed.mean(loss, self.world_size).item(), grad_norm.item()
        lr = self.optimizer.param_groups[0]["lr"]
        if math.isfinite(loss_value) and math.isfinite(grad_value):
            self.scaler.step(self.optimizer)
            self.ema.update(self.step)
            self.objective.update(draw, per_sample)  # an adaptive p(λ) follows the per-sample losses
        elif self.options.nan_policy == "stop" and not (self.scaler.is_enabled() and math.isfinite(loss_value)):
            self.optimizer.zero_grad(set_to_none=True)
            self.data_generator.set_state(before[0])
            self.noise_generator.set_state(before[1])
            torch.set_rng_state(before[2])  # state_dict() is now exactly the state after step `self.step`
            clip = self.options.grad_clip is not None
            raise NonFiniteLossError(diagnose(x0, self.model, loss_value, grad_value, lr, clip, self.step))
        else:
            self.skipped_steps += 1
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return {
            "step": self.step,
            "loss": loss_value,
            "lr": lr,
            "grad_norm": grad_value,
            "skipped_steps": self.skipped_steps,
        }

    def _loss(self, x0: Tensor, y: Tensor | None) -> tuple[Tensor, Draw]:
        """The objective per example of this rank's slice of the global batch x₀ (labels y), and the slice's draw:
        t (λ ~ p) and ε are drawn for the whole batch from the noise generator, so every rank draws the same."""
        s = self.shard
        draw = self.objective.draw(x0.shape, self.noise_generator, x0.dtype, self.device)[s]
        x0 = x0[s].to(self.device, non_blocking=True)
        y = y[s].to(self.device, non_blocking=True) if y is not None else None
        return self.objective.loss(self.train_model, x0, y, draw), draw

    def _param_groups(self) -> list[dict]:
        """The optimiser's groups: the network's parameters, and the objective's own (a learned β(t)'s) in a group
        without weight decay (decay would pull γ₀, γ₁ and the shape's raw weights toward 0, a prior nobody chose)."""
        own = self.objective.parameters()
        if not own:
            return [{"params": list(self.model.parameters())}]
        ids = {id(p) for p in own}
        network = [p for p in self.model.parameters() if id(p) not in ids]
        return [{"params": network}, {"params": own, "weight_decay": 0.0}]

    def _batch(self) -> tuple[Tensor, Tensor | None]:
        """The global batch x₀ and, for a conditional model, its labels with each replaced by ∅ (the index
        num_classes) with probability cond_drop (Ho & Salimans 2022, Alg. 1)."""
        n = self.options.batch_size
        if self.num_classes is None:
            return self.data.batch(n, self.data_generator), None
        x0, y = self.data.batch_with_labels(n, self.data_generator)
        if self.options.cond_drop > 0:
            drop = torch.rand(n, generator=self.data_generator) < self.options.cond_drop
            y = y.masked_fill(drop, self.num_classes)
        return x0, y

    def state_dict(self) -> dict:
        """Everything the next step depends on, as plain tensors and containers (torch.load(weights_only=True))."""
        generators = {"data": self.data_generator.get_state(), "noise": self.noise_generator.get_state()}
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "rng": generators | rng.get_state(),
            "objective": self.objective.state_dict(),  # an adaptive p(λ)'s state; {} for the others
        }
        return state | ({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {})

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()`; a state for another model raises CheckpointError naming the differing keys."""
        check_fits(self.model, state["model"], "model")
        check_fits(self.ema_model, state["ema"], "ema")
        self.model.load_state_dict(state["model"])
        self.ema_model.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.skipped_steps = int(state["step"]), int(state.get("skipped_steps", 0))
        self.objective.load_state_dict(state.get("objective", {}))
        self.data_generator.set_state(state["rng"]["data"])
        self.noise_generator.set_state(state["rng"]["noise"])
        rng.set_state(state["rng"])
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        if self.rank > 0:  # the checkpoint holds rank 0's global RNGs
            seed_everything(distributed.rank_seed(self.options.seed, self.rank, self.step))


def _check_labels(model: nn.Module, data: Any, cond_drop: float) -> int | None:
    """The model's number of classes (None: unconditional), which the data set must have; cond_drop needs one."""
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None and cond_drop > 0:
        raise ArgumentError("cond_drop", cond_drop, "0 for an unconditional model (one built without num_classes)")
    if num_classes is not None and getattr(data, "num_classes", None) != num_classes:
        raise ValueError(
            f"the model is conditional on {num_classes} classes but the data set has "
            f"num_classes={getattr(data, 'num_classes', None)}; build the model with the data's num_classes"
        )
    return num_classes
