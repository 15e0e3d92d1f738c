"""The session's runs in the window: one rule for every view (a run not in Results is not in Live plots),
and the session report."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from tests.gui_helpers import TIMEOUT_MS, close_window, load_tiny, open_window, quick_options  # noqa: E402


@pytest.fixture()
def win(qtbot, tmp_path, monkeypatch, fashion):
    window = open_window(qtbot, tmp_path, monkeypatch)
    load_tiny(qtbot, window, fashion)
    quick_options(window, steps=1, bn=False)
    yield window
    close_window(qtbot, window)


def legend_labels(win) -> list[str]:
    return [label.text for _, label in win.plots.legend.items]


def test_a_cancelled_run_leaves_live_plots_as_it_is_not_in_results(win, qtbot):
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        assert win.start_run()
    quick_options(win, steps=3, finetune=2.0)  # long enough that the cancel ends it
    assert win.start_run()
    assert any(t.startswith("#2") for t in legend_labels(win))
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        win.cancel_job()
    assert win.runs[2].status == "cancelled" and win.results.row_count() == 1
    assert [t[:2] for t in legend_labels(win)] == ["#1"] and 2 not in win.plots.runs
    assert "cancelled" in win.statusBar().currentMessage()
    assert win.remove_run(1)  # removed from the session: gone from both
    assert legend_labels(win) == [] and win.results.row_count() == 0
