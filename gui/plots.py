"""Live plots: top-1 accuracy, parameters, MACs and latency against pruning step, one curve per run.

Each curve is created once (when its run starts) and only fed with setData afterwards. Redraws
are coalesced by a timer, so a fast stream of events never stalls the UI thread.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtCore import QTimer, Slot  # PySide6 first, so pyqtgraph binds it
from PySide6.QtWidgets import QVBoxLayout, QWidget

import pyqtgraph as pg

from engine.metrics import Metrics
from gui import theme

REDRAW_INTERVAL_MS = 100


@dataclass(frozen=True)
class Series:
    """One plotted quantity: title, axis label and how to read it from Metrics."""

    key: str
    title: str
    axis: str

    def value(self, m: Metrics) -> float | None:
        """The raw quantity (counts, %, ms), or None when not measured."""
        if self.key == "top1":
            return m.top1 * 100
        if self.key == "params":
            return float(m.params)
        if self.key == "nonzero":
            return float(m.nonzero_params)
        if self.key == "macs":
            return float(m.macs)
        if self.key == "latency":
            return m.latency(1) if m.latency_ms else None
        raise KeyError(self.key)


COUNT_KEYS = ("params", "nonzero", "macs")


def count_scale(largest: float) -> tuple[float, str]:
    """Divisor and unit word for counts, so axes read '308 (thousands)' rather than '0.000308 M'."""
    for divisor, word in ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands")):
        if largest >= divisor:
            return divisor, word
    return 1.0, ""


SERIES = (Series("top1", "Top-1 accuracy", "top-1 accuracy (%)"),
          Series("params", "Parameters (non-zero: dashed)", "parameters"),
          Series("macs", "MACs per image", "MACs"),
          Series("latency", "Latency, batch 1", "latency (ms)"))
NONZERO = Series("nonzero", "", "")
SERIES_BY_KEY = {s.key: s for s in SERIES}


@dataclass
class _RunCurves:
    label: str
    colour: str
    steps: list[int] = field(default_factory=list)
    metrics: list[Metrics] = field(default_factory=list)
    items: dict[str, pg.PlotDataItem] = field(default_factory=dict)


class LivePlots(theme.PaletteWidget):
    """Four plots in a grid, a curve per run, a legend on the accuracy plot."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.canvas = pg.GraphicsLayoutWidget()
        self.canvas.setToolTip("One curve per run: compare methods at a glance. Drag to pan, wheel to zoom, "
                               "right-click for options")
        layout.addWidget(self.canvas)
        self.plots: dict[str, pg.PlotItem] = {}
        for index, series in enumerate(SERIES):
            plot = self.canvas.addPlot(row=index // 2, col=index % 2, title=series.title)
            plot.setLabel("bottom", "pruning step")
            plot.setLabel("left", series.axis)
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.getAxis("bottom").setTickSpacing(1, 1)
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)  # we scale counts ourselves, with words
            plot.setMenuEnabled(True)
            self.plots[series.key] = plot
        self.legend = self.plots["top1"].addLegend(offset=(10, -10))  # bottom-left: accuracy falls to the right
        self.scales: dict[str, float] = {}
        self.latency_note = pg.TextItem("latency not measured", anchor=(0.5, 0.5))
        self.latency_note.setVisible(False)
        self.plots["latency"].addItem(self.latency_note)
        self.runs: dict[int, _RunCurves] = {}
        self.selected: int | None = None
        self._dirty: set[int] = set()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_INTERVAL_MS)
        self._timer.timeout.connect(self._on_redraw)
        self._apply_palette()

    # --------------------------------------------------------------------- feeding
    def add_run(self, run_id: int, label: str, colour: str) -> None:
        """Create the curves of a new run (once; later events only call setData)."""
        curves = _RunCurves(label, colour)
        for series in SERIES:
            item = self.plots[series.key].plot([], [], name=label if series.key == "top1" else None,
                                               pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=7,
                                               symbolBrush=colour, symbolPen=None)
            curves.items[series.key] = item
        curves.items["nonzero"] = self.plots["params"].plot(
            [], [], pen=pg.mkPen(colour, width=1.5, style=pg.QtCore.Qt.PenStyle.DashLine))
        self.runs[run_id] = curves
        self.select_run(run_id)

    def add_step(self, run_id: int, step: int, metrics: Metrics) -> None:
        """Record one StepDone; the curves are redrawn at most every REDRAW_INTERVAL_MS."""
        curves = self.runs.get(run_id)
        if curves is None:
            return
        curves.steps.append(step)
        curves.metrics.append(metrics)
        self._dirty.add(run_id)
        if not self._timer.isActive():
            self._timer.start()

    def select_run(self, run_id: int | None) -> None:
        """Emphasise one run's curves (thicker line)."""
        self.selected = run_id
        for rid, curves in self.runs.items():
            width = 3.5 if rid == run_id else 1.5
            for key, item in curves.items.items():
                style = pg.QtCore.Qt.PenStyle.DashLine if key == "nonzero" else pg.QtCore.Qt.PenStyle.SolidLine
                item.setPen(pg.mkPen(curves.colour, width=width, style=style))
                item.setZValue(10 if rid == run_id else 0)

    def point_count(self, run_id: int) -> int:
        """Number of points drawn for a run (for tests)."""
        curves = self.runs.get(run_id)
        if curves is None:
            return 0
        x, _ = curves.items["top1"].getData()
        return 0 if x is None else len(x)

    def flush(self) -> None:
        """Redraw now (used before exporting and by tests)."""
        self._timer.stop()
        self._on_redraw()

    # --------------------------------------------------------------------- slots
    @Slot()
    def _on_redraw(self) -> None:
        measured_latency = False
        for key in ("params", "macs"):
            largest = max((SERIES_BY_KEY[key].value(m) or 0 for c in self.runs.values() for m in c.metrics), default=0)
            divisor, word = count_scale(largest)
            if self.scales.get(key) != divisor:
                self.scales[key] = divisor
                if key == "params":
                    self.scales["nonzero"] = divisor
                self._dirty.update(self.runs)  # a new scale redraws every run
            self.plots[key].setLabel("left", f"{SERIES_BY_KEY[key].axis} ({word})" if word else SERIES_BY_KEY[key].axis)
        for run_id in list(self._dirty):
            curves = self.runs.get(run_id)
            if curves is None:
                continue
            for key, item in curves.items.items():
                series = NONZERO if key == "nonzero" else next(s for s in SERIES if s.key == key)
                points = [(s, series.value(m)) for s, m in zip(curves.steps, curves.metrics)]
                divisor = self.scales.get(key, 1.0) if key in COUNT_KEYS else 1.0
                points = [(s, v / divisor) for s, v in points if v is not None]
                item.setData([p[0] for p in points], [p[1] for p in points])
        self._dirty.clear()
        for curves in self.runs.values():
            x, _ = curves.items["latency"].getData()
            measured_latency |= x is not None and len(x) > 0
        has_points = any(c.steps for c in self.runs.values())
        self.latency_note.setVisible(has_points and not measured_latency)
        if self.latency_note.isVisible():
            view = self.plots["latency"].viewRange()
            self.latency_note.setPos((view[0][0] + view[0][1]) / 2, (view[1][0] + view[1][1]) / 2)

    def _apply_palette(self) -> None:
        fg = theme.plot_foreground()
        self.canvas.setBackground(theme.plot_background())
        for series in SERIES:
            plot = self.plots[series.key]
            plot.setTitle(series.title, color=fg.name(), size="11pt")
            for side in ("left", "bottom"):
                axis = plot.getAxis(side)
                axis.setPen(fg)
                axis.setTextPen(fg)
        background = theme.plot_background()
        background.setAlpha(215)
        self.legend.setBrush(pg.mkBrush(background))  # readable where it overlaps a curve
        self.legend.setPen(pg.mkPen(fg, width=0.5))
        self.legend.setLabelTextColor(fg)
        for _sample, label in self.legend.items:
            label.setText(label.text)  # pyqtgraph applies a new label colour only when the text is set
        self.latency_note.setColor(fg)
