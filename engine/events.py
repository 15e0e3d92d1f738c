"""Plain events yielded by long engine operations.

They hold numbers, strings and numpy arrays only, never live tensors or modules,
so a GUI thread can keep them without sharing state with the worker.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """A long operation moved on: `done` of `total` units within `phase`."""

    phase: str
    done: int
    total: int
    message: str = ""
    eta_s: float | None = None

    @property
    def fraction(self) -> float:
        """Share of the phase that is finished, in [0, 1]."""
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


@dataclass(frozen=True)
class EvalDone:
    """Evaluation finished; `metrics` is an engine.metrics.Metrics."""

    metrics: Any


@dataclass(frozen=True)
class EpochDone:
    """One training (or fine-tuning) epoch finished."""

    epoch: int
    epochs: int
    train_loss: float
    train_top1: float
    val_top1: float | None = None
    lr: float = 0.0


@dataclass(frozen=True)
class TrainDone:
    """Training finished; `history` lists the EpochDone events."""

    history: tuple = field(default_factory=tuple)
    computed_in: str = "float32"  # what the forward passes computed in (training.compute_dtype)


class CancelToken:
    """A flag checked between batches; setting it never interrupts a thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the running operation to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once cancel() was called."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise Cancelled if cancel() was called."""
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


class Phase(StrEnum):
    """The phases of a pruning step, in order; also the Progress phase names while they run."""

    PRUNE = "prune"
    BN_RECALIBRATE = "bn-recalibrate"
    FINETUNE = "finetune"
    EVALUATE = "evaluate"


@dataclass(frozen=True)
class PhaseDone:
    """One phase of a pruning step finished (a Phase).

    `top1` is a quick look on validation images (the full test figure for "evaluate"), None where the
    run did not measure it; `next_phase` is what a step-through run waits to start (None: nothing)."""

    step: int
    phase: Phase
    top1: float | None
    params: int
    next_phase: Phase | None = None


class StepGate:
    """Holds a step-through run between phases until release(); open() lets it run on without stopping.

    The engine waits on it from the worker thread; the front end releases it (a button). Waiting checks
    the CancelToken, so a paused run still answers Cancel."""

    POLL_S = 0.05

    def __init__(self) -> None:
        self._event = threading.Event()
        self._open = False

    def release(self) -> None:
        """Let the waiting run start its next phase."""
        self._event.set()

    def open(self) -> None:
        """Stop pausing: this and every later wait returns at once."""
        self._open = True
        self._event.set()

    @property
    def is_open(self) -> bool:
        """True once open() was called."""
        return self._open

    def wait(self, cancel: CancelToken | None = None) -> None:
        """Block until release() or open(); raise Cancelled if `cancel` is set meanwhile."""
        while not self._event.wait(self.POLL_S):
            if cancel is not None:
                cancel.check()
        if not self._open:
            self._event.clear()  # one release, one phase
        if cancel is not None:
            cancel.check()


class Eta:
    """Estimates the time left from the average pace so far."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.start = time.perf_counter()

    def __call__(self, done: int) -> float | None:
        """Seconds left after `done` units, or None before the first one."""
        if done <= 0:
            return None
        elapsed = time.perf_counter() - self.start
        return elapsed / done * max(0, self.total - done)


def drain(events, on_event=None):
    """Run an event generator to its end and return the last event."""
    last = None
    for last in events:
        if on_event is not None:
            on_event(last)
    return last


def result_of(events, on_event=None):
    """Run a generator that *returns* its result to its end; `on_event` (optional) sees each event."""
    while True:
        try:
            event = next(events)
        except StopIteration as done:
            return done.value
        if on_event is not None:
            on_event(event)


def relay(events, phase: str | None = None, keep=(EpochDone,)):
    """Pass a sub-job's Progress on (renamed to `phase` when given) and return its last other event.

    Use as `result = yield from relay(sub_job(...), "baseline")`; events of the `keep` types are passed
    on as they are (fine-tuning epochs reach the plots)."""
    result = None
    for ev in events:
        if isinstance(ev, Progress):
            yield ev if phase is None else Progress(phase, ev.done, ev.total, ev.message, ev.eta_s)
        elif isinstance(ev, keep):
            yield ev
        else:
            result = ev
    return result
