"""The training loop: AdamW, linear warm-up + cosine decay, gradient clipping, an EMA of the weights, callbacks.

One step draws a batch with the trainer's data generator, the DSM loss's t and ε with its noise generator,
and applies one AdamW update. Everything a step depends on is in `state_dict()` (weights, EMA, optimiser,
scheduler, step, both generators and the global torch/numpy/python RNGs, which dropout uses), so training N
steps equals training k, saving, loading into a new Trainer and training N − k: bitwise on the CPU.

A class-conditional model (built with `num_classes`) trains on the data's labels, each replaced by the null label ∅
with probability `cond_drop` (drawn with the data generator), so that one network learns s(x, t | y) and s(x, t)
(Ho & Salimans 2022).

A non-finite loss or gradient is caught before the optimiser touches the weights: nan_policy="stop" rewinds the
step's random draws and raises NonFiniteLossError naming the step and the likely cause, so `state_dict()` is then
the exact state after the last good step; "skip" drops the update and counts it.
The library imports no Hydra and no wandb: an app passes callbacks for logging, evaluation and checkpoints.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .checkpoint import CheckpointError
from .checks import ArgumentError, check_choice, check_number
from .distributed import rank_seed, shard
from .losses import WEIGHTINGS, dsm_draws, dsm_loss
from .runtime import resolve_device, seed_everything
from .sde import SDE

NAN_POLICIES = ("stop", "skip")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtype of the loss
Callback = Callable[["Trainer", dict], None]


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm of a step is NaN or infinite; the weights are those before the step."""


def warmup_cosine(step: int, warmup: int, steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1 over `warmup` steps, then cosine decay to 0 at `steps`
    (Loshchilov & Hutter 2017; Goyal et al. 2017)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(1, steps - warmup), 1.0)
    return 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """Trains a ScoreModel on `data` (an object with `batch(n, generator)`; for a conditional model also
    `batch_with_labels` and `num_classes` equal to the model's) by denoising score matching.

    `model` is the module trained; `train_model` is the module the loss calls (the same one, or a
    DistributedDataParallel wrapper of it); `ema_model` holds the EMA weights and is the one to sample from.
    EMA decay at step n is min(ema_decay, (1 + n)/(10 + n)) (score_sde's ExponentialMovingAverage), so short
    runs do not keep the random initialisation in their average.

    Several processes (`world_size` > 1, in an initialised torch.distributed process group): `batch_size` is the
    global batch; every rank draws all of it (data, t, ε) from identically seeded generators and computes the loss
    on its slice, DDP averages the gradients, so the run equals a 1-process run up to float summation order and
    rank 0's state_dict() resumes any world size dividing the batch. The global RNGs (dropout) are per rank:
    rank r > 0 re-seeds them from (seed, r) at start and from (seed, r, step) on load, so with dropout a resumed
    run's ranks > 0 draw fresh masks. precision "bf16"/"fp16" runs the loss under torch.autocast (fp16 with a
    GradScaler, whose overflow steps are skipped and counted); `compile` wraps `train_model` in torch.compile.
    """

    def __init__(
        self,
        model: nn.Module,
        sde: SDE,
        data,
        *,
        steps: int,
        batch_size: int,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        warmup: int = 100,
        grad_clip: float | None = 1.0,
        ema_decay: float = 0.998,
        loss_eps: float = 1e-5,
        weighting: str = "simple",
        cond_drop: float = 0.0,
        seed: int = 0,
        nan_policy: str = "stop",
        device: str | torch.device = "cpu",
        callbacks: Sequence[Callback] = (),
        progress: bool = True,
        precision: str = "fp32",
        compile: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        check_number("steps", steps, integer=True, ge=1)
        check_number("batch_size", batch_size, integer=True, ge=1)
        check_number("lr", lr, gt=0)
        check_number("weight_decay", weight_decay, ge=0)
        check_number("warmup", warmup, integer=True, ge=0)
        check_number("grad_clip", grad_clip, gt=0, optional=True)
        check_number("ema_decay", ema_decay, ge=0, lt=1)
        check_number("loss_eps", loss_eps, gt=0, lt=sde.T)
        check_choice("weighting", weighting, WEIGHTINGS)
        check_number("cond_drop", cond_drop, ge=0, le=1)
        num_classes = getattr(model, "num_classes", None)
        if num_classes is None and cond_drop > 0:
            raise ArgumentError("cond_drop", cond_drop, "0 for an unconditional model (one built without num_classes)")
        if num_classes is not None and getattr(data, "num_classes", None) != num_classes:
            raise ValueError(
                f"the model is conditional on {num_classes} classes but the data set has "
                f"num_classes={getattr(data, 'num_classes', None)}; build the model with the data's num_classes"
            )
        check_number("seed", seed, integer=True, ge=0)
        check_choice("nan_policy", nan_policy, NAN_POLICIES)
        check_choice("progress", progress, (True, False))
        check_choice("precision", precision, tuple(PRECISIONS))
        check_choice("compile", compile, (True, False))
        group = dist.get_world_size() if dist.is_initialized() else 1
        check_choice("world_size", world_size, sorted({1, group}))
        check_number("rank", rank, integer=True, ge=0, lt=world_size)
        self.sde, self.data = sde, data
        self.steps, self.batch_size, self.grad_clip, self.ema_decay = steps, batch_size, grad_clip, ema_decay
        self.loss_eps, self.weighting, self.nan_policy = loss_eps, weighting, nan_policy
        self.num_classes, self.cond_drop = num_classes, cond_drop
        self.callbacks, self.progress = list(callbacks), progress
        self.device = resolve_device(device)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shard = shard(rank, world_size, batch_size)
        self.model = model.to(self.device)
        self.train_model: nn.Module = self.model
        if world_size > 1:  # DDP broadcasts rank 0's weights and buffers: every rank's EMA below starts from them
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
            if rank > 0:
                seed_everything(rank_seed(seed, rank))
        if compile:
            self.train_model = torch.compile(self.train_model)
        self.autocast_dtype = PRECISIONS[precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False).eval()
        self._params, self._ema_params = list(self.model.parameters()), list(self.ema_model.parameters())
        self._buffer_pairs = list(zip(self.ema_model.buffers(), self.model.buffers(), strict=True))
        self.optimizer = torch.optim.AdamW(self._params, lr=lr, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: warmup_cosine(s, warmup, steps))
        data_seed, noise_seed = np.random.SeedSequence(seed).generate_state(2)
        self.data_generator = torch.Generator().manual_seed(int(data_seed))
        self.noise_generator = torch.Generator(self.device).manual_seed(int(noise_seed))
        self.step = 0
        self.skipped_steps = 0

    def fit(self) -> None:
        """Train from `self.step` to `steps`, calling every callback with the logs after each step."""
        self.train_model.train()
        with tqdm(total=self.steps, initial=self.step, disable=not self.progress, desc="train") as bar:
            while self.step < self.steps:
                logs = self.train_step()
                for callback in self.callbacks:
                    callback(self, logs)
                bar.update(1)
                if self.step % 100 == 0:
                    bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    def train_step(self) -> dict:
        """One AdamW step on one batch; returns {"step", "loss", "lr", "grad_norm", "skipped_steps"}; the loss is
        the mean over the global batch (all ranks)."""
        rng = self.data_generator.get_state(), self.noise_generator.get_state(), torch.get_rng_state()
        x0, y = self._batch()
        t, noise = dsm_draws(self.sde, x0.shape, self.loss_eps, self.noise_generator, x0.dtype, self.device)
        x0 = x0[self.shard].to(self.device, non_blocking=True)
        y = y[self.shard].to(self.device, non_blocking=True) if y is not None else None
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            loss = dsm_loss(
                self.sde,
                self.train_model,
                x0,
                self.loss_eps,
                self.weighting,
                t=t[self.shard],
                noise=noise[self.shard],
                y=y,
            ).mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = nn.utils.clip_grad_norm_(self._params, self.grad_clip or math.inf)
        if self.world_size > 1:
            loss = loss.detach().clone()
            dist.all_reduce(loss)
            loss /= self.world_size
        loss_value, grad_value = loss.item(), grad_norm.item()
        lr = self.optimizer.param_groups[0]["lr"]
        if math.isfinite(loss_value) and math.isfinite(grad_value):
            self.scaler.step(self.optimizer)
            self._update_ema()
        elif self.nan_policy == "stop" and not (self.scaler.is_enabled() and math.isfinite(loss_value)):
            self.optimizer.zero_grad(set_to_none=True)
            for generator, state in zip((self.data_generator, self.noise_generator), rng[:2], strict=True):
                generator.set_state(state)  # state_dict() is now exactly the state after step `self.step`
            torch.set_rng_state(rng[2])
            raise NonFiniteLossError(self._diagnose(x0, loss_value, grad_value, lr))
        else:  # nan_policy "skip", or an fp16 gradient overflow (the scaler lowers its scale)
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

    def _batch(self) -> tuple[Tensor, Tensor | None]:
        """The global batch x₀ and, for a conditional model, its labels with each replaced by ∅ (the index
        num_classes) with probability cond_drop (Ho & Salimans 2022, Alg. 1)."""
        if self.num_classes is None:
            return self.data.batch(self.batch_size, self.data_generator), None
        x0, y = self.data.batch_with_labels(self.batch_size, self.data_generator)
        if self.cond_drop > 0:
            drop = torch.rand(self.batch_size, generator=self.data_generator) < self.cond_drop
            y = y.masked_fill(drop, self.num_classes)
        return x0, y

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.ema_decay, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(self._ema_params, self._params, 1 - decay)
        for ema_buffer, buffer in self._buffer_pairs:
            ema_buffer.copy_(buffer)

    def _diagnose(self, x0: Tensor, loss: float, grad_norm: float, lr: float) -> str:
        what = "loss" if not math.isfinite(loss) else "gradient norm"
        if not bool(torch.isfinite(x0).all()):
            cause = "the data batch contains NaN/Inf values: check the data set"
        elif not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            cause = "the weights are already non-finite"
        else:
            cause = f"the training diverged: lower the learning rate (lr={lr:.3g})"
            cause += "" if self.grad_clip else " or set grad_clip"
        return (
            f"non-finite {what} at step {self.step + 1} (loss={loss}, grad_norm={grad_norm}); likely cause: {cause}; "
            f"the weights are those after step {self.step}; nan_policy='skip' skips such steps instead"
        )

    def state_dict(self) -> dict:
        """Everything the next step depends on; plain tensors and containers (torch.load(weights_only=True))."""
        np_state = np.random.get_state()  # noqa: NPY002
        py_state = random.getstate()
        rng = {
            "data": self.data_generator.get_state(),
            "noise": self.noise_generator.get_state(),
            "torch": torch.get_rng_state(),
            "numpy": {
                "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                "pos": int(np_state[2]),
                "has_gauss": int(np_state[3]),
                "cached_gaussian": float(np_state[4]),
            },
            "python": {"version": py_state[0], "state": list(py_state[1]), "gauss_next": py_state[2]},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "rng": rng,
        }
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()`; a state for another model raises CheckpointError naming the differing keys."""
        _check_fits(self.model, state["model"], "model")
        _check_fits(self.ema_model, state["ema"], "ema")
        self.model.load_state_dict(state["model"])
        self.ema_model.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.skipped_steps = int(state["step"]), int(state.get("skipped_steps", 0))
        rng = state["rng"]
        self.data_generator.set_state(rng["data"])
        self.noise_generator.set_state(rng["noise"])
        torch.set_rng_state(rng["torch"])
        n = rng["numpy"]
        np.random.set_state(  # noqa: NPY002
            ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
        )
        p = rng["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        if self.rank > 0:  # the checkpoint holds rank 0's global RNGs
            seed_everything(rank_seed(self.seed, self.rank, self.step))


def _check_fits(module: nn.Module, state: dict, key: str) -> None:
    """CheckpointError listing missing, unexpected and mis-shaped keys when `state` is not for `module`."""
    own = module.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    shapes = {
        k: (tuple(state[k].shape), tuple(own[k].shape))
        for k in sorted(own.keys() & state.keys())
        if tuple(state[k].shape) != tuple(own[k].shape)
    }
    if missing or unexpected or shapes:
        parts = [
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {unexpected[:5]}" if unexpected else "",
            "shape (checkpoint vs model) " + ", ".join(f"{k}: {a} vs {b}" for k, (a, b) in list(shapes.items())[:5])
            if shapes
            else "",
        ]
        raise CheckpointError(f"checkpoint's {key!r} does not fit this model: " + "; ".join(p for p in parts if p))
