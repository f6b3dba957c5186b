"""Checkpoint files: atomic replacement, a round trip of a trainer state through weights_only loading,
one-line CheckpointErrors for missing, empty, truncated, random, foreign and malicious files, a run's state
(trainer, config, wandb run id, loss history) through a file, and the
safetensors + JSON export read back byte by byte against the safetensors format."""

import contextlib
import json
import os
import pickle
import random

import pytest
import torch

from sde_diffusion import VPSDE
from sde_diffusion.data import EightGaussians
from sde_diffusion.infra.checkpoint import (
    CheckpointError,
    RunState,
    export_safetensors,
    load_checkpoint,
    load_exported,
    save_checkpoint,
)
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


def test_export_is_safetensors_and_json_that_load_back_identically(tmp_path):
    state = _state() | {"config": {"sde": {"_target_": "sde_diffusion.VPSDE"}, "train": {"lr": 2e-4, "steps": 3}}}
    out = export_safetensors(state, state["config"], tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    raw = (out / "model.safetensors").read_bytes()  # the format: u64 header length, JSON header, raw tensor bytes
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert header.pop("__metadata__") == {"format": "pt"} and set(header) == set(state["ema"])
    data, ends = raw[8 + n :], []
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        expected = state["ema"][name]
        assert entry["dtype"] == "F32" and entry["shape"] == list(expected.shape)
        assert data[begin:end] == expected.numpy().astype("<f4").tobytes()
        ends.append((begin, end))
    assert sum(e - b for b, e in ends) == len(data)  # every byte is a tensor's: nothing else (no pickle) is in it
    assert json.loads((out / "config.json").read_text()) == state["config"]
    weights, config = load_exported(out)
    assert config == state["config"] and weights.keys() == state["ema"].keys()
    assert all(torch.equal(weights[k], v) for k, v in state["ema"].items())
    model = ScoreModel(MLP((2,), hidden=8, layers=1), VPSDE())
    model.load_state_dict(weights)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), state["ema"].values(), strict=True))
    again = export_safetensors(model, config, tmp_path / "from_model")
    assert (again / "model.safetensors").read_bytes() == raw


@pytest.mark.parametrize("broken", ["missing_config", "truncated", "config_list"])
def test_a_broken_export_is_a_one_line_error_naming_the_folder(tmp_path, broken):
    out = export_safetensors(_state(), {"a": 1}, tmp_path / "export")
    if broken == "missing_config":
        (out / "config.json").unlink()
    elif broken == "truncated":
        (out / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:100])
    else:
        (out / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="exported model") as e:
        load_exported(out)
    assert str(out) in str(e.value) and "\n" not in str(e.value)


def test_export_refuses_a_state_without_ema_and_a_non_dict_config(tmp_path):
    with pytest.raises(ValueError, match="with 'ema'"):
        export_safetensors({"model": {}}, {}, tmp_path)
    with pytest.raises(ValueError, match="config must be a plain dict"):
        export_safetensors(_state(), [("lr", 1)], tmp_path)


def test_a_run_state_round_trips_through_a_file_and_a_bare_trainer_state_is_one(tmp_path):
    trainer = Trainer(ScoreModel(MLP((2,), hidden=8, layers=1), VPSDE()), VPSDE(), EightGaussians(), steps=2,
                      batch_size=4, progress=False)  # fmt: skip
    run = RunState(trainer.state_dict(), {"train": {"lr": 0.003}}, "abc123", [(5, 0.75), (10, 0.5)], [0.1, 1 / 3])
    save_checkpoint(tmp_path / "last.pt", run.to_state())
    back = RunState.from_state(load_checkpoint(tmp_path / "last.pt"))
    assert (back.config, back.wandb_run_id, back.loss_history) == (run.config, run.wandb_run_id, run.loss_history)
    assert back.loss_window == [0.1, 1 / 3]  # float64: the window's losses exactly
    assert back.trainer.keys() == run.trainer.keys()
    assert all(torch.equal(back.trainer["model"][k], v) for k, v in run.trainer["model"].items())
    bare = RunState.from_state(trainer.state_dict())
    assert (bare.config, bare.wandb_run_id, bare.loss_history, bare.loss_window) == (None, None, [], [])


def test_a_truncated_checkpoint_names_torch_s_reason_in_whole_sentences(tmp_path):
    """torch's reason ("… failed finding central directory. This is an internal miniz error. If you're …") is kept
    up to a sentence's end, never cut mid-word."""
    whole = tmp_path / "whole.pt"
    torch.save({"model": {"w": torch.zeros(100_000)}}, whole)
    path = tmp_path / "truncated.pt"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(RuntimeError) as raw:
        torch.load(path, weights_only=True)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    detail = str(e.value).split("(RuntimeError: ", 1)[1].removesuffix(")")
    reason = str(raw.value).splitlines()[0]
    assert reason.startswith(detail) and reason[len(detail)] in ". " and len(detail) > 20, (detail, reason)
