"""Bugs a person met in the real window (issue 24), each replayed offscreen with the events Qt delivers there:
a hover over the Why chart, the wheel over the Prune panel, a close during a run, the window's temporary folder,
a recent model reopened as it was opened."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
os.environ["PRUNELAB_NO_WEBENGINE"] = "1"

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QWheelEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QComboBox, QScrollArea, QSpinBox, QVBoxLayout, QWidget  # noqa: E402

from tests.gui_helpers import close_window, load_tiny, open_window  # noqa: E402


def _wheel(widget: QWidget, steps: int = -1) -> None:
    """One notch of the wheel over the middle of `widget`, as the platform delivers it."""
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(), QPoint(0, 120 * steps),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_hovering_a_why_bar_shows_its_channel_without_an_error(qtbot):
    from engine.explain.scores import channel_scores
    from gui.teach.views import WhyView
    from tests.gui_helpers import tiny_bundle

    bundle = tiny_bundle()
    scores = channel_scores(bundle.model, "layer2.0.conv2", "l1", None, bundle.input_shape, 10, ratio=0.5)
    view = WhyView()
    qtbot.addWidget(view)
    view.resize(700, 400)
    view.show()
    view.show_scores(scores, "l1")
    qtbot.wait(50)
    # the middle of the first bar, in scene coordinates, as the scene's mouse-move signal hands it over
    scene_point = view.plot.vb.mapViewToScene(QPointF(0, float(scores.scores[scores.order[0]]) / 2))
    view.plot_widget.scene().sigMouseMoved.emit(scene_point)  # an exception here fails the test (pytest-qt)
    assert view.hover_label.text().startswith(f"Channel {int(scores.order[0])}: rank 1 of")


def test_wheel_over_an_unfocused_control_scrolls_the_panel_instead(qtbot, tmp_path, monkeypatch):
    win = open_window(qtbot, tmp_path, monkeypatch)  # the window installs the guard for the whole application
    try:
        panel = win.method_panel
        combo = next(c for c in panel.findChildren(QComboBox) if c.count() > 1 and c.isVisible())
        before = combo.currentIndex()
        _wheel(combo)
        assert combo.currentIndex() == before  # unfocused: the wheel passes it by

        # a spin box in a scroll area: the area scrolls, the value stays
        area, body = QScrollArea(), QWidget()
        column = QVBoxLayout(body)
        spins = [QSpinBox() for _ in range(40)]
        for spin in spins:
            spin.setRange(0, 100)
            spin.setValue(50)
            column.addWidget(spin)
        area.setWidget(body)
        area.resize(200, 200)
        qtbot.addWidget(area)
        area.show()
        qtbot.wait(20)
        assert spins[2].focusPolicy() == Qt.FocusPolicy.StrongFocus  # the wheel never gives it focus
        _wheel(spins[2])
        assert spins[2].value() == 50
        assert area.verticalScrollBar().value() > 0
        spins[2].setFocus()  # clicked into: now the wheel is meant for it
        qtbot.waitUntil(spins[2].hasFocus, timeout=2000)
        _wheel(spins[2], steps=1)
        assert spins[2].value() == 51
    finally:
        close_window(qtbot, win)
