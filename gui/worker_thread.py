"""The one background worker: a QObject moved to a QThread that iterates an engine generator.

The worker never touches widgets; it only emits signals carrying the engine's plain events
(passed as `object`) and, at the end, the generator's return value: the job's result. Cancellation
goes through the engine's CancelToken, checked by the engine between batches; the thread is never
terminated.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterable

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from engine.budget import BudgetExceeded, guarded
from engine.errors import Cancelled, UserError, resource_error
from engine.events import CancelToken, Progress

log = logging.getLogger(__name__)

Work = Callable[[CancelToken], Iterable[Any]]  # a generator function: yields events, returns the result

# Progress events can arrive thousands of times a second (one per batch); the UI needs ~20 a second.
PROGRESS_INTERVAL_S = 0.05


@dataclass(frozen=True)
class Failure:
    """What went wrong in a job: a one-line message, the traceback, and whether it was bad input."""

    message: str
    details: str
    user_error: bool
    exception: BaseException | None = None


class Worker(QObject):
    """Runs one piece of work (a generator function of a CancelToken) and reports through signals."""

    progressed = Signal(object)  # every event; Progress events throttled to PROGRESS_INTERVAL_S
    finished = Signal(object)  # the generator's return value (None when it returns nothing)
    failed = Signal(object)  # a Failure
    cancelled = Signal()
    stopped = Signal()  # always emitted last, whatever the outcome (used to quit the thread)

    def __init__(self, work: Work, name: str = "job", memory_limit: int | None = None,
                 progress_interval_s: float = PROGRESS_INTERVAL_S) -> None:
        super().__init__()
        self.work = work
        self.name = name
        self.memory_limit = memory_limit  # bytes; None: the work holds itself to a budget (a plan, per run)
        self.token = CancelToken()
        self.progress_interval_s = progress_interval_s

    def cancel(self) -> None:
        """Ask the job to stop at its next check (thread-safe: it only sets a flag)."""
        self.token.cancel()

    @Slot()
    def run(self) -> None:
        """Iterate the job's events until it ends, fails or is cancelled."""
        lower_thread_priority()
        result: list[Any] = []
        last_emit = 0.0
        last_phase = None
        start = time.perf_counter()
        try:
            events = self._capture(result)
            if self.memory_limit is not None:
                events = guarded(events, self.memory_limit)
            for event in events:
                if isinstance(event, Progress):
                    now = time.perf_counter()
                    final = event.done >= event.total
                    if event.phase == last_phase and not final and now - last_emit < self.progress_interval_s:
                        continue
                    last_emit, last_phase = now, event.phase
                self.progressed.emit(event)
            self.token.check()  # a cancel that arrived after the last check still counts
            log.info("%s finished in %.1f s", self.name, time.perf_counter() - start)
            self.finished.emit(result[0] if result else None)
        except Cancelled:
            log.info("%s cancelled after %.1f s", self.name, time.perf_counter() - start)
            self.cancelled.emit()
        except UserError as exc:
            log.warning("%s: %s", self.name, exc)
            self.failed.emit(Failure(str(exc), traceback.format_exc(), True, exc))
        except (Exception, BudgetExceeded) as exc:  # a bug or an unexpected model: report it, keep the app alive
            explained = resource_error(exc)
            if explained is not None:  # out of memory: the machine's limit, told like bad input
                log.warning("%s: %s (%s)", self.name, explained, exc)
                self.failed.emit(Failure(str(explained), traceback.format_exc(), True, explained))
            else:
                log.exception("%s failed", self.name)
                self.failed.emit(Failure(f"{type(exc).__name__}: {exc}", traceback.format_exc(), False, exc))
        finally:
            self.stopped.emit()

    def _capture(self, result: list[Any]) -> Generator[Any, None, None]:
        """The work's events, with its return value put in `result`: `guarded` passes events, not return values."""
        result.append((yield from self.work(self.token)))


WORKER_NICENESS = 10


def lower_thread_priority() -> None:
    """Make the calling thread yield the CPU to the UI thread (Linux: per-thread nice; elsewhere a no-op).

    On a machine whose cores are all busy, the UI thread otherwise waits for a time slice behind the
    computation and repaints stutter; with a higher nice value the kernel lets it run first.
    """
    if sys.platform.startswith("linux") and hasattr(os, "setpriority"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), WORKER_NICENESS))
        except OSError:
            log.debug("could not lower the worker's priority", exc_info=True)


def start_worker(worker: Worker, parent: QObject | None = None,
                 on_thread_done: Callable[[], None] | None = None) -> QThread:
    """Move `worker` to a new QThread and start it; the thread quits when the job stops.

    `on_thread_done` is connected to the thread's `finished` before the thread starts, so no end can
    come before its connection. The caller keeps both objects and drops them after `finished` and a
    `wait()`: they are owned by Python, so deleteLater would race with Python's own deletion, and a
    QThread must never be destroyed while its thread is still winding down.
    """
    thread = QThread(parent)
    thread.setObjectName(f"prunelab-{worker.name}")
    worker.moveToThread(thread)
    thread.started.connect(worker.run)
    # Direct: quit from the worker's own thread. Queued, it would wait for the UI thread's event loop, and a
    # UI thread blocked in thread.wait() (closing the window with a job running) would wait its full timeout.
    worker.stopped.connect(thread.quit, Qt.ConnectionType.DirectConnection)
    if on_thread_done is not None:
        thread.finished.connect(on_thread_done)
    thread.start()
    return thread
