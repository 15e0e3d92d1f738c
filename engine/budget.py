"""A memory budget for every job: a watchdog that stops the job, not the machine.

Why a watchdog thread that raises inside the job's thread, rather than a child process or an
allocation limit: an address-space limit (RLIMIT_AS) applies to the whole process, so the window
would fail its own allocations first; a child process per job would copy the loaded model and data
and pay torch's start-up on every run. The watchdog samples the process's resident memory every
few milliseconds and, past the budget, raises `BudgetExceeded` in the job's thread with
`PyThreadState_SetAsyncExc`. That lands at the next Python bytecode the job executes, which works
while torch-pruning builds its dependency graph (pure Python, no cancellation points) and between
the operators of any forward pass. A single operator that alone needs more than the machine has
cannot be interrupted this way; `engine.checks` refuses such batches before the work starts.
"""
from __future__ import annotations

import ctypes
import gc
import os
import re
import sys
import threading
import time
from typing import Iterator

from engine.errors import UserError
from engine.events import Progress
from engine.units import fmt_bytes

DEFAULT_SHARE = 0.7  # of the machine's memory, when no limit is given
POLL_S = 0.005
RERAISE_S = 0.2  # still armed and over the limit this long after a raise: the job swallowed it, raise again
UNITS = {"": 1, "b": 1, "k": 2 ** 10, "kb": 2 ** 10, "kib": 2 ** 10, "m": 2 ** 20, "mb": 2 ** 20, "mib": 2 ** 20,
         "g": 2 ** 30, "gb": 2 ** 30, "gib": 2 ** 30, "t": 2 ** 40, "tb": 2 ** 40, "tib": 2 ** 40}


class BudgetExceeded(BaseException):
    """Raised inside the job's thread past its memory budget; a BaseException, so the job's own
    `except Exception` handlers (ONNX export, image decoding, torch-pruning's tracing) cannot swallow it."""


class BudgetError(UserError):
    """A job was stopped by its memory budget (the one line says which phase and what to try)."""


def total_memory() -> int:
    """Bytes of memory the machine has."""
    import psutil

    return int(psutil.virtual_memory().total)


def rss_bytes() -> int:
    """This process's resident memory."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def parse_limit(text: str | int | float | None) -> int:
    """`8G`, `1500M`, `70%` (of the machine), a byte count, or None (the default share) -> bytes."""
    if text is None or text == "":
        return int(total_memory() * DEFAULT_SHARE)
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = int(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%|[a-zA-Z]*)\s*", str(text))
        if not match or (match.group(2).lower() not in UNITS and match.group(2) != "%"):
            raise UserError(f"memory limit {text!r} is not a size; use e.g. 8G, 1500M or 70%")
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit == "%":
            if not 0 < number <= 100:
                raise UserError(f"memory limit {text!r} must be a share between 0 and 100 %")
            value = int(total_memory() * number / 100)
        else:
            value = int(number * UNITS[unit])
    if value < 64 * 2 ** 20:
        raise UserError(f"memory limit {text!r} is below 64 MiB, less than PruneLab itself needs")
    return value


_ACTIVE = threading.local()  # .limit: the budget of the guarded job running in this thread


def current_limit() -> int:
    """The memory budget of the job running in this thread, else the default share of the machine."""
    return getattr(_ACTIVE, "limit", None) or parse_limit(None)


def check_fits(nbytes: int, what: str) -> None:
    """Refuse, before allocating, `what` needing `nbytes` on top of what the process uses when that passes the
    budget: the watchdog stops a job only between operations, and one allocation can be most of the machine."""
    limit, used = current_limit(), rss_bytes()
    if used + nbytes > limit:
        raise BudgetError(f"{what} needs about {fmt_bytes(nbytes)}, more than the memory limit of {fmt_bytes(limit)} "
                        f"leaves ({fmt_bytes(used)} in use); it was refused before anything was allocated: use a "
                        "smaller input, or raise the limit (--memory-limit; in the application Settings ▸ Memory limit)")


def call_guarded(fn, limit: int | None, hint: str = ""):
    """`fn()` under the memory budget (loading a model, scanning a folder): same watchdog as a job."""
    box = []

    def job() -> Iterator:
        box.append(fn())
        yield from ()

    for _ in guarded(job(), limit, hint):
        pass
    return box[0]


def _raise_in(thread_id: int, exc_type: type) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))


def freeze_long_lived() -> None:
    """Collect, then put every object alive now out of the cyclic collector's reach: once, after start-up's
    imports and before any model. The libraries' modules, classes and functions (440 000 objects with torch,
    Qt and pyqtgraph) live as long as the process, and every full collection scanned them all while holding
    the GIL (0.6-0.8 s each at load 9 on a 2-core machine); after this a collection scans only what was made
    since (windows, models, data: about 11 000 objects after the demo's load, a few ms). Frozen objects are
    still freed by reference counting; only a cycle among them would never be collected."""
    gc.collect()
    gc.freeze()


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc keeps them otherwise)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


class _Watchdog(threading.Thread):
    """Samples RSS; past the limit, raises BudgetExceeded in the job's thread while the job is running."""

    def __init__(self, target_id: int, limit: int):
        super().__init__(name="prunelab-memory-watchdog", daemon=True)
        self.target_id, self.limit = target_id, limit
        self.stop = threading.Event()
        self.armed = False  # true while the job's own code runs, not the caller's between events
        self.lock = threading.Lock()  # raising and disarming never interleave
        self.peak = 0
        self.tripped_at: int | None = None

    def run(self) -> None:
        import psutil

        proc = psutil.Process(os.getpid())
        last_raise = -RERAISE_S
        while not self.stop.wait(POLL_S):
            rss = proc.memory_info().rss
            self.peak = max(self.peak, rss)
            if rss > self.limit and time.monotonic() - last_raise > RERAISE_S:
                with self.lock:
                    if self.armed:
                        self.tripped_at = self.tripped_at or rss
                        _raise_in(self.target_id, BudgetExceeded)
                        last_raise = time.monotonic()

    def arm(self, on: bool) -> None:
        """Allow (or stop) raising into the job's thread."""
        with self.lock:
            self.armed = on


def budget_message(phase: str, used: int, limit: int, hint: str = "") -> str:
    """The one line a job stopped by its budget ends with."""
    return (f"the {phase} phase reached the memory limit ({fmt_bytes(used)} used, {fmt_bytes(limit)} allowed) "
            f"and was stopped; try a smaller batch (--batch-size), fewer evaluation images (--eval-limit){hint}, or a "
            "higher limit (--memory-limit; in the application Settings ▸ Memory limit)")


def guarded(events: Iterator, limit: int | None, hint: str = "") -> Iterator:
    """Pass a job's events through while a watchdog holds the process under `limit` bytes.

    Past the budget the job stops with a one-line UserError naming the phase it was in, how much
    memory it used and what to try; its memory is released, and the caller (window, plan) goes on.
    """
    if limit is None:
        return (yield from events)  # a job that returns its result (a pruned model) returns it through here
    used = rss_bytes()
    if used > limit:
        raise UserError(f"PruneLab already uses {fmt_bytes(used)}, more than the memory limit of "
                        f"{fmt_bytes(limit)}; "
                        "raise the limit (--memory-limit, or the application's settings)")
    phase = "start"
    dog = _Watchdog(threading.get_ident(), limit)
    dog.start()
    stopped = False
    outer = getattr(_ACTIVE, "limit", None)
    try:
        while True:
            dog.arm(True)
            _ACTIVE.limit = limit
            try:
                event = next(events)
            finally:
                dog.arm(False)
                _ACTIVE.limit = outer
            if dog.tripped_at is not None:
                raise BudgetExceeded  # the job caught the watchdog's exception and went on: stop it here
            if isinstance(event, Progress):
                phase = event.phase
            yield event
    except StopIteration as done:
        return done.value
    except BudgetExceeded:
        stopped = True  # handled below: the traceback holds the job's frames (and their memory) until then
    finally:
        dog.stop.set()
        dog.join(1.0)
    if stopped:
        del events
        release_freed_memory()
        raise BudgetError(budget_message(phase, dog.tripped_at or dog.peak, limit, hint))
