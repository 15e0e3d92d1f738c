"""Text a tester found clipped or overlapping in a real window (issue 24, item 10): the original's star under
the Pareto legend, an axis labelled "38.33333333333345…" for one value, the Next phase button's words, the
status bar's phase running into the messages. Offscreen, no model, a second or two."""
from __future__ import annotations

from tests.gui_helpers import qt_environment

qt_environment()  # before the first Qt import

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from engine.experiments import DEFAULT_CRITERIA, PlanDone, PlanRunDone, PlanStarted  # noqa: E402
from tests.test_gui_polish import LONG_STORE, result, tab  # noqa: E402,F401 (the fixture)


def test_the_original_star_is_never_under_the_pareto_legend(tab, qtbot):
    """Recovered runs that beat the original put its star (the most MACs) at the bottom right, where the
    legend stood."""
    baseline = result("base", "none", None, 0.80, 37_000_000, "baseline")
    runs = [result("a", "l1", 0.3, 0.90, 20_000_000), result("b", "l2", 0.3, 0.91, 20_000_000),
            result("c", "l1", 0.5, 0.86, 10_000_000), result("d", "l2", 0.5, 0.88, 10_000_000)]
    tab.on_event(PlanStarted("gui", tuple(r.key for r in runs), tuple(r.label for r in runs), baseline, 0,
                             DEFAULT_CRITERIA))
    for i, r in enumerate(runs, 1):
        tab.on_event(PlanRunDone(i, len(runs), r))
    tab.on_event(PlanDone(tuple(runs), baseline, None, LONG_STORE, 30.0, len(runs), 0))
    view = tab.pareto_view
    view.axis.setCurrentIndex(view.axis.findData("macs"))
    qtbot.wait(50)
    vb, legend = view.plot.getPlotItem().getViewBox(), view.legend
    star = vb.mapViewToScene(view.original_point.points()[0].pos())
    assert legend.isVisible() and "original" in view.legend_labels()
    for spot in [*view.scatter.points(), *view.original_point.points()]:
        assert not legend.sceneBoundingRect().contains(vb.mapViewToScene(spot.pos())), spot.pos()
    assert vb.sceneBoundingRect().contains(star)


def test_an_axis_of_one_value_gets_a_readable_span(qtbot):
    from gui.experiment_plots import plot_widget
    from gui.plots import LivePlots

    plot = plot_widget()
    qtbot.addWidget(plot)
    plot.plot([0.3, 0.5, 0.7], [38.333333333333336, 38.33333333333345, 38.333333333333336])
    plot.getPlotItem().getViewBox().updateAutoRange()
    low, high = plot.getPlotItem().getViewBox().viewRange()[1]
    assert low < 38.3 < 38.4 < high and high - low < 10
    live = LivePlots()
    qtbot.addWidget(live)
    assert all(type(p.getViewBox()).__name__ == "SteadyViewBox" for p in live.plots.values())


def test_next_phase_button_and_status_line_show_their_words_whole(qtbot, tmp_path, monkeypatch, fashion):
    from tests.gui_helpers import TIMEOUT_MS, quick_tiny_window

    fixture = quick_tiny_window(qtbot, tmp_path, monkeypatch, fashion)
    win = next(fixture)
    try:
        from PySide6.QtCore import Qt

        win.resize(1280, 720)
        win.show_lessons()  # the lesson open: the Prune panel as narrow as a class sees it
        win.resizeDocks([win.ui.side_dock], [1], Qt.Orientation.Horizontal)
        qtbot.wait(50)
        win.ui.method_panel.bn_check.setChecked(True)
        win.ui.method_panel.step_check.setChecked(True)
        button = win.ui.method_panel.next_button
        assert win.start_run()
        seen = []
        while win.busy:
            qtbot.waitUntil(lambda: button.isEnabled() or not win.busy, timeout=TIMEOUT_MS)
            if button.isEnabled():
                seen.append(button.text())
                needed = button.fontMetrics().horizontalAdvance(button.text())
                assert needed < button.width() - 8, f"{button.text()!r} needs {needed} px of {button.width()}"
                button.click()
        assert "Next: BatchNorm re-estimation" in seen  # the words once cut to "t: BatchNorm re-estima"
        long = "Run #1, step 1/1 · finetune: " + "step 1/1, epoch 1/1, batch 17/100, loss 0.4321 " * 4
        win.ui.phase_label.setText(long)
        win.statusBar().showMessage("Wrote /tmp/some/folder/prunelab_results.csv", 5000)
        qtbot.wait(20)
        label = win.ui.phase_label
        assert label.text() == long and label.toolTip() == long
        assert label.width() <= label.MAX_WIDTH and "…" in super(type(label), label).text()
    finally:
        next(fixture, None)
