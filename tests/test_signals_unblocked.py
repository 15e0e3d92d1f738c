"""Ctrl-C must reach PruneLab and every process it starts: a blocked signal mask is inherited across exec, so a
mask left blocked (an exception raised into the thread during an atomic rename) made a later `sweep` child
ignore Ctrl-C for good."""
from __future__ import annotations

import signal

import pytest

from engine import outputs

HELD = {signal.SIGINT, signal.SIGTERM}


def blocked() -> set:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, set())) & HELD


@pytest.fixture(autouse=True)
def restore_mask():
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
    signal.signal(signal.SIGINT, handler)


def test_the_deferred_rename_unblocks_even_when_its_body_raises():
    with pytest.raises(KeyboardInterrupt):
        with outputs._signals_deferred():
            assert blocked() == HELD
            raise KeyboardInterrupt  # as the memory watchdog raises into the job's thread
    assert not blocked()


def test_the_command_line_hears_ctrl_c_even_when_its_parent_blocked_it(tmp_path):
    from cli.main import main

    signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    assert main(["evaluate", "--model", str(tmp_path / "missing.pt"), "--data", "fashion-mnist", "--quiet"]) == 2
    assert not blocked()


def test_the_command_line_hears_ctrl_c_even_when_its_parent_ignored_it(tmp_path):
    from cli.main import main

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    assert main(["evaluate", "--model", str(tmp_path / "missing.pt"), "--data", "fashion-mnist", "--quiet"]) == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
