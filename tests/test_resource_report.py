"""The resource report counts a child's memory only where the child really holds it."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import resource_report
from resource_report import _children, counted_children


def _fork_sleeping(seconds: float) -> int:
    """A child that runs on as a copy of this process, as a process between fork and exec does."""
    pid = os.fork()
    if pid == 0:
        time.sleep(seconds)
        os._exit(0)
    return pid


def test_a_young_copy_of_the_parent_is_not_counted_and_a_program_is(monkeypatch):
    program = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    copy = _fork_sleeping(30)
    try:
        deadline = time.monotonic() + 10
        while {program.pid, copy} - set(_children(os.getpid())) and time.monotonic() < deadline:
            time.sleep(0.01)
        counted = counted_children(_children(os.getpid()))
        assert program.pid in counted  # another program's memory is its own from the start
        assert copy not in counted  # a young copy may be a vfork child sharing this process's pages
        monkeypatch.setattr(resource_report, "CLONE_GRACE_S", 0.05)
        time.sleep(0.1)
        counted = counted_children(_children(os.getpid()))
        assert copy in counted and program.pid in counted  # still there: a forked worker, its memory counts
    finally:
        program.kill()
        program.wait()
        os.kill(copy, 9)
        os.waitpid(copy, 0)
