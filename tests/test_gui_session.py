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
    return [label.text for _, label in win.ui.plots.legend.items]


def test_a_cancelled_run_leaves_live_plots_as_it_is_not_in_results(win, qtbot):
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        assert win.start_run()
    quick_options(win, steps=3, finetune=2.0)  # long enough that the cancel ends it
    assert win.start_run()
    assert any(t.startswith("#2") for t in legend_labels(win))
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        win.cancel_job()
    assert win.session.runs[2].status == "cancelled" and win.ui.results.row_count() == 1
    assert [t[:2] for t in legend_labels(win)] == ["#1"] and 2 not in win.ui.plots.runs
    assert "cancelled" in win.statusBar().currentMessage()
    assert win.remove_run(1)  # removed from the session: gone from both
    assert legend_labels(win) == [] and win.ui.results.row_count() == 0


def test_save_session_report_has_every_run_and_the_teach_views_opened(win, qtbot, tmp_path):
    from gui.session_report import save_session_report

    assert save_session_report(win.commands, win.ui.teach, tmp_path / "empty.html") is None  # nothing finished yet: said, not written
    assert "no finished run" in win.error_box.text() and not (tmp_path / "empty.html").exists()
    win.error_box.close()
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        assert win.start_run()
    win.ui.results.runs[1].note = "my first cut"
    tab = win.ui.teach
    win.ui.tabs.setCurrentWidget(tab)
    tab.select_layer("layer1.0.conv2")
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        assert tab.explain()
    qtbot.waitUntil(lambda: not win.busy, timeout=TIMEOUT_MS)
    tab.views.setCurrentWidget(tab.criteria_view)
    assert win.menus.session_report_action in win.menuBar().actions()[0].menu().actions()
    out = save_session_report(win.commands, win.ui.teach, tmp_path / "session.html")
    html = out.read_text(encoding="utf-8")
    assert "#1" in html and "my first cut" in html and "95 % CI" in html and "Per class" in html
    assert "Why these channels" in html and "Criteria side by side" in html  # the two views opened
    assert "Dependency group</h3>" not in html and html.count("data:image/png;base64,") == 2
