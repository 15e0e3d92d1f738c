"""Peak memory per test, printed at the end of every run, so a test that grows shows up at once.

A thread samples the resident memory of the pytest process and of its child processes (the CLI tests'
interpreters) every few milliseconds. The peak while each test runs is recorded; the end of the run
prints the whole run's peak and the tests with the largest peaks. `PRUNELAB_TEST_RSS_LIMIT_GB` (unset
by default) interrupts the run and names the test the moment the process passes that size,
which finds a runaway test without letting it take the machine down.
"""
from __future__ import annotations

import _thread
import os
import threading
import time

import pytest

_PAGE = os.sysconf("SC_PAGE_SIZE")
_GIB = 1024 ** 3


def _rss(pid: int) -> int:
    """Resident bytes of one process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _children(pid: int) -> list[int]:
    """Direct and indirect child processes of `pid`, from /proc (no psutil needed)."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class _Sampler(threading.Thread):
    """Samples this process every 5 ms and its children every 100 ms (walking /proc costs more)."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="test-memory-sampler")
        self.pid = os.getpid()
        self.self_peak = self.child_peak = 0  # during the current test
        self.run_self_peak = self.run_child_peak = 0
        self.current = ""
        limit = os.environ.get("PRUNELAB_TEST_RSS_LIMIT_GB")
        self.limit = float(limit) * _GIB if limit else None
        self.exceeded = ""

    def run(self) -> None:
        tick = 0
        while True:
            own = _rss(self.pid)
            self.self_peak = max(self.self_peak, own)
            if tick % 20 == 0:
                kids = sum(_rss(c) for c in _children(self.pid))
                self.child_peak = max(self.child_peak, kids)
            if self.limit and own > self.limit and not self.exceeded:
                # pytest captures file descriptor 2, so the message is printed by the summary hook; the
                # interrupt stops the run where it is, with the test's traceback
                self.exceeded = f"{own / _GIB:.1f} GiB > {self.limit / _GIB:.1f} GiB during {self.current}"
                _thread.interrupt_main()
            tick += 1
            time.sleep(0.005)


_SAMPLER: _Sampler | None = None
_PEAKS: list[tuple[int, int, str]] = []  # (own peak, children's peak, test id)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Record the peak memory while one test (setup, call and teardown) runs."""
    global _SAMPLER
    if _SAMPLER is None:
        _SAMPLER = _Sampler()
        _SAMPLER.start()
    s = _SAMPLER
    s.current = item.nodeid
    s.self_peak, s.child_peak = _rss(s.pid), 0
    yield
    time.sleep(0.01)  # one more sample before reading
    _PEAKS.append((s.self_peak, s.child_peak, item.nodeid))
    s.run_self_peak = max(s.run_self_peak, s.self_peak)
    s.run_child_peak = max(s.run_child_peak, s.child_peak)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The run's peak memory and the ten tests with the largest peaks."""
    if not _PEAKS or _SAMPLER is None:
        return
    tr = terminalreporter
    tr.section("peak memory (resident; pytest process / its child processes)")
    if _SAMPLER.exceeded:
        tr.write_line(f"PRUNELAB_TEST_RSS_LIMIT_GB passed: {_SAMPLER.exceeded}", red=True)
    top_self = max(_PEAKS)
    top_child = max(_PEAKS, key=lambda p: p[1])
    tr.write_line(f"whole run: {_SAMPLER.run_self_peak / _GIB:.2f} GiB in pytest (during {top_self[2]}), "
                  f"{_SAMPLER.run_child_peak / _GIB:.2f} GiB in children (during {top_child[2]})")
    for own, kids, nodeid in sorted(_PEAKS, key=lambda p: -(p[0] + p[1]))[:10]:
        tr.write_line(f"{own / _GIB:6.2f} GiB {kids / _GIB:6.2f} GiB  {nodeid}")
