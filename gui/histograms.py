"""Weight histograms of the selected layer, before and after pruning, overlaid on the same bins.

Unstructured pruning shows as a spike in the zero bin; structured pruning shows in the lower
plot, where each original output channel is a bar (its L1 norm) and removed channels are red.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal, Slot  # PySide6 first, so pyqtgraph binds it
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

import pyqtgraph as pg

from engine.layers import LayerStat, WeightHistogram
from gui import theme


class HistogramView(theme.PaletteWidget):
    """Layer picker, an overlaid before/after weight histogram and a per-channel norm bar chart."""

    layer_selected = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.histograms: dict[str, WeightHistogram] = {}
        self.steps: list = []  # StepDone events of the run shown
        self.stats: dict[str, LayerStat] = {}
        self.colour = theme.run_colour(0)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Layer:"))
        self.layer_combo = QComboBox()
        self.layer_combo.setMinimumContentsLength(24)
        self.layer_combo.setToolTip("The layer whose weights are shown (also selectable in the layer table)")
        self.layer_combo.currentTextChanged.connect(self._on_layer_picked)
        bar.addWidget(self.layer_combo)
        bar.addWidget(QLabel("After step:"))
        self.step_combo = QComboBox()
        self.step_combo.setToolTip("Compare the original weights with the weights after this pruning step "
                                   "(the last step by default)")
        self.step_combo.currentIndexChanged.connect(self._on_step_picked)
        bar.addWidget(self.step_combo)
        self.log_check = QCheckBox("Logarithmic counts")
        self.log_check.setToolTip("Log scale: see the tails next to a tall spike at zero")
        self.log_check.toggled.connect(self._on_log_toggled)
        bar.addWidget(self.log_check)
        bar.addStretch(1)
        self.summary_label = QLabel("Run a pruning method to compare weights before and after.")
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary_label.setWordWrap(True)  # in a narrow window it wraps rather than widen every tab
        bar.addWidget(self.summary_label, 1)
        layout.addLayout(bar)

        self.canvas = pg.GraphicsLayoutWidget()
        layout.addWidget(self.canvas, 1)
        self.weights_plot = self.canvas.addPlot(row=0, col=0, title="Weight distribution")
        self.weights_plot.setLabel("bottom", "weight value")
        self.weights_plot.setLabel("left", "number of weights")
        self.weights_plot.showGrid(x=True, y=True, alpha=0.2)
        self.legend = self.weights_plot.addLegend(offset=(-10, 10))
        self.before_curve = self.weights_plot.plot([0, 1], [0], stepMode="center", fillLevel=0, name="before")
        self.after_curve = self.weights_plot.plot([0, 1], [0], stepMode="center", fillLevel=0, name="after")
        self.channels_plot = self.canvas.addPlot(row=1, col=0, title="Output channels (L1 norm before pruning)")
        self.channels_plot.setLabel("bottom", "original channel index")
        self.channels_plot.setLabel("left", "L1 norm")
        self.channels_plot.showGrid(y=True, alpha=0.2)
        self.kept_bars = pg.BarGraphItem(x=[], height=[], width=0.8, name="kept")
        self.removed_bars = pg.BarGraphItem(x=[], height=[], width=0.8, name="removed")
        self.channels_plot.addItem(self.kept_bars)
        self.channels_plot.addItem(self.removed_bars)
        self.canvas.ci.layout.setRowStretchFactor(0, 3)
        self.canvas.ci.layout.setRowStretchFactor(1, 2)
        self._legends = (self.legend,)
        for plot in (self.weights_plot, self.channels_plot):
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)  # weights are small numbers; keep them as they are
        self._apply_palette()

    # --------------------------------------------------------------------- feeding
    def set_layers(self, names: list[str]) -> None:
        """Fill the layer picker (keeps the current layer when it still exists)."""
        current = self.layer_combo.currentText()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)

    def set_steps(self, steps: list, colour: str) -> None:
        """Offer every step of a run (StepDone events); shows the last one, or the picked one if still there."""
        self.steps = list(steps)
        follow_last = self.step_combo.currentIndex() in (-1, self.step_combo.count() - 1)
        picked = self.step_combo.currentIndex()
        self.step_combo.blockSignals(True)
        self.step_combo.clear()
        for step in self.steps:
            self.step_combo.addItem("0 (original)" if step.step == 0 else f"{step.step} of {step.steps}")
        index = len(self.steps) - 1 if follow_last or picked >= len(self.steps) else picked
        self.step_combo.setCurrentIndex(index)
        self.step_combo.blockSignals(False)
        self.colour = colour
        if self.steps:
            step = self.steps[index]
            self.set_data(step.histograms, step.layers, colour)

    @Slot(int)
    def _on_step_picked(self, index: int) -> None:
        if 0 <= index < len(self.steps):
            step = self.steps[index]
            self.set_data(step.histograms, step.layers, self.colour)

    def set_data(self, histograms: dict[str, WeightHistogram], stats: tuple[LayerStat, ...], colour: str) -> None:
        """Show one step's histograms (step 0 shows 'before' only)."""
        self.histograms = histograms
        self.stats = {s.name: s for s in stats}
        self.colour = colour
        if self.layer_combo.count() == 0:
            self.set_layers(list(histograms))
        self._on_redraw()

    def select_layer(self, name: str) -> None:
        """Show a layer (called when the layer table's selection changes)."""
        if name and name != self.layer_combo.currentText() and self.layer_combo.findText(name) >= 0:
            self.layer_combo.setCurrentText(name)

    def current_layer(self) -> str:
        """The layer shown."""
        return self.layer_combo.currentText()

    def has_data(self) -> bool:
        """True when a histogram is drawn (for tests)."""
        return self.current_layer() in self.histograms

    # --------------------------------------------------------------------- slots
    @Slot(str)
    def _on_layer_picked(self, name: str) -> None:
        self._on_redraw()
        if name:
            self.layer_selected.emit(name)

    @Slot(bool)
    def _on_log_toggled(self, on: bool) -> None:
        self.weights_plot.setLogMode(y=on)
        self._on_redraw()

    def _on_redraw(self) -> None:
        hist = self.histograms.get(self.current_layer())
        if hist is None:
            for curve in (self.before_curve, self.after_curve):
                curve.setData([0, 1], [0])
            self.kept_bars.setOpts(x=[], height=[])
            self.removed_bars.setOpts(x=[], height=[])
            return
        log = self.log_check.isChecked()
        # log mode cannot show zero counts: lift empty bins to 1 (drawn at the baseline)
        before = np.maximum(hist.before, 1) if log else hist.before
        after = np.maximum(hist.after, 1) if log else hist.after
        self.before_curve.setData(hist.edges, before)
        self.after_curve.setData(hist.edges, after)
        kept = hist.kept.astype(bool)
        index = np.arange(len(hist.channel_norms))
        self.kept_bars.setOpts(x=index[kept], height=hist.channel_norms[kept], width=0.8)
        self.removed_bars.setOpts(x=index[~kept], height=hist.channel_norms[~kept], width=0.8)
        self._style_curves()
        stat = self.stats.get(hist.layer)
        total = int(hist.before.sum()) or 1
        parts = [f"zeros: {hist.zeros_before / total:.1%} → {hist.zeros_after / max(1, int(hist.after.sum())):.1%}"]
        if stat is not None:
            parts.insert(0, f"channels: {stat.channels_before} → {stat.channels_after}")
            parts.append(f"pruned share: {stat.pruned_share:.1%}")
        self.summary_label.setText("   ".join(parts))

    def _style_curves(self) -> None:
        before = pg.mkColor(theme.before_colour())
        fill_before = pg.mkColor(before)
        fill_before.setAlpha(90)
        self.before_curve.setPen(pg.mkPen(before, width=1.5))
        self.before_curve.setBrush(fill_before)
        after = pg.mkColor(self.colour)
        fill_after = pg.mkColor(after)
        fill_after.setAlpha(110)
        self.after_curve.setPen(pg.mkPen(after, width=2))
        self.after_curve.setBrush(fill_after)
        self.kept_bars.setOpts(brush=pg.mkBrush(self.colour), pen=pg.mkPen(None))
        self.removed_bars.setOpts(brush=pg.mkBrush(theme.REMOVED_COLOUR), pen=pg.mkPen(None))

    def _apply_palette(self) -> None:
        fg = theme.plot_foreground()
        self.canvas.setBackground(theme.plot_background())
        for plot, title in ((self.weights_plot, "Weight distribution: before (grey) and after (colour)"),
                            (self.channels_plot, "Output channels by L1 norm before pruning (colour: kept, red: removed)")):
            plot.setTitle(title, color=fg.name(), size="11pt")
            for side in ("left", "bottom"):
                plot.getAxis(side).setPen(fg)
                plot.getAxis(side).setTextPen(fg)
        background = theme.plot_background()
        background.setAlpha(215)
        for legend in self._legends:
            legend.setBrush(pg.mkBrush(background))
            legend.setPen(pg.mkPen(fg, width=0.5))
            legend.setLabelTextColor(fg)
            for _sample, label in legend.items:
                label.setText(label.text)  # pyqtgraph applies a new label colour only when the text is set
        self._style_curves()
