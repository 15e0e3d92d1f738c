"""Runs the session's jobs, one at a time, on the one worker thread, and routes the worker's signals to them.

A background job (the loaded model's slower facts) leaves the window usable and gives way: a job started
meanwhile cancels it and starts as soon as its thread is gone. The runner never asks which job is running.
"""
from __future__ import annotations

import gc
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

from engine.events import Progress
from gui.jobs import WorkerJob
from gui.worker_thread import Failure, Worker, start_worker

SHUTDOWN_WAIT_MS = 30_000  # a cancelled job answers within ~2 s; this bounds a closing window's wait


class JobRunner(QObject):
    """The running job, the one waiting for a background job to give way, and the worker thread."""

    started = Signal(object)  # the job now on the worker thread
    changed = Signal()  # busy or not, a job waiting or not: the actions follow
    progressed = Signal(object, object)  # (job, Progress): the status bar shows it
    phase = Signal(str)  # the end of a job the user asked for: "Ready", "Failed", "Cancelled…"
    stopped = Signal(str)  # a job the user asked for ended (its thread is gone), with its name
    idle = Signal()  # nothing runs or waits: the slower facts may be found now

    def __init__(self, memory_limit: Callable[[], int], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.memory_limit = memory_limit
        self.job: WorkerJob | None = None  # the running job; with it, its worker and thread
        self.next_job: WorkerJob | None = None  # waits for a background job to give way
        self.worker: Worker | None = None
        self.job_thread: QThread | None = None

    @property
    def busy(self) -> bool:
        """True while a job runs or waits to run (a background job alone leaves the window usable)."""
        return self.worker is not None and (not self.job.background or self.next_job is not None)

    def start(self, job: WorkerJob) -> bool:
        """Run `job` on the worker thread and route the worker's signals to it; False while another runs.

        A background job running now is cancelled and `job` starts as soon as its thread is gone."""
        if self.busy:
            return False
        if self.worker is not None:  # a background job: it stops at its next check
            if job.background:
                return False
            self.next_job = job
            self.worker.cancel()
            self.changed.emit()
            return True
        self.job = job
        # No automatic cyclic GC while a job runs: a full collection holds the GIL for 50–200 ms on a busy
        # machine and the UI thread would stall with it. Jobs free nearly everything by reference counting;
        # the few cycles (torch-pruning's graph) are collected once the job is over.
        gc.disable()
        self.worker = Worker(job.work, job.name, self.memory_limit() if job.guarded else None)
        self.worker.progressed.connect(self._on_event)
        self.worker.finished.connect(self._on_finished)
        self.worker.failed.connect(self._on_failed)
        self.worker.cancelled.connect(self._on_cancelled)
        self.job_thread = start_worker(self.worker, on_thread_done=self._on_thread_done)
        self.started.emit(job)
        self.changed.emit()
        return True

    def cancel(self) -> bool:
        """Ask the user's running job to stop (it answers at the engine's next check); True when asked."""
        if self.next_job is not None:  # not started yet: it ends here
            job, self.next_job = self.next_job, None
            self._on_cancelled(job)
            self.changed.emit()
            self.stopped.emit(job.name)
            job.on_stopped()
            return False
        if self.worker is not None and not self.job.background:
            self.worker.cancel()
            return True
        return False

    def shutdown(self) -> None:
        """Stop a running job cleanly before the window closes (never terminate the thread)."""
        self.next_job = None
        if self.worker is not None and self.job_thread is not None:
            self.worker.cancel()
            self.job_thread.wait(SHUTDOWN_WAIT_MS)  # never destroy a running QThread
        gc.enable()

    @Slot(object)
    def _on_event(self, event: object) -> None:
        if isinstance(event, Progress):  # every job's progress goes to the status bar
            self.progressed.emit(self.job, event)
        self.job.on_event(event)

    @Slot(object)
    def _on_finished(self, result: Any) -> None:
        if not self.job.background:
            self.phase.emit("Ready")
        self.job.on_success(result)

    @Slot(object)
    def _on_failed(self, failure: Failure) -> None:
        if not self.job.background:
            self.phase.emit("Failed")
        self.job.on_failure(failure)

    @Slot()
    def _on_cancelled(self, job: WorkerJob | None = None) -> None:
        job = job or self.job
        if not job.background:
            self.phase.emit("Cancelled — the loaded model is unchanged")
        job.on_cancel()

    @Slot()
    def _on_thread_done(self) -> None:
        job = self.job
        if self.job_thread is not None:
            self.job_thread.wait()  # `finished` comes just before the thread exits; let it exit first
        gc.enable()
        self.job = self.worker = self.job_thread = None
        self.changed.emit()
        if not job.background:  # a background job's end is no news: nobody asked for it
            self.stopped.emit(job.name)
        job.on_stopped()
        waiting, self.next_job = self.next_job, None
        if waiting is not None and not self.start(waiting):
            self.next_job = waiting  # a handler of `stopped` started another job: this one goes next
        if self.worker is None:
            self.idle.emit()
