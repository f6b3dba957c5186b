"""Checkpoint files: atomic replacement, a round trip of a trainer state through weights_only loading, and
one-line CheckpointErrors for missing, empty, truncated, random, foreign and malicious files."""

import contextlib
import os
import pickle
import random

import pytest
import torch

from sde_diffusion import VPSDE
from sde_diffusion.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sde_diffusion.data import EightGaussians
from sde_diffusion.models import MLP, ScoreModel
from sde_diffusion.training import Trainer


def _state():
    torch.manual_seed(0)
    t = Trainer(
        ScoreModel(MLP((2,), hidden=8, layers=1), VPSDE()),
        VPSDE(),
        EightGaussians(),
        steps=3,
        batch_size=4,
        progress=False,
    )
    t.fit()
    return t.state_dict()


def test_trainer_state_round_trips_through_weights_only_loading(tmp_path):
    state = _state()
    save_checkpoint(tmp_path / "sub" / "ck.pt", state | {"config": {"lr": 1e-3, "name": "x"}, "wandb_run_id": "abc"})
    loaded = load_checkpoint(tmp_path / "sub" / "ck.pt")
    assert loaded["step"] == 3 and loaded["config"] == {"lr": 1e-3, "name": "x"} and loaded["wandb_run_id"] == "abc"
    assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())
    assert torch.equal(loaded["rng"]["data"], state["rng"]["data"])
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["ck.pt"]  # no temporary file left behind


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, _state())
    before = path.read_bytes()

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        save_checkpoint(path, {"model": Unsaveable()})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def _write(path, kind):
    if kind == "truncated":
        save_checkpoint(path, _state())
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "list":
        torch.save([torch.zeros(2)], path)
    elif kind == "foreign_dict":
        torch.save({"weights": torch.zeros(2)}, path)


@pytest.mark.parametrize(
    "kind, problem",
    [
        ("missing", "file not found"),
        ("empty", "empty file"),
        ("truncated", "truncated or corrupt"),
        ("random", "truncated or corrupt"),
        ("list", "holds a list"),
        ("foreign_dict", r"missing keys \['model'"),
    ],
)
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, kind, problem):
    path = tmp_path / f"{kind}.pt"
    _write(path, kind)
    with pytest.raises(CheckpointError, match=problem) as e:
        load_checkpoint(path)
    assert isinstance(e.value, ValueError) and str(path) in str(e.value) and "\n" not in str(e.value)


class _Payload:
    """Creates a marker file when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_malicious_pickle_runs_nothing(tmp_path, writer):
    marker, path = str(tmp_path / "pwned"), tmp_path / "evil.pt"
    state = {"model": _Payload(marker), "step": 0}
    if writer == "torch.save":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=2))
    with pytest.raises(CheckpointError, match=r"refused to unpickle .*mkdir") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and not os.path.exists(marker)
    with contextlib.suppress(RuntimeError):  # the control: an unsafe load runs the payload (then may complain)
        torch.load(path, weights_only=False)
    assert os.path.exists(marker)
