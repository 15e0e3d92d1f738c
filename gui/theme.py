"""Colours that stay readable on the system's light and dark palettes (plots, group swatches)."""
from __future__ import annotations

from PySide6.QtCore import QEvent
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QWidget

# Okabe–Ito-like qualitative colours: distinguishable for colour-blind viewers and on both backgrounds.
RUN_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#8C6D31", "#7F7F7F")
REMOVED_COLOUR = "#D62728"
BEFORE_COLOUR_LIGHT = "#7F7F7F"
BEFORE_COLOUR_DARK = "#B0B0B0"


def palette() -> QPalette:
    """The application's current palette (a default one before the app exists)."""
    app = QApplication.instance()
    return app.palette() if app is not None else QPalette()


def is_dark() -> bool:
    """True when the window background is dark (system dark mode)."""
    return palette().color(QPalette.ColorRole.Window).lightness() < 128


def plot_background() -> QColor:
    """Plot background: the palette's base colour, so plots match the rest of the window."""
    return palette().color(QPalette.ColorRole.Base)


def plot_foreground() -> QColor:
    """Axis and text colour for plots."""
    return palette().color(QPalette.ColorRole.Text)


def run_colour(index: int) -> str:
    """Colour of the index-th run of the session."""
    return RUN_COLOURS[index % len(RUN_COLOURS)]


def before_colour() -> str:
    """Colour of 'before pruning' data."""
    return BEFORE_COLOUR_DARK if is_dark() else BEFORE_COLOUR_LIGHT


def group_colour(group: int) -> QColor:
    """A soft colour per dependency group (hue spread by the golden angle), readable under text."""
    if group < 0:
        return QColor(0, 0, 0, 0)
    colour = QColor.fromHsv(int(group * 137.508) % 360, 110, 235 if not is_dark() else 120)
    return colour


def share_colour(share: float) -> QColor:
    """Background for a pruned share in [0, 1]: transparent to red."""
    share = max(0.0, min(1.0, share))
    return QColor(214, 39, 40, int(40 + 170 * share)) if share > 0 else QColor(0, 0, 0, 0)


def share_colour_opaque(share: float) -> QColor:
    """share_colour as it looks over white, for places without transparency (Netron's node boxes)."""
    c = share_colour(share)
    a = c.alphaF()
    return QColor(*(round(255 + (v - 255) * a) for v in (c.red(), c.green(), c.blue())))


class PaletteWidget(QWidget):
    """A widget that restyles itself (`_apply_palette`) when the system switches light/dark."""

    def _apply_palette(self) -> None:
        """Subclasses recolour their plots here."""

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt override)
        """Follow the system palette when it switches between light and dark."""
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_palette()
        super().changeEvent(event)
