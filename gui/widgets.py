"""Small widgets that fit a narrow pane: a label that elides in the middle, a scroll area that never scrolls sideways;
and the application-wide rule that the mouse wheel scrolls panels rather than changing values under the pointer.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QSize, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (QAbstractScrollArea, QAbstractSlider, QAbstractSpinBox, QApplication, QComboBox, QLabel, QScrollArea,
                               QScrollBar, QSizePolicy, QWidget)


class ElidedLabel(QLabel):
    """One line of text elided in the middle when the space is short ("/root/.lo…/prunelab/results.sqlite"): a
    path keeps its start and its whole file name. The full text is `full_text()`; the owner puts it in the tooltip."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.set_full_text(text)

    def set_full_text(self, text: str) -> None:
        """Show `text`, elided to the label's width."""
        self._full = text
        self.updateGeometry()
        self._elide()

    def full_text(self) -> str:
        """The text before eliding."""
        return self._full

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt override)
        """Room for the whole text when there is room."""
        hint = super().sizeHint()
        return QSize(self.fontMetrics().horizontalAdvance(self._full) + 4, hint.height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt override)
        """A few characters: the label gives way before anything else does."""
        return QSize(self.fontMetrics().horizontalAdvance("…" * 8), super().minimumSizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt override)
        """Elide again for the new width."""
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        width, metrics = max(0, self.contentsRect().width()), self.fontMetrics()
        text = self._full
        head, sep, tail = text.rpartition("/") if "/" in text else text.rpartition("\\")
        tail_width = metrics.horizontalAdvance(sep + tail)
        room_for_name = tail_width + metrics.horizontalAdvance("…" * 4) < width
        if sep and metrics.horizontalAdvance(text) > width and room_for_name:  # keep the file name whole
            text = metrics.elidedText(head, Qt.TextElideMode.ElideMiddle, width - tail_width) + sep + tail
        super().setText(metrics.elidedText(text, Qt.TextElideMode.ElideMiddle, width))


class StatusLabel(ElidedLabel):
    """The status bar's job line: one line elided to a bounded width, whole in its tooltip and in `text()`, so
    the temporary messages beside it keep their room (the two once ran into each other)."""

    MAX_WIDTH = 460

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)  # its text's width, up to
        self.setMaximumWidth(self.MAX_WIDTH)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt override)
        self.set_full_text(text)
        self.setToolTip(text)

    def text(self) -> str:
        return self.full_text()


class VerticalScrollArea(QScrollArea):
    """A scroll area for a column of controls: as wide as its content needs (so a splitter cannot squeeze it
    into a sideways scroll bar that hides the left edge), scrolling only up and down."""

    def __init__(self, widget: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(widget)
        widget.installEventFilter(self)

    def _extra(self) -> int:
        """The width around the content: frame and vertical scroll bar (counted even when hidden, so showing it
        later never needs a sideways one)."""
        return 2 * self.frameWidth() + self.verticalScrollBar().sizeHint().width()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt override)
        """The content's minimum width plus the scroll bar; any height."""
        inner = self.widget().minimumSizeHint() if self.widget() else QSize()
        return QSize(inner.width() + self._extra(), super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt override)
        """The content's preferred width plus the scroll bar."""
        inner = self.widget().sizeHint() if self.widget() else QSize()
        return QSize(max(inner.width(), self.minimumSizeHint().width() - self._extra()) + self._extra(),
                     super().sizeHint().height())

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt override)
        """When the content's layout changes, its minimum width may too: tell the splitter."""
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)


class WheelGuard(QObject):
    """Wheel events change a spin box, combo box or slider only when it has the keyboard focus (clicked or tabbed
    into); otherwise they scroll the panel around it. Scrolling the Prune panel once switched Target to
    "Target speed-up" under the pointer.

    Installed on each control (`guard_wheel`), not on the application: an application-wide filter written in
    Python sees every event of every object, and PySide6 crashed (endless recursion while wrapping QtWebEngine's
    objects) as soon as the graph view started under a real X display."""

    GUARDED = (QAbstractSpinBox, QComboBox, QAbstractSlider)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt override)
        if event.type() != QEvent.Type.Wheel or not isinstance(watched, QWidget) or watched.hasFocus():
            return False
        area = watched.parentWidget()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parentWidget()
        if area is None:
            event.ignore()  # not accepted: Qt offers a real wheel event to the parents
        else:  # the panel scrolls, whether the event came from the mouse or was sent
            QApplication.sendEvent(area.viewport(), event)
        return True


def guard_wheel(root: QWidget) -> None:
    """Apply WheelGuard to every spin box, combo box and slider under `root` (scroll bars keep their wheel); the
    wheel no longer gives them focus either, or the first turn would change the value. Call again for widgets
    made later."""
    app = QApplication.instance()
    guard = app.findChild(WheelGuard)
    if guard is None:
        guard = WheelGuard(app)
    for control in root.findChildren(QWidget):
        if isinstance(control, WheelGuard.GUARDED) and not isinstance(control, QScrollBar):
            control.installEventFilter(guard)  # installing twice keeps one
            if control.focusPolicy() == Qt.FocusPolicy.WheelFocus:
                control.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
