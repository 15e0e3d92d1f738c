"""The main window: model & data, method panel, graph, live plots, histograms, results, experiments.

Widgets react to state through `_on_<event>` slots; the window owns the state (the loaded model,
the runs of the session) and hands long work to the one worker (gui/worker.py).
"""
from __future__ import annotations

import gc
import logging
from html import escape
import tempfile
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QGuiApplication, QIcon, QKeySequence
from PySide6.QtWidgets import (QComboBox, QDockWidget, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout,
                               QInputDialog, QLabel, QMainWindow, QMessageBox, QProgressBar, QScrollArea, QStyle,
                               QTabWidget, QToolButton, QVBoxLayout, QWidget)

from engine.budget import DEFAULT_SHARE, guarded, parse_limit
from engine.data import Dataset
from engine.errors import NeedsTrust, UserError
from engine.events import EpochDone, Progress
from engine.experiments import (PlanDone, PlanProgress, PlanRunDone, PlanRunFailed, PlanStarted, ResultStore,
                                run_plan)
from engine.methods import get_method
from engine.models import DEMO_ARCHS, DEMO_TITLES, ModelBundle
from engine.pruning import RunDone, StepDone
from engine.sensitivity import SensitivityDone
from engine.units import fmt_bytes, fmt_count
from gui import theme
from gui.experiment_tab import ExperimentTab
from gui.graph_view import GraphView
from gui.histograms import HistogramView
from gui.jobs import (Exported, LoadRequest, Loaded, PrunedModel, Sensitivity, export_job, load_job, prune_job,
                      sensitivity_job)
from gui.method_panel import MethodPanel
from gui.plots import LivePlots
from gui.results import ResultsView, RunRecord
from gui.settings import Settings
from gui.worker import Failure, Worker, start_worker

log = logging.getLogger(__name__)

DEFAULT_MODEL = "demo:resnet"
DEFAULT_DATA = "fashion-mnist"
MODEL_FILTER = "PyTorch models (*.pt *.pth *.pkl *.ckpt *.bin);;All files (*)"
MODEL_SUFFIXES = (".pt", ".pth", ".pkl", ".ckpt", ".bin", ".tar")
OPEN_FILE, OPEN_FOLDER, OPEN_CIFAR = "__open_file__", "__imagefolder__", "__cifar10__"
HINT_START = ("<b>Try it:</b> the demo model is loaded and <b>{method}</b> is selected. Press <b>Run</b> "
              "(Ctrl+R) and watch accuracy, size and speed change step by step. Then pick another method and run "
              "again: each run gets its own colour, and the <i>Results</i> tab compares them.")
HINT_AFTER_RUN = ("<b>Next:</b> open <i>Weights</i> to see what was removed (red channels, or a spike at zero for "
                  "unstructured methods), <i>Network</i> to compare the graphs, or run another method to compare.")


class MainWindow(QMainWindow):
    """PruneLab's main window."""

    job_stopped = Signal(str)  # emitted after any background job ended ("load", "run", "export")
    run_finished = Signal(int)  # a run finished with results

    def __init__(self, settings: Settings | None = None, autoload: bool = True, log_path: Path | None = None) -> None:
        super().__init__()
        self.settings = settings or Settings()
        self.log_path = log_path
        self.setWindowTitle("PruneLab")
        self.setAcceptDrops(True)
        self.work_dir = Path(tempfile.mkdtemp(prefix="prunelab-gui-"))

        # state
        self.loaded: Loaded | None = None
        self.raw_data_cache: dict[str, Dataset] = {}
        self.runs: dict[int, RunRecord] = {}
        self.selected_run: int | None = None
        self.worker: Worker | None = None
        self.job_thread = None
        self.job_kind = ""
        self.current_run: int | None = None
        self.error_box: QMessageBox | None = None
        self.pending_request: LoadRequest | None = None
        self.startup_load = False
        self.pending_trust: tuple[LoadRequest, str, str] | None = None
        self.sensitivity: Sensitivity | None = None
        self.plan_position = ""  # "Plan run 3/24 · " while a plan runs

        self._build_actions()
        self._build_central()
        self._build_side_panel()
        self._build_status_bar()
        self._build_menus()
        self._restore_settings()
        self._update_actions()
        if autoload:
            QTimer.singleShot(0, self.load_startup_model)

    # ===================================================================== construction
    def _action(self, text: str, tip: str, shortcut: Any = None, slot=None) -> QAction:
        action = QAction(text, self)
        action.setToolTip(tip + (f" ({QKeySequence(shortcut).toString()})" if shortcut else ""))
        action.setStatusTip(tip)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        if slot:
            action.triggered.connect(slot)
        return action

    def _icon(self, pixmap: QStyle.StandardPixmap) -> QIcon:
        return self.style().standardIcon(pixmap)

    def _build_actions(self) -> None:
        self.open_action = self._action("&Open model…", "Open a model file", QKeySequence.StandardKey.Open,
                                        self._on_open_model)
        self.run_action = self._action("&Run", "Prune a copy of the model with the selected method",
                                       "Ctrl+R", self.start_run)
        self.run_action.setShortcuts([QKeySequence("Ctrl+R"), QKeySequence("F5")])
        self.cancel_action = self._action("&Cancel", "Stop the running job (the loaded model is never changed)",
                                          "Esc", self.cancel_job)
        self.export_model_action = self._action("Export pruned &model…", "Save the selected run's pruned model, "
                                                "its ONNX export and metadata to a folder", "Ctrl+E",
                                                self._on_export_model)
        self.export_onnx_action = self._action("Export &ONNX…", "Save the selected run's model (or the original) "
                                               "as ONNX", "Ctrl+Shift+E", self._on_export_onnx)
        self.export_plots_action = self._action("Export &plots…", "Save the plots of the current tab as PNG or SVG",
                                                "Ctrl+Shift+P", self._on_export_plots)
        self.export_csv_action = self._action("Export results as &CSV…", "Save the results table as CSV",
                                              "Ctrl+Shift+C", self._on_export_csv)
        self.report_action = self._action("Save experiment &report…", "Write the Experiment tab's comparison as a "
                                          "self-contained HTML report plus CSV", "Ctrl+Shift+R",
                                          self._on_save_report)
        self.open_store_action = self._action("Open result &store…", "Show the runs of an earlier experiment plan "
                                              "(a PruneLab .sqlite result store)", None, self._on_open_store)
        for action, pixmap in ((self.open_action, QStyle.StandardPixmap.SP_DialogOpenButton),
                               (self.run_action, QStyle.StandardPixmap.SP_MediaPlay),
                               (self.cancel_action, QStyle.StandardPixmap.SP_MediaStop),
                               (self.export_model_action, QStyle.StandardPixmap.SP_DialogSaveButton),
                               (self.export_plots_action, QStyle.StandardPixmap.SP_FileDialogDetailedView),
                               (self.export_csv_action, QStyle.StandardPixmap.SP_FileDialogListView)):
            action.setIcon(self._icon(pixmap))
        self.quit_action = self._action("&Quit", "Close PruneLab", QKeySequence.StandardKey.Quit, self.close)
        self.about_action = self._action("&About PruneLab", "Versions of PruneLab, PyTorch, Torch-Pruning and Qt",
                                         "F1", self._on_about)

    def _build_central(self) -> None:
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 0)
        hint_row = QHBoxLayout()
        self.hint_label = QLabel()
        self.hint_label.setWordWrap(True)
        self.hint_label.setToolTip("What to try next")
        self.hint_frame = QWidget()
        self.hint_frame.setObjectName("hint")
        self.hint_frame.setAutoFillBackground(True)
        pal = self.hint_frame.palette()
        pal.setColor(self.hint_frame.backgroundRole(), pal.color(pal.ColorRole.AlternateBase))
        self.hint_frame.setPalette(pal)
        hint_row.setContentsMargins(8, 4, 4, 4)
        hint_row.addWidget(self.hint_label, 1)
        close_hint = QToolButton()
        close_hint.setText("✕")
        close_hint.setAutoRaise(True)
        close_hint.setToolTip("Hide the hint")
        close_hint.clicked.connect(self.hint_frame.hide)
        hint_row.addWidget(close_hint, 0, Qt.AlignmentFlag.AlignTop)
        self.hint_frame.setLayout(hint_row)
        layout.addWidget(self.hint_frame)

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.graph_view = GraphView()
        self.plots = LivePlots()
        self.histograms = HistogramView()
        self.results = ResultsView()
        self.experiment = ExperimentTab()
        store = self.settings.value("experiment/store", "", str)
        if store:
            self.experiment.set_store_path(store)
        self.tabs.addTab(self.graph_view, "Network")
        self.tabs.addTab(self.plots, "Live plots")
        self.tabs.addTab(self.histograms, "Weights")
        self.tabs.addTab(self.results, "Results")
        self.tabs.addTab(self.experiment, "Experiment")
        for index, tip in enumerate(("The model's graph (Netron) and its prunable layers",
                                     "Accuracy, parameters, MACs and latency at each pruning step, one curve per run",
                                     "Weight histograms of the selected layer before and after pruning",
                                     "All runs of this session: table, scatter, export",
                                     "Compare several methods and ratios in one plan, rank them by your criteria")):
            self.tabs.setTabToolTip(index, tip)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

        self.graph_view.layer_table.layer_selected.connect(self._on_layer_selected)
        self.histograms.layer_selected.connect(self._on_layer_selected)
        self.results.run_selected.connect(self._on_run_selected)
        self.graph_view.scan_button.clicked.connect(self.start_sensitivity_scan)
        self.graph_view.apply_button.clicked.connect(self._on_apply_suggested_ratios)
        self.experiment.run_requested.connect(self.start_plan)
        self.experiment.cancel_requested.connect(self.cancel_job)
        self.experiment.run_selected.connect(self._on_plan_run_selected)

    def _build_side_panel(self) -> None:
        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(6, 6, 6, 6)
        source_box = QGroupBox("Model and data")
        form = QFormLayout(source_box)
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("The model to prune: a built-in demo, a recent file, or open one "
                                    "(you can also drop a file onto the window)")
        self.model_combo.activated.connect(self._on_model_combo)
        form.addRow("Model", self.model_combo)
        self.data_combo = QComboBox()
        self.data_combo.setToolTip("The dataset for calibration, recovery and evaluation: Fashion-MNIST is built in; "
                                   "an ImageFolder (one sub-folder per class) or a CIFAR-10 folder can be opened")
        self.data_combo.activated.connect(self._on_data_combo)
        form.addRow("Dataset", self.data_combo)
        self.summary_label = QLabel("Loading…")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary_label.setToolTip("The loaded model: architecture, size, cost per image and accuracy")
        form.addRow(self.summary_label)
        layout.addWidget(source_box)
        self.method_panel = MethodPanel()
        layout.addWidget(self.method_panel, 1)
        self.run_button = QToolButton()
        self.run_button.setDefaultAction(self.run_action)
        self.run_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.run_button.setMinimumHeight(34)
        self.run_button.setSizePolicy(self.run_button.sizePolicy().horizontalPolicy().Expanding,
                                      self.run_button.sizePolicy().verticalPolicy())
        font = self.run_button.font()
        font.setBold(True)
        self.run_button.setFont(font)
        self.cancel_button = QToolButton()
        self.cancel_button.setDefaultAction(self.cancel_action)
        self.cancel_button.setMinimumHeight(34)
        self.cancel_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        scroll = QScrollArea()
        scroll.setWidget(panel)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # Run/Cancel stay visible below the scrolling options, whatever the screen height
        dock_body = QWidget()
        dock_layout = QVBoxLayout(dock_body)
        dock_layout.setContentsMargins(0, 0, 0, 6)
        dock_layout.addWidget(scroll, 1)
        buttons = QHBoxLayout()
        buttons.setContentsMargins(6, 0, 6, 0)
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button)
        dock_layout.addLayout(buttons)
        self.side_dock = QDockWidget("Prune", self)
        self.side_dock.setObjectName("side_dock")
        self.side_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                   | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.side_dock.setWidget(dock_body)
        panel.setMinimumWidth(330)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.side_dock)
        self.method_panel.options_changed.connect(self._on_options_changed)
        self.method_panel.method_changed.connect(self._refresh_start_hint)
        self._refresh_start_hint()
        self._fill_model_combo()
        self._fill_data_combo()

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.phase_label = QLabel("Ready")
        self.phase_label.setToolTip("What the background job is doing")
        self.progress_bar = QProgressBar()
        self.progress_bar.setMaximumWidth(260)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setToolTip("Progress of the current phase")
        self.eta_label = QLabel("")
        self.eta_label.setToolTip("Estimated time left in this phase")
        # permanent widgets: temporary messages (hover hints, "Wrote ...") never hide the job's phase
        bar.addPermanentWidget(self.phase_label)
        bar.addPermanentWidget(self.eta_label)
        bar.addPermanentWidget(self.progress_bar)
        self.progress_bar.hide()

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(self.open_action)
        demo_menu = file_menu.addMenu("Built-in &demo models")
        for name in DEMO_ARCHS:
            action = demo_menu.addAction(DEMO_TITLES.get(name, name))
            action.setToolTip(f"Load demo:{name}, trained on Fashion-MNIST")
            action.triggered.connect(lambda _=False, n=name: self.load(f"demo:{n}", DEFAULT_DATA))
        self.recent_menu = file_menu.addMenu("&Recent models")
        self.recent_menu.aboutToShow.connect(self._on_recent_menu)
        file_menu.addSeparator()
        for action in (self.export_model_action, self.export_onnx_action, self.export_plots_action,
                       self.export_csv_action):
            file_menu.addAction(action)
        file_menu.addSeparator()
        file_menu.addAction(self.open_store_action)
        file_menu.addAction(self.report_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        run_menu = self.menuBar().addMenu("&Prune")
        run_menu.addAction(self.run_action)
        run_menu.addAction(self.cancel_action)
        view_menu = self.menuBar().addMenu("&View")
        view_menu.addAction(self.side_dock.toggleViewAction())
        show_hint = view_menu.addAction("Show the &hint")
        show_hint.triggered.connect(self.hint_frame.show)
        settings_menu = self.menuBar().addMenu("&Settings")
        settings_menu.addAction("&Memory limit…", self.ask_memory_limit)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(self.about_action)
        toolbar = self.addToolBar("Main")
        toolbar.setObjectName("main_toolbar")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for action in (self.open_action, self.run_action, self.cancel_action, self.export_model_action,
                       self.export_plots_action, self.export_csv_action):
            toolbar.addAction(action)

    def _fill_model_combo(self, current: str | None = None) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for name in DEMO_ARCHS:
            self.model_combo.addItem(f"Demo: {DEMO_TITLES.get(name, name)}", f"demo:{name}")
        for path in self.settings.recent("models"):
            if not path.startswith("demo:"):
                self.model_combo.addItem(Path(path).name, path)
                self.model_combo.setItemData(self.model_combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        if current and self.model_combo.findData(current) < 0:
            self.model_combo.addItem(Path(current).name, current)
        self.model_combo.addItem("Open a model file…", OPEN_FILE)
        if current:
            self.model_combo.setCurrentIndex(self.model_combo.findData(current))
        self.model_combo.blockSignals(False)

    def _fill_data_combo(self, current: str | None = None) -> None:
        self.data_combo.blockSignals(True)
        self.data_combo.clear()
        self.data_combo.addItem("Fashion-MNIST (built-in)", DEFAULT_DATA)
        specs = [s for s in self.settings.recent("datasets") if s != DEFAULT_DATA]
        if current and current != DEFAULT_DATA and current not in specs:
            specs.insert(0, current)
        for spec in specs:
            kind, _, path = spec.partition(":")
            self.data_combo.addItem(f"{'CIFAR-10' if kind == 'cifar10' else 'ImageFolder'}: {Path(path).name}", spec)
            self.data_combo.setItemData(self.data_combo.count() - 1, spec, Qt.ItemDataRole.ToolTipRole)
        self.data_combo.addItem("Open an ImageFolder…", OPEN_FOLDER)
        self.data_combo.addItem("Open a CIFAR-10 folder…", OPEN_CIFAR)
        if current:
            self.data_combo.setCurrentIndex(max(0, self.data_combo.findData(current)))
        self.data_combo.blockSignals(False)

    def _restore_settings(self) -> None:
        geometry = self.settings.geometry()
        if geometry is None or not self.restoreGeometry(geometry):
            screen = QGuiApplication.primaryScreen()
            area = screen.availableGeometry() if screen else None
            if area is not None:
                size = QSize(min(1600, int(area.width() * 0.96)), min(1000, int(area.height() * 0.94)))
                self.resize(size)
                self.move(area.center().x() - size.width() // 2, area.center().y() - size.height() // 2)
            else:
                self.resize(1280, 800)
        state = self.settings.window_state()
        if state is not None:
            self.restoreState(state)
        self.method_panel.restore(self.settings.options("method"))

    # ===================================================================== loading
    def load_startup_model(self) -> None:
        """Load the built-in demo model and Fashion-MNIST (the first screen)."""
        import os

        self.startup_load = True
        self.load(os.environ.get("PRUNELAB_START_MODEL", DEFAULT_MODEL), DEFAULT_DATA)

    def load(self, model_src: str | None, data_spec: str, trust: bool = False,
             bundle: ModelBundle | None = None) -> bool:
        """Load a model and dataset in the background; False when another job is running."""
        if self.busy:
            self.statusBar().showMessage("Wait for the running job to finish (or cancel it) first", 5000)
            return False
        request = LoadRequest(model_src, data_spec, trust, bundle, self.raw_data_cache.get(data_spec),
                              export_graph=self.graph_view.enabled, work_dir=self.work_dir)
        self.pending_request = request
        self.summary_label.setText(f"Loading <b>{model_src or bundle.source}</b> with {data_spec}…")
        self._start_job("load", load_job(request))
        return True

    def open_model_file(self, path: str) -> bool:
        """Load a model file with the current dataset."""
        return self.load(path, self.current_data_spec())

    def current_data_spec(self) -> str:
        """The dataset spec in use (or selected)."""
        if self.loaded is not None:
            return self.loaded.request.data_spec
        data = self.data_combo.currentData()
        return data if data and not str(data).startswith("__") else DEFAULT_DATA

    def current_model_src(self) -> str:
        """The model source in use."""
        if self.loaded is not None and self.loaded.request.model_src:
            return self.loaded.request.model_src
        return DEFAULT_MODEL

    def _on_loaded(self, loaded: Loaded) -> None:
        self.loaded = loaded
        # Move everything alive now (Qt wrappers, torch, the model, the dataset) out of the cyclic GC's
        # reach: a full collection triggered by the worker would otherwise scan it all while holding the
        # GIL, freezing the UI for ~200 ms (measured by benchmarks/gui_responsiveness.py).
        gc.freeze()
        self.startup_load = False
        self.raw_data_cache = {loaded.request.data_spec: loaded.raw_data}  # one dataset in memory at a time
        src = loaded.request.model_src
        if src:
            if not src.startswith("demo:"):
                self.settings.add_recent("models", src)
            self._fill_model_combo(src)
        if loaded.request.data_spec != DEFAULT_DATA:
            self.settings.add_recent("datasets", loaded.request.data_spec)
        self._fill_data_combo(loaded.request.data_spec)
        self.graph_view.layer_table.set_layers(loaded.layers, loaded.head)
        self.graph_view.fit_table()
        self.graph_view.set_original(loaded.onnx_path, loaded.onnx_error)
        self.histograms.set_layers([info.name for info in loaded.layers])
        self.histograms.set_steps([], theme.run_colour(0))
        self.histograms.set_data({}, (), theme.run_colour(0))
        self._show_summary(loaded)
        self.sensitivity = None  # a scan belongs to the model it was made on
        self.experiment.set_model_source(loaded.bundle.source or src or "model", loaded.request.data_spec)
        self.selected_run = None
        self.statusBar().showMessage(f"Loaded {loaded.summary['architecture']} with {loaded.data.name}", 5000)
        if loaded.layers:
            self.graph_view.layer_table.select_layer(loaded.layers[0].name)
            self.histograms.select_layer(loaded.layers[0].name)

    def _show_summary(self, loaded: Loaded) -> None:
        s = loaded.summary
        top1 = f"{s['top1']:.2%} <small>({s['top1_note']})</small>" if s.get("top1") is not None else "unknown"
        shape = "×".join(str(d) for d in s["input_shape"])
        rows = [("Architecture", s["architecture"]), ("Source", s["source"]), ("Input", f"{shape}, "
                f"{s['classes']} classes"), ("Parameters", fmt_count(s["params"])),
                ("MACs / image", fmt_count(s["macs"])),
                ("Size", f"{fmt_bytes(s['size_bytes'])} ({fmt_bytes(s['compressed_bytes'])} zipped)"),
                ("Top-1", top1), ("Dataset", s["dataset"])]
        html = "<table cellspacing='0' cellpadding='1'>" + "".join(
            f"<tr><td style='padding-right:8px'><i>{k}</i></td><td><b>{v}</b></td></tr>" for k, v in rows) + "</table>"
        if loaded.bundle.scripted:
            html += "<p style='color:#D55E00'>TorchScript models can be evaluated but not pruned.</p>"
        self.summary_label.setText(html)

    @Slot()
    def _refresh_start_hint(self, *_args) -> None:
        """The first hint names the method that is actually selected (until a run replaces the hint)."""
        text = self.hint_label.text()
        if not text or text.startswith("<b>Try it:</b>"):
            title = self.method_panel.current_method().title.split(" (")[0]
            self.hint_label.setText(HINT_START.format(method=escape(title)))

    def memory_limit(self) -> int:
        """The memory budget of every job, in bytes (Settings ▸ Memory limit; default a share of the machine)."""
        text = self.settings.value("memory/limit", f"{DEFAULT_SHARE:.0%}", str)
        try:
            return parse_limit(text)
        except UserError:
            log.warning("ignoring the stored memory limit %r", text)
            return parse_limit(None)

    @Slot()
    def ask_memory_limit(self) -> None:
        """Let the user set the memory budget; a value that is not a size gets a dialog and changes nothing."""
        current = self.settings.value("memory/limit", f"{DEFAULT_SHARE:.0%}", str)
        text, ok = QInputDialog.getText(
            self, "Memory limit", "A job (pruning, evaluation, sensitivity, each run of a plan) stops when PruneLab "
            "uses this much memory, so the machine never runs out.\nA share of this machine such as 70% or a size "
            "such as 8G or 1500M:", text=current)
        if not ok:
            return
        try:
            limit = parse_limit(text.strip())
        except UserError as exc:
            self.show_error("Not a memory limit", str(exc), info=f"The memory limit is still {current}.")
            return
        self.settings.set_value("memory/limit", text.strip())
        self.statusBar().showMessage(f"Memory limit: {limit / 2 ** 30:.1f} GiB", 8000)

    def _ask_trust(self, path: str, message: str, what: str = "pickle") -> bool:
        """Ask whether to load a file that holds code; explains the risk. True only on an explicit yes."""
        holds = {"torchscript": "a TorchScript program (code that runs while it loads), not just weights",
                 "code": "weights whose architecture is defined by a Python file, which would be imported (run)"
                 }.get(what, "a whole pickled Python object, not just weights")
        box = QMessageBox(QMessageBox.Icon.Warning, "Trust this model file?",
                          f"<b>{escape(Path(path).name)}</b> contains {holds}.",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setInformativeText("Loading it runs code stored in the file, with your permissions: a malicious file "
                               "can read or delete your data. Load it only if you created it or trust its source. "
                               "Safer: save the model's state_dict instead.\n\nLoad and run this file?")
        box.setDetailedText(message.split(" Pass --trust")[0].split("; pass --model-code")[0])  # no CLI advice
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.button(QMessageBox.StandardButton.Yes).setText("Trust and load")
        return box.exec() == QMessageBox.StandardButton.Yes

    # ===================================================================== running
    @property
    def busy(self) -> bool:
        """True while a background job runs."""
        return self.worker is not None

    def start_run(self) -> bool:
        """Start a pruning run with the panel's options; False when it cannot start."""
        if self.busy:
            return False
        if self.loaded is None:
            self.show_error("Nothing to prune", "Load a model first (File ▸ Open model, or a demo model).")
            return False
        table = self.graph_view.layer_table
        ignored, ratios = table.choices()
        try:
            cfg = self.method_panel.config(ignored_layers=ignored, layer_ratios=ratios)
            cfg.validate()
            self.loaded.bundle.require_prunable()
        except UserError as exc:
            self.show_error("Cannot start this run", str(exc))
            return False
        run_id = (max(self.runs) + 1) if self.runs else 1
        method = get_method(cfg.method)
        record = RunRecord(run_id, f"#{run_id}", theme.run_colour(run_id - 1), cfg)
        self.runs[run_id] = record
        self.current_run = run_id
        self.plots.add_run(run_id, f"#{run_id} {method.title}", record.colour)
        self.selected_run = run_id
        self.tabs.setCurrentWidget(self.plots)
        self.settings.save_options("method", self.method_panel.options())
        log.info("run %d: %s", run_id, cfg.to_json())
        self._start_job("run", prune_job(run_id, self.loaded.bundle, self.loaded.data, cfg,
                                         self.graph_view.enabled, self.work_dir))
        return True

    def start_sensitivity_scan(self) -> bool:
        """Scan each dependency group's accuracy drop in the background (structured methods only)."""
        if self.busy or self.loaded is None:
            return False
        method = self.method_panel.current_method()
        cfg = self.method_panel.config()
        # the scan removes channels, so it needs a structured ranking: the panel's, or group L2
        name = method.name if method.structured else "l2"
        ratio = cfg.pruning_ratio if cfg.pruning_ratio is not None else 0.5
        self.tabs.setCurrentWidget(self.graph_view)
        self._start_job("sensitivity", sensitivity_job(self.loaded.bundle, self.loaded.data, name, ratio,
                                                       cfg.round_to, cfg.max_layer_ratio))
        return True

    @Slot(object)
    def start_plan(self, plan) -> bool:
        """Run an experiment plan from the Experiment tab on the loaded model and dataset."""
        if self.busy or self.loaded is None:
            self.experiment.set_running(False)
            self.show_error("Cannot start the plan", "Another job is running; wait for it or cancel it."
                            if self.busy else "Load a model first (File ▸ Open model, or a demo model).")
            return False
        try:
            self.loaded.bundle.require_prunable()
        except UserError as exc:
            self.experiment.set_running(False)
            self.show_error("Cannot start the plan", str(exc))
            return False
        bundle, data = self.loaded.bundle, self.loaded.data
        memory_limit = self.memory_limit()
        store_path = self.experiment.store_path()
        self.settings.set_value("experiment/store", str(store_path))
        log.info("plan: %s", plan.to_json())

        def job(cancel):
            # The store is opened on the worker thread; each of its calls uses its own connection.
            return run_plan(plan, ResultStore(store_path), cancel, bundle=bundle, data=data,
                            memory_limit=memory_limit)

        self.tabs.setCurrentWidget(self.experiment)
        self._start_job("plan", job)
        return True

    @Slot()
    def _on_apply_suggested_ratios(self) -> None:
        if self.sensitivity is not None and self.sensitivity.proposal is not None:
            self.graph_view.layer_table.set_ratios(self.sensitivity.proposal.layer_ratios)
            p = self.sensitivity.proposal
            self.statusBar().showMessage(f"Per-layer ratios set: {p.macs / max(1, p.base_macs):.0%} of the original "
                                         f"MACs (uniform {self.sensitivity.target_ratio:.0%}: "
                                         f"{p.uniform_macs / max(1, p.base_macs):.0%})", 10000)

    def _on_sensitivity(self, sensitivity: Sensitivity) -> None:
        self.sensitivity = sensitivity
        self.graph_view.show_sensitivity(sensitivity.result.layer_scores())
        self.experiment.show_sensitivity(sensitivity.result)
        self.graph_view.apply_button.setEnabled(sensitivity.proposal is not None)
        self.statusBar().showMessage(f"Sensitivity scanned in {sensitivity.result.seconds:.0f} s: red layers lose "
                                     "the most accuracy when pruned", 10000)

    def cancel_job(self) -> None:
        """Ask the running job to stop (answers at the engine's next check, well within a second or two)."""
        if self.worker is not None:
            self.worker.cancel()
            self.phase_label.setText("Cancelling…")

    def _start_job(self, kind: str, job) -> None:
        self.job_kind = kind
        # No automatic cyclic GC while a job runs: a full collection holds the GIL for 50–200 ms on a busy
        # machine and the UI thread would stall with it. Jobs free nearly everything by reference counting;
        # the few cycles (torch-pruning's graph) are collected once the job is over.
        gc.disable()
        if kind != "plan":  # a plan holds each of its runs to the budget itself, so one run fails alone
            limit, inner = self.memory_limit(), job
            job = lambda cancel: guarded(inner(cancel), limit)  # noqa: E731
        self.worker = Worker(job, kind)
        self.worker.progressed.connect(self._on_event)
        self.worker.finished.connect(self._on_job_finished)
        self.worker.failed.connect(self._on_job_failed)
        self.worker.cancelled.connect(self._on_job_cancelled)
        self.job_thread = start_worker(self.worker)
        self.job_thread.finished.connect(self._on_thread_done)
        self.progress_bar.setValue(0)
        self.progress_bar.show()
        self._update_actions()

    def _update_actions(self) -> None:
        busy = self.busy
        self.run_action.setEnabled(not busy and self.loaded is not None)
        self.cancel_action.setEnabled(busy)
        self.open_action.setEnabled(not busy)
        self.model_combo.setEnabled(not busy)
        self.data_combo.setEnabled(not busy)
        run = self.runs.get(self.selected_run) if self.selected_run else None
        self.export_model_action.setEnabled(not busy and run is not None and run.pruned is not None)
        self.export_onnx_action.setEnabled(not busy and self.loaded is not None)
        self.export_csv_action.setEnabled(self.results.row_count() > 0)
        can_scan = not busy and self.loaded is not None and not self.loaded.bundle.scripted
        self.graph_view.scan_button.setEnabled(can_scan)
        self.graph_view.apply_button.setEnabled(not busy and self.sensitivity is not None)
        self.experiment.run_button.setEnabled(not busy and self.loaded is not None)
        self.experiment.cancel_button.setEnabled(busy and self.job_kind == "plan")
        self.experiment.choose_button.setEnabled(not busy)
        self.open_store_action.setEnabled(not busy)

    # ===================================================================== worker slots
    @Slot(object)
    def _on_event(self, event: object) -> None:
        if self.job_kind == "plan":
            self._on_plan_event(event)
        elif isinstance(event, Progress):
            self._on_progress(event)
        elif isinstance(event, StepDone):
            self._on_step_done(event)
        elif isinstance(event, EpochDone):
            self.statusBar().showMessage(f"Fine-tuning epoch {event.epoch}/{event.epochs}: loss {event.train_loss:.3f}, "
                                         f"train top-1 {event.train_top1:.1%}", 4000)
        elif isinstance(event, RunDone):
            self._on_run_done(event)
        elif isinstance(event, PrunedModel):
            self._on_pruned_model(event)
        elif isinstance(event, Loaded):
            self._on_loaded(event)
        elif isinstance(event, Sensitivity):
            self._on_sensitivity(event)
        elif isinstance(event, Exported):
            self.statusBar().showMessage("Wrote " + ", ".join(event.files.values()), 8000)

    def _on_plan_event(self, event: object) -> None:
        """A plan's events go to the Experiment tab; its progress also to the status bar."""
        if isinstance(event, PlanProgress):
            self.plan_position = (f"Plan run {event.index}/{event.total} · " if event.index
                                  else "Plan: original model · ")
        elif isinstance(event, SensitivityDone):
            self.experiment.show_sensitivity(event)
            self.graph_view.show_sensitivity(event.layer_scores())
        elif isinstance(event, PlanDone):
            self.statusBar().showMessage(f"Plan done: {event.ran} runs in {event.seconds:.0f} s, "
                                         f"{event.skipped} already stored", 15000)
            if event.failed:
                self.show_error("Some runs reached the memory limit",
                                f"{len(event.failed)} run(s) were stopped and not stored; the others are. "
                                "Run the plan again to retry them, with a higher limit (Settings ▸ Memory "
                                "limit) or a smaller batch.", "\n".join(event.failed))
        if isinstance(event, Progress):
            self._on_progress(event)
        if isinstance(event, (Progress, PlanStarted, PlanProgress, PlanRunDone, PlanRunFailed, PlanDone)):
            self.experiment.on_event(event)

    def _on_progress(self, event: Progress) -> None:
        step = ""
        record = self.runs.get(self.current_run) if self.job_kind == "run" else None
        if record is not None:
            step = f"Run {record.label}, step {len(record.steps)}/{record.config.steps} · " if record.steps else \
                f"Run {record.label} · "
        elif self.job_kind == "plan":
            step = self.plan_position
        self.phase_label.setText(f"{step}{event.phase}: {event.message}")
        self.progress_bar.setValue(int(event.fraction * 100))
        self.progress_bar.setFormat(f"{event.phase} %p%")
        self.eta_label.setText(f"ETA {event.eta_s:.0f} s" if event.eta_s is not None and event.done < event.total
                               else "")

    def _on_step_done(self, step: StepDone) -> None:
        record = self.runs.get(self.current_run)
        if record is None:
            return
        record.steps.append(step)
        self.plots.add_step(record.run_id, step.step, step.metrics)
        if self.selected_run == record.run_id:
            self.histograms.set_steps(record.steps, record.colour)
            self.graph_view.layer_table.show_stats(step.layers if step.step > 0 else None)

    def _on_run_done(self, done: RunDone) -> None:
        record = self.runs.get(self.current_run)
        if record is None:
            return
        record.done = done
        record.status = "done"
        self.results.add_run(record)
        self.results.select_run(record.run_id)
        speed = done.speedups()
        self.statusBar().showMessage(
            f"Run {record.label} done in {done.seconds:.1f} s: top-1 {done.before.top1:.2%} → {done.after.top1:.2%}, "
            f"{speed['macs']:.2f}× fewer MACs" + (f", {done.speedup_text()}" if done.speedup_text() else ""), 15000)
        self.hint_label.setText(HINT_AFTER_RUN)
        for note in done.notes:
            log.info("run %s note: %s", record.label, note)

    def _on_pruned_model(self, pruned: PrunedModel) -> None:
        record = self.runs.get(pruned.run_id)
        if record is None:
            return
        record.pruned = pruned.bundle
        record.onnx_path = pruned.onnx_path
        if self.selected_run == record.run_id:
            self.graph_view.set_pruned(pruned.onnx_path, record.label)

    @Slot(object)
    def _on_job_finished(self, _last: object) -> None:
        self.phase_label.setText("Ready")
        if self.job_kind == "plan":
            self.experiment.set_running(False)
        if self.job_kind == "run" and self.current_run in self.runs:
            self.run_finished.emit(self.current_run)

    @Slot(object)
    def _on_job_failed(self, failure: Failure) -> None:
        kind = self.job_kind
        self.phase_label.setText("Failed")
        if kind == "plan":
            self.experiment.set_running(False)
            self.experiment.status_label.setText("The plan stopped: " + escape(failure.message) + ". Finished runs "
                                                 "are stored; run the plan again to resume.")
        record = self.runs.get(self.current_run) if kind == "run" else None
        if record is not None:
            record.status = "failed"
        if kind == "load":
            request = self.pending_request
            if (isinstance(failure.exception, NeedsTrust) and request is not None and not request.trust
                    and request.model_src and not request.model_src.startswith("demo:")):
                # ask once the worker thread is gone (see _on_thread_done): a new load needs it idle
                self.pending_trust = (request, failure.message, failure.exception.what)
                self.phase_label.setText("Waiting for your answer")
                return
            if self.startup_load and self.loaded is None:
                self.startup_load = False
                self.summary_label.setText(
                    f"<b>The demo model could not be loaded.</b><br>{escape(failure.message)}<br><br>"
                    "Open your own model with <b>File ▸ Open model</b> (Ctrl+O) or drop a file here.")
                self.statusBar().showMessage("Demo model unavailable: " + failure.message, 15000)
                self.hint_label.setText("<b>Start:</b> open a model (Ctrl+O), pick one under <i>File ▸ Recent "
                                        "models</i>, or drop a model file onto this window.")
                return
            if self.loaded is not None:
                self._fill_model_combo(self.current_model_src())
                self._show_summary(self.loaded)
        message = failure.message
        if kind == "load" and not failure.user_error and self.pending_request is not None:
            # an unexpected exception from a damaged file: say which file, keep the raw error below it
            message = f"{self.pending_request.model_src or 'The model'} could not be read: {failure.message}"
        title = {"load": "Could not load the model", "run": "The pruning run failed",
                 "sensitivity": "The sensitivity scan failed", "plan": "The experiment plan failed",
                 "export": "Export failed"}.get(kind, "Error")
        # a traceback helps with a bug; for bad input the one line says everything
        self.show_error(title, message, "" if failure.user_error else failure.details)

    def _retry_trusted(self, request: LoadRequest, message: str, what: str) -> None:
        if self._ask_trust(request.model_src, message, what):
            self.load(request.model_src, request.data_spec, trust=True)
            return
        self.phase_label.setText("Not loaded: the file was not trusted")
        if self.loaded is not None:
            self._fill_model_combo(self.current_model_src())
            self._show_summary(self.loaded)
        else:
            self.summary_label.setText("No model loaded. Open a model file (Ctrl+O).")

    @Slot()
    def _on_job_cancelled(self) -> None:
        self.phase_label.setText("Cancelled — the loaded model is unchanged")
        if self.job_kind == "plan":
            self.experiment.set_running(False)
            self.experiment.status_label.setText("Cancelled. Finished runs are stored; run the same plan again to "
                                                 "resume where it stopped.")
        if self.job_kind == "run":
            record = self.runs.get(self.current_run)
            if record is not None:
                record.status = "cancelled"
        elif self.job_kind == "load" and self.loaded is not None:
            self._fill_model_combo(self.current_model_src())
            self._show_summary(self.loaded)

    @Slot()
    def _on_thread_done(self) -> None:
        kind = self.job_kind
        if self.job_thread is not None:
            self.job_thread.wait()  # `finished` comes just before the thread exits; let it exit first
        gc.enable()
        self.worker = None
        self.job_thread = None
        self.job_kind = ""
        self.plan_position = ""
        self.progress_bar.hide()
        self.eta_label.setText("")
        self._update_actions()
        self.job_stopped.emit(kind)
        if self.pending_trust is not None:
            request, message, what = self.pending_trust
            self.pending_trust = None
            QTimer.singleShot(0, lambda: self._retry_trusted(request, message, what))

    # ===================================================================== selection
    @Slot(str)
    def _on_layer_selected(self, name: str) -> None:
        self.graph_view.layer_table.select_layer(name)
        self.histograms.select_layer(name)

    @Slot(int)
    def _on_run_selected(self, run_id: int) -> None:
        record = self.runs.get(run_id)
        if record is None:
            return
        self.selected_run = run_id
        self.plots.select_run(run_id)
        last = record.steps[-1] if record.steps else None
        if last is not None:
            self.histograms.set_steps(record.steps, record.colour)
            self.graph_view.layer_table.show_stats(last.layers if last.step > 0 else None)
        self.graph_view.set_pruned(record.onnx_path, record.label)
        self._update_actions()

    @Slot(str)
    def _on_plan_run_selected(self, key: str) -> None:
        """A run clicked in the Experiment tab: summarise it and offer its pruned graph in the Network tab."""
        result = self.experiment.result(key)
        if result is None:
            return
        m = result.metrics
        onnx = result.files.get("onnx")
        if onnx and Path(onnx).is_file():
            self.graph_view.set_pruned(Path(onnx), result.label)
        where = f"; saved in {Path(result.files['model']).parent}" if result.files.get("model") else ""
        self.statusBar().showMessage(f"{result.label}: top-1 {m.top1:.2%}, {fmt_count(m.params)} parameters, "
                                     f"{fmt_count(m.macs)} MACs{where}", 15000)

    @Slot()
    def _on_save_report(self) -> None:
        self.tabs.setCurrentWidget(self.experiment)
        self.experiment.report_button.click()

    @Slot()
    def _on_open_store(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a result store", str(self.experiment.store_path().parent),
                                              "PruneLab result stores (*.sqlite *.db);;All files (*)")
        if not path:
            return
        try:
            self.experiment.load_store(path)
        except UserError as exc:
            self.show_error("Could not open the result store", str(exc))
            return
        self.settings.set_value("experiment/store", path)
        self.tabs.setCurrentWidget(self.experiment)

    @Slot()
    def _on_options_changed(self) -> None:
        self.settings.save_options("method", self.method_panel.options())

    @Slot(int)
    def _on_model_combo(self, index: int) -> None:
        data = self.model_combo.itemData(index)
        if data == OPEN_FILE:
            self._on_open_model()
        elif data and data != self.current_model_src():
            self.load(data, self.current_data_spec())

    @Slot(int)
    def _on_data_combo(self, index: int) -> None:
        data = self.data_combo.itemData(index)
        if data in (OPEN_FOLDER, OPEN_CIFAR):
            folder = QFileDialog.getExistingDirectory(self, "Choose a CIFAR-10 folder (cifar-10-batches-py)"
                                                      if data == OPEN_CIFAR else "Choose an ImageFolder "
                                                      "(one sub-folder per class)")
            if not folder:
                self._fill_data_combo(self.current_data_spec())
                return
            data = f"{'cifar10' if data == OPEN_CIFAR else 'imagefolder'}:{folder}"
        if data and data != (self.loaded.request.data_spec if self.loaded else None):
            self.load(self.current_model_src(), data)

    @Slot()
    def _on_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent("models")
        if not recent:
            self.recent_menu.addAction("(none yet)").setEnabled(False)
        for path in recent:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _=False, p=path: self.open_model_file(p))

    @Slot()
    def _on_open_model(self) -> None:
        start = str(Path(self.settings.recent("models")[0]).parent) if self.settings.recent("models") else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open a model", start, MODEL_FILTER)
        if path:
            self.open_model_file(path)
        else:
            self._fill_model_combo(self.current_model_src())

    # ===================================================================== export
    def _selected_record(self) -> RunRecord | None:
        return self.runs.get(self.selected_run) if self.selected_run else None

    @Slot()
    def _on_export_model(self) -> None:
        record = self._selected_record()
        if record is None or record.pruned is None:
            self.show_error("Nothing to export", "Run a pruning method first; its pruned model can then be saved.")
            return
        folder = QFileDialog.getExistingDirectory(self, "Folder for the pruned model, ONNX file and metadata")
        if folder:
            structured = get_method(record.config.method).structured
            self._start_job("export", export_job(record.pruned, Path(folder) / f"run{record.run_id}_"
                                                 f"{record.config.method}", structured, "model"))

    @Slot()
    def _on_export_onnx(self) -> None:
        record = self._selected_record()
        bundle = record.pruned if record and record.pruned else (self.loaded.bundle if self.loaded else None)
        if bundle is None:
            return
        name = f"run{record.run_id}_{record.config.method}.onnx" if record and record.pruned else "original.onnx"
        path, _ = QFileDialog.getSaveFileName(self, "Save ONNX", name, "ONNX (*.onnx)")
        if path:
            self._start_job("export", export_job(bundle, Path(path), False, "onnx"))

    def export_plots(self, path: str | Path) -> Path:
        """Write the current tab's plots (live plots unless Weights or Results is shown) as PNG or SVG."""
        path = Path(path)
        current = self.tabs.currentWidget()
        if current is self.histograms:
            view = self.histograms.canvas
        elif current is self.results:
            view = self.results.scatter_widget
        else:
            self.plots.flush()
            view = self.plots.canvas
        if path.suffix.lower() == ".svg":
            # Qt's own SVG generator: pyqtgraph 0.14's SVGExporter cannot parse the paths Qt 6.12 writes
            from PySide6.QtCore import QRect
            from PySide6.QtGui import QPainter
            from PySide6.QtSvg import QSvgGenerator

            generator = QSvgGenerator()
            generator.setFileName(str(path))
            generator.setSize(view.size())
            generator.setViewBox(QRect(0, 0, view.width(), view.height()))
            generator.setTitle("PruneLab plots")
            painter = QPainter(generator)
            view.render(painter)
            painter.end()
        else:
            from PySide6.QtGui import QImage, QPainter

            scale = 2  # twice the screen resolution: sharp on slides and in reports

            image = QImage(view.size() * scale, QImage.Format.Format_ARGB32)
            image.setDevicePixelRatio(scale)
            image.fill(view.palette().base().color())
            painter = QPainter(image)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            view.render(painter)
            painter.end()
            if not image.save(str(path)):
                raise OSError(f"could not write {path}")
        return path

    @Slot()
    def _on_export_plots(self) -> None:
        path, chosen = QFileDialog.getSaveFileName(self, "Save plots", "prunelab_plots.png",
                                                   "PNG image (*.png);;SVG vector image (*.svg)")
        if path:
            if not Path(path).suffix:
                path += ".svg" if "svg" in chosen.lower() else ".png"
            try:
                self.statusBar().showMessage(f"Wrote {self.export_plots(path)}", 8000)
            except Exception as exc:  # disk full, permissions: report and carry on
                self.show_error("Could not save the plots", str(exc))

    @Slot()
    def _on_export_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save results", "prunelab_results.csv", "CSV (*.csv)")
        if path:
            try:
                self.statusBar().showMessage(f"Wrote {self.results.write_csv(path)}", 8000)
            except OSError as exc:
                self.show_error("Could not save the results", str(exc))

    # ===================================================================== dialogs
    def show_error(self, title: str, message: str, details: str = "", info: str = "The loaded model is unchanged."
                   ) -> QMessageBox:
        """Show an error without blocking (window-modal); the app stays usable afterwards."""
        if self.error_box is not None:
            self.error_box.close()
        box = QMessageBox(QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok, self)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        if self.log_path is not None:
            info += f" The log is in {self.log_path}."
        box.setInformativeText(info)
        if details:
            box.setDetailedText(details)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()
        self.error_box = box
        return box

    @Slot()
    def _on_about(self) -> None:
        from gui.app import versions

        v = versions()
        QMessageBox.about(self, "About PruneLab",
                          f"<h3>PruneLab {v['prunelab']}</h3><p>Point-and-click neural network pruning for teaching "
                          f"and experiments.</p><table><tr><td>PyTorch</td><td>{v['torch']}</td></tr>"
                          f"<tr><td>Torch-Pruning</td><td>{v['torch_pruning']}</td></tr>"
                          f"<tr><td>Qt / PySide6</td><td>{v['qt']} / {v['pyside6']}</td></tr>"
                          f"<tr><td>pyqtgraph</td><td>{v['pyqtgraph']}</td></tr>"
                          f"<tr><td>Netron</td><td>{v['netron']}</td></tr>"
                          f"<tr><td>Python</td><td>{v['python']}</td></tr></table>"
                          + (f"<p>Log file: {self.log_path}</p>" if self.log_path else ""))

    # ===================================================================== window events
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt override)
        """Accept model files and dataset folders."""
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile() and not self.busy:
            path = Path(urls[0].toLocalFile())
            if path.is_dir() or path.suffix.lower() in MODEL_SUFFIXES:
                event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt override)
        """A dropped file is opened as a model, a dropped folder as a dataset."""
        urls = event.mimeData().urls()
        if not urls:
            return
        path = Path(urls[0].toLocalFile())
        if path.is_dir():
            kind = "cifar10" if (path / "batches.meta").exists() else "imagefolder"
            self.load(self.current_model_src(), f"{kind}:{path}")
        else:
            self.open_model_file(str(path))
        event.acceptProposedAction()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        """Save the layout and options; stop a running job cleanly (never terminate the thread)."""
        if self.worker is not None and self.job_thread is not None:
            self.worker.cancel()
            self.job_thread.wait(30_000)  # cancel answers within ~2 s; never destroy a running QThread
        gc.enable()
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self.settings.save_options("method", self.method_panel.options())
        self.settings.sync()
        self.graph_view.shutdown()
        super().closeEvent(event)

