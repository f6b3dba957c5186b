"""Training a score model by denoising score matching: the loop (trainer), its hyper-parameters (options) and its
opt-in parts, one per module: EMA, mixed precision (amp), the NaN guard, the global RNG states of a checkpoint
(rng), and stopping at a step boundary on a cluster's signal (preemption)."""

from .guard import NonFiniteLossError
from .options import TrainOptions
from .preemption import Preempted, StopOnSignal
from .trainer import Callback, Trainer, warmup_cosine

__all__ = ["Callback", "NonFiniteLossError", "Preempted", "StopOnSignal", "TrainOptions", "Trainer", "warmup_cosine"]
