"""The Experiment tab: define a plan (methods × ratios × recovery, criteria), follow it, compare the runs.

Public API (for gui/main_window.py, which owns the worker and embeds this widget):

    tab = ExperimentTab(parent=None)
    tab.set_model_source("demo:resnet", data_spec="fashion-mnist")   # what the plan will prune
    tab.set_store_path(path)              # result store (default: engine.experiments.default_store_path())
    tab.run_requested.connect(lambda plan: start_worker(lambda cancel: run_plan(plan, ResultStore(
        tab.store_path()), cancel)))     # a ready engine.experiments.Plan; the tab never starts threads
    tab.cancel_requested.connect(worker.cancel)
    worker.progressed.connect(tab.on_event)         # PlanStarted / PlanProgress / PlanRunDone / PlanDone, Progress
    worker.finished / failed / cancelled -> tab.set_running(False)
    tab.run_selected.connect(open_run)              # a run key, from a click in the table or the Pareto scatter
    tab.show_sensitivity(sensitivity_done)          # curves per layer group (engine.sensitivity.SensitivityDone)
    tab.load_store(path)                            # show the results of an earlier plan from a store
    tab.write_report(path)                          # HTML + CSV (also the "Save report…" button)

Changing weights or constraints in the criteria editor re-ranks the results at once, without re-running.
The tab holds the state; the criteria editor, the comparison table and the plots are their own modules
(gui/criteria_table.py, gui/comparison_table.py, gui/experiment_plots.py).
"""
from __future__ import annotations

from html import escape
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal, Slot  # PySide6 before pyqtgraph, so pyqtgraph binds it
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout,
                               QLabel, QLineEdit, QMessageBox, QPushButton, QSizePolicy, QSplitter, QTabWidget,
                               QVBoxLayout, QWidget)

import pyqtgraph as pg

from engine.errors import UserError
from engine.events import Progress
from engine.experiments import (DEFAULT_CRITERIA, Criterion, Plan, PlanDone, PlanProgress, PlanRunDone,
                                PlanRunFailed, PlanRunStarted, PlanStarted, Recovery, ResultStore, RunResult,
                                apply_final_round, default_store_path, rank)
from engine.methods import all_methods
from engine.units import parse_numbers
from gui.comparison_table import ComparisonTable
from gui.criteria_table import CriteriaTable
from gui.experiment_plots import (PALETTE, ParetoView, draw_ratio_curves, draw_sensitivity, ratio_plot,
                                  sensitivity_plot)
from gui.options import OptionField
from gui.widgets import ElidedLabel, VerticalScrollArea


EDITOR_SHARE = 0.35  # of the tab: the editor scrolls, the results are what is read
TABLE_ROWS_SHOWN = 4  # rows of the comparison table always in sight: the original and three runs
NARROW_WIDTH = 760  # px: the editor (about 390) and results of at least 370 side by side; below, one above the other


class ExperimentTab(QWidget):
    """Plan editor, comparison table, Pareto scatter, accuracy-vs-ratio curves, sensitivity curves and the verdict."""

    run_requested = Signal(object)  # an engine.experiments.Plan
    cancel_requested = Signal()
    run_selected = Signal(str)  # a run key

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._source, self._data_spec = "demo:resnet", "fashion-mnist"
        self._store_path: Path = default_store_path()
        self.store_label: ElidedLabel | None = None
        self._results: dict[str, RunResult] = {}
        self._order: list[str] = []
        self._baseline: RunResult | None = None
        self._ranking = None
        self._colours: dict[str, str] = {}
        self._ratio_curves: dict[tuple, pg.PlotDataItem] = {}
        self._spot_keys: list[str] = []
        self._arranged = False  # the panes get their shares at the first resize

        self._split = split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(self._build_editor())
        self.set_store_path(self._store_path)
        split.addWidget(self._build_results())
        split.setStretchFactor(1, 3)
        split.setCollapsible(0, False)
        split.setCollapsible(1, False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(split)
        self.set_running(False)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Side by side when there is room, else the plan above its results: beside the Lesson panel at 1280 px
        the editor kept 390 px and left the results (where step 6's answer is read) 170 px and a scroll bar."""
        super().resizeEvent(event)
        wanted = Qt.Orientation.Vertical if self.width() < NARROW_WIDTH else Qt.Orientation.Horizontal
        if self._split.orientation() != wanted or not self._arranged:
            self._split.setOrientation(wanted)
            self._arranged = True
            QTimer.singleShot(0, self, self._share)  # once the panes have their new sizes

    def _share(self) -> None:
        """The editor's share of the tab, then the table's and the plots' halves of the results: left to their size
        hints the plots took three quarters of the results and the table showed one row."""
        total = sum(self._split.sizes())
        self._split.setSizes([int(total * EDITOR_SHARE), total - int(total * EDITOR_SHARE)])
        total = sum(self.results_split.sizes())
        self.results_split.setSizes([total - total // 2, total // 2])

    # --------------------------------------------------------------------- building
    def _build_editor(self) -> QWidget:
        panel = QWidget()
        col = QVBoxLayout(panel)
        col.addWidget(self._build_methods())
        col.addWidget(self._build_options())
        col.addWidget(self._build_criteria())
        col.addStretch(1)
        # Run plan, Cancel and the plan's progress stay in sight below the scrolling editor (at 720 px high they
        # were below the fold, as the Prune panel's Run would be without the same arrangement)
        editor = QWidget()
        outer = QVBoxLayout(editor)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(VerticalScrollArea(panel), 1)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run plan")
        self.run_button.clicked.connect(self._on_run_clicked)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_requested.emit)
        self.report_button = QPushButton("Save report…")
        self.report_button.clicked.connect(self._on_report_clicked)
        for b in (self.run_button, self.cancel_button, self.report_button):
            buttons.addWidget(b)
        outer.addLayout(buttons)
        self.status_label = QLabel("")
        self.status_label.setTextFormat(Qt.TextFormat.RichText)  # messages are escaped HTML
        outer.addWidget(self.status_label)
        outer.addWidget(self.in_flight_label)  # runs on the Ray cluster now
        wrapping = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        wrapping.setHeightForWidth(True)  # as many lines as the text needs at the pane's width
        for label in (self.status_label, self.in_flight_label):
            label.setWordWrap(True)
            label.setSizePolicy(wrapping)  # a long message wraps, never widens the pane
        return editor

    def _build_methods(self) -> QGroupBox:
        methods = QGroupBox("Methods")
        grid = QGridLayout(methods)
        self.method_boxes: dict[str, QCheckBox] = {}
        for i, m in enumerate(all_methods()):
            box = QCheckBox(m.name)
            box.setToolTip(m.explain())
            box.setChecked(m.compared_by_default)
            self.method_boxes[m.name] = box
            grid.addWidget(box, i // 2, i % 2)
        return methods

    def _build_options(self) -> QGroupBox:
        form_box = QGroupBox("Ratios and recovery")
        form = QFormLayout(form_box)
        self.ratios_edit = QLineEdit("0.3, 0.5, 0.7")
        self.ratios_edit.setObjectName("plan_ratios")  # named: the real-window test types into these
        self.ratios_edit.setToolTip("Pruning ratios, comma-separated: share of channels (structured) or weights "
                                    "(unstructured) removed")
        form.addRow("Ratios", self.ratios_edit)
        self.speedups_edit = QLineEdit("")
        self.speedups_edit.setPlaceholderText("e.g. 2, 3 (optional)")
        self.speedups_edit.setToolTip("Target speed-ups in MACs (structured methods): prune until MACs are this "
                                      "many times lower")
        form.addRow("Target speed-ups", self.speedups_edit)
        # Generated from PruneConfig's descriptions; a plan's 0 batches or images means "none" and "all".
        self.fields = {"bn_recalibrate": OptionField("bn_recalibrate"), "bn_batches": OptionField("bn_batches"),
                       "finetune_batches": OptionField("finetune_batches", low=0, high=100_000),
                       "distill": OptionField("distill"), "eval_limit": OptionField("eval_limit", low=0),
                       "measure_speed": OptionField("measure_speed"), "seed": OptionField("seed", high=2**31 - 1)}
        self.bn_check = self.fields["bn_recalibrate"].widget
        form.addRow("Recovery", self.bn_check)
        # the Prune panel's 10 batches, not the command line's 40: a third of a lesson plan's time went here
        self.bn_batches_spin = self.fields["bn_batches"].widget
        self.bn_batches_spin.setObjectName("plan_bn_batches")
        self.bn_check.toggled.connect(self.bn_batches_spin.setEnabled)
        self.bn_batches_spin.setEnabled(self.bn_check.isChecked())
        form.addRow("BatchNorm batches", self.bn_batches_spin)
        self.finetune_spin = self.fields["finetune_batches"].widget
        self.finetune_spin.setValue(50)
        self.finetune_spin.setObjectName("plan_finetune_batches")
        self.finetune_spin.setSpecialValueText("none")
        form.addRow("Fine-tune batches", self.finetune_spin)
        self.distill_check = self.fields["distill"].widget
        form.addRow("", self.distill_check)
        self.guided_check = QCheckBox("add sensitivity-guided runs")
        self.guided_check.setToolTip("Add sensitivity-guided runs (same MACs): scan per-layer sensitivity once, "
                                     "then also prune each structured method × ratio with per-layer ratios: "
                                     "sensitive layers pruned less")
        form.addRow("", self.guided_check)
        self.eval_spin = self.fields["eval_limit"].widget
        self.eval_spin.setSpecialValueText("all test images")
        self.eval_spin.setObjectName("plan_eval_images")
        form.addRow("Evaluate on", self.eval_spin)
        self.speed_check = self.fields["measure_speed"].widget
        self.speed_check.setText("Measure latency and memory")
        form.addRow("", self.speed_check)
        self.save_check = QCheckBox("Save each run's model files")
        self.save_check.setChecked(True)
        self.save_check.setToolTip("Keep every run's deployment set (PyTorch, ONNX, weights, model card) beside the "
                                   "result store; off keeps only the figures (faster: a lesson's plan leaves it off)")
        form.addRow("", self.save_check)
        self.seed_spin = self.fields["seed"].widget
        form.addRow("Seed", self.seed_spin)
        form.addRow("Result store", self._build_store_row())
        form.addRow("Run on", self._build_run_on())
        return form_box

    def _build_store_row(self) -> QHBoxLayout:
        store_row = QHBoxLayout()
        self.store_label = ElidedLabel()  # a long path would widen the pane; the tooltip has it whole
        store_row.addWidget(self.store_label, 1)
        self.choose_button = QPushButton("Choose…")
        self.choose_button.setToolTip("Store this plan's runs in another file (a new one, or an existing store to "
                                      "add to or resume)")
        self.choose_button.clicked.connect(self._on_choose_store)
        store_row.addWidget(self.choose_button)
        return store_row

    def _build_criteria(self) -> QGroupBox:
        crit_box = QGroupBox("Criteria (weights and constraints; edits re-rank at once)")
        crit_layout = QVBoxLayout(crit_box)
        self.criteria_table = CriteriaTable()
        self.set_criteria(DEFAULT_CRITERIA)
        self.criteria_table.itemChanged.connect(self._on_criteria_changed)
        crit_layout.addWidget(self.criteria_table)
        self.criteria_error = QLabel("")
        self.criteria_error.setStyleSheet("color: #b00020")
        crit_layout.addWidget(self.criteria_error)
        return crit_box

    def _build_run_on(self) -> QWidget:
        """"this computer" or "Ray cluster at ADDRESS", remembered in the settings; the window stays a client
        (the runs go to the cluster, the store stays here)."""
        from gui.settings import Settings

        self._settings = Settings()
        row = QWidget()
        line = QHBoxLayout(row)
        line.setContentsMargins(0, 0, 0, 0)
        self.run_on_combo = QComboBox()
        self.run_on_combo.addItem("this computer", "local")
        self.run_on_combo.addItem("Ray cluster at", "ray")
        self.run_on_combo.setToolTip("Where the plan's runs execute. A Ray cluster runs several at once; this "
                                     "computer keeps the result store either way (docs/cluster.md)")
        self.address_edit = QLineEdit(self._settings.value("experiment/ray_address", "", str))
        self.address_edit.setPlaceholderText("HOST:PORT, auto, or empty: start Ray here")
        self.address_edit.setToolTip("The Ray head's address as `ray start --head` prints it (HOST:6379), auto "
                                     "for the cluster started on this computer, or empty to start Ray here")
        line.addWidget(self.run_on_combo)
        line.addWidget(self.address_edit, 1)
        self.in_flight_label = QLabel("")
        self.in_flight_label.setWordWrap(True)
        self.run_on_combo.setCurrentIndex(max(0, self.run_on_combo.findData(
            self._settings.value("experiment/executor", "local", str))))
        self.run_on_combo.currentIndexChanged.connect(self._on_run_on_changed)
        self.address_edit.editingFinished.connect(self._on_run_on_changed)
        self.address_edit.setEnabled(self.run_on_combo.currentData() == "ray")
        return row

    @Slot()
    def _on_run_on_changed(self, *_args) -> None:
        self.address_edit.setEnabled(self.run_on_combo.currentData() == "ray")
        self._settings.set_value("experiment/executor", self.run_on_combo.currentData())
        self._settings.set_value("experiment/ray_address", self.address_edit.text().strip())

    def _build_results(self) -> QWidget:
        panel = QWidget()
        col = QVBoxLayout(panel)
        self.recommendation_label = QLabel("Run a plan to compare methods.")
        self.recommendation_label.setWordWrap(True)
        self.recommendation_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = QFont(self.recommendation_label.font())
        font.setPointSizeF(font.pointSizeF() * 1.1)
        self.recommendation_label.setFont(font)
        col.addWidget(self.recommendation_label)

        self.table = ComparisonTable()
        self.table.cellClicked.connect(self._on_table_clicked)
        # Beside the Lesson panel at 1280x720 the plots took three quarters of the height and left the table (where
        # step 6's answer is read) one row: the table keeps its header and TABLE_ROWS_SHOWN rows
        self.table.setMinimumHeight(self.table.horizontalHeader().sizeHint().height() + 2 * self.table.frameWidth()
                                    + TABLE_ROWS_SHOWN * self.table.verticalHeader().defaultSectionSize())
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self._build_result_tabs())
        split.setCollapsible(0, False)
        self.results_split = split
        col.addWidget(split, 1)
        return panel

    def _build_result_tabs(self) -> QTabWidget:
        tabs = QTabWidget()
        pareto = ParetoView()
        self.pareto_axis, self.pareto_plot = pareto.axis, pareto.plot
        self.front_curve, self.scatter, self.original_point = pareto.front_curve, pareto.scatter, pareto.original_point
        self.pareto_axis.currentIndexChanged.connect(lambda _: self._refresh_pareto())
        self.scatter.sigClicked.connect(self._on_points_clicked)
        self.pareto_view = pareto
        tabs.addTab(pareto, "Pareto front")
        self.ratio_plot = ratio_plot()
        tabs.addTab(self.ratio_plot, "Accuracy vs ratio")
        self.sensitivity_plot = sensitivity_plot()
        tabs.addTab(self.sensitivity_plot, "Sensitivity")
        self.result_tabs = tabs
        return tabs

    # --------------------------------------------------------------------- inputs
    def set_model_source(self, source: str, data_spec: str = "fashion-mnist") -> None:
        """The model (a CLI source: demo:resnet, a file, ...) and dataset spec the plan will use; the ranking,
        Pareto front and curves show only the runs made on them, as Live plots and Results do."""
        changed = (source, data_spec) != (self._source, self._data_spec)
        self._source, self._data_spec = source, data_spec
        if changed:
            self._forget_curves()  # the other model's curves
            self._refresh()

    def _belongs(self, result: RunResult | None) -> bool:
        """A run (or the baseline) made on the model and dataset in use; one with neither recorded always is."""
        return result is not None and (not result.model or result.model == self._source) and \
            (not result.dataset or result.dataset == self._data_spec)

    def _shown(self) -> list[RunResult]:
        return [self._results[k] for k in self._order if self._belongs(self._results[k])]

    def _shown_baseline(self) -> RunResult | None:
        return self._baseline if self._belongs(self._baseline) else None

    def _forget_curves(self) -> None:
        for item in self._ratio_curves.values():
            self.ratio_plot.removeItem(item)
        self._ratio_curves.clear()

    def set_store_path(self, path: str | Path) -> None:
        """Where plans store their runs."""
        self._store_path = Path(path)
        if self.store_label is not None:
            self.store_label.set_full_text(str(self._store_path))
            self.store_label.setToolTip(f"{escape(str(self._store_path))}<br><br>Every finished run is written "
                                        "here at once; running the same plan again skips the runs already stored")

    def store_path(self) -> Path:
        """The result store the next plan writes to."""
        return self._store_path

    def set_methods(self, names) -> None:
        """Tick exactly these methods."""
        wanted = set(names)
        for name, box in self.method_boxes.items():
            box.setChecked(name in wanted)

    def set_criteria(self, criteria) -> None:
        """Fill the criteria editor."""
        self.criteria_table.set_criteria(criteria)

    def criteria(self) -> tuple[Criterion, ...]:
        """The criteria as edited (raises UserError naming the bad cell)."""
        return self.criteria_table.criteria()

    def plan(self) -> Plan:
        """The plan the widgets describe (raises UserError with a message for the user)."""
        methods = tuple(n for n, b in self.method_boxes.items() if b.isChecked())
        if not methods:
            raise UserError("tick at least one method")
        ratios = parse_numbers(self.ratios_edit.text(), "ratios", 0.0, 1.0)
        speedups = parse_numbers(self.speedups_edit.text(), "target speed-ups", 1.0)
        if not ratios and not speedups:
            raise UserError("give at least one ratio (e.g. 0.5) or target speed-up (e.g. 2)")
        value = {name: fld.value() for name, fld in self.fields.items()}
        options: dict = {}
        if value["bn_recalibrate"]:
            options["bn_recalibrate"] = True
            options["bn_batches"] = value["bn_batches"]
        if value["finetune_batches"]:
            options["finetune_batches"] = value["finetune_batches"]
            options["distill"] = value["distill"]
        prune = {"measure_speed": value["measure_speed"]}
        if value["eval_limit"]:
            prune["eval_limit"] = value["eval_limit"]
        plan = Plan(model=self._source, data=self._data_spec, methods=methods, ratios=ratios,
                    target_speedups=speedups, recoveries=(Recovery(Recovery(options=options).summary, options),),
                    prune=prune, seed=value["seed"], criteria=self.criteria(), name="gui",
                    save_models=self.save_check.isChecked(),
                    store=str(self._store_path), sensitivity_guided=self.guided_check.isChecked(),
                    executor=self.run_on_combo.currentData(), address=self.address_edit.text().strip() or None)
        plan.configs()  # validates every combination
        return plan

    # --------------------------------------------------------------------- actions
    @Slot()
    def _on_run_clicked(self) -> None:
        try:
            plan = self.plan()
        except UserError as exc:
            self.status_label.setText(f"<span style='color:#b00020'>{escape(str(exc))}</span>")
            return
        self.clear_results()
        self.set_running(True)
        self.status_label.setText(f"{len(plan.configs())} runs requested")
        self.run_requested.emit(plan)

    def set_running(self, running: bool) -> None:
        """Enable Run or Cancel (the main window calls this when its worker stops); the store cannot
        change under a running plan."""
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.choose_button.setEnabled(not running)
        self.run_on_combo.setEnabled(not running)
        self.address_edit.setEnabled(not running and self.run_on_combo.currentData() == "ray")
        if not running:
            self.in_flight_label.setText("")

    @Slot()
    def _on_choose_store(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Result store", str(self._store_path),
                                              "PruneLab result stores (*.sqlite *.db);;All files (*)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.set_store_path(path)

    @Slot()
    def _on_report_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save report", "report.html", "HTML (*.html)")
        if path:
            try:
                html, csv = self.write_report(path)
            except UserError as exc:
                QMessageBox.warning(self, "Report", str(exc))
                return
            self.status_label.setText(escape(f"wrote {html} and {csv}"))

    def write_report(self, path: str | Path):
        """Write the HTML report and CSV of the current store; returns both paths."""
        from engine.report import write_report

        if not self._store_path.exists():
            raise UserError(f"no results yet in {self._store_path}; run a plan first")
        return write_report(ResultStore(self._store_path, read_only=True), path, criteria=self.criteria())

    def load_store(self, path: str | Path, plan_name: str | None = None) -> None:
        """Show the results of a stored plan (the most recent by default)."""
        store = ResultStore(path, read_only=True)  # looking never changes the file
        self.set_store_path(path)
        plans = store.plans()
        plan = next((p for p in plans if p["name"] == plan_name), None) if plan_name else (plans[-1] if plans else None)
        self.clear_results()
        if plan:
            # latency and speed-up from the plan's final comparison round, as the report shows them
            results, self._baseline = apply_final_round(store.results(plan.get("keys")),
                                                        store.get(plan.get("baseline", "")), plan.get("final_round"))
            self.set_criteria(tuple(Criterion.from_json(c) for c in plan.get("criteria", [])) or DEFAULT_CRITERIA)
        else:
            results = store.results()
        for r in results:
            self._add_result(r)
        self._refresh()

    # --------------------------------------------------------------------- events
    def clear_results(self) -> None:
        """Forget the shown runs (a new plan starts)."""
        self._results.clear()
        self._order.clear()
        self._baseline = None
        self._ranking = None
        self._forget_curves()
        self._refresh()

    @Slot(object)
    def on_event(self, event) -> None:
        """Feed any event of run_plan (others are ignored)."""
        if isinstance(event, PlanStarted):
            self._baseline = event.baseline
            self.status_label.setText(f"{len(event.keys)} runs, {event.skipped} already stored")
            self._refresh()
        elif isinstance(event, PlanRunStarted):  # a Ray worker began a run
            self.status_label.setText(escape(event.message))
            self.in_flight_label.setText(escape(f"In flight ({len(event.running)}): " + ", ".join(event.running)))
        elif isinstance(event, PlanProgress):
            self.status_label.setText(escape(event.message or event.label))
        elif isinstance(event, Progress):
            self.status_label.setText(escape(f"{event.phase}: {event.message} ({event.fraction:.0%})"))
        elif isinstance(event, PlanRunDone):
            self._add_result(event.result)
            self._refresh()
        elif isinstance(event, PlanRunFailed):
            self.status_label.setText(escape(f"run {event.index}/{event.total} {event.label} failed: {event.message}"))
        elif isinstance(event, PlanDone):
            self._baseline = event.baseline
            for r in event.results:  # their latency and speed-up now come from the final comparison round
                self._add_result(r)
            self.status_label.setText(escape(f"done: {event.ran} runs, {event.skipped} already stored, "
                                             f"{event.seconds:.0f} s; stored in {Path(event.store).name}"
                                             + (f". {event.latency_source}" if event.latency_source else "")))
            self.status_label.setToolTip(escape(str(event.store)))
            self.set_running(False)
            self._refresh()

    def _add_result(self, r: RunResult) -> None:
        if r.key not in self._results:
            self._order.append(r.key)
        self._results[r.key] = r
        if r.method not in self._colours:
            self._colours[r.method] = PALETTE[len(self._colours) % len(PALETTE)]

    def result(self, key: str) -> RunResult | None:
        """A shown run (from the plan that ran or the store that was opened)."""
        return self._results.get(key)

    def keys(self) -> list[str]:
        """Shown run keys, in the ranking's order."""
        if self._ranking is None:
            return [r.key for r in self._shown()]
        return [e.result.key for e in self._ranking.entries]

    def select_run(self, key: str) -> None:
        """Select a run in the table and announce it."""
        keys = self.keys()
        if key in keys:
            self.table.selectRow(keys.index(key) + (1 if self._baseline else 0))
        self.run_selected.emit(key)

    @Slot(int, int)
    def _on_table_clicked(self, row: int, _col: int) -> None:
        index = row - (1 if self._baseline else 0)
        keys = self.keys()
        if 0 <= index < len(keys):
            self.run_selected.emit(keys[index])

    def _on_points_clicked(self, _item, points, *_args) -> None:
        if len(points):
            key = points[0].data()
            if key:
                self.select_run(key)

    @Slot()
    def _on_criteria_changed(self, *_args) -> None:
        self._refresh()

    # --------------------------------------------------------------------- views
    def _refresh(self) -> None:
        results = self._shown()
        try:
            criteria = self.criteria()
            self.criteria_error.setText("")
        except UserError as exc:
            self.criteria_error.setText(str(exc))
            return
        baseline = self._shown_baseline()
        self._ranking = rank(results, criteria, baseline, model=self._source) if results else None
        aside = len(self._order) - len(results)
        note = (f" ({aside} run{'s' if aside != 1 else ''} of another model or dataset kept aside: load it to see "
                f"{'them' if aside != 1 else 'it'})") if aside else ""
        self.recommendation_label.setText((self._ranking.recommendation if self._ranking else
                                           "Run a plan to compare methods.") + note)
        self._refresh_table()
        self._refresh_pareto()
        self._refresh_ratio_curves()

    def _refresh_table(self) -> None:
        self.table.show_ranking(self._ranking, self._shown_baseline())

    def _refresh_pareto(self) -> None:
        self.pareto_view.draw(self._ranking, self._shown_baseline(), self._colours)

    def _refresh_ratio_curves(self) -> None:
        draw_ratio_curves(self.ratio_plot, self._ratio_curves, self._shown(),
                          self._shown_baseline(), self._colours)

    def show_sensitivity(self, result) -> None:
        """Draw a scan (engine.sensitivity.SensitivityDone): drop against ratio, one curve per layer group."""
        draw_sensitivity(self.sensitivity_plot, result)
        self.result_tabs.setCurrentWidget(self.sensitivity_plot)
