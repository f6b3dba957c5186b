"""Crash-safe checkpoint files: atomic writes, and loads that run no code and fail in one clear line.

A save writes a temporary file in the target's directory, fsyncs it, renames it over the target with
os.replace (atomic on POSIX and Windows) and fsyncs the directory, so a kill at any moment leaves either the
old or the new checkpoint, never a torn one. A load uses torch.load(weights_only=True), which unpickles only
tensors and plain containers: a file crafted to run code when unpickled is refused before anything runs.
`export_safetensors` writes the EMA weights as safetensors and the run config as JSON, for use without pickle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.checks import ArgumentError

TRAINER_KEYS = ("model", "ema", "optimizer", "scheduler", "step", "rng")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated, corrupt, unsafe, or not what the caller expects."""


def save_checkpoint(path: str | os.PathLike, state: dict, keep_last: int = 0) -> None:
    """torch.save `state` to `path` atomically (temp file in the same directory, fsync, os.replace); with
    `keep_last` = k > 0, also keep the last k saves as `<stem>_step<N><suffix>` beside it (hard links to the saved
    file, so no second write), deleting older ones. Temp files left by a process killed mid-save are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # one writer per path: these are from a killed save
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # persist the rename itself (POSIX)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    if keep_last > 0:
        _keep(path, int(state["step"]), keep_last)


def _keep(path: Path, step: int, keep_last: int) -> None:
    """Link `path` as `<stem>_step<step>` and delete all but the newest `keep_last` such files."""
    kept = path.with_name(f"{path.stem}_step{step:08d}{path.suffix}")
    kept.unlink(missing_ok=True)
    try:
        os.link(path, kept)
    except OSError:  # a file system without hard links
        shutil.copyfile(path, kept)
    pattern = re.compile(rf"{re.escape(path.stem)}_step(\d+){re.escape(path.suffix)}")
    steps = sorted((int(m.group(1)), p) for p in path.parent.iterdir() if (m := pattern.fullmatch(p.name)))
    for _, old in steps[:-keep_last]:
        old.unlink(missing_ok=True)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", required: Iterable[str] = TRAINER_KEYS
) -> dict:
    """torch.load(path, weights_only=True) as a dict holding the `required` keys, else CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: empty file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(e))
        if unsafe:
            problem = f"refused to unpickle {unsafe.group(1)}: not plain tensors and containers, possibly malicious"
        else:
            problem = f"truncated or corrupt, not a readable torch.save file ({type(e).__name__}: {_detail(e)})"
        raise CheckpointError(f"checkpoint {path}: {problem}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: holds a {type(state).__name__}, expected a dict of training state")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path}: not a training checkpoint, missing keys {missing}")
    return state


def check_fits(module: torch.nn.Module, state: dict, key: str) -> None:
    """CheckpointError listing the missing, unexpected and mis-shaped keys when `state` (the checkpoint's `key`) is
    not a state dict of `module`."""
    own = module.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(own.keys() & state.keys())
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    parts = [f"missing {missing[:5]}"] if missing else []
    parts += [f"unexpected {unexpected[:5]}"] if unexpected else []
    parts += ["shape (checkpoint vs model) " + ", ".join(shapes[:5])] if shapes else []
    if parts:
        raise CheckpointError(f"checkpoint's {key!r} does not fit this model: " + "; ".join(parts))


@dataclass
class RunState:
    """What a training run saves: `trainer` (Trainer.state_dict()), the resolved `config` of the run, its
    `wandb_run_id` (a resumed run continues it), `loss_history`, the (step, mean loss) rows logged so far,
    `loss_window`, the losses of the steps since the last row (a run stopped between rows resumes its mean),
    `wandb_history`, the tracker's (step, row) rows not known to be in a run file yet (tracking.start_run logs
    those a kill lost), and `train_wall_s`, the training time of every segment of the run up to this state."""

    trainer: dict
    config: dict | None = None
    wandb_run_id: str | None = None
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    loss_window: list[float] = field(default_factory=list)
    wandb_history: list[tuple[int, dict]] = field(default_factory=list)
    train_wall_s: float = 0.0

    def to_state(self) -> dict:
        """One flat dict for `save_checkpoint`: the trainer's keys beside `config`, `wandb_run_id`, `loss_history`
        (a float64 tensor of shape (rows, 2)) and `loss_window` (float64, shape (steps,))."""
        history = torch.tensor(self.loss_history, dtype=torch.float64).reshape(-1, 2)
        window = torch.tensor(self.loss_window, dtype=torch.float64)
        return self.trainer | {
            "config": self.config,
            "wandb_run_id": self.wandb_run_id,
            "loss_history": history,
            "loss_window": window,
            "wandb_history": [[int(step), dict(row)] for step, row in self.wandb_history],
            "train_wall_s": float(self.train_wall_s),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunState:
        """The inverse of `to_state`; a bare Trainer state (no config, run id or history) is a RunState too."""
        trainer = {k: v for k, v in state.items() if k not in _RUN_KEYS}
        history = state.get("loss_history", torch.zeros(0, 2)).tolist()
        window = state.get("loss_window", torch.zeros(0)).tolist()
        rows = [(int(s), loss) for s, loss in history]
        logged = [(int(step), dict(row)) for step, row in state.get("wandb_history", [])]
        wall = float(state.get("train_wall_s", 0.0))
        return cls(trainer, state.get("config"), state.get("wandb_run_id"), rows, window, logged, wall)


_RUN_KEYS = ("config", "wandb_run_id", "loss_history", "loss_window", "wandb_history", "train_wall_s")

_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _detail(e: Exception, limit: int = 120) -> str:
    """The informative line of a torch.load error, without torch's advice paragraphs: its whole first sentences up to
    `limit` characters (at least one), never cut mid-word."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith(_BOILERPLATE)]
    if not lines:
        return ""
    sentences, kept = lines[0].split(". "), []
    for sentence in sentences:
        if kept and len(". ".join([*kept, sentence])) > limit:
            break
        kept.append(sentence)
    return ". ".join(kept).rstrip(".")


def export_safetensors(source: dict | torch.nn.Module, config: dict, out_dir: str | os.PathLike) -> Path:
    """Write `out_dir`/model.safetensors (the EMA weights: a checkpoint's "ema", or a model's state dict) and
    `out_dir`/config.json (the run config): tensors and JSON only, nothing pickled. Returns `out_dir`."""
    if isinstance(source, torch.nn.Module):
        weights = source.state_dict()
    elif isinstance(source, dict) and "ema" in source:
        weights = source["ema"]
    else:
        raise ArgumentError("source", type(source), "a training checkpoint dict (with 'ema') or a model")
    if not isinstance(config, dict):
        raise ArgumentError("config", type(config), "a plain dict (e.g. OmegaConf.to_container(cfg))")
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in weights.items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def load_exported(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config) from a folder written by `export_safetensors`; rebuild the score model with
    `config.build(OmegaConf.create(config)).model.load_state_dict(state_dict)`. Problems are CheckpointErrors."""
    from safetensors.torch import load_file

    folder = Path(path)
    for name in ("model.safetensors", "config.json"):
        if not (folder / name).is_file():
            raise CheckpointError(f"exported model {folder}: {name} not found")
    try:
        state_dict = load_file(folder / "model.safetensors")
        config = json.loads((folder / "config.json").read_text())
    except Exception as e:
        raise CheckpointError(f"exported model {folder}: unreadable ({type(e).__name__}: {_detail(e)})") from None
    if not isinstance(config, dict):
        raise CheckpointError(
            f"exported model {folder}: config.json holds a {type(config).__name__}, expected an object"
        )
    return state_dict, config
