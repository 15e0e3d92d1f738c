"""Plots beside the Lesson panel at 1280×720 (issue 24, items 9 and 10): the tab area is about 580 px wide there,
and the Live plots' titles, one line each, needed 746 px, so the right-hand plots and their titles ("Parameters
(non-", "Latency at batch size of t") were cut off. Offscreen, no model, a second."""
from __future__ import annotations

from tests.gui_helpers import qt_environment

qt_environment()  # before the first Qt import

import pytest  # noqa: E402

pytest.importorskip("pytestqt")


@pytest.mark.parametrize("width", [560, 1000])
def test_live_plots_keep_both_columns_and_their_titles_in_sight(qtbot, width):
    from PySide6.QtCore import Qt

    from gui.plots import LivePlots

    live = LivePlots()
    qtbot.addWidget(live)
    live.show()
    live.resize(width, 480)
    qtbot.waitUntil(lambda: live.canvas.width() == width, timeout=2000)
    live._on_redraw()  # the latency title, as after a run
    qtbot.wait(20)
    needed = live.canvas.ci.effectiveSizeHint(Qt.SizeHint.MinimumSize).width()
    assert needed <= live.canvas.width(), f"the plots need {needed:.0f} px of {live.canvas.width()}"
    for key, plot in live.plots.items():
        title = plot.titleLabel
        right = title.mapRectToScene(title.item.boundingRect()).right()
        assert plot.sceneBoundingRect().right() <= live.canvas.width() + 1, key
        assert right <= live.canvas.width() + 1, f"{key}'s title ends at {right:.0f} px of {live.canvas.width()}"


@pytest.mark.parametrize("width", [585, 1200])
def test_the_experiment_results_keep_room_beside_the_lesson(qtbot, tmp_path, monkeypatch, width):
    """At 1280×720 with the Lesson panel open the tab area is about 585 px wide: side by side, the plan editor kept
    390 px and the results (recommendation, table, Pareto plot: step 6's answer) 170 px behind a scroll bar."""
    import gui.experiment_tab as experiment_tab

    monkeypatch.setattr(experiment_tab, "default_store_path", lambda: tmp_path / "store.sqlite")
    tab = experiment_tab.ExperimentTab()
    qtbot.addWidget(tab)
    tab.show()
    tab.resize(width, 520)
    qtbot.wait(50)
    tab.resize(width, 520)  # side by side, a top-level tab cannot be narrower than both columns: again once stacked
    qtbot.waitUntil(lambda: tab.width() == width, timeout=2000)
    qtbot.wait(20)
    editor, results = (tab._split.widget(i) for i in range(2))
    assert tab.minimumSizeHint().width() <= width
    share = 0.9 if width < experiment_tab.NARROW_WIDTH else 0.55
    assert results.width() >= share * width, (results.width(), editor.width())
    assert editor.height() >= 60 and results.height() >= 240
