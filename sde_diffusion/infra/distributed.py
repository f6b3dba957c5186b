"""Multi-process training with PyTorch's own engine: `torchrun` starts the processes, this module joins them.

    torchrun --nproc_per_node=2 experiments/train.py          # 2 processes on one machine (gloo on CPU, nccl on GPU)

`init()` reads the variables torchrun exports — RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (under
Hydra's submitit launcher, submitit's own TorchDistributedEnvironment exports them) — and joins the process
group; without them it is a single-process run and every helper below is the identity. Backend: nccl when the
device is CUDA (each process then uses the GPU cuda:LOCAL_RANK), gloo otherwise.

Batches: `train.batch_size` is the global batch. Every rank draws the whole batch (data, t, ε) from the same
generators and trains on its slice `shard(rank, world_size, batch_size)`, so a K-process run takes the same
steps as a single process up to the order of float sums, and a checkpoint (written by rank 0) resumes with any
number of processes that divides the batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..core.checks import ArgumentError, check_choice, check_number


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among `world_size` processes, and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, plots, metrics and the wandb run."""
        return self.rank == 0


def launched() -> bool:
    """Whether this process is one of several: started by torchrun (WORLD_SIZE > 1) or a task of a submitit job
    with several tasks (Hydra's submitit launcher with tasks_per_node or nodes > 1)."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"]) > 1
    return "SUBMITIT_EXECUTOR" in os.environ and _submitit_tasks() > 1


def _submitit_tasks() -> int:
    import submitit

    return submitit.JobEnvironment().num_tasks


def init(device: torch.device) -> Context:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA, where `device` becomes
    cuda:LOCAL_RANK); a no-op single-process Context when not launched. In a submitit job, submitit's
    TorchDistributedEnvironment first exports the same variables torchrun would (every task sees every GPU)."""
    if not launched():
        return Context(0, 1, 0, device)
    if "WORLD_SIZE" not in os.environ:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
        )
    return Context(dist.get_rank(), dist.get_world_size(), local_rank, device)


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank_seed(seed: int, rank: int, *keys: int) -> int:
    """A seed for rank `rank` derived from `seed` (and further `keys`, e.g. a step): `seed` itself on rank 0
    without keys (so a 1-process run is unchanged), else numpy's SeedSequence([seed, rank, *keys])."""
    if rank == 0 and not keys:
        return seed
    return int(np.random.SeedSequence([seed, rank, *keys]).generate_state(1)[0])


def shard(rank: int, world_size: int, n: int) -> slice:
    """Rank `rank`'s contiguous slice of a global batch of `n`, which must divide evenly."""
    if n % world_size:
        raise ArgumentError("batch_size", n, f"divisible by the number of processes, {world_size}")
    size = n // world_size
    return slice(rank * size, (rank + 1) * size)


def check_ranks(rank: int, world_size: int) -> None:
    """`world_size` is 1 or the process group's size and 0 <= `rank` < `world_size`; else ArgumentError."""
    check_choice("world_size", world_size, sorted({1, dist.get_world_size() if dist.is_initialized() else 1}))
    check_number("rank", rank, integer=True, ge=0, lt=world_size)


def wrap(model: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """`model` in DistributedDataParallel when `world_size` > 1 (it broadcasts rank 0's weights and buffers, then
    averages the gradients in backward), else `model` itself."""
    if world_size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def mean(x: Tensor, world_size: int) -> Tensor:
    """The mean of `x` over the `world_size` ranks (a new tensor, all-reduced); `x` itself for one process."""
    if world_size == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / world_size


def split(n: int, rank: int, world_size: int) -> int:
    """How many of `n` items (e.g. evaluation samples) rank `rank` handles: n // world_size, plus one for the
    first n % world_size ranks."""
    return n // world_size + (rank < n % world_size)


def gather(x: Tensor) -> Tensor:
    """Concatenate every rank's `x` (same trailing shape, any first dimension) along dim 0 in rank order, on
    every rank; `x` itself without a process group. Tensors travel on x's device (CUDA under nccl)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    sizes = [torch.zeros((), dtype=torch.int64, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor(x.shape[0], device=x.device))
    longest = int(max(sizes))
    padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes, strict=True)])


def all_reduce_max(value: int) -> int:
    """The largest `value` over ranks (e.g. an adaptive solver's NFE); `value` without a process group."""
    if not dist.is_initialized():
        return value
    backend_cuda = dist.get_backend() == "nccl"
    t = torch.tensor(value, device=torch.device("cuda", torch.cuda.current_device()) if backend_cuda else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: object) -> object:
    """Rank 0's `obj` on every rank (e.g. its output directory); `obj` without a process group."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup() -> None:
    """Leave the process group (call once at the end of a run, also after an error)."""
    if dist.is_initialized():
        dist.destroy_process_group()
