"""Three Teach views fed by one engine.explain.Explanation: why these channels, criteria side by side,
and the dependency group. In the Why view a student can also tick channels and run them as the
"manual" method, compared with the others in Results."""
from __future__ import annotations

from html import escape

import numpy as np
from PySide6.QtCore import QRect, QSize, Qt, QTimer, Signal  # PySide6 first, so pyqtgraph binds it
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPushButton, QSplitter,
                               QTableWidget, QTableWidgetItem, QToolTip, QVBoxLayout, QWidget)

import pyqtgraph as pg

from engine.explain import ChannelScores, ChosenScores, Criteria, Explanation
from engine.methods import get_method
from gui import theme

KEPT_COLOUR = theme.run_colour(0)
TICK_COLOUR = "#E69F00"  # Okabe–Ito orange: apart from the kept blue and the removed red


def _words(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _style(plot: pg.PlotItem, title: str = "", size: str = "11pt") -> None:
    """Axes and title in the palette's text colour (plots follow light and dark mode)."""
    fg = theme.plot_foreground()
    for side in ("left", "bottom"):
        plot.getAxis(side).setPen(fg)
        plot.getAxis(side).setTextPen(fg)
    if title:
        plot.setTitle(title, color=fg.name(), size=size)


def _bars(plot: pg.PlotItem, heights: np.ndarray, cut: np.ndarray) -> None:
    """Kept channels in the run colour, removed ones in red, at x = 0..n-1."""
    x = np.arange(len(heights))
    h = np.nan_to_num(heights, nan=0.0)
    plot.addItem(pg.BarGraphItem(x=x[~cut], height=h[~cut], width=0.8, brush=KEPT_COLOUR, pen=None))
    plot.addItem(pg.BarGraphItem(x=x[cut], height=h[cut], width=0.8, brush=theme.REMOVED_COLOUR, pen=None))


class WhyView(theme.PaletteWidget):
    """The chosen method's scores for the layer, sorted, with the cut line; hover for a channel's facts,
    click a bar to tick its channel, and run the ticked channels as the manual method."""

    manual_requested = Signal(dict)  # layer name -> sorted channel indices

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scores: ChannelScores | None = None
        self.ticked: dict[str, set[int]] = {}  # kept across layers: one manual run may cut several
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.plot_widget = pg.PlotWidget()
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setLabel("bottom", "channels, sorted: the first to go on the left")
        self.plot.setLabel("left", "score")
        self.plot.showGrid(y=True, alpha=0.2)
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot_widget.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.plot_widget.scene().sigMouseClicked.connect(self._on_mouse_clicked)
        layout.addWidget(self.plot_widget, 1)
        self.tick_marks = pg.ScatterPlotItem(symbol="t1", size=11, brush=pg.mkBrush(TICK_COLOUR), pen=None)
        row = QHBoxLayout()
        self.tick_label = QLabel("Click bars to tick channels, then run them as the manual method.")
        self.tick_label.setWordWrap(True)
        row.addWidget(self.tick_label, 1)
        self.tick_cut_button = QPushButton("Tick the method's cut")
        self.tick_cut_button.setToolTip("Start from the channels the method removes (red), then change them")
        self.tick_cut_button.clicked.connect(self.tick_method_cut)
        self.clear_button = QPushButton("Clear ticks")
        self.clear_button.setToolTip("Untick every channel, in every layer")
        self.clear_button.clicked.connect(self.clear_ticks)
        self.run_button = QPushButton("Run ticked channels")
        self.run_button.setToolTip("Prune exactly the ticked channels (and every channel tied to them) as the "
                                   "manual method; the run appears in Results beside the others")
        self.run_button.clicked.connect(self._on_run_clicked)
        for button in (self.tick_cut_button, self.clear_button, self.run_button):
            row.addWidget(button)
        layout.addLayout(row)
        self.hover_label = QLabel("Hover over a bar to see its channel, rank, score and the layers tied to it.")
        self.hover_label.setWordWrap(True)
        layout.addWidget(self.hover_label)
        self.text = _words("Pick a layer and press <b>Explain</b>.")
        layout.addWidget(self.text)
        self._apply_palette()
        self._refresh_ticks()

    def _apply_palette(self) -> None:
        self.plot_widget.setBackground(theme.plot_background())
        _style(self.plot)

    # --------------------------------------------------------------------- ticks (manual pruning)
    def manual_channels(self) -> dict[str, list[int]]:
        """The ticked channels as PruneConfig.manual_channels."""
        return {layer: sorted(chs) for layer, chs in self.ticked.items() if chs}

    def toggle(self, channel: int) -> None:
        """Tick or untick one channel of the shown layer."""
        if self.scores is None or not 0 <= channel < len(self.scores.scores):
            return
        chs = self.ticked.setdefault(self.scores.layer, set())
        chs.symmetric_difference_update({channel})
        self._refresh_ticks()

    def tick_method_cut(self) -> None:
        """Tick exactly the channels the method removes in the shown layer."""
        if self.scores is not None:
            self.ticked[self.scores.layer] = {int(i) for i in np.flatnonzero(self.scores.cut)}
            self._refresh_ticks()

    def clear_ticks(self) -> None:
        """Untick everything."""
        self.ticked.clear()
        self._refresh_ticks()

    def _refresh_ticks(self) -> None:
        chosen = self.manual_channels()
        self.tick_marks.setData([], [])
        if self.scores is not None:
            mine = self.ticked.get(self.scores.layer, set())
            heights = np.nan_to_num(self.scores.scores, nan=0.0)
            xs = [int(self.scores.ranks[c]) for c in sorted(mine)]
            self.tick_marks.setData(xs, [max(float(heights[c]), 0.0) for c in sorted(mine)])
        total = sum(len(v) for v in chosen.values())
        where = "; ".join(f"{escape(layer)}: {', '.join(map(str, chs[:12]))}{', …' if len(chs) > 12 else ''}"
                          for layer, chs in chosen.items())
        self.tick_label.setText(f"<b>{total} channel(s) ticked</b> ({where}). Click a bar to tick or untick it."
                                if total else "Click bars to tick channels (an orange mark), then run them as the "
                                "manual method.")
        self.run_button.setEnabled(total > 0)
        self.tick_cut_button.setEnabled(self.scores is not None)

    def _on_run_clicked(self) -> None:
        chosen = self.manual_channels()
        if chosen:
            self.manual_requested.emit(chosen)

    def _on_mouse_clicked(self, event) -> None:
        if self.scores is None or not self.plot.sceneBoundingRect().contains(event.scenePos()):
            return
        position = int(round(self.plot.vb.mapSceneToView(event.scenePos()).x()))
        if 0 <= position < len(self.scores.order):
            self.toggle(int(self.scores.order[position]))

    def show_scores(self, scores: ChannelScores | None, method_name: str) -> None:
        """Draw `scores` (None: the method is unstructured and has no channel scores)."""
        self.scores = scores
        self.plot.clear()
        self.plot.addItem(self.tick_marks)  # clear() removed it; the marks sit on top of the bars
        self.tick_marks.setZValue(10)
        self._refresh_ticks()
        method = get_method(method_name)
        if scores is None:
            self.text.setText(f"<b>{escape(method.title)}</b> zeroes single weights and keeps every channel, so "
                              "there are no channel scores to show. Pick a structured method in the Prune panel; "
                              "<i>Criteria side by side</i> shows them all.")
            return
        order = scores.order
        _bars(self.plot, scores.scores[order], scores.cut[order])
        n, k = len(order), scores.n_cut
        if k:
            line = pg.InfiniteLine(pos=k - 0.5, angle=90, pen=pg.mkPen(theme.plot_foreground(), width=2,
                                                                      style=Qt.PenStyle.DashLine),
                                   label=f"cut line: {k} of {n} go",
                                   labelOpts={"position": 0.92, "color": theme.plot_foreground()})
            self.plot.addItem(line)
        _style(self.plot, f"{escape(scores.layer)}: {escape(method.title)} at {scores.ratio:.0%}")
        self.text.setText(self.explain_text(scores))

    @staticmethod
    def explain_text(scores: ChannelScores) -> str:
        """What the score measures and what the picture shows, in plain words."""
        method = get_method(scores.method)
        n, k = len(scores.scores), scores.n_cut
        parts = [f"<b>{escape(method.title)}</b> measures <i>{escape(method.measures)}</i>. "
                 f"Each bar is one output channel of <b>{escape(scores.layer)}</b>, sorted by that score."]
        if scores.pruned:
            parts.append(f"At a ratio of {scores.ratio:.0%}, <span style='color:{theme.REMOVED_COLOUR}'>"
                         f"<b>{k} of {n} channels go (red)</b></span>: those left of the cut line, the ones the "
                         "method scores lowest. The count is rounded as the run rounds it.")
        if scores.root != scores.layer:
            parts.append(f"This layer loses its channels together with {len(scores.tied)} other layer(s) (see "
                         f"<i>Dependency group</i>), and the method scores the whole group, rooted at "
                         f"<b>{escape(scores.root)}</b>: a channel with large weights here can still go when the "
                         "group's score for it is low.")
        parts += [escape(note[0].upper() + note[1:]) + "." for note in scores.notes]
        return " ".join(parts)

    def hover_text(self, position: int) -> str:
        """The facts of the channel at sorted position `position` ('' outside the bars)."""
        s = self.scores
        if s is None or not 0 <= position < len(s.order):
            return ""
        channel = int(s.order[position])
        score = s.scores[channel]
        shown = "no score" if np.isnan(score) else f"score {score:.4g}"
        fate = "removed" if s.cut[channel] else "kept"
        if channel in self.ticked.get(s.layer, ()):
            fate += ", ticked by you"
        tied = ", ".join(s.tied[:8]) + (", …" if len(s.tied) > 8 else "") if s.tied else "no other layer"
        return (f"Channel {channel}: rank {s.ranks[channel] + 1} of {len(s.order)} (1 = first to go), {shown}, "
                f"{fate}. Tied to: {tied}.")

    def _on_mouse_moved(self, pos) -> None:
        if self.scores is None or not self.plot.sceneBoundingRect().contains(pos):
            return
        x = self.plot.vb.mapSceneToView(pos).x()
        text = self.hover_text(int(round(x)))
        if text:
            self.hover_label.setText(text)
            # a QGraphicsView maps a scene point to a QPoint already (no toPoint, which only QPointF has)
            QToolTip.showText(self.plot_widget.mapToGlobal(self.plot_widget.mapFromScene(pos)), text)


class UprightHeader(QHeaderView):
    """Column names written bottom to top: a square matrix keeps narrow columns and whole names."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)

    def sectionSizeFromContents(self, logical: int) -> QSize:
        return super().sectionSizeFromContents(logical).transposed()

    def paintSection(self, painter: QPainter, rect: QRect, logical: int) -> None:
        painter.save()
        painter.translate(rect.x(), rect.y() + rect.height())
        painter.rotate(-90)
        super().paintSection(painter, QRect(0, 0, rect.height(), rect.width()), logical)
        painter.restore()


class CriteriaView(theme.PaletteWidget):
    """One small bar chart per criterion (channels in index order, cut in red) and the Jaccard heat map."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.criteria: Criteria | None = None
        self.plots: dict[str, pg.PlotItem] = {}  # method -> its chart, kept while the layer stays
        self.drawn: dict[str, ChannelScores] = {}  # method -> the scores its chart shows
        self.columns = 0
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        split = QSplitter(Qt.Orientation.Horizontal)
        self.canvas = pg.GraphicsLayoutWidget()
        split.addWidget(self.canvas)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(QLabel("<b>Overlap of the cut sets</b> (Jaccard: shared ÷ either)"))
        self.jaccard_table = QTableWidget()
        self.jaccard_table.setHorizontalHeader(UprightHeader(self.jaccard_table))
        self.jaccard_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.jaccard_table.setToolTip("1: both criteria cut exactly the same channels; 0: not one in common")
        right_layout.addWidget(self.jaccard_table, 1)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([600, 440])
        layout.addWidget(split, 1)
        self.text = _words("Every structured criterion scores the same layer; the same channel sits at the same "
                           "place in every chart, so you can see where they agree.")
        layout.addWidget(self.text)
        self._apply_palette()

    def _apply_palette(self) -> None:
        self.canvas.setBackground(theme.plot_background())

    def show_criteria(self, criteria: Criteria) -> None:
        """Draw the small multiples and the matrix. The charts already drawn are refilled, and each new one is
        made on its own turn of the event loop: a pyqtgraph plot takes 50–100 ms to build on a busy machine,
        and building nine at once froze the window for half a second on every partial result."""
        self.criteria = criteria
        self._fill_table(criteria)
        self.text.setText(self.summary(criteria))
        self._draw_next()

    def _draw_next(self) -> None:
        criteria = self.criteria
        if criteria is None:
            return
        names = list(criteria.methods)
        columns = 3 if len(names) > 4 else 2
        if columns != self.columns or list(self.plots) != names[:len(self.plots)]:  # places changed: start over
            self.canvas.clear()
            self.plots, self.drawn, self.columns = {}, {}, columns
        for i, name in enumerate(names):
            scores = criteria.scores[name]
            if self.drawn.get(name) is scores:
                continue
            plot = self.plots.get(name)
            new = plot is None
            if new:
                plot = self.plots[name] = self.canvas.addPlot(row=i // columns, col=i % columns)
                plot.hideAxis("left")
                plot.setMouseEnabled(x=False, y=False)
                plot.getAxis("bottom").setStyle(tickLength=3)
            else:
                plot.clear()
            _style(plot, f"{escape(name)}: {scores.n_cut} cut", size="9pt")
            _bars(plot, scores.scores, scores.cut)
            self.drawn[name] = scores
            if new and i + 1 < len(names):  # one new chart per turn of the event loop
                QTimer.singleShot(0, self, self._draw_next)
                return

    def show_pending(self, layer: str) -> None:
        """Empty the comparison while the criteria for `layer` are being scored."""
        self.criteria = None
        self.canvas.clear()
        self.plots, self.drawn = {}, {}
        self.jaccard_table.setRowCount(0)
        self.jaccard_table.setColumnCount(0)
        self.text.setText(f"Scoring <b>{escape(layer)}</b> with every structured criterion; the charts appear as "
                          "they are scored, the data-free ones first (Taylor and Hessian calibrate on images).")

    def _fill_table(self, criteria: Criteria) -> None:
        names, matrix = criteria.methods, criteria.jaccard
        table = self.jaccard_table
        table.setRowCount(len(names))
        table.setColumnCount(len(names))
        for i, name in enumerate(names):
            for place in (table.setHorizontalHeaderItem, table.setVerticalHeaderItem):
                label = QTableWidgetItem(name)
                label.setToolTip(get_method(name).title)
                place(i, label)
        for i in range(len(names)):
            for j in range(len(names)):
                value = float(matrix[i, j])
                item = QTableWidgetItem(f"{value:.2f}")
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                item.setBackground(QColor(0, 114, 178, int(30 + 200 * value)))
                item.setForeground(QColor("white") if value > 0.55 else theme.plot_foreground())
                item.setToolTip(f"{names[i]} and {names[j]} share {value:.0%} of their cut channels")
                table.setItem(i, j, item)
        # Equal columns keep the matrix square; the upright names need only a cell's width ("1.00").
        header = table.horizontalHeader()
        header.setMinimumSectionSize(table.fontMetrics().horizontalAdvance("1.00") + 10)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)

    @staticmethod
    def summary(criteria: Criteria) -> str:
        """Which criteria agree most and least, in words."""
        names, m = criteria.methods, criteria.jaccard
        pairs = [(float(m[i, j]), names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
        if not pairs:
            return "Only one criterion: nothing to compare."
        hi, lo = max(pairs), min(pairs)
        return (f"Most alike: <b>{hi[1]}</b> and <b>{hi[2]}</b> (they share {hi[0]:.0%} of their cut channels). "
                f"Least alike: <b>{lo[1]}</b> and <b>{lo[2]}</b> ({lo[0]:.0%}). Red bars are the channels each "
                "criterion would cut at this ratio; the same channel sits at the same place in every chart.")


class GroupView(QWidget):
    """The layers coupled to the selected one, each with the reason."""

    layer_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.header = _words("Layers that must lose the same channels appear here.")
        layout.addWidget(self.header)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Layer", "Loses", "Why"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setWordWrap(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.cellDoubleClicked.connect(lambda row, _col: self.layer_clicked.emit(self.table.item(row, 0).text()))
        layout.addWidget(self.table, 1)

    def show_group(self, explanation: Explanation | ChosenScores) -> None:
        """List the couplings of the explained layer (known before the criteria are scored)."""
        rows = explanation.coupling
        self.header.setText(
            f"<b>{escape(explanation.layer)}</b> cannot lose a channel alone: these {len(rows)} layer(s) lose the "
            "same channel with it, or the network would no longer fit together. (Double-click a row to explain "
            "that layer.)" if rows else f"<b>{escape(explanation.layer)}</b> is coupled to no other layer.")
        self.table.setRowCount(len(rows))
        for row, c in enumerate(rows):
            for col, text in enumerate((c.layer, f"{c.side} channels", c.reason)):
                item = QTableWidgetItem(text)
                item.setToolTip(c.reason)
                self.table.setItem(row, col, item)
        self.table.resizeRowsToContents()
