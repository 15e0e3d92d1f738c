"""The resource report counts a child's memory only where the child really holds it."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from resource_report import _children, counted_children


def _fork_sleeping(seconds: float) -> int:
    """A child that runs on as a copy of this process, as a process between fork and exec does."""
    pid = os.fork()
    if pid == 0:
        time.sleep(seconds)
        os._exit(0)
    return pid


def test_a_copy_of_the_parent_counts_from_its_second_sample_and_a_program_at_once():
    program = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    copy = _fork_sleeping(30)
    try:
        deadline = time.monotonic() + 10
        while {program.pid, copy} - set(_children(os.getpid())) and time.monotonic() < deadline:
            time.sleep(0.01)
        tree = _children(os.getpid())
        counted, clones = counted_children(tree, set())
        assert program.pid in counted  # another program's memory is its own from the start
        assert copy not in counted  # a copy seen once may be a vfork child sharing this process's pages
        assert copy in {pid for pid, _, _ in clones}
        counted, _ = counted_children(_children(os.getpid()), clones)
        assert copy in counted and program.pid in counted  # still there: a forked worker, with memory of its own
    finally:
        program.kill()
        program.wait()
        os.kill(copy, 9)
        os.waitpid(copy, 0)


def test_a_new_copy_under_an_old_pid_is_not_taken_for_the_old_one():
    copy = _fork_sleeping(30)
    try:
        time.sleep(0.05)
        _, clones = counted_children(_children(os.getpid()), set())
        stale = {(pid, command, started - 1) for pid, command, started in clones}  # same pid, other start time
        counted, _ = counted_children(_children(os.getpid()), stale)
        assert copy not in counted
    finally:
        os.kill(copy, 9)
        os.waitpid(copy, 0)
