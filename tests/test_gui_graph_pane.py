"""The Network tab beside the Lesson panel at 1280×720 (issue 24, item 9): the layer table took three quarters of
the tab area, about 585 px there, and left Netron's graph 140 px, too narrow to read a node. Offscreen (the graph
pane is the placeholder label, sized as the web view would be), the tiny demo model's layers, a second or two."""
from __future__ import annotations

from tests.gui_helpers import qt_environment

qt_environment()  # before the first Qt import

import pytest  # noqa: E402

pytest.importorskip("pytestqt")


def _layers_shown(window) -> None:
    """What the window does with a loaded model's layers (MainWindow's load handler), without the worker."""
    from engine.layers import describe_layers
    from tests.gui_helpers import tiny_bundle

    bundle = tiny_bundle()
    view = window.ui.graph_view
    view.layer_table.set_layers(describe_layers(bundle.model, bundle.input_shape), "fc")
    view.fit_table()


@pytest.mark.parametrize("lesson_first", [True, False], ids=["lesson-then-model", "model-then-lesson"])
def test_the_graph_stays_readable_beside_the_lesson_at_1280x720(qtbot, window, lesson_first):
    from gui.graph_view import GRAPH_MIN_WIDTH

    window.resize(1280, 720)
    window.ui.tabs.setCurrentWidget(window.ui.graph_view)
    qtbot.wait(50)
    if lesson_first:
        window.show_lessons()
        qtbot.wait(50)
    _layers_shown(window)
    if not lesson_first:
        window.show_lessons()
    qtbot.wait(100)
    view = window.ui.graph_view
    graph, table = view.splitter.widget(0), view.layer_table
    tab_area = window.ui.tabs.width()
    assert tab_area < 700, f"the Lesson panel is open beside the Prune panel: {tab_area} px for the tabs"
    assert graph.width() >= GRAPH_MIN_WIDTH >= 280, f"the graph is {graph.width()} px wide of {tab_area}"
    # the table keeps the layer names and their types in sight, and scrolls sideways for the other columns
    assert table.viewport().width() >= table.columnWidth(0) + table.columnWidth(1), table.viewport().width()
    # reachable: the Network page is not wider than its tab (no sideways scroll bar for the whole page)
    assert view.width() <= tab_area, (view.width(), tab_area)
    # the user may give the graph the whole width by dragging the table away, and take it back
    assert view.splitter.isCollapsible(1) and not view.splitter.isCollapsible(0)


def test_a_wide_window_still_fits_the_whole_table(qtbot, window):
    """Without the lesson the table gets every column, as before."""
    window.resize(1920, 1040)
    window.ui.tabs.setCurrentWidget(window.ui.graph_view)
    qtbot.wait(50)
    _layers_shown(window)
    qtbot.wait(50)
    table = window.ui.graph_view.layer_table
    assert table.width() >= table.needed_width() - 2, (table.width(), table.needed_width())


def test_the_window_fits_1280_px_with_the_lesson_open(qtbot, window):
    """Beside the Lesson panel the Prune panel must not push the window past a 1280 px screen (the real window
    grew to 1360 px and off the screen when a combo box in the Prune panel asked for 471 px)."""
    from PySide6.QtWidgets import QWidget

    window.resize(1280, 690)
    window.show_lessons()
    qtbot.wait(50)
    side = window.ui.side_dock
    containers = ("QWidget", "QGroupBox", "QScrollArea", "VerticalScrollArea", "MethodPanel", "SourcePanel")
    wide = sorted(((w.minimumSizeHint().width(), type(w).__name__, w.toolTip()[:60]) for w in side.findChildren(QWidget)
                   if w.isVisible() and w.minimumSizeHint().width() > 340 and type(w).__name__ not in containers),
                  reverse=True)
    assert window.minimumSizeHint().width() <= 1270, f"the window needs {window.minimumSizeHint().width()} px " \
        f"with the lesson open; the Prune panel {side.minimumSizeHint().width()} px, its widest: {wide[:3]}"
