"""Stopping at a step boundary when a cluster signals: SLURM's SIGTERM (preemption) or --signal=USR1 (time limit),
torchrun's forwarded SIGTERM, submitit's SIGUSR2. While a StopOnSignal is active a signal only records the request;
as a Trainer callback it raises Preempted after that step, on all ranks alike, and `Preempted.resend()` hands the
signal to the handler it had before (submitit's requeues the job) or to its default action (docs/reliability.md)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any, NoReturn

from ..infra import distributed


def stop_signals() -> tuple[int, ...]:
    """SIGTERM and SIGUSR1; in a submitit job its preemption signal first (preferred when several arrive)."""
    default = (signal.SIGTERM, signal.SIGUSR1)
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return default
    submitit = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
    return (submitit, *(s for s in default if s != submitit))


class Preempted(Exception):
    """Training stopped after step `step` because signal `signum` arrived; `resend()` passes the signal on."""

    def __init__(self, signum: int, step: int, handler: Any = signal.SIG_DFL):
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}")
        self.signum, self.step, self.handler = signum, step, handler

    def resend(self) -> NoReturn:
        """Raise the signal again under the handler it had before: submitit's requeues the job and exits; the
        default action ends the process by the signal. Exit status 128 + signum if a handler returns."""
        signal.signal(self.signum, self.handler)
        _raise(self.signum)


class StopOnSignal:
    """While active (`with`), `signals` (default: `stop_signals()`) record a stop request instead of acting; as a
    Trainer callback it raises Preempted once one has arrived. Every rank of a process group must use it alike: the
    ranks agree on the signal (one all-reduce per step) and so stop at the same step. A signal still pending when
    the `with` block ends without an error is resent there. Ignored signals (SIG_IGN) stay ignored."""

    def __init__(self, signals: Sequence[int] | None = None):
        self.signals = tuple(signals) if signals is not None else stop_signals()
        self.received: set[int] = set()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for signum in self.signals:
                if signal.getsignal(signum) not in (signal.SIG_IGN, None):  # None: a handler set outside Python
                    self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if exc_type is None and (signum := self._agreed()):
            _raise(signum)

    def __call__(self, trainer: Any, logs: dict) -> None:
        if signum := self._agreed():
            self.received.clear()  # handed to the caller, with Preempted.resend()
            raise Preempted(signum, trainer.step, self._previous.get(signum, signal.SIG_DFL))

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received.add(signum)

    def _agreed(self) -> int:
        """The first of `signals` that any rank received (0: none), the same on every rank."""
        n = len(self.signals)
        first = next((n - i for i, s in enumerate(self.signals) if s in self.received), 0)
        first = distributed.all_reduce_max(first)
        return self.signals[n - first] if first else 0


def _raise(signum: int) -> NoReturn:
    """Deliver `signum` to this thread now (its Python handler runs before raise_signal returns)."""
    signal.raise_signal(signum)
    raise SystemExit(128 + signum)
