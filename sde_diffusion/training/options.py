"""The Trainer's hyper-parameters as one frozen, validated record: each field carries its allowed range, and a bad
value is an ArgumentError naming the field, the value and what is allowed."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from ..core.checks import check_choice, check_number
from .amp import PRECISIONS
from .guard import NAN_POLICIES


def _number(default: Any = MISSING, **bounds: Any) -> Any:
    return field(default=default, metadata={"number": bounds})


def _choice(default: Any, choices: tuple) -> Any:
    return field(default=default, metadata={"choices": choices})


@dataclass(frozen=True)
class TrainOptions:
    """AdamW (lr, weight_decay), `warmup` steps of linear warm-up then cosine decay over `steps`, gradient clipping
    at norm `grad_clip` (None: none), the EMA decay (the loss is the Trainer's `objective`), the label
    drop rate `cond_drop` of a class-conditional model, the `seed` of the data and noise streams, the NaN policy,
    the autocast `precision`, torch.compile, and a progress bar."""

    steps: int = _number(integer=True, ge=1)
    batch_size: int = _number(integer=True, ge=1)
    lr: float = _number(3e-3, gt=0)
    weight_decay: float = _number(0.0, ge=0)
    warmup: int = _number(100, integer=True, ge=0)
    grad_clip: float | None = _number(1.0, gt=0, optional=True)
    ema_decay: float = _number(0.998, ge=0, lt=1)
    cond_drop: float = _number(0.0, ge=0, le=1)
    seed: int = _number(0, integer=True, ge=0)
    nan_policy: str = _choice("stop", NAN_POLICIES)
    precision: str = _choice("fp32", tuple(PRECISIONS))
    compile: bool = _choice(False, (True, False))
    progress: bool = _choice(True, (True, False))

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if "number" in f.metadata:
                check_number(f.name, value, **f.metadata["number"])
            elif "choices" in f.metadata:
                check_choice(f.name, value, f.metadata["choices"])
