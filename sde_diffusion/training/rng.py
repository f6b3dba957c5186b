"""The global RNG states (torch, CUDA, numpy, python: model initialisation and dropout draw from them) as plain
tensors and containers, so that a checkpoint holding them loads with torch.load(weights_only=True)."""

from __future__ import annotations

import random

import numpy as np
import torch


def get_state() -> dict:
    """{"torch", "numpy", "python"} and, once CUDA is initialised, "cuda" (one state per device)."""
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global RNG is what user code shares)
    version, py_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": version, "state": list(py_state), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_state(state: dict) -> None:
    """Restore a `get_state()` (its "cuda" part only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
