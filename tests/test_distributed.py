"""Multi-process training (gloo on the CPU): a 2-process Trainer takes the same steps as a 1-process one with the
same global batch, up to float summation order; both ranks end with identical weights; a signal to one rank stops
both at the same step; the helpers' splits and gathers match their definitions; and
`torchrun --nproc_per_node=2 experiments/train.py` runs end to end."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from apps import ROOT, TINY, app_env, run_job
from conftest import mlp_trainer
from wandb_reader import find_run_files, read_run

from sde_diffusion.infra import distributed
from sde_diffusion.infra.checkpoint import load_checkpoint
from sde_diffusion.training import Preempted, StopOnSignal, Trainer

STEPS, BATCH = 25, 64
# Float sums in another order (two half-batch means averaged by DDP vs one mean) differ by ~1e-7 relative per step;
# over 25 AdamW steps the weights drift apart by ~6e-7 (measured), well inside this.
TOL = 1e-5


def _trainer(**kw) -> Trainer:
    return mlp_trainer(STEPS, batch_size=BATCH, **kw)


def _weights(trainer: Trainer) -> list[torch.Tensor]:
    return [
        t.detach().clone() for t in [*trainer.model.state_dict().values(), *trainer.ema_model.state_dict().values()]
    ]


def _worker(rank: int, world_size: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        losses = []
        trainer = _trainer(rank=rank, world_size=world_size, callbacks=[lambda _, logs: losses.append(logs["loss"])])
        trainer.fit()
        gathered = distributed.gather(torch.full((rank + 1, 3), float(rank)))  # unequal sizes: 1 and 2 rows
        result = {"weights": _weights(trainer), "losses": losses, "gathered": gathered, "stopped": _stopped(rank)}
        torch.save(result, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _stopped(rank: int) -> tuple[int, int]:
    """(step, signal) at which this rank stopped when rank 1 alone got SIGUSR1 during step 7."""
    stop = StopOnSignal([signal.SIGUSR1])
    send = lambda t, logs: os.kill(os.getpid(), signal.SIGUSR1) if rank == 1 and t.step == 7 else None  # noqa: E731
    trainer = _trainer(rank=rank, world_size=2, callbacks=[send, stop])
    try:
        with stop:
            trainer.fit()
    except Preempted as err:
        return err.step, int(err.signum)
    return trainer.step, 0


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, str(out / "store"), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(two_ranks):
    losses = []
    single = _trainer(callbacks=[lambda _, logs: losses.append(logs["loss"])])
    single.fit()
    assert torch.allclose(torch.tensor(two_ranks[0]["losses"]), torch.tensor(losses), rtol=TOL, atol=0)
    for a, b in zip(two_ranks[0]["weights"], _weights(single), strict=True):
        assert torch.allclose(a, b, rtol=TOL, atol=TOL), (a - b).abs().max()
    # and the runs are not trivially equal: training moved the weights
    moved = [not torch.allclose(a, b) for a, b in zip(two_ranks[0]["weights"], _weights(_trainer()), strict=True)]
    assert sum(moved) >= len(moved) // 2


@pytest.mark.slow
def test_both_ranks_end_with_identical_weights(two_ranks):
    for a, b in zip(two_ranks[0]["weights"], two_ranks[1]["weights"], strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(two_ranks):
    assert [r["stopped"] for r in two_ranks] == [(7, signal.SIGUSR1)] * 2


@pytest.mark.slow
def test_gather_concatenates_unequal_parts_in_rank_order(two_ranks):
    expected = torch.tensor([[0.0] * 3, [1.0] * 3, [1.0] * 3])
    for r in range(2):
        assert torch.equal(two_ranks[r]["gathered"], expected)


def test_shards_partition_the_global_batch_in_rank_order():
    for world_size in (1, 2, 4):
        parts = [list(range(64))[distributed.shard(r, world_size, 64)] for r in range(world_size)]
        assert sum(parts, []) == list(range(64)) and len({len(p) for p in parts}) == 1
    with pytest.raises(ValueError, match="batch_size must be divisible by the number of processes, 3"):
        distributed.shard(0, 3, 64)


def test_split_shares_n_items_and_rank_seeds_are_distinct():
    for n, world_size in ((10, 3), (4000, 2), (1, 4)):
        shares = [distributed.split(n, r, world_size) for r in range(world_size)]
        assert sum(shares) == n and max(shares) - min(shares) <= 1
    assert distributed.rank_seed(7, 0) == 7  # a 1-process run keeps its seed
    seeds = {distributed.rank_seed(7, r) for r in range(8)} | {distributed.rank_seed(7, 1, step) for step in (1, 2)}
    assert len(seeds) == 10


def test_helpers_are_identities_without_a_process_group():
    x = torch.randn(3, 2)
    assert not dist.is_initialized() and distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.gather(x) is x and distributed.broadcast_object("a") == "a"
    assert distributed.all_reduce_max(5) == 5
    assert distributed.init(torch.device("cpu")) == distributed.Context(0, 1, 0, torch.device("cpu"))


def test_trainer_rejects_a_world_size_without_a_process_group():
    with pytest.raises(ValueError, match="world_size"):
        _trainer(rank=1, world_size=2)


APP = [*TINY, "train.steps=20", "eval.n_samples=101", "eval.samplers.euler_maruyama.steps=10"]  # ranks sample 51 and 50


@pytest.mark.slow
def test_torchrun_two_processes_run_the_app_like_one_process(tmp_path):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run([*torchrun, str(ROOT / "experiments" / "train.py"), *APP, f"hydra.run.dir={ddp}"],
                          cwd=tmp_path, env=app_env(tmp_path), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_job("train", *APP, "logger=none", out=single)  # the same job as one process (this one)
    assert [p.name for p in (ddp / "checkpoints").iterdir()] == ["last.pt"]  # rank 0 alone writes
    (run_file,) = find_run_files(ddp / "wandb")  # one wandb run, rank 0's
    state, reference = (
        load_checkpoint(ddp / "checkpoints" / "last.pt"),
        load_checkpoint(single / "checkpoints" / "last.pt"),
    )
    assert read_run(run_file).run_id == state["wandb_run_id"] and state["step"] == 20
    # the logged losses are global-batch means: equal to the single process's up to float summation order
    torch.testing.assert_close(state["loss_history"], reference["loss_history"], rtol=TOL, atol=0)
    for key, value in reference["ema"].items():
        torch.testing.assert_close(state["ema"][key], value, rtol=TOL, atol=TOL)
    metrics = json.loads((ddp / "metrics.json").read_text())
    assert metrics["n_samples"] == 101 and metrics["samplers"]["euler_maruyama"]["nfe"] == 11
