"""The Experiment tab's plots: the Pareto scatter (accuracy against a cost), accuracy against ratio per method,
and a sensitivity scan's curves. Each draw takes the data it shows; the tab owns the state."""
from __future__ import annotations

from PySide6.QtCore import Qt  # PySide6 before pyqtgraph, so pyqtgraph binds it
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

import pyqtgraph as pg

from engine.experiments import METRICS, RunResult, metric_value, pareto_front
from gui import theme

PALETTE = theme.RUN_COLOURS + ("#1f77b4", "#d62728", "#2ca02c")
PARETO_AXES = (("latency_ms", "latency (ms)"), ("size_bytes", "size on disk (MB)"),
               ("compressed_bytes", "compressed size (MB)"), ("macs", "MACs (M)"))


def plot_widget() -> pg.PlotWidget:
    """A plot in the theme's colours, with plain axis units (no SI prefixes on top of MB or ms)."""
    widget = pg.PlotWidget(background=theme.plot_background())
    fg = theme.plot_foreground()
    for side in ("left", "bottom"):
        widget.getAxis(side).setPen(fg)
        widget.getAxis(side).setTextPen(fg)
        widget.getAxis(side).enableAutoSIPrefix(False)
    return widget


class ParetoView(QWidget):
    """Accuracy against the cost chosen in `axis`: one point per run, the front as a dashed line, the original
    as a star. The owner redraws when `axis` changes and listens to `scatter.sigClicked`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        col = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Accuracy against"))
        self.axis = QComboBox()
        for key, label in PARETO_AXES:
            self.axis.addItem(label, key)
        row.addWidget(self.axis)
        row.addStretch(1)
        col.addLayout(row)
        self.plot = plot_widget()
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLabel("left", "top-1 accuracy (%)")
        self.plot.setToolTip("Each point is a run (hollow: breaks a constraint; star: the original). "
                             "The line is the Pareto front. Click a point to select its run.")
        self.front_curve = self.plot.plot([], [], pen=pg.mkPen("#6e7781", width=1.5, style=Qt.PenStyle.DashLine))
        self.scatter = pg.ScatterPlotItem(size=11, hoverable=True)
        self.plot.addItem(self.scatter)
        self.original_point = pg.ScatterPlotItem(size=16, symbol="star", brush=pg.mkBrush("#222"))
        self.plot.addItem(self.original_point)
        col.addWidget(self.plot)

    def draw(self, ranking, baseline: RunResult | None, colours: dict[str, str]) -> None:
        """Show the ranked runs (the best one ringed in green, infeasible ones hollow) and the original."""
        key = self.axis.currentData() or "latency_ms"
        results = ranking.entries if ranking else ()
        if key == "latency_ms" and results and not any(metric_value(e.result, key) for e in results):
            self.axis.setCurrentIndex(self.axis.findData("macs"))  # latency was not measured
            return  # the index change redraws
        info = METRICS[key]
        self.plot.setLabel("bottom", f"{info.label} ({info.unit}), lower is better")
        entries = [e for e in (ranking.entries if ranking else ()) if metric_value(e.result, key)]
        pts = [(metric_value(e.result, key), e.result.metrics.top1 * 100) for e in entries]
        spots = []
        for e, (x, y) in zip(entries, pts):
            colour = colours.get(e.result.method, "#333")
            spots.append({"pos": (x, y), "data": e.result.key,
                          "brush": pg.mkBrush(colour if e.feasible else "#ffffff"),
                          "pen": pg.mkPen("#2ca02c" if ranking.best is e else colour,
                                          width=3 if ranking.best is e else 1.5),
                          "symbol": "o", "size": 14 if ranking.best is e else 11})
        self.scatter.setData(spots)
        front = pareto_front(pts, ("min", "max"))
        self.front_curve.setData([pts[i][0] for i in front], [pts[i][1] for i in front])
        bv = metric_value(baseline, key) if baseline else None
        if bv:
            self.original_point.setData([bv], [baseline.metrics.top1 * 100])
        else:
            self.original_point.setData([], [])


def ratio_plot() -> pg.PlotWidget:
    """Top-1 accuracy against the pruning ratio, one curve per method (guided runs dashed)."""
    plot = plot_widget()
    plot.showGrid(x=True, y=True, alpha=0.25)
    plot.setLabel("bottom", "pruning ratio (0 = original)")
    plot.setLabel("left", "top-1 accuracy (%)")
    plot.addLegend(offset=(10, -10))
    return plot


def draw_ratio_curves(plot: pg.PlotWidget, curves: dict[tuple, pg.PlotDataItem], results: list[RunResult],
                      baseline: RunResult | None, colours: dict[str, str]) -> None:
    """Feed one curve per (method, guided) from `results`, starting at the original; `curves` keeps the items
    so each is created once and then only fed with setData."""
    groups: dict[tuple, list[RunResult]] = {}
    for r in results:
        if r.ratio is not None:
            groups.setdefault((r.method, r.guided), []).append(r)
    base = baseline.metrics.top1 * 100 if baseline else None
    for (method, guided), runs in groups.items():
        runs.sort(key=lambda r: r.ratio)
        xs = ([0.0] if base is not None else []) + [r.ratio for r in runs]
        ys = ([base] if base is not None else []) + [r.metrics.top1 * 100 for r in runs]
        item = curves.get((method, guided))
        if item is None:
            colour = colours.get(method, "#333")
            pen = pg.mkPen(colour, width=2, style=Qt.PenStyle.DashLine if guided else Qt.PenStyle.SolidLine)
            item = plot.plot([], [], pen=pen, symbol="o", symbolSize=7, symbolBrush=colour,
                             name=method + (" (guided)" if guided else ""))
            curves[(method, guided)] = item
        item.setData(xs, ys)


def sensitivity_plot() -> pg.PlotWidget:
    """Top-1 drop against the share of a layer group's channels removed."""
    plot = plot_widget()
    plot.showGrid(x=True, y=True, alpha=0.25)
    plot.setLabel("bottom", "share of the group's channels removed")
    plot.setLabel("left", "top-1 drop (points)")
    plot.addLegend(offset=(10, 10))
    return plot


def draw_sensitivity(plot: pg.PlotWidget, result) -> None:
    """Redraw a scan (engine.sensitivity.SensitivityDone): one curve per layer group, most sensitive first."""
    plot.clear()
    plot.addLegend(offset=(10, 10))
    for i, g in enumerate(sorted(result.groups, key=lambda g: -g.score)):
        colour = PALETTE[i % len(PALETTE)]
        plot.plot([0.0, *map(float, result.ratios)], [0.0, *map(float, g.drops)], pen=pg.mkPen(colour, width=2),
                  symbol="o", symbolSize=6, symbolBrush=colour, name=f"{g.name} ({g.score:.1f} pt)")
