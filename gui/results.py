"""The runs of this session: a sortable table and a scatter of accuracy against latency.

Clicking a run (row or point) emits run_selected, and the main window shows that run's plots,
histograms and graph.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QSortFilterProxyModel, Qt, Signal, Slot  # PySide6 first for pyqtgraph
from PySide6.QtGui import QColor, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QSplitter, QTableView, QVBoxLayout, QWidget

import pyqtgraph as pg

from engine.metrics import Metrics
from engine.models import ModelBundle
from engine.outputs import atomic_files
from engine.config import PruneConfig
from engine.pruning import RunDone, StepDone
from engine.units import fmt_bytes, fmt_count
from gui import theme

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
RUN_ROLE = Qt.ItemDataRole.UserRole + 2


@dataclass
class RunRecord:
    """One pruning run of this session, as the GUI keeps it."""

    run_id: int
    label: str
    colour: str
    config: PruneConfig
    steps: list[StepDone] = field(default_factory=list)
    done: RunDone | None = None
    pruned: ModelBundle | None = None
    onnx_path: Path | None = None
    status: str = "running"  # running, done, cancelled, failed

    @property
    def amount(self) -> str:
        """The requested amount, as a user reads it."""
        if self.config.target_speedup is not None:
            return f"{self.config.target_speedup:.2f}× fewer MACs"
        return f"{self.config.pruning_ratio:.0%}"


def _latency_text(m: Metrics) -> str:
    return f"{m.latency(1):.2f} ms" if m.latency_ms else "not measured"


def _speedup_text(r: RunRecord) -> str:
    """'2.79× [2.61–2.95] (3.90× MACs)': the paired median and its interval; 'noisy' inside the brackets
    when the machine was busy while timing."""
    speed = r.done.speedups()
    macs = f"({speed['macs']:.2f}× MACs)"
    paired = r.done.paired
    if paired:
        noisy = ", noisy" if paired.get("noisy") else ""
        return f"{paired['median']:.2f}× [{paired['low']:.2f}–{paired['high']:.2f}{noisy}] {macs}"
    return (f"{speed['latency']:.2f}× " if "latency" in speed else "– ") + macs


def _speedup_tip(r: RunRecord) -> str:
    """The whole figure: interval, rounds, threads, and why the machine counted as noisy."""
    return r.done.speedup_text() or "latency not measured"


# (header, tooltip, text(run), sort value(run))
COLUMNS = (
    ("Run", "Order of the runs in this session", lambda r: r.label, lambda r: r.run_id),
    ("Method", "Pruning method", lambda r: r.config.method, lambda r: r.config.method),
    ("Amount", "Requested pruning ratio or speed-up", lambda r: r.amount,
     lambda r: r.config.pruning_ratio or r.config.target_speedup or 0),
    ("Top-1", "Top-1 accuracy after pruning and recovery", lambda r: f"{r.done.after.top1:.2%}",
     lambda r: r.done.after.top1),
    ("Δ top-1", "Change of top-1 accuracy against the original model (points)",
     lambda r: f"{(r.done.after.top1 - r.done.before.top1) * 100:+.2f}",
     lambda r: r.done.after.top1 - r.done.before.top1),
    ("F1", "Macro-averaged F1 score", lambda r: f"{r.done.after.f1_macro:.3f}", lambda r: r.done.after.f1_macro),
    ("Params", "Parameters after pruning (non-zero in brackets when different)",
     lambda r: fmt_count(r.done.after.params) + (f" ({fmt_count(r.done.after.nonzero_params)})"
                                                 if r.done.after.nonzero_params != r.done.after.params else ""),
     lambda r: r.done.after.nonzero_params),
    ("MACs", "Multiply-accumulates per image", lambda r: fmt_count(r.done.after.macs), lambda r: r.done.after.macs),
    ("Size", "Size of the weights on disk (zlib-compressed in brackets)",
     lambda r: f"{fmt_bytes(r.done.after.size_bytes)} ({fmt_bytes(r.done.after.compressed_bytes)})",
     lambda r: r.done.after.compressed_bytes),
    ("Latency", "Median latency at batch size 1", lambda r: _latency_text(r.done.after),
     lambda r: r.done.after.latency(1) if r.done.after.latency_ms else 1e9),
    ("Speed-up", "Measured latency speed-up: median of rounds timing the original and the pruned model "
     "interleaved, its 95 % interval in square brackets ('noisy' when the machine was busy; hover a cell for "
     "why); the MACs reduction in round brackets",
     _speedup_text, lambda r: r.done.speedups().get("latency", r.done.speedups()["macs"])),
)
# Columns whose cells explain their own figure, added under the column's tooltip.
CELL_TIPS = {"Speed-up": _speedup_tip}


class _SortProxy(QSortFilterProxyModel):
    """Sorts by the numbers behind the texts."""

    def lessThan(self, left, right) -> bool:  # noqa: N802 (Qt override)
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)


class ResultsView(theme.PaletteWidget):
    """Table of finished runs and a scatter of top-1 accuracy against latency (or MACs)."""

    run_selected = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs: dict[int, RunRecord] = {}
        self.baseline: Metrics | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        splitter = QSplitter(Qt.Orientation.Vertical)
        layout.addWidget(splitter)
        self.model = QStandardItemModel(0, len(COLUMNS), self)
        for col, (header, tip, _, _) in enumerate(COLUMNS):
            item = QStandardItem(header)
            item.setToolTip(tip)
            self.model.setHorizontalHeaderItem(col, item)
        self.proxy = _SortProxy(self)
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setToolTip("Runs of this session; click a header to sort, a row to show that run everywhere")
        self.table.selectionModel().currentRowChanged.connect(self._on_row_changed)
        splitter.addWidget(self.table)
        self.scatter_widget = pg.PlotWidget()
        self.scatter_widget.setToolTip("Each point is a run (the star is the original model); up-left is better. "
                                       "Click a point to select its run")
        self.scatter_plot = self.scatter_widget.getPlotItem()
        self.scatter_plot.showGrid(x=True, y=True, alpha=0.25)
        self.scatter_plot.getViewBox().setDefaultPadding(0.12)  # room for the labels next to the points
        self.scatter = pg.ScatterPlotItem(size=13, hoverable=True)
        self.scatter.sigClicked.connect(self._on_point_clicked)
        self.scatter_plot.addItem(self.scatter)
        self.baseline_point = pg.ScatterPlotItem(size=18, symbol="star")
        self.scatter_plot.addItem(self.baseline_point)
        self.labels: list[pg.TextItem] = []
        splitter.addWidget(self.scatter_widget)
        splitter.setSizes([200, 300])
        self._apply_palette()

    # --------------------------------------------------------------------- feeding
    def add_run(self, run: RunRecord) -> None:
        """Append a finished run to the table and the scatter."""
        self.runs[run.run_id] = run
        self.baseline = run.done.before
        row = []
        for col, (header, tip, text, sort) in enumerate(COLUMNS):
            item = QStandardItem(text(run))
            item.setData(sort(run), SORT_ROLE)
            item.setData(run.run_id, RUN_ROLE)
            item.setToolTip(f"{CELL_TIPS[header](run)}\n\n{tip}" if header in CELL_TIPS else tip)
            if col == 0:
                item.setData(QColor(run.colour), Qt.ItemDataRole.DecorationRole)
            if col > 2:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            row.append(item)
        self.model.appendRow(row)
        self._on_redraw_scatter()

    def row_count(self) -> int:
        """Number of runs in the table."""
        return self.model.rowCount()

    def select_run(self, run_id: int) -> None:
        """Select a run's row without emitting run_selected again."""
        for row in range(self.proxy.rowCount()):
            if self.proxy.index(row, 0).data(RUN_ROLE) == run_id:
                self.table.selectionModel().blockSignals(True)
                self.table.selectRow(row)
                self.table.selectionModel().blockSignals(False)
                break
        self._on_redraw_scatter(run_id)

    def write_csv(self, path: str | Path) -> Path:
        """Write the runs as CSV: raw numbers, one row per run, with the original model first."""
        path = Path(path)
        fields = ["run", "method", "pruning_ratio", "target_speedup", "scope", "steps", "finetune_epochs",
                  "top1", "top5", "f1_macro", "precision_macro", "recall_macro", "params", "nonzero_params", "macs",
                  "size_bytes", "compressed_bytes", "latency_ms_b1", "speedup_macs", "speedup_latency",
                  "speedup_latency_low", "speedup_latency_high", "speedup_latency_note"]
        with atomic_files(path) as (tmp,), tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            rows = [(None, self.baseline)] if self.baseline else []
            rows += [(run, run.done.after) for run in self.runs.values()]
            for run, m in rows:
                speed = run.done.speedups() if run else {}
                paired = (run.done.paired if run else None) or {}
                writer.writerow({
                    "run": run.label if run else "original", "method": run.config.method if run else "",
                    "pruning_ratio": run.config.pruning_ratio if run else "",
                    "target_speedup": run.config.target_speedup if run else "",
                    "scope": run.config.scope if run else "", "steps": run.config.steps if run else "",
                    "finetune_epochs": run.config.finetune_epochs if run else "",
                    "top1": m.top1, "top5": m.top5, "f1_macro": m.f1_macro, "precision_macro": m.precision_macro,
                    "recall_macro": m.recall_macro, "params": m.params, "nonzero_params": m.nonzero_params,
                    "macs": m.macs, "size_bytes": m.size_bytes, "compressed_bytes": m.compressed_bytes,
                    "latency_ms_b1": m.latency(1) if m.latency_ms else "",
                    "speedup_macs": speed.get("macs", 1.0) if run else 1.0,
                    "speedup_latency": speed.get("latency", "") if run else 1.0,
                    "speedup_latency_low": paired.get("low", ""), "speedup_latency_high": paired.get("high", ""),
                    "speedup_latency_note": paired.get("note", "")})
        return path

    # --------------------------------------------------------------------- slots
    @Slot()
    def _on_row_changed(self, current, _previous) -> None:
        run_id = current.data(RUN_ROLE) if current.isValid() else None
        if run_id is not None:
            self._on_redraw_scatter(run_id)
            self.run_selected.emit(int(run_id))

    def _on_point_clicked(self, _item, points, _event=None) -> None:
        if len(points):
            run_id = int(points[0].data())
            self.select_run(run_id)
            self.run_selected.emit(run_id)

    def _x_of(self, m: Metrics, use_latency: bool) -> float:
        return m.latency(1) if use_latency else m.macs / 1e6

    def _on_redraw_scatter(self, selected: int | None = None) -> None:
        runs = list(self.runs.values())
        use_latency = bool(runs) and all(r.done.after.latency_ms for r in runs) and bool(
            self.baseline and self.baseline.latency_ms)
        self.scatter_plot.setLabel("bottom", "latency, batch 1 (ms)" if use_latency else "MACs (millions)")
        self.scatter_plot.setLabel("left", "top-1 accuracy (%)")
        self.scatter_plot.setTitle("Accuracy against " + ("latency" if use_latency else "MACs (latency not measured)"),
                                   color=theme.plot_foreground().name())
        spots = []
        for run in runs:
            m = run.done.after
            spots.append({"pos": (self._x_of(m, use_latency), m.top1 * 100), "data": run.run_id,
                          "brush": pg.mkBrush(run.colour),
                          "pen": pg.mkPen(theme.plot_foreground(), width=2.5) if run.run_id == selected else None,
                          "size": 17 if run.run_id == selected else 13})
        self.scatter.setData(spots)
        for label in self.labels:
            self.scatter_plot.removeItem(label)
        self.labels = []
        xs = [self._x_of(r.done.after, use_latency) for r in runs]
        if self.baseline is not None:
            xs.append(self._x_of(self.baseline, use_latency))
        middle = (min(xs) + max(xs)) / 2 if xs else 0.0
        for run in runs:
            m = run.done.after
            # labels point inwards, so the ones at the right edge are not clipped
            anchor = (1, 1) if self._x_of(m, use_latency) > middle else (0, 1)
            label = pg.TextItem(f"{run.label} {run.config.method}", color=theme.plot_foreground(), anchor=anchor)
            label.setPos(self._x_of(m, use_latency), m.top1 * 100)
            self.scatter_plot.addItem(label)
            self.labels.append(label)
        if self.baseline is not None:
            self.baseline_point.setData([{"pos": (self._x_of(self.baseline, use_latency), self.baseline.top1 * 100),
                                          "brush": pg.mkBrush(theme.before_colour())}])
            right = self._x_of(self.baseline, use_latency) > middle
            label = pg.TextItem("original", color=theme.plot_foreground(), anchor=(1, 1) if right else (0, 1))
            label.setPos(self._x_of(self.baseline, use_latency), self.baseline.top1 * 100)
            self.scatter_plot.addItem(label)
            self.labels.append(label)

    def _apply_palette(self) -> None:
        fg = theme.plot_foreground()
        self.scatter_widget.setBackground(theme.plot_background())
        for side in ("left", "bottom"):
            self.scatter_plot.getAxis(side).setPen(fg)
            self.scatter_plot.getAxis(side).setTextPen(fg)
        self._on_redraw_scatter()
