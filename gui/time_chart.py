"""Where the time goes: a bar per layer (the costliest ones, then everything else) before and after pruning.

A teaching view as much as a figure: the first layers at full resolution, depthwise convolutions or the
classifier may cost more than their MACs suggest, and the chart shows it from measured times
(engine.profile).
"""
from __future__ import annotations

from typing import Any, Generator

from PySide6.QtCore import Qt, Signal  # PySide6 first, so pyqtgraph binds it
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

import pyqtgraph as pg

from engine.config import RUNTIMES
from engine.events import CancelToken, Progress
from engine.profile import Profile, iter_profile
from gui import theme
from gui.jobs import WorkerJob

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


class ProfileJob(WorkerJob):
    """Time each layer of the loaded model and, when a run is selected, of its pruned model (engine.profile)."""

    name, title = "profile", "Could not measure where the time goes"

    def __init__(self, commands, chart: "TimeChart", runtime: str) -> None:
        super().__init__(commands)
        self.chart, self.runtime = chart, runtime
        self.original = commands.session.loaded.bundle
        record = commands.session.selected_record()
        self.pruned = record.pruned if record is not None else None
        self.batch = record.config.batch_size if record is not None else 64

    def work(self, cancel: CancelToken) -> Generator[Any, None, tuple[Profile, Profile | None]]:
        found: list[Profile] = []
        models = [("original", self.original)] + ([("pruned", self.pruned)] if self.pruned is not None else [])
        for label, bundle in models:
            for ev in iter_profile(bundle.model, bundle.input_shape, batch=self.batch, runtime=self.runtime,
                                   curves=False, cancel=cancel):
                if isinstance(ev, Progress):
                    yield Progress(ev.phase, ev.done, ev.total, f"{label}: {ev.message}")
                else:
                    found.append(ev)
        return found[0], found[1] if len(found) > 1 else None

    def on_success(self, result: tuple[Profile, Profile | None]) -> None:
        self.chart.show_profiles(*result)


class TimeChart(theme.PaletteWidget):
    """Horizontal bars of measured milliseconds per layer, the original in grey and the pruned model beside it."""

    profiled = Signal(object, object)  # (the original's Profile, the pruned model's or None): the layer table

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.commands = None  # set by attach(): the window's commands, to start the job
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.title = QLabel("Where the time goes: measure it to see each layer's time on this machine")
        self.title.setWordWrap(True)
        row.addWidget(self.title, 1)
        self.runtime = QComboBox()
        self.runtime.addItems(RUNTIMES)
        self.runtime.setToolTip("Time the model in PyTorch or in onnxruntime (its ONNX export)")
        row.addWidget(self.runtime)
        self.measure = QPushButton("Measure where the time goes")
        self.measure.setToolTip("Time each prunable layer of the loaded model and of the selected run's pruned "
                                "model (cached per machine, so a second look is instant)")
        self.measure.clicked.connect(self._on_measure)
        row.addWidget(self.measure)
        layout.addLayout(row)
        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "ms per pass")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMinimumHeight(220)
        self.plot.setVisible(False)  # a row with the button until something is measured
        layout.addWidget(self.plot, 1)
        self.before: Profile | None = None
        self.after: Profile | None = None
        self.rows: list[tuple[str, float, float | None]] = []
        self._apply_palette()

    def _apply_palette(self) -> None:
        self.plot.setBackground(theme.plot_background())
        self._draw()

    def attach(self, commands) -> None:
        """Let the Measure button start its job through the window's commands."""
        self.commands = commands

    def _on_measure(self) -> None:
        commands = self.commands
        if commands is None or commands.session.loaded is None:
            return
        commands.start_job(ProfileJob(commands, self, self.runtime.currentText()))

    def show_profiles(self, before: Profile | None, after: Profile | None = None) -> None:
        """Draw the original's profile and, when given, the pruned model's beside it."""
        self.before, self.after = before, after
        self._draw()
        if before is not None:
            self.profiled.emit(before, after)

    def _draw(self) -> None:
        self.plot.clear()
        self.plot.setVisible(self.before is not None)
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
        note = f" ({b.note})" if b.note else ""
        self.title.setText(text + ". Bars are measured, not MACs." + note)
        self.title.setTextFormat(Qt.TextFormat.PlainText)
