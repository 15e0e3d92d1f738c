"""Live plots: top-1 accuracy, parameters, MACs and latency against pruning step, one curve per run.

Each curve is created once (when its run starts) and only fed with setData afterwards. Redraws
are coalesced by a timer, so a fast stream of events never stalls the UI thread. The accuracy plot
also gets a dotted point per phase (after pruning, after the BatchNorm re-estimation, after
fine-tuning), so recovery shows as its own jump; latency is drawn at the run's batch size with its
p5–p95 band (batch 1 on request: on a tiny model it is mostly timer noise).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtCore import Qt, QTimer, Slot  # PySide6 first, so pyqtgraph binds it
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

import pyqtgraph as pg

from engine.metrics import Metrics
from gui import theme
from gui.intervals import error_bars, set_bars
from gui.plot_range import SteadyViewBox
from gui.results import kept_note

REDRAW_INTERVAL_MS = 100
# where a phase's point sits between step s-1 and step s: the evaluation lands on the step itself
PHASE_X = {"prune": 0.25, "bn-recalibrate": 0.5, "finetune": 0.75, "evaluate": 1.0}
PHASE_LABELS = {"prune": "pruned", "bn-recalibrate": "BN", "finetune": "fine-tuned"}


@dataclass(frozen=True)
class Series:
    """One plotted quantity: title, axis label and how to read it from Metrics."""

    key: str
    title: str
    axis: str

    def value(self, m: Metrics, batch: int | None = None, stat: str = "median") -> float | None:
        """The raw quantity (counts, %, ms), or None when not measured; latency at `batch` (None: the
        largest measured, the run's own batch size), as `stat` (median, p5, p95)."""
        if self.key == "top1":
            return m.top1 * 100
        if self.key == "params":
            return float(m.params)
        if self.key == "nonzero":
            return float(m.nonzero_params)
        if self.key == "macs":
            return float(m.macs)
        if self.key == "latency":
            if not m.latency_ms:
                return None
            key = str(batch) if batch is not None else max(m.latency_ms, key=int)
            figures = m.latency_ms.get(key) or {}
            value = figures.get(stat, figures.get("median"))  # older figures have no p5: a band of zero width
            return float(value) if value is not None else None
        raise KeyError(self.key)


COUNT_KEYS = ("params", "nonzero", "macs")


def count_scale(largest: float) -> tuple[float, str]:
    """Divisor and unit word for counts, so axes read '308 (thousands)' rather than '0.000308 M'."""
    for divisor, word in ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands")):
        if largest >= divisor:
            return divisor, word
    return 1.0, ""


SERIES = (Series("top1", "Top-1 accuracy (95 % interval bars)", "top-1 accuracy (%)"),
          Series("params", "Parameters (non-zero: dashed)", "parameters"),
          Series("macs", "MACs per image", "MACs"),
          Series("latency", "Latency (p5–p95 band)", "latency per batch (ms)"))
NONZERO = Series("nonzero", "", "")
SERIES_BY_KEY = {s.key: s for s in SERIES}


@dataclass
class _RunCurves:
    label: str
    colour: str
    steps: list[int] = field(default_factory=list)
    metrics: list[Metrics] = field(default_factory=list)
    items: dict[str, pg.PlotDataItem] = field(default_factory=dict)
    phases: list[tuple[float, float, str]] = field(default_factory=list)  # (x, top-1 %, phase) per phase
    band: pg.FillBetweenItem | None = None
    band_edges: tuple = ()
    top1_bars: pg.ErrorBarItem | None = None  # each step's 95 % interval (gui.intervals)
    phase_labels: list[pg.TextItem] = field(default_factory=list)
    context: tuple[str, str] | None = None  # the (model, dataset) the run was made on


class _FigureLegend(pg.LegendItem):
    """A legend that sits in the canvas's layout: dragging it would lift it out of its row."""

    def mouseDragEvent(self, ev) -> None:  # noqa: N802 (pyqtgraph override)
        """Stay in place."""
        ev.ignore()


class LivePlots(theme.PaletteWidget):
    """Four plots in a grid, a curve per run, one legend above them for all four."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        bar.setContentsMargins(6, 2, 6, 0)
        self.batch1_check = QCheckBox("Latency at batch 1")
        self.batch1_check.setToolTip("Show latency for one image instead of the run's batch size (on a small model "
                                     "a single image takes microseconds, and the figure is mostly timer noise)")
        self.batch1_check.toggled.connect(self._on_batch_toggled)
        self.phase_note = QLabel("Dotted points: top-1 after each phase (pruned, BN re-estimated, fine-tuned) on "
                                 "validation images")
        self.phase_note.setEnabled(False)  # greyed: a legend, not a control
        self.phase_note.setWordWrap(True)  # in a narrow window it wraps rather than widen every tab
        bar.addWidget(self.phase_note, 1)
        bar.addWidget(self.batch1_check)
        layout.addLayout(bar)
        self.kept_note = QLabel("")  # runs of other models are kept aside, and this says so
        self.kept_note.setWordWrap(True)
        self.kept_note.setContentsMargins(6, 0, 6, 0)
        self.kept_note.setVisible(False)
        layout.addWidget(self.kept_note)
        self.canvas = pg.GraphicsLayoutWidget()
        self.canvas.setToolTip("One curve per run: compare methods at a glance. Drag to pan, wheel to zoom, "
                               "right-click for options")
        layout.addWidget(self.canvas)
        # One legend for all four plots (a run has the same colour in each), in a row of its own above them:
        # inside a plot it covered curves and the phase labels. Hidden while empty.
        self.legend = _FigureLegend(frame=False, horSpacing=4, labelTextSize="9pt")
        self.canvas.addItem(self.legend, row=0, col=0, colspan=2)
        self.canvas.ci.layout.setAlignment(self.legend, pg.QtCore.Qt.AlignmentFlag.AlignHCenter)
        self.legend.setVisible(False)
        self.plots: dict[str, pg.PlotItem] = {}
        self._titles = {series.key: series.title for series in SERIES}  # as meant; _fit_titles may wrap them
        for index, series in enumerate(SERIES):
            plot = self.canvas.addPlot(row=1 + index // 2, col=index % 2, title=series.title, viewBox=SteadyViewBox())
            plot.setLabel("bottom", "pruning step")
            plot.setLabel("left", series.axis)
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.getAxis("bottom").setTickSpacing(1, 1)
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)  # we scale counts ourselves, with words
            plot.setMenuEnabled(True)
            self.plots[series.key] = plot
        self.scales: dict[str, float] = {}
        self.latency_note = pg.TextItem("latency not measured", anchor=(0.5, 0.5))
        self.latency_note.setVisible(False)
        self.plots["latency"].addItem(self.latency_note)
        self.runs: dict[int, _RunCurves] = {}  # every run of the session; only the loaded context's are shown
        self.context: tuple[str, str] | None = None
        self.context_names: dict[tuple[str, str] | None, str] = {}
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
        curves = _RunCurves(label, colour, context=self.context)
        for series in SERIES:
            item = self.plots[series.key].plot([], [], pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=7,
                                               symbolBrush=colour, symbolPen=None)
            curves.items[series.key] = item
        self.legend.addItem(curves.items["top1"], label)
        self.legend.setVisible(True)
        self._fit_legend()
        curves.items["nonzero"] = self.plots["params"].plot(
            [], [], pen=pg.mkPen(colour, width=1.5, style=pg.QtCore.Qt.PenStyle.DashLine))
        curves.items["phases"] = self.plots["top1"].plot(
            [], [], pen=pg.mkPen(colour, width=1, style=pg.QtCore.Qt.PenStyle.DotLine), symbol="t", symbolSize=8,
            symbolBrush=None, symbolPen=pg.mkPen(colour, width=1.5))
        low = self.plots["latency"].plot([], [], pen=None)
        high = self.plots["latency"].plot([], [], pen=None)
        band_colour = pg.mkColor(colour)
        band_colour.setAlpha(60)
        curves.band = pg.FillBetweenItem(low, high, brush=pg.mkBrush(band_colour))
        curves.band_edges = (low, high)
        self.plots["latency"].addItem(curves.band)
        curves.top1_bars = error_bars(colour)
        self.plots["top1"].addItem(curves.top1_bars)
        self.runs[run_id] = curves
        self.select_run(run_id)

    def set_context(self, context: tuple[str, str], name: str) -> None:
        """Draw only the runs made on `context` (model, dataset), called `name`: a 300 k-parameter demo and an
        11 M-parameter ResNet on one axis compare nothing. The others are hidden, not dropped, and come back
        when their model and dataset are loaded again."""
        self.context = context
        self.context_names[context] = name
        self.legend.clear()
        for curves in self.runs.values():
            shown = curves.context == context
            for item in (*curves.items.values(), curves.band, *curves.band_edges, *curves.phase_labels,
                         curves.top1_bars):
                item.setVisible(shown)
            if shown:
                self.legend.addItem(curves.items["top1"], curves.label)
        self.legend.setVisible(bool(self.legend.items))
        self._fit_legend()
        self.kept_note.setText(kept_note(self.runs.values(), context, self.context_names))
        self.kept_note.setVisible(bool(self.kept_note.text()))
        self.selected = None
        self._dirty.update(self.shown_runs())
        self.flush()
        empty = not self.shown_runs()
        for plot in self.plots.values():
            if empty:  # nothing to fit: autorange would keep the last model's scales
                plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
            plot.enableAutoRange()

    def remove_run(self, run_id: int) -> None:
        """Forget a run the user removed from the session: its curves and its legend entry."""
        curves = self.runs.pop(run_id, None)
        if curves is None:
            return
        for item in (*curves.items.values(), curves.band, *curves.band_edges, *curves.phase_labels,
                     curves.top1_bars):
            if item is not None and item.scene() is not None:
                item.scene().removeItem(item)
        self._dirty.discard(run_id)
        self.set_context(self.context, self.context_names.get(self.context, ""))  # the legend without it

    def shown_runs(self) -> dict[int, _RunCurves]:
        """The runs drawn: those of the loaded model and dataset."""
        return {rid: c for rid, c in self.runs.items() if c.context == self.context}

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

    def add_phase(self, run_id: int, step: int, phase: str, top1: float | None) -> None:
        """Record one PhaseDone of step `step`: a point at its place between step-1 and step (none when
        the phase's top-1 was not measured)."""
        curves = self.runs.get(run_id)
        if curves is None or top1 is None or phase not in PHASE_X:
            return
        if not curves.phases and curves.steps:  # start the dotted path at the step before
            curves.phases.append((float(curves.steps[-1]), SERIES_BY_KEY["top1"].value(curves.metrics[-1]), ""))
        curves.phases.append((step - 1 + PHASE_X[phase], top1 * 100, phase))
        self._dirty.add(run_id)
        if not self._timer.isActive():
            self._timer.start()

    def phase_count(self, run_id: int) -> int:
        """Number of phase points drawn for a run (for tests)."""
        curves = self.runs.get(run_id)
        if curves is None:
            return 0
        x, _ = curves.items["phases"].getData()
        return 0 if x is None else sum(1 for p in curves.phases if p[2])

    def legend_labels(self) -> list[str]:
        """The legend's entries, in order (for tests)."""
        return [label.text for _sample, label in self.legend.items]

    def _fit_legend(self) -> None:
        """As many legend columns as the canvas width holds, so the legend stays a line or two high."""
        if not self.legend.items:
            return
        widest = max(sample.width() + label.width() + 12 for sample, label in self.legend.items)
        columns = max(1, min(len(self.legend.items), int((self.canvas.width() - 40) // max(widest, 1))))
        self.legend.setColumnCount(columns)
        self.legend.updateGeometry()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        """Re-flow the legend's columns to the new width."""
        super().resizeEvent(event)
        self._fit_legend()

    def latency_batch(self) -> int | None:
        """The batch size the latency plot shows (None: each run's own, the largest it measured)."""
        return 1 if self.batch1_check.isChecked() else None

    def select_run(self, run_id: int | None) -> None:
        """Emphasise one run's curves (thicker line)."""
        self.selected = run_id
        for rid, curves in self.runs.items():
            width = 3.5 if rid == run_id else 1.5
            for key, item in curves.items.items():
                style = pg.QtCore.Qt.PenStyle.DashLine if key == "nonzero" else pg.QtCore.Qt.PenStyle.SolidLine
                if key == "phases":
                    style = pg.QtCore.Qt.PenStyle.DotLine
                item.setPen(pg.mkPen(curves.colour, width=width if key != "phases" else 1, style=style))
                item.setZValue(10 if rid == run_id else 0)
        self._dirty.update(self.runs)  # phase labels follow the selected run
        if not self._timer.isActive():
            self._timer.start()

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
        shown = self.shown_runs()
        for key in ("params", "macs"):
            largest = max((SERIES_BY_KEY[key].value(m) or 0 for c in shown.values() for m in c.metrics), default=0)
            divisor, word = count_scale(largest)
            if self.scales.get(key) != divisor:
                self.scales[key] = divisor
                if key == "params":
                    self.scales["nonzero"] = divisor
                self._dirty.update(shown)  # a new scale redraws every run
            self.plots[key].setLabel("left", f"{SERIES_BY_KEY[key].axis} ({word})" if word else SERIES_BY_KEY[key].axis)
        batch = self.latency_batch()
        for run_id in list(self._dirty):
            curves = shown.get(run_id)
            if curves is None:  # a hidden run is redrawn when it is shown again, on the scale of then
                continue
            for key, item in curves.items.items():
                if key == "phases":
                    self._draw_phases(run_id, curves)
                    continue
                series = NONZERO if key == "nonzero" else SERIES_BY_KEY[key]
                points = [(s, series.value(m, batch)) for s, m in zip(curves.steps, curves.metrics)]
                divisor = self.scales.get(key, 1.0) if key in COUNT_KEYS else 1.0
                points = [(s, v / divisor) for s, v in points if v is not None]
                item.setData([p[0] for p in points], [p[1] for p in points])
            set_bars(curves.top1_bars, curves.steps, curves.metrics)
            for edge, stat in zip(curves.band_edges, ("p5", "p95")):
                points = [(s, SERIES_BY_KEY["latency"].value(m, batch, stat)) for s, m in zip(curves.steps,
                                                                                                curves.metrics)]
                points = [p for p in points if p[1] is not None]
                edge.setData([p[0] for p in points], [p[1] for p in points])
        self._dirty.clear()
        title = f"Latency at batch {batch} (p5–p95 band)" if batch else "Latency per batch (p5–p95 band)"
        if title != self._titles["latency"]:
            self._titles["latency"] = title
            self._fit_titles()
        for curves in shown.values():
            x, _ = curves.items["latency"].getData()
            measured_latency |= x is not None and len(x) > 0
        has_points = any(c.steps for c in shown.values())
        unmeasured = has_points and not measured_latency
        plot = self.plots["latency"]
        if unmeasured:
            # nothing to range on: autorange shrank the axes to ±1e-146 and pushed the note into a corner
            last = max((max(c.steps) for c in shown.values() if c.steps), default=1)
            plot.disableAutoRange()
            plot.setRange(xRange=(0, max(1, last)), yRange=(0, 1), padding=0.05)
            self.latency_note.setPos(max(1, last) / 2, 0.5)
        elif self.latency_note.isVisible():
            plot.enableAutoRange()
        self.latency_note.setVisible(unmeasured)

    def _draw_phases(self, run_id: int, curves: _RunCurves) -> None:
        """The dotted path through the phase points; its words only on the selected run (less clutter)."""
        curves.items["phases"].setData([p[0] for p in curves.phases], [p[1] for p in curves.phases])
        for label in curves.phase_labels:
            self.plots["top1"].removeItem(label)
        curves.phase_labels = []
        if run_id != self.selected:
            return
        fill = theme.plot_background()
        fill.setAlpha(190)  # readable where a word sits on a curve, which still shows through
        for x, y, phase in curves.phases:
            if phase in PHASE_LABELS:
                label = pg.TextItem(PHASE_LABELS[phase], color=theme.plot_foreground(), anchor=(0.5, 1.2),
                                    fill=pg.mkBrush(fill))
                label.setPos(x, y)
                self.plots["top1"].addItem(label)
                curves.phase_labels.append(label)

    @Slot(bool)
    def _on_batch_toggled(self, _checked: bool) -> None:
        self._dirty.update(self.runs)
        self._on_redraw()

    def _fit_titles(self) -> None:
        """Each title on one line, or with its words in brackets on a second line when the two columns would not
        fit otherwise (beside the Lesson panel at 1280 px, one-line titles pushed the right-hand plots out)."""
        colour = theme.plot_foreground().name()
        for two_lines in (False, True):
            for key, title in self._titles.items():
                head, bracket, tail = title.partition(" (")
                self.plots[key].setTitle(f"{head}<br>({tail}" if two_lines and bracket else title, color=colour,
                                         size="11pt")
            # (the canvas layout's own hint lags until it is laid out again; each plot's is current)
            widths = [self.plots[s.key].effectiveSizeHint(Qt.SizeHint.MinimumSize).width() for s in SERIES]
            if max(widths[0] + widths[1], widths[2] + widths[3]) + 20 <= self.width():
                break
        # the grid kept the width its old minimum forced on it: lay it out on the canvas again
        self.canvas.setRange(self.canvas.range, padding=0, disableAutoPixel=False)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        super().resizeEvent(event)
        self._fit_titles()

    def _apply_palette(self) -> None:
        fg = theme.plot_foreground()
        self.canvas.setBackground(theme.plot_background())
        self._fit_titles()
        for series in SERIES:
            plot = self.plots[series.key]
            for side in ("left", "bottom"):
                axis = plot.getAxis(side)
                axis.setPen(fg)
                axis.setTextPen(fg)
        self.legend.setLabelTextColor(fg)
        for _sample, label in self.legend.items:
            label.setText(label.text)  # pyqtgraph applies a new label colour only when the text is set
        self.latency_note.setColor(fg)
