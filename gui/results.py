"""The runs of this session: a sortable tree (a run continued from another sits under it) and a scatter
of accuracy against latency.

Clicking a run (row or point) emits run_selected, and the main window shows that run's plots,
histograms and graph; "Continue from this run" emits continue_requested.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QSortFilterProxyModel, Qt, Signal, Slot  # PySide6 first for pyqtgraph
from PySide6.QtGui import QColor, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QMenu, QPushButton,
                               QSplitter, QTreeView, QVBoxLayout, QWidget)

import numpy as np
import pyqtgraph as pg

from engine.metrics import Metrics
from engine.models import ModelBundle
from engine.outputs import atomic_files
from engine.config import PruneConfig, amount_words, recovery_words
from engine.latency_target import target_words, verdict_of
from engine.pruning import RunDone, StepDone
from engine.units import fmt_bytes, fmt_count
from gui import speed, theme
from gui.class_view import ClassView
from gui.intervals import error_bars, set_bars
from gui.plot_range import SteadyViewBox

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
    parent: int | None = None  # the run whose pruned model this one started from (None: the loaded model)
    context: tuple[str, str] | None = None  # (model, dataset) it was made on; set when the views first see it
    same_arch_as: int | None = None  # the run whose latency figure it shows (speed.same_arch_as; 0: the original)
    note: str = ""  # the user's own words about the run (the Results table's Note column)
    recover_only: bool = False  # continued without cutting: only the recovery ran on the parent's model

    @property
    def amount(self) -> str:
        """The requested amount, as a user reads it (a latency target: and whether the end's paired timing met it)."""
        target = self.done.latency_target if self.done is not None else None
        return amount_words(self.config, self.recover_only) + (f": {verdict_of(target)}" if target else "")


# (header, tooltip, text(run), sort value(run))
COLUMNS = (
    ("Run", "Order of the runs in this session", lambda r: r.label, lambda r: r.run_id),
    ("Method", "Pruning method", lambda r: r.config.method, lambda r: r.config.method),
    ("Amount", "Requested pruning ratio, speed-up or latency (a latency target: met or not when measured at the end; "
     "hover for the figure) (manual runs: the channels ticked)", lambda r: r.amount,
     lambda r: r.config.pruning_ratio or r.config.target_speedup or r.config.target_latency_speedup
     or (1 / r.config.target_latency if r.config.target_latency else 0)),
    ("Recovery", "What won back accuracy after each pruning step: fine-tuning (epochs, or a batch budget), "
     "distillation from the original, BatchNorm re-estimation; and the steps and scope when not the defaults. Hover "
     "a run's first cells for its whole configuration", lambda r: recovery_words(r.config),
     lambda r: (r.config.finetune_epochs or 0) + (r.config.finetune_batches or 0) / 1e6),
    ("Top-1", "Top-1 accuracy after pruning and recovery; in brackets its 95 % interval (Wilson) from the number "
     "of images evaluated (hover a cell): with 60 images one image is 1.7 points",
     lambda r: _with_interval(r.done.after, "top1"), lambda r: r.done.after.top1),
    ("Δ top-1", "Change of top-1 accuracy against the model the run started from (points): the original, or "
     "for a continued run its parent",
     lambda r: f"{(r.done.after.top1 - r.done.before.top1) * 100:+.2f}{_against(r)}",  # a child: its parent
     lambda r: r.done.after.top1 - r.done.before.top1),
    ("F1", "Macro-averaged F1 score, in % with its 95 % interval (a seeded bootstrap over the evaluated images)",
     lambda r: _with_interval(r.done.after, "f1_macro"), lambda r: r.done.after.f1_macro),
    ("Params", "Parameters after pruning (non-zero in brackets when different)",
     lambda r: fmt_count(r.done.after.params) + (f" ({fmt_count(r.done.after.nonzero_params)})"
                                                 if r.done.after.nonzero_params != r.done.after.params else ""),
     lambda r: r.done.after.nonzero_params),
    ("MACs", "Multiply-accumulates per image; in brackets how many times fewer than the model the run started "
     "from (the same at every batch size)",
     lambda r: f"{fmt_count(r.done.after.macs)} ({r.done.speedups()['macs']:.1f}× fewer{_against(r)})",
     lambda r: r.done.after.macs),
    ("Size", "Size of the weights on disk (zlib-compressed in brackets)",
     lambda r: f"{fmt_bytes(r.done.after.size_bytes)} ({fmt_bytes(r.done.after.compressed_bytes)})",
     lambda r: r.done.after.compressed_bytes),
    # The last two follow the batch chosen under the table (ResultsView._speed_cell), always the same for both.
    ("Latency", "Median time for one batch of the size in the header, the pruned model timed on its own after the "
     "run; hover a cell for its p5–p95 and threads", None, None),
    ("Speed-up", "How many times faster than the model the run started from, at the same batch size as the Latency "
     "column. Paired: the original and the pruned model timed interleaved in rounds at the end of the run; the "
     "median of the rounds' ratios, its 95 % interval in square brackets ('noisy' when the machine was busy). "
     "'separate': the ratio of the two separately timed medians (no paired figure at this batch). The two "
     "estimates can differ by a few per cent; hover a cell for every batch size and both estimates", None, None),
    ("Note", "Your own words about the run (double-click to write them): what you tried, what you saw",
     lambda r: r.note, lambda r: r.note),
)
SPEED_COLUMNS = {"Latency", "Speed-up"}
CONFIG_COLUMNS = 4  # Run, Method, Amount, Recovery: their tooltip is the run's whole configuration


def _against(run: RunRecord) -> str:
    """Whom a continued run's changes are measured against (its parent); nothing for the original's."""
    return f" vs #{run.parent}" if run.parent is not None else ""


def config_tip(run: RunRecord) -> str:
    """Every option of the run, one per line: two runs that read alike in the table differ here."""
    lines = [f"{run.label}: the whole configuration"]
    if run.done is not None and run.done.latency_target:  # the asked latency, measured at the end: met or not
        lines.append(target_words(run.done.latency_target))
    if run.parent is not None:
        lines.append(f"continued from #{run.parent}: its changes are measured against #{run.parent}")
    lines += [f"{key}: {value}" for key, value in run.config.to_json().items() if value not in ({}, [], None)]
    return "\n".join(lines)


def _with_interval(m: Metrics, key: str) -> str:
    """'93.60 % [91.9–95.0]': a figure in % with its 95 % interval (Metrics.interval), as the report shows it."""
    ci = m.interval(key)
    return f"{getattr(m, key) * 100:.2f} %" + (f" [{ci[0] * 100:.1f}–{ci[1] * 100:.1f}]" if ci else "")


def context_of(loaded) -> tuple[tuple[str, str], str]:
    """The (model, dataset) a run is made on, and its name for people: the model's file name (or its
    architecture) on the dataset's name."""
    source = loaded.request.model_src or loaded.bundle.source or "model"
    path = Path(source)
    model = path.name if path.suffix else loaded.summary.get("architecture", source)
    return (source, loaded.request.data_spec), f"{model} on {loaded.data.name}"


def kept_note(runs, context: tuple[str, str] | None, names: dict) -> str:
    """One line naming the runs kept aside because they were made on another model or dataset ('' if none)."""
    others: dict = {}
    for run in runs:
        if run.context != context:
            others[run.context] = others.get(run.context, 0) + 1
    if not others:
        return ""
    parts = [f"{n} run{'s' if n != 1 else ''} of {names.get(c, 'another model')}" for c, n in others.items()]
    return ("Showing the runs of the loaded model and dataset only. Kept for later: " + "; ".join(parts) +
            " (load that model and dataset again to see them).")


class _SortProxy(QSortFilterProxyModel):
    """Sorts by the numbers behind the texts."""

    def lessThan(self, left, right) -> bool:  # noqa: N802 (Qt override)
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)


class ResultsView(theme.PaletteWidget):
    """Tree of finished runs (parent → child) and a scatter of top-1 accuracy against latency (or MACs)."""

    run_selected = Signal(int)
    continue_requested = Signal(int)  # prune further, starting from this run's pruned model
    remove_requested = Signal(int)  # take this run out of the session (table, scatter, live plots)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs: dict[int, RunRecord] = {}  # every finished run of the session, of every model and dataset
        self.baselines: dict[tuple[str, str] | None, Metrics] = {}  # the original's figures, per context
        self.context: tuple[str, str] | None = None  # the loaded (model, dataset): only its runs are shown
        self.context_names: dict[tuple[str, str] | None, str] = {}
        self.batch_mode = speed.RUN_BATCH  # the batch size Latency, Speed-up and the scatter show
        self._header_batch = ("", False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.kept_note = QLabel("")
        self.kept_note.setWordWrap(True)
        self.kept_note.setContentsMargins(6, 2, 6, 2)
        self.kept_note.setVisible(False)
        layout.addWidget(self.kept_note)
        splitter = QSplitter(Qt.Orientation.Vertical)
        layout.addWidget(splitter)
        splitter.addWidget(self._build_tree())
        lower = QSplitter(Qt.Orientation.Horizontal)  # the scatter, and the selected run per class beside it
        lower.addWidget(self._build_scatter())
        self.class_view = ClassView()
        lower.addWidget(self.class_view)
        lower.setSizes([300, 220])
        splitter.addWidget(lower)
        splitter.setSizes([200, 300])
        self._apply_palette()

    def _build_tree(self) -> QWidget:
        self.model = QStandardItemModel(0, len(COLUMNS), self)
        for col, (header, tip, _, _) in enumerate(COLUMNS):
            item = QStandardItem(header)
            item.setToolTip(tip)
            self.model.setHorizontalHeaderItem(col, item)
        self.proxy = _SortProxy(self)
        self.proxy.setSourceModel(self.model)
        # a tree, not a table: a run continued from another is shown under it (its lineage)
        self.table = QTreeView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setRootIsDecorated(True)
        self.table.setItemsExpandable(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked  # the Note column only
                                   | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.model.itemChanged.connect(self._on_item_changed)
        self.table.setAlternatingRowColors(True)
        self.table.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.header().setStretchLastSection(False)  # a stretched Speed-up cell put its figure far from its header
        self.table.setToolTip("Runs of this session; click a header to sort, a row to show that run everywhere. "
                              "A run continued from another sits under it; right-click a run to continue from it")
        self.table.selectionModel().currentRowChanged.connect(self._on_row_changed)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._on_context_menu)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.table, 1)
        buttons = QHBoxLayout()
        self.continue_button = QPushButton("Continue from this run")
        self.continue_button.setToolTip("Prune the selected run's pruned model further, with the Prune panel's "
                                        "options; the new run is shown under it")
        self.continue_button.setEnabled(False)
        self.continue_button.clicked.connect(self._on_continue_clicked)
        buttons.addWidget(self.continue_button)
        buttons.addStretch(1)
        buttons.addWidget(QLabel("Latency and speed-up at"))
        self.batch_combo = QComboBox()
        self.batch_combo.addItem("the run's batch size", speed.RUN_BATCH)
        self.batch_combo.addItem("batch 1", 1)
        self.batch_combo.setToolTip("The batch size of the Latency and Speed-up columns and of the scatter, always "
                                    "the same for all three. The run's batch size (Prune ▸ batch size) is the "
                                    "figure the status line and the CLI quote; batch 1 is one image at a time, "
                                    "mostly timer noise on a small model")
        self.batch_combo.currentIndexChanged.connect(self._on_batch_changed)
        buttons.addWidget(self.batch_combo)
        top_layout.addLayout(buttons)
        return top

    def _build_scatter(self) -> pg.PlotWidget:
        self.scatter_widget = pg.PlotWidget(viewBox=SteadyViewBox())
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
        self.top1_bars = error_bars(theme.plot_foreground(), 1.0)  # each run's top-1 95 % interval
        self.scatter_plot.addItem(self.top1_bars)
        self.error_bars = pg.ErrorBarItem(beam=0.0)  # each run's latency interval (speed.scatter_x)
        self.scatter_plot.addItem(self.error_bars)
        self.labels: list[pg.TextItem] = []
        return self.scatter_widget

    # --------------------------------------------------------------------- feeding
    @property
    def baseline(self) -> Metrics | None:
        """The loaded model's own figures (the star), once a run of it has measured them."""
        return self.baselines.get(self.context)

    def set_context(self, context: tuple[str, str], name: str) -> None:
        """Show only the runs made on `context` (model, dataset), called `name`; the others are kept and come
        back when their model and dataset are loaded again (their numbers mean nothing next to this model's)."""
        self.context = context
        self.context_names[context] = name
        self._refill()
        self.continue_button.setEnabled(False)
        self._show_classes(self.selected_run())
        self.kept_note.setText(kept_note(self.runs.values(), context, self.context_names))
        self.kept_note.setVisible(bool(self.kept_note.text()))

    def _refill(self) -> None:
        """Rebuild the tree and scatter from the shown runs, with headers naming the batch size shown."""
        selected = self.selected_run()
        self._header_batch = speed.header_batch([r.done for r in self.shown_runs()], self.batch_mode)
        for col, (header, *_rest) in enumerate(COLUMNS):
            if header in SPEED_COLUMNS:
                self.model.horizontalHeaderItem(col).setText(f"{header}, {self._header_batch[0]}")
        self.model.removeRows(0, self.model.rowCount())
        for run in sorted(self.shown_runs(), key=lambda r: r.run_id):  # parents before their children
            self._add_row(run)
        if selected is not None and self.runs.get(selected) in self.shown_runs():
            self.select_run(selected)
        else:
            self._on_redraw_scatter()

    def shown_runs(self) -> list[RunRecord]:
        """The runs of the loaded model and dataset."""
        return [run for run in self.runs.values() if run.context == self.context]

    def add_run(self, run: RunRecord) -> None:
        """Add a finished run (of the loaded model and dataset) to the tree, under its parent, and the scatter."""
        if run.context is None:
            run.context = self.context
        earlier = {r.run_id: r.done for r in self.runs.values()
                   if r.context == run.context and r.run_id != run.run_id and r.done is not None}
        run.same_arch_as = speed.same_arch_as(run.done, earlier)
        self.runs[run.run_id] = run
        if run.parent is None:
            self.baselines[run.context] = run.done.before  # a child's "before" is its parent's result
        if run.context != self.context:
            return
        if speed.header_batch([r.done for r in self.shown_runs()], self.batch_mode) != self._header_batch:
            self._refill()  # a run at another batch size: every row now names its own
        else:
            self._add_row(run)
            self._on_redraw_scatter()

    def _speed_cell(self, header: str, run: RunRecord) -> tuple[str, str, float]:
        """(text, tooltip, sort value) of the Latency or Speed-up cell, at the batch chosen for both."""
        return speed.shared_cell(header, run.done, self._source(run), run.same_arch_as, self.batch_mode,
                                 self._header_batch[1])

    def _source(self, run: RunRecord) -> RunDone | None:
        """The RunDone whose latency figure `run` shares (None: its own, or the original's)."""
        source = self.runs.get(run.same_arch_as) if run.same_arch_as else None
        return source.done if source is not None else None

    def _add_row(self, run: RunRecord) -> None:
        row = []
        for col, (header, tip, text, sort) in enumerate(COLUMNS):
            if header in SPEED_COLUMNS:
                shown, cell_tip, value = self._speed_cell(header, run)
                tip = f"{cell_tip}\n\n{tip}"
            else:
                shown, value = text(run), sort(run)
            item = QStandardItem(shown)
            item.setData(value, SORT_ROLE)
            item.setData(run.run_id, RUN_ROLE)
            item.setToolTip(config_tip(run) if col < CONFIG_COLUMNS else tip)
            item.setEditable(header == "Note")
            if col == 0:
                item.setData(QColor(run.colour), Qt.ItemDataRole.DecorationRole)
            if col > 2:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            row.append(item)
        parent = self._item_of(run.parent) if run.parent is not None else None
        (parent if parent is not None else self.model.invisibleRootItem()).appendRow(row)
        if parent is not None:
            self.table.expand(self.proxy.mapFromSource(parent.index()))

    def row_count(self) -> int:
        """Number of runs in the tree (those of the loaded model and dataset), children included."""
        return len(self.shown_runs())

    def _item_of(self, run_id: int) -> QStandardItem | None:
        """The first-column item of a run, at any depth."""
        for item in self.model.findItems("", Qt.MatchFlag.MatchContains | Qt.MatchFlag.MatchRecursive, 0):
            if item.data(RUN_ROLE) == run_id:
                return item
        return None

    def parent_of(self, run_id: int) -> int | None:
        """The run shown above `run_id` in the tree (None: a top-level run)."""
        item = self._item_of(run_id)
        parent = item.parent() if item is not None else None
        return parent.data(RUN_ROLE) if parent is not None else None

    def select_run(self, run_id: int) -> None:
        """Select a run's row without emitting run_selected again."""
        item = self._item_of(run_id)
        if item is not None:
            index = self.proxy.mapFromSource(item.index())
            self.table.selectionModel().blockSignals(True)
            self.table.setCurrentIndex(index)
            self.table.selectionModel().blockSignals(False)
        self.continue_button.setEnabled(self._can_continue(run_id))
        self._on_redraw_scatter(run_id)
        self._show_classes(run_id)

    def _show_classes(self, run_id: int | None) -> None:
        """The selected run's recall per class (beside the model it started from) and confusion matrix."""
        run = self.runs.get(run_id) if run_id is not None else None
        if run is None or run.done is None or run.context != self.context:
            self.class_view.clear()
            return
        self.class_view.show_run(f"{run.label} {run.config.method}", run.done.after, run.done.before)

    def selected_run(self) -> int | None:
        """The run of the current row, if any."""
        index = self.table.currentIndex()
        run_id = index.siblingAtColumn(0).data(RUN_ROLE) if index.isValid() else None
        return int(run_id) if run_id is not None else None

    def update_continue(self) -> None:
        """Enable "Continue from this run" when the selected run has its pruned model (set after RunDone)."""
        self.continue_button.setEnabled(self._can_continue(self.selected_run()))

    def _can_continue(self, run_id: int | None) -> bool:
        run = self.runs.get(run_id) if run_id is not None else None
        # a run of another model cannot go on from here: the panel's options and the data belong to this one
        return run is not None and run.pruned is not None and run.context == self.context

    def write_csv(self, path: str | Path) -> Path:
        """Write the runs shown (the loaded model and dataset's) as CSV: raw numbers, one row per run, with the
        original model first."""
        path = Path(path)
        fields = ["run", "parent", "method", "pruning_ratio", "target_speedup", "target_latency",
                  "target_latency_speedup", "runtime", "target_latency_verdict", "scope", "steps", "finetune_epochs",
                  "top1", "top5", "f1_macro", *Metrics().interval_columns(),  # the store's CSV names
                  "precision_macro", "recall_macro", "params", "nonzero_params", "macs",
                  "size_bytes", "compressed_bytes", "latency_ms_b1", "batch_size", "latency_ms_batch", "speedup_macs",
                  "speedup_latency", "speedup_latency_batch", "speedup_latency_estimate", "speedup_latency_low",
                  "speedup_latency_high", "speedup_latency_note", "same_arch_as"]
        with atomic_files(path) as (tmp,), tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            rows = [(None, self.baseline)] if self.baseline else []
            rows += [(run, run.done.after) for run in self.shown_runs()]
            for run, m in rows:
                ratios = run.done.speedups() if run else {}
                paired = (run.done.paired if run else None) or {}
                same = run.same_arch_as if run else None
                timed = m  # the latency shown: a run of an architecture seen before shows that one's figure
                if same == speed.ORIGINAL:
                    timed, paired = run.done.before, {}
                    ratios = dict(ratios, latency=1.0)
                elif same is not None and self._source(run) is not None:
                    source = self._source(run)
                    timed, paired = source.after, source.paired or {}
                    ratios = dict(ratios, latency=source.speedups().get("latency", ""))
                batch = speed.run_batch(timed)
                # the speed-up's own batch: the paired headline's, or the separate medians' (the largest measured)
                speedup_batch = paired.get("batch", batch) if "latency" in ratios else ""
                writer.writerow({
                    "run": run.label if run else "original",
                    "parent": self.runs[run.parent].label if run and run.parent in self.runs else "",
                    "method": run.config.method if run else "",
                    "pruning_ratio": run.config.pruning_ratio if run else "",
                    "target_speedup": run.config.target_speedup if run else "",
                    "target_latency": run.config.target_latency if run else "",
                    "target_latency_speedup": run.config.target_latency_speedup if run else "",
                    "runtime": run.config.runtime if run and run.config.latency_targeted else "",
                    "target_latency_verdict": verdict_of(run.done.latency_target)
                    if run and run.done is not None and run.done.latency_target else "",
                    "scope": run.config.scope if run else "", "steps": run.config.steps if run else "",
                    "finetune_epochs": run.config.finetune_epochs if run else "",
                    "top1": m.top1, "top5": m.top5, "f1_macro": m.f1_macro, "precision_macro": m.precision_macro,
                    **m.interval_columns(),
                    "recall_macro": m.recall_macro, "params": m.params, "nonzero_params": m.nonzero_params,
                    "macs": m.macs, "size_bytes": m.size_bytes, "compressed_bytes": m.compressed_bytes,
                    "latency_ms_b1": timed.latency(1) if timed.latency_ms else "", "batch_size": batch or "",
                    "latency_ms_batch": speed.latency_at(timed, batch) or "",
                    "speedup_macs": ratios.get("macs", 1.0) if run else 1.0,
                    "speedup_latency": ratios.get("latency", "") if run else 1.0,
                    "speedup_latency_batch": speedup_batch if run else "",
                    "speedup_latency_estimate": ("paired" if paired else "separate") if run and speedup_batch
                    else "",
                    "speedup_latency_low": paired.get("low", ""), "speedup_latency_high": paired.get("high", ""),
                    "speedup_latency_note": paired.get("note", ""), "same_arch_as": speed.same_arch_text(same)})
        return path

    # --------------------------------------------------------------------- slots
    @Slot()
    def _on_row_changed(self, current, _previous) -> None:
        run_id = current.data(RUN_ROLE) if current.isValid() else None
        self.continue_button.setEnabled(self._can_continue(run_id))
        if run_id is not None:
            self._on_redraw_scatter(run_id)
            self._show_classes(int(run_id))
            self.run_selected.emit(int(run_id))

    @Slot()
    def _on_continue_clicked(self) -> None:
        run_id = self.selected_run()
        if self._can_continue(run_id):
            self.continue_requested.emit(run_id)

    def _on_context_menu(self, pos) -> None:
        index = self.table.indexAt(pos)
        run_id = index.siblingAtColumn(0).data(RUN_ROLE) if index.isValid() else None
        if run_id is None:
            return
        menu = QMenu(self)
        action = menu.addAction("Continue from this run")
        action.setToolTip("Prune this run's pruned model further with the Prune panel's options")
        action.setEnabled(self._can_continue(run_id))
        action.triggered.connect(lambda: self.continue_requested.emit(int(run_id)))
        remove = menu.addAction("Remove from this session")
        children = [r.label for r in self.runs.values() if r.parent == run_id]
        remove.setToolTip(f"Remove {', '.join(children)} first: they were continued from this run" if children
                          else "Take the run out of the table, the scatter and the live plots (files you exported "
                               "stay)")
        remove.setEnabled(not children)
        remove.triggered.connect(lambda: self.remove_requested.emit(int(run_id)))
        menu.setToolTipsVisible(True)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    def _on_item_changed(self, item: QStandardItem) -> None:
        """A note written in the table stays with its run (and comes back when the table is rebuilt)."""
        run = self.runs.get(item.data(RUN_ROLE))
        if run is not None and COLUMNS[item.column()][0] == "Note":
            run.note = item.text()

    def remove_run(self, run_id: int) -> None:
        """Forget a run (one with no continued runs of its own) and redraw without it."""
        if self.runs.pop(run_id, None) is not None:
            self._refill()

    @Slot(int)
    def _on_batch_changed(self, _index: int) -> None:
        self.batch_mode = int(self.batch_combo.currentData())
        self._refill()

    def _on_point_clicked(self, _item, points, _event=None) -> None:
        if len(points):
            run_id = int(points[0].data())
            self.select_run(run_id)
            self.run_selected.emit(run_id)

    def _x_of(self, m: Metrics, use_latency: bool) -> float:
        return speed.latency_at(m, speed.batch_of(m, self.batch_mode)) if use_latency else m.macs / 1e6

    def positions(self, runs: list[RunRecord], use_latency: bool) -> dict[int, tuple[float, float, float]]:
        """Run id -> (x, low, high) of its scatter point: with latency, the original's latency over the run's
        paired speed-up (a continued run: its parent's x over its own), so every point is compared through
        rounds timed against the same original rather than through figures timed minutes apart."""
        out: dict[int, tuple[float, float, float]] = {}
        for run in sorted(runs, key=lambda r: r.run_id):  # parents first
            m = run.done.after
            if not use_latency:
                out[run.run_id] = (m.macs / 1e6,) * 3
                continue
            batch = speed.batch_of(m, self.batch_mode)
            parent = out.get(run.parent) if run.parent is not None else None
            reference = parent[0] if parent else (speed.latency_at(self.baseline, batch)
                                                  or speed.latency_at(run.done.before, batch) or 0.0)
            got = speed.scatter_x(run.done, self._source(run), run.same_arch_as, reference, self.batch_mode)
            out[run.run_id] = got or (reference,) * 3
        return out

    def _on_redraw_scatter(self, selected: int | None = None) -> None:
        runs = self.shown_runs()
        use_latency = bool(runs) and self.baseline is not None and all(
            speed.batch_of(m, self.batch_mode) is not None for m in (self.baseline, *(r.done.after for r in runs)))
        self.scatter_plot.setLabel("bottom", f"latency, {self._header_batch[0]} (ms; the original's over the paired "
                                   "speed-up, bars: 95 % interval)" if use_latency
                                   else "MACs (millions)")
        self.scatter_plot.setLabel("left", "top-1 accuracy (%)")
        title = ("No runs of this model and dataset yet" if not runs else
                 "Accuracy against " + ("latency" if use_latency else "MACs (latency not measured)"))
        self.scatter_plot.setTitle(title, color=theme.plot_foreground().name())
        pos = self.positions(runs, use_latency)
        spots = []
        for run in runs:
            m = run.done.after
            spots.append({"pos": (pos[run.run_id][0], m.top1 * 100), "data": run.run_id,
                          "brush": pg.mkBrush(run.colour),
                          "pen": pg.mkPen(theme.plot_foreground(), width=2.5) if run.run_id == selected else None,
                          "size": 17 if run.run_id == selected else 13})
        self.scatter.setData(spots)
        base = [(self._x_of(self.baseline, use_latency), self.baseline)] if self.baseline is not None else []
        set_bars(self.top1_bars, [s["pos"][0] for s in spots] + [x for x, _ in base],
                 [r.done.after for r in runs] + [m for _, m in base], beam=0)
        for label in self.labels:
            self.scatter_plot.removeItem(label)
        self.labels = []
        self.error_bars.setData(x=np.array([pos[r.run_id][0] for r in runs]),
                                y=np.array([r.done.after.top1 * 100 for r in runs]),
                                left=np.array([pos[r.run_id][0] - pos[r.run_id][1] for r in runs]),
                                right=np.array([pos[r.run_id][2] - pos[r.run_id][0] for r in runs]),
                                pen=pg.mkPen(theme.plot_foreground(), width=1))
        xs = [pos[r.run_id][0] for r in runs]
        if self.baseline is not None:
            xs.append(self._x_of(self.baseline, use_latency))
        middle = (min(xs) + max(xs)) / 2 if xs else 0.0
        for run in runs:
            m = run.done.after
            # labels point inwards, so the ones at the right edge are not clipped
            anchor = (1, 1) if pos[run.run_id][0] > middle else (0, 1)
            label = pg.TextItem(f"{run.label} {run.config.method}", color=theme.plot_foreground(), anchor=anchor)
            label.setPos(pos[run.run_id][0], m.top1 * 100)
            self.scatter_plot.addItem(label)
            self.labels.append(label)
        self.baseline_point.setData([])
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
