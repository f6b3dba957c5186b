"""Training throughput: steps/s and samples/s of `Trainer.train_step` for the MLP and the U-Net at a few global
batch sizes, one process against DDP, on the current device.

CPU: one process with 1 thread, one process with K threads, and K DDP processes (gloo) of 1 thread each, all on
the same global batch (a DDP rank computes batch/K of it), so the last two share out the same K cores two ways.
CUDA: one GPU in fp32 and bf16 autocast, with peak memory; DDP over all GPUs (nccl) when there are several.
Processes are started with torch.multiprocessing.spawn and joined through a file store, as torchrun would.

    OMP_NUM_THREADS=1 python experiments/bench_train.py [--device auto] [--steps 20] [--procs 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sde_diffusion import VPSDE
from sde_diffusion.data import Digits, EightGaussians
from sde_diffusion.infra.runtime import resolve_device, seed_everything
from sde_diffusion.models import MLP, ScoreModel, UNet
from sde_diffusion.training import Trainer

NETWORKS = {
    "MLP 3x256, 8 gaussians": (lambda: MLP((2,)), EightGaussians),
    "UNet 32ch, digits 8x8": (lambda: UNet((1, 8, 8)), Digits),
}
BATCHES = {  # global batch sizes per network and device type
    "cpu": {"MLP 3x256, 8 gaussians": (256, 2048), "UNet 32ch, digits 8x8": (32, 128)},
    "cuda": {"MLP 3x256, 8 gaussians": (512, 8192, 65536), "UNet 32ch, digits 8x8": (128, 1024, 8192)},
}


def measure(
    network: str, batch: int, device: torch.device, precision: str, steps: int, rank: int = 0, world_size: int = 1
) -> dict:
    """Seconds per step (median of `steps` timed steps after 3 warm-up steps) and peak CUDA memory of one rank."""
    make_net, make_data = NETWORKS[network]
    seed_everything(0)
    sde = VPSDE()
    trainer = Trainer(
        ScoreModel(make_net(), sde),
        sde,
        make_data(),
        steps=10**6,
        batch_size=batch,
        device=device,
        precision=precision,
        rank=rank,
        world_size=world_size,
        progress=False,
    )
    trainer.train_model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(steps + 3):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        trainer.train_step()  # its loss.item() waits for the step, and under DDP for every rank's gradients
        if i >= 3:
            times.append(time.perf_counter() - start)
    memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"s_per_step": sorted(times)[len(times) // 2], "mem_mib": memory}


def _ddp_worker(rank: int, world_size: int, store: str, jobs: list, device_type: str, steps: int, out: str) -> None:
    torch.set_num_threads(1)
    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", f"file://{store}", rank=rank, world_size=world_size
    )
    try:
        results = [measure(net, batch, device, prec, steps, rank, world_size) for net, batch, prec in jobs]
        if rank == 0:
            Path(out).write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def ddp(jobs: list, world_size: int, device: torch.device, steps: int) -> list[dict]:
    """`measure` every (network, batch, precision) job in `world_size` DDP processes; rank 0's figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/results.json"
        mp.spawn(_ddp_worker, (world_size, f"{tmp}/store", jobs, device.type, steps, out), nprocs=world_size)
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row (median reported)")
    parser.add_argument("--procs", type=int, default=2, help="DDP processes on the CPU (on CUDA: the GPU count)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    jobs = [(net, b, "fp32") for net, sizes in BATCHES[device.type].items() for b in sizes]
    rows: dict[str, list[dict]] = {}
    if device.type == "cpu":
        k = args.procs
        for threads in sorted({1, k}):
            torch.set_num_threads(threads)
            rows[f"1 proc x {threads} thread" + "s" * (threads > 1)] = [
                measure(net, b, device, p, args.steps) for net, b, p in jobs
            ]
        rows[f"DDP {k} procs x 1 thread"] = ddp(jobs, k, device, args.steps)
        baseline = "1 proc x 1 thread"
    else:
        for precision in ("fp32", "bf16"):
            rows[f"1 GPU {precision}"] = [measure(net, b, device, precision, args.steps) for net, b, _ in jobs]
        if torch.cuda.device_count() > 1:
            rows[f"DDP {torch.cuda.device_count()} GPUs fp32"] = ddp(
                jobs, torch.cuda.device_count(), device, args.steps
            )
        baseline = "1 GPU fp32"
    name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads max"
    )
    print(f"device {device} ({name}), torch {torch.__version__}; median of {args.steps} steps; global batch")
    print("| network                | batch | mode                     | steps/s | samples/s | vs base | peak MiB |")
    print("|------------------------|-------|--------------------------|---------|-----------|---------|----------|")
    for i, (net, batch, _) in enumerate(jobs):
        for mode, results in rows.items():
            r, base = results[i], rows[baseline][i]
            sps = 1 / r["s_per_step"]
            mem = f"{r['mem_mib']:.0f}" if device.type == "cuda" else "-"
            print(
                f"| {net:<22} | {batch:5d} | {mode:<24} | {sps:7.1f} | {sps * batch:9.0f} "
                f"| {base['s_per_step'] / r['s_per_step']:7.2f} | {mem:>8} |"
            )


if __name__ == "__main__":
    main()
