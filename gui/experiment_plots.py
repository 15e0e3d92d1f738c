"""The Experiment tab's plots: the Pareto scatter (accuracy against a cost), accuracy against ratio per method,
and a sensitivity scan's curves. Each draw takes the data it shows; the tab owns the state."""
from __future__ import annotations

from PySide6.QtCore import QEvent, Qt  # PySide6 before pyqtgraph, so pyqtgraph binds it
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

import numpy as np
import pyqtgraph as pg
from pyqtgraph.graphicsItems.LegendItem import ItemSample

from engine.experiments import METRICS, RunResult, metric_value, pareto_front
from gui import theme
from gui.intervals import error_bars, set_bars
from gui.plot_range import SteadyViewBox

PALETTE = theme.RUN_COLOURS + ("#1f77b4", "#d62728", "#2ca02c")
PARETO_AXES = (("latency_ms", "latency (ms)"), ("size_bytes", "size on disk (MB)"),
               ("compressed_bytes", "compressed size (MB)"), ("macs", "MACs (M)"))
BEST_COLOUR = "#2ca02c"


class ThemedPlot(pg.PlotWidget):
    """A plot in the palette's colours (axes, background, legend text), restyled when the system switches
    between light and dark; plain axis units (no SI prefixes on top of MB or ms)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, background=theme.plot_background(), viewBox=SteadyViewBox())
        for side in ("left", "bottom"):
            self.getAxis(side).enableAutoSIPrefix(False)
        self.apply_palette()

    def add_legend(self, offset: tuple[int, int], **kwargs) -> pg.LegendItem:
        """The plot's legend at `offset` (pyqtgraph's sign convention picks the corner), readable over data."""
        legend = self.addLegend(offset=offset, **kwargs)
        self.apply_palette()
        return legend

    def keep_legend_clear(self, points: list[tuple[float, float]]) -> None:
        """Put the legend in a corner where none of `points` (data coordinates) lies, preferring bottom-right,
        and again whenever the view changes: the original's star sat under a bottom-right legend when
        recovered runs beat the original's accuracy."""
        self._legend_points = points
        vb = self.getPlotItem().getViewBox()
        if not getattr(self, "_legend_follows", False):
            vb.sigRangeChanged.connect(lambda *_: self._place_legend())
            vb.sigResized.connect(lambda *_: self._place_legend())
            self._legend_follows = True
        vb.updateAutoRange()
        self._place_legend()

    def _place_legend(self) -> None:
        legend, vb = self.getPlotItem().legend, self.getPlotItem().getViewBox()
        if legend is None or not legend.isVisible():
            return
        box, size = vb.sceneBoundingRect(), legend.sceneBoundingRect().size()
        dots = [vb.mapViewToScene(pg.QtCore.QPointF(x, y)) for x, y in getattr(self, "_legend_points", [])]
        best = None
        for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):  # bottom-right, bottom-left, top-left, top-right
            left = box.left() + 10 if sx > 0 else box.right() - 10 - size.width()
            top = box.top() + 10 if sy > 0 else box.bottom() - 10 - size.height()
            area = pg.QtCore.QRectF(left, top, size.width(), size.height()).adjusted(-9, -9, 9, 9)
            covered = sum(area.contains(d) for d in dots)
            if best is None or covered < best[0]:
                best = (covered, (10 * sx, 10 * sy))
            if not covered:
                break
        if best is not None and tuple(legend.opts["offset"]) != best[1]:
            legend.setOffset(best[1])

    def apply_palette(self) -> None:
        """Recolour background, axes and legend from the current palette."""
        fg, background = theme.plot_foreground(), theme.plot_background()
        self.setBackground(background)
        for side in ("left", "bottom"):
            self.getAxis(side).setPen(fg)
            self.getAxis(side).setTextPen(fg)
        legend = self.getPlotItem().legend
        if legend is not None:
            background.setAlpha(225)
            legend.setBrush(pg.mkBrush(background))  # readable where it overlaps a curve or the grid
            legend.setPen(pg.mkPen(fg, width=0.5))
            legend.setLabelTextColor(fg)  # pyqtgraph's default is a pale grey
            for _sample, label in legend.items:
                label.setText(label.text)  # pyqtgraph applies a new label colour only when the text is set

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt override)
        """Follow the system palette when it switches between light and dark."""
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange) \
                and self.plotItem is not None:  # not while pyqtgraph is still building the view, nor once closed
            self.apply_palette()
        super().changeEvent(event)


def plot_widget() -> ThemedPlot:
    """A plot in the theme's colours, with plain axis units."""
    return ThemedPlot()


def show_legend_if_filled(plot: pg.PlotWidget) -> None:
    """An empty legend is a small stray box: show it only when it has entries."""
    legend = plot.getPlotItem().legend
    if legend is not None:
        legend.setVisible(bool(legend.items))


class _KeySample(ItemSample):
    """A legend sample that only explains a colour or symbol: clicking it hides nothing."""

    def mouseClickEvent(self, event) -> None:  # noqa: N802 (pyqtgraph override)
        """Ignore clicks (the sample's item is not drawn in the plot)."""
        event.ignore()


class ParetoView(QWidget):
    """Accuracy against the cost chosen in `axis`: one point per run, the front as a dashed line, the original
    as a star, a legend of method colours. The owner redraws when `axis` changes and listens to
    `scatter.sigClicked`; hovering a point names its run."""

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
        self.plot.setToolTip("Each point is a run (hollow: breaks a constraint; star: the original); the vertical "
                             "bar is its top-1's 95 % interval from the images evaluated; on the latency axis "
                             "the horizontal bar is the latency's 95 % interval from the plan's final comparison "
                             "round. "
                             "The line is the Pareto front. Click a point to select its run.")
        # bottom-right: costly and inaccurate, the corner a Pareto plot leaves empty
        self.legend = self.plot.add_legend(offset=(-10, -10), sampleType=_KeySample)
        self.legend.setVisible(False)
        self.front_curve = self.plot.plot([], [], pen=pg.mkPen("#6e7781", width=1.5, style=Qt.PenStyle.DashLine))
        self._tips: dict[str, str] = {}
        self.scatter = pg.ScatterPlotItem(size=11, hoverable=True, tip=self._tip)
        self.plot.addItem(self.scatter)
        self.original_point = pg.ScatterPlotItem(size=16, symbol="star")
        self.plot.addItem(self.original_point)
        self.bars = error_bars("#8c959f")  # each point's top-1 95 % interval
        self.plot.addItem(self.bars)
        self.latency_bars = pg.ErrorBarItem(beam=0, pen=pg.mkPen("#8c959f", width=1.2))  # the final round's
        self.plot.addItem(self.latency_bars)
        col.addWidget(self.plot)

    def _tip(self, x: float, y: float, data=None) -> str:
        """The hovered run in words (pyqtgraph calls this with the spot's position and data)."""
        return self._tips.get(data, f"{x:.3g}, top-1 {y:.2f} %")

    def legend_labels(self) -> list[str]:
        """The legend's entries, in order (for tests)."""
        return [label.text for _sample, label in self.legend.items]

    def draw(self, ranking, baseline: RunResult | None, colours: dict[str, str]) -> None:
        """Show the ranked runs (the best one ringed in green, infeasible ones hollow) and the original."""
        key = self.axis.currentData() or "latency_ms"
        results = ranking.entries if ranking else ()
        if key == "latency_ms" and results and not any(metric_value(e.result, key) for e in results):
            self.axis.setCurrentIndex(self.axis.findData("macs"))  # latency was not measured
            return  # the index change redraws
        info = METRICS[key]
        self.plot.setLabel("bottom", f"{info.label} ({info.unit}), lower is better")
        entries = [e for e in results if metric_value(e.result, key)]
        pts = [(metric_value(e.result, key), e.result.metrics.top1 * 100) for e in entries]
        hollow = theme.plot_background()  # hollow on a light or a dark background
        spots, self._tips = [], {}
        for e, (x, y) in zip(entries, pts):
            colour = colours.get(e.result.method, "#333")
            best = ranking.best is e
            spots.append({"pos": (x, y), "data": e.result.key,
                          "brush": pg.mkBrush(colour if e.feasible else hollow),
                          "pen": pg.mkPen(BEST_COLOUR if best else colour, width=3 if best else 1.5),
                          "symbol": "o", "size": 14 if best else 11})
            self._tips[e.result.key] = self._describe(e, x, y, info, best)
        self.scatter.setData(spots)
        front = pareto_front(pts, ("min", "max"))
        self.front_curve.setData([pts[i][0] for i in front], [pts[i][1] for i in front])
        bv = metric_value(baseline, key) if baseline else None
        with_base = [(bv, baseline)] if bv else []
        set_bars(self.bars, [x for x, _ in pts] + [x for x, _ in with_base],
                 [e.result.metrics for e in entries] + [b.metrics for _, b in with_base], beam=0)
        spans = [(x, y, r.metrics.latency(stat="low"), r.metrics.latency(stat="high"))
                 for (x, y), r in zip(pts + [(bv, b.metrics.top1 * 100) for _, b in with_base],
                                      [e.result for e in entries] + [b for _, b in with_base])
                 if key == "latency_ms" and r.metrics.latency(stat="high")]  # latency intervals, horizontal
        self.latency_bars.setData(x=np.array([s[0] for s in spans]), y=np.array([s[1] for s in spans]),
                                  left=np.array([s[0] - s[2] for s in spans]),
                                  right=np.array([s[3] - s[0] for s in spans]))
        self.latency_bars.setVisible(bool(spans))
        self.original_point.setBrush(pg.mkBrush(theme.plot_foreground()))
        self.original_point.setPen(pg.mkPen(theme.plot_foreground()))
        if bv:
            self.original_point.setData([bv], [baseline.metrics.top1 * 100])
        else:
            self.original_point.setData([], [])
        self._fill_legend(entries, colours, ranking, bool(bv))
        self.plot.keep_legend_clear(pts + ([(bv, baseline.metrics.top1 * 100)] if bv else []))

    @staticmethod
    def _describe(entry, x: float, y: float, info, best: bool) -> str:
        """A hovered point's tooltip: the run, its two values and why it is ringed or hollow."""
        r = entry.result
        lines = [r.label + (f" ({r.recovery})" if r.recovery else ""), f"top-1 {r.metrics.figure_text('top1')}",
                 f"{info.label} {x:.4g} {info.unit}"]
        if best:
            lines.append("best run for the criteria")
        lines += [f"breaks: {v}" for v in entry.violations]
        return "\n".join(lines)

    def _fill_legend(self, entries, colours: dict[str, str], ranking, original: bool) -> None:
        """One entry per method shown (its colour), then the marks that appear: hollow, best, original."""
        self.legend.clear()
        fg = theme.plot_foreground()
        shown = {e.result.method for e in entries}
        for method in [m for m in colours if m in shown] + sorted(shown - set(colours)):  # in colour order
            colour = colours.get(method, "#333")
            self.legend.addItem(pg.ScatterPlotItem(symbol="o", size=10, brush=pg.mkBrush(colour),
                                                   pen=pg.mkPen(colour)), method)
        if any(not e.feasible for e in entries):
            self.legend.addItem(pg.ScatterPlotItem(symbol="o", size=10, brush=pg.mkBrush(theme.plot_background()),
                                                   pen=pg.mkPen(fg, width=1.5)), "breaks a constraint")
        if ranking is not None and ranking.best is not None and ranking.best in entries:
            self.legend.addItem(pg.ScatterPlotItem(symbol="o", size=12, brush=pg.mkBrush(None),
                                                   pen=pg.mkPen(BEST_COLOUR, width=3)), "best run")
        if original and entries:
            self.legend.addItem(pg.ScatterPlotItem(symbol="star", size=13, brush=pg.mkBrush(fg), pen=pg.mkPen(fg)),
                                "original")
        self.legend.setVisible(bool(entries))


def ratio_plot() -> pg.PlotWidget:
    """Top-1 accuracy against the pruning ratio, one curve per method (guided runs dashed)."""
    plot = plot_widget()
    plot.showGrid(x=True, y=True, alpha=0.25)
    plot.setLabel("bottom", "pruning ratio (0 = original)")
    plot.setLabel("left", "top-1 accuracy (%)")
    plot.add_legend(offset=(10, -10))  # bottom-left: every curve starts at the original's accuracy, top-left
    show_legend_if_filled(plot)
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
        bars = curves.get(("bars", method, guided))  # each point's top-1 95 % interval, in the curve's colour
        if bars is None:
            bars = curves[("bars", method, guided)] = error_bars(colours.get(method, "#333"))
            plot.addItem(bars)
        set_bars(bars, xs, ([baseline.metrics] if base is not None else []) + [r.metrics for r in runs], beam=0.01)
    show_legend_if_filled(plot)


def sensitivity_plot() -> pg.PlotWidget:
    """Top-1 drop against the share of a layer group's channels removed."""
    plot = plot_widget()
    plot.showGrid(x=True, y=True, alpha=0.25)
    plot.setLabel("bottom", "share of the group's channels removed")
    plot.setLabel("left", "top-1 drop (points)")
    plot.add_legend(offset=(10, 10))  # top-left: drops grow with the share removed
    show_legend_if_filled(plot)
    return plot


def draw_sensitivity(plot: pg.PlotWidget, result) -> None:
    """Redraw a scan (engine.sensitivity.SensitivityDone): one curve per layer group, most sensitive first."""
    plot.clear()
    for i, g in enumerate(sorted(result.groups, key=lambda g: -g.score)):
        colour = PALETTE[i % len(PALETTE)]
        plot.plot([0.0, *map(float, result.ratios)], [0.0, *map(float, g.drops)], pen=pg.mkPen(colour, width=2),
                  symbol="o", symbolSize=6, symbolBrush=colour, name=f"{g.name} ({g.score:.1f} pt)")
    show_legend_if_filled(plot)
