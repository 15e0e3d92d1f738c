"""Where the time goes: a bar per layer (the costliest ones, then everything else) before and after pruning.

A teaching view as much as a figure: the first layers at full resolution, depthwise convolutions or the
classifier may cost more than their MACs suggest, and the chart shows it from measured times
(engine.profile).
"""
from __future__ import annotations

from PySide6.QtCore import Qt  # PySide6 first, so pyqtgraph binds it
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

import pyqtgraph as pg

from engine.profile import Profile
from gui import theme

MAX_BARS = 12  # the costliest layers shown by name; the rest joins "everything else"
OTHER = "everything else"


def chart_rows(before: Profile, after: Profile | None = None, most: int = MAX_BARS) -> list[tuple[str, float, float | None]]:
    """(label, ms before, ms after or None): the `most` costliest layers of `before`, then everything else
    (the other layers and what is not a prunable layer), costliest at the top."""
    ranked = sorted(before.layers, key=lambda t: -t.ms)
    shown, rest = ranked[:most], ranked[most:]
    after_ms = {t.name: t.ms for t in after.layers} if after else {}
    rows: list[tuple[str, float, float | None]] = [(t.name, t.ms, after_ms.get(t.name) if after else None)
                                                     for t in shown]
    other_before = before.other_ms + sum(t.ms for t in rest)
    other_after = None
    if after is not None:
        other_after = after.other_ms + sum(after_ms.get(t.name, 0.0) for t in rest)
    rows.append((OTHER, other_before, other_after))
    return rows


class TimeChart(theme.PaletteWidget):
    """Horizontal bars of measured milliseconds per layer, the original in grey and the pruned model beside it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel("Where the time goes: profile the model to see each layer's measured time")
        self.title.setWordWrap(True)
        layout.addWidget(self.title)
        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "ms per pass")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        layout.addWidget(self.plot, 1)
        self.before: Profile | None = None
        self.after: Profile | None = None
        self.rows: list[tuple[str, float, float | None]] = []
        self._apply_palette()

    def _apply_palette(self) -> None:
        self.plot.setBackground(theme.plot_background())
        self._draw()

    def show_profiles(self, before: Profile | None, after: Profile | None = None) -> None:
        """Draw the original's profile and, when given, the pruned model's beside it."""
        self.before, self.after = before, after
        self._draw()

    def _draw(self) -> None:
        self.plot.clear()
        if self.before is None:
            self.rows = []
            return
        self.rows = chart_rows(self.before, self.after)
        n = len(self.rows)
        ys = [n - 1 - i for i in range(n)]  # the costliest at the top
        height = 0.38 if self.after is not None else 0.7
        self.plot.addItem(pg.BarGraphItem(x0=0, y=[y + (height / 2 if self.after is not None else 0) for y in ys],
                                          height=height, width=[r[1] for r in self.rows],
                                          brush=theme.before_colour(), pen=None, name="original"))
        if self.after is not None:
            self.plot.addItem(pg.BarGraphItem(x0=0, y=[y - height / 2 for y in ys], height=height,
                                              width=[r[2] or 0.0 for r in self.rows], brush=theme.run_colour(0),
                                              pen=None, name="pruned"))
        self.plot.getAxis("left").setTicks([[(y, r[0]) for y, r in zip(ys, self.rows)]])
        b = self.before
        text = (f"Where the time goes on {b.runtime} ({b.device}, {b.threads or 'GPU'} threads, batch {b.batch}): "
                f"original {b.total_ms:.2f} ms per pass (grey)")
        if self.after is not None:
            text += f", pruned {self.after.total_ms:.2f} ms (colour)"
        self.title.setText(text + ". Bars are measured, not MACs.")
        self.title.setTextFormat(Qt.TextFormat.PlainText)
