"""The window is Ready before the slower facts about a model are known: they are found by a background
job that gives way to any job the user starts, and resumes once the window is idle again."""
from __future__ import annotations

import threading
import time

import pytest

from tests.gui_helpers import TIMEOUT_MS, close_window, load_tiny, open_window, qt_environment, quick_options

qt_environment()  # before the first window
pytest.importorskip("pytestqt")


@pytest.fixture
def win(qtbot, tmp_path, monkeypatch):
    window = open_window(qtbot, tmp_path, monkeypatch)
    yield window
    close_window(qtbot, window)


class SlowTop1:
    """Stands in for quick_top1: the first call waits for its cancel (as a long measurement would)."""

    def __init__(self) -> None:
        self.calls, self.cancelled = 0, threading.Event()

    def __call__(self, model, data, split, limit=None, batch_size=64, cancel=None) -> float:
        self.calls += 1
        if self.calls == 1:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if cancel is not None and cancel.cancelled:
                    self.cancelled.set()
                    cancel.check()
                time.sleep(0.01)
        return 0.5


def test_ready_first_then_the_card_fills_in_the_background(win, qtbot, fashion):
    load_tiny(qtbot, win, fashion)
    assert win.ui.phase_label.text().startswith("Ready")
    assert not win.busy and win.menus.run_action.isEnabled() and win.menus.open_action.isEnabled()
    assert "measuring" in win.ui.summary_label.text()  # size and top-1 come after Ready
    qtbot.waitUntil(lambda: win.jobs.worker is None, timeout=TIMEOUT_MS)
    summary = win.session.loaded.summary
    assert win.session.loaded.pending == []
    assert summary["size_bytes"] > summary["compressed_bytes"] > 0 and 0.0 <= summary["top1"] <= 1.0
    assert "measuring" not in win.ui.summary_label.text() and "zipped" in win.ui.summary_label.text()


def test_a_run_started_meanwhile_goes_first_and_the_facts_resume(win, qtbot, fashion, monkeypatch):
    slow = SlowTop1()
    monkeypatch.setattr("gui.engine_calls.quick_top1", slow)
    load_tiny(qtbot, win, fashion)
    qtbot.waitUntil(lambda: slow.calls == 1, timeout=TIMEOUT_MS)  # the background job measures top-1 now
    quick_options(win, bn=False)
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS) as stopped:
        assert win.start_run()
        assert win.busy and not win.menus.run_action.isEnabled()  # the run waits for the background job to give way
    assert stopped.args == ["run"] and win.session.runs[1].status == "done"
    assert slow.cancelled.is_set()
    qtbot.waitUntil(lambda: win.jobs.worker is None and not win.session.loaded.pending, timeout=TIMEOUT_MS)
    assert slow.calls == 2 and win.session.loaded.summary["top1"] == 0.5  # measured again once the window was idle


def test_cancelling_a_job_still_waiting_ends_it_at_once(win, qtbot, fashion, monkeypatch):
    slow = SlowTop1()
    monkeypatch.setattr("gui.engine_calls.quick_top1", slow)
    load_tiny(qtbot, win, fashion)
    qtbot.waitUntil(lambda: slow.calls == 1, timeout=TIMEOUT_MS)
    quick_options(win, bn=False)
    assert win.start_run() and win.busy
    with qtbot.waitSignal(win.job_stopped, timeout=1000) as stopped:
        win.cancel_job()
    assert stopped.args == ["run"] and win.session.runs[1].status == "cancelled" and not win.busy
    qtbot.waitUntil(lambda: win.jobs.worker is None and not win.session.loaded.pending, timeout=TIMEOUT_MS)
    assert win.jobs.job is None and win.session.runs[1].steps == []  # the cancelled run never started


def test_a_closed_window_starts_no_background_job(qtbot, tmp_path, monkeypatch, fashion):
    window = open_window(qtbot, tmp_path, monkeypatch)
    load_tiny(qtbot, window, fashion)
    assert window.jobs.worker is not None  # the background facts are being found
    window.close()  # waits for that job; its end is still queued
    qtbot.wait(300)
    assert window.jobs.worker is None and window.jobs.job is None  # a thread started now would outlive the window


def test_closing_during_a_job_does_not_wait_out_the_timeout(qtbot, tmp_path, monkeypatch, fashion):
    """The worker quits its thread itself: a queued quit would need the UI thread's event loop, which is
    blocked in closeEvent's wait, so every close during a job took the full 30 s."""
    slow = SlowTop1()
    monkeypatch.setattr("gui.engine_calls.quick_top1", slow)
    monkeypatch.setattr("gui.job_runner.SHUTDOWN_WAIT_MS", 600_000)  # the bug's wait, far beyond any busy machine
    window = open_window(qtbot, tmp_path, monkeypatch)
    load_tiny(qtbot, window, fashion)
    qtbot.waitUntil(lambda: slow.calls == 1, timeout=TIMEOUT_MS)  # a job is running now
    start = time.monotonic()
    window.close()
    assert time.monotonic() - start < 300 and slow.cancelled.is_set()
