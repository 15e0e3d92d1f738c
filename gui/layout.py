"""How the main window is laid out: the hint and tabs, the side dock, the status bar, the saved geometry.

Built Qt-Designer style: these functions set the widgets as attributes of the window and connect
them to its slots; the window keeps the state and the behaviour.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QDockWidget, QHBoxLayout, QLabel, QMessageBox, QProgressBar, QScrollArea, QTabWidget,
                               QToolButton, QVBoxLayout, QWidget)

from engine.methods import get_method
from engine.units import fmt_count
from gui.experiment_tab import ExperimentTab
from gui.graph_view import GraphView
from gui.histograms import HistogramView
from gui.method_panel import MethodPanel
from gui.plots import LivePlots
from gui.results import ResultsView
from gui.source_panel import SourcePanel, on_data_chosen, on_model_chosen
from gui.teach import TeachTab
from gui.widgets import StatusLabel, VerticalScrollArea

if TYPE_CHECKING:
    from gui.main_window import MainWindow


def build_central(win: MainWindow) -> None:
    """The hint above the five tabs (Network, Live plots, Weights, Results, Experiment)."""
    central = QWidget()
    layout = QVBoxLayout(central)
    layout.setContentsMargins(6, 6, 6, 0)
    layout.addWidget(_build_hint(win))
    layout.addWidget(_build_tabs(win), 1)
    win.setCentralWidget(central)

    win.graph_view.layer_table.layer_selected.connect(win._on_layer_selected)
    win.histograms.layer_selected.connect(win._on_layer_selected)
    win.results.run_selected.connect(win._on_run_selected)
    win.results.continue_requested.connect(lambda run_id: ask_continue(win, run_id))
    win.results.remove_requested.connect(win.remove_run)
    win.graph_view.scan_button.clicked.connect(win.start_sensitivity_scan)
    win.graph_view.apply_button.clicked.connect(win._on_apply_suggested_ratios)
    win.experiment.run_requested.connect(win.start_plan)
    win.experiment.cancel_requested.connect(win.cancel_job)
    win.experiment.run_selected.connect(lambda key: show_plan_run(win, key))


def ask_continue(win: MainWindow, run_id: int) -> QMessageBox | None:
    """*Continue from this run* asks first what to do with it: it once pruned run #7 again at once, with
    whatever method and ratio the Prune panel happened to show. Window-modal, not blocking."""
    record = win.runs.get(run_id)
    if record is None or win.busy:
        return None
    cfg = win.method_panel.config()
    amount = f"{cfg.pruning_ratio:.0%}" if cfg.pruning_ratio is not None else f"a {cfg.target_speedup:g}× speed-up"
    recovery = (f"then fine-tune {cfg.finetune_epochs:g} epoch(s)" if cfg.finetune_epochs else
                "then BatchNorm re-estimation" if cfg.bn_recalibrate else "with no recovery")
    box = QMessageBox(QMessageBox.Icon.Question, f"Continue from {record.label}",
                      f"Prune {record.label}'s pruned model further with <b>{get_method(cfg.method).title}</b> at "
                      f"<b>{amount}</b> of what is left, {recovery}?", QMessageBox.StandardButton.Cancel, win)
    box.setInformativeText("These are the Prune panel's settings now: change them there first if you meant "
                           "something else. <i>Recover only</i> cuts nothing and runs just the recovery. The new "
                           f"run is listed with its parent, and its changes are measured against {record.label}.")
    further = box.addButton("Prune further", QMessageBox.ButtonRole.AcceptRole)
    recover = box.addButton("Recover only", QMessageBox.ButtonRole.AcceptRole)
    if cfg.recovers_by_training or cfg.bn_recalibrate:
        distil = ", distilling from the original" if cfg.recovers_by_training and cfg.distill else ""
        recover.setToolTip(f"Cut nothing: {recovery.removeprefix('then ')}{distil} on a copy of "
                           f"{record.label}'s model, listed as a new run")
    else:
        recover.setEnabled(False)
        recover.setToolTip("Set fine-tuning epochs or BatchNorm re-estimation in the Prune panel first")
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.setWindowModality(Qt.WindowModality.WindowModal)
    box.buttonClicked.connect(lambda button: win.start_run(parent=run_id) if button is further else
                              win.start_run(parent=run_id, recover_only=True) if button is recover else None)
    box.open()
    win.continue_box = box
    return box


def show_plan_run(win: MainWindow, key: str) -> None:
    """A run clicked in the Experiment tab: summarise it and offer its pruned graph in the Network tab."""
    result = win.experiment.result(key)
    if result is None:
        return
    m = result.metrics
    onnx = result.files.get("onnx")
    if onnx and Path(onnx).is_file():
        win.graph_view.set_pruned(Path(onnx), result.label)
    where = f"; saved in {Path(result.files['model']).parent}" if result.files.get("model") else ""
    win.statusBar().showMessage(f"{result.label}: top-1 {m.top1:.2%}, {fmt_count(m.params)} parameters, "
                                f"{fmt_count(m.macs)} MACs{where}", 15000)


def _build_hint(win: MainWindow) -> QWidget:
    """The "what to try next" line, on the alternate background, with a button to hide it."""
    hint_row = QHBoxLayout()
    win.hint_label = QLabel()
    win.hint_label.setWordWrap(True)
    win.hint_label.setToolTip("What to try next")
    win.hint_frame = QWidget()
    win.hint_frame.setObjectName("hint")
    win.hint_frame.setAutoFillBackground(True)
    pal = win.hint_frame.palette()
    pal.setColor(win.hint_frame.backgroundRole(), pal.color(pal.ColorRole.AlternateBase))
    win.hint_frame.setPalette(pal)
    hint_row.setContentsMargins(8, 4, 4, 4)
    hint_row.addWidget(win.hint_label, 1)
    close_hint = QToolButton()
    close_hint.setText("✕")
    close_hint.setAutoRaise(True)
    close_hint.setToolTip("Hide the hint")
    close_hint.clicked.connect(win.hint_frame.hide)
    hint_row.addWidget(close_hint, 0, Qt.AlignmentFlag.AlignTop)
    win.hint_frame.setLayout(hint_row)
    return win.hint_frame


class ScrollingTabs(QTabWidget):
    """Tabs whose pages scroll when the window is smaller than a page needs, instead of the window growing past
    the screen (at 1280×720 with the Lesson panel open, the widest page pushed the window to 1280 px and
    squeezed the Prune panel to 145 px). `widget`, `currentWidget`, `indexOf` and `setCurrentWidget` speak of
    the pages themselves, so callers never see the scroll areas."""

    MIN_WIDTH, MIN_HEIGHT = 420, 260

    def addTab(self, page: QWidget, title: str) -> int:  # noqa: N802 (Qt override)
        area = QScrollArea()
        area.setWidget(page)
        area.setWidgetResizable(True)
        area.setFrameShape(QScrollArea.Shape.NoFrame)
        return super().addTab(area, title)

    def widget(self, index: int) -> QWidget | None:
        area = super().widget(index)
        return area.widget() if isinstance(area, QScrollArea) else area

    def currentWidget(self) -> QWidget | None:  # noqa: N802 (Qt override)
        return self.widget(self.currentIndex())

    def indexOf(self, page: QWidget) -> int:  # noqa: N802 (Qt override)
        return next((i for i in range(self.count()) if self.widget(i) is page), super().indexOf(page))

    def setCurrentWidget(self, page: QWidget) -> None:  # noqa: N802 (Qt override)
        index = self.indexOf(page)
        if index >= 0:
            self.setCurrentIndex(index)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt override)
        """Small: a page that needs more scrolls (see the class)."""
        return QSize(self.MIN_WIDTH, self.MIN_HEIGHT)


def _build_tabs(win: MainWindow) -> QTabWidget:
    """The tabs, each a view of the window's state."""
    win.tabs = ScrollingTabs()
    win.tabs.setDocumentMode(True)
    win.graph_view = GraphView()
    win.plots = LivePlots()
    win.histograms = HistogramView()
    win.results = ResultsView()
    win.experiment = ExperimentTab()
    store = win.settings.value("experiment/store", "", str)
    if store:
        win.experiment.set_store_path(store)
    win.tabs.addTab(win.graph_view, "Network")
    win.tabs.addTab(win.plots, "Live plots")
    win.tabs.addTab(win.histograms, "Weights")
    win.tabs.addTab(win.results, "Results")
    win.tabs.addTab(win.experiment, "Experiment")
    win.teach = TeachTab(win)
    win.tabs.addTab(win.teach, "Teach")
    win.teach.coupled_layers.connect(lambda layer, names: win.graph_view.highlight_layers(
        names, win.teach.coupling_reasons, selected=layer))
    win.tabs.setTabToolTip(win.tabs.indexOf(win.teach), "Why each channel goes: scores, criteria, groups, feature maps")
    for index, tip in enumerate(("The model's graph (Netron) and its prunable layers",
                                 "Accuracy, parameters, MACs and latency at each pruning step, one curve per run",
                                 "Weight histograms of the selected layer before and after pruning",
                                 "All runs of this session: table, scatter, export",
                                 "Compare several methods and ratios in one plan, rank them by your criteria")):
        win.tabs.setTabToolTip(index, tip)
    return win.tabs


def build_side_dock(win: MainWindow) -> None:
    """The "Prune" dock: model and data, the method panel, and Run/Cancel below them."""
    panel = QWidget()
    layout = QVBoxLayout(panel)
    layout.setContentsMargins(6, 6, 6, 6)
    win.source = SourcePanel(win.settings)
    win.model_combo, win.data_combo = win.source.model_combo, win.source.data_combo
    win.summary_label = win.source.summary_label
    win.model_combo.activated.connect(lambda index: on_model_chosen(win, index))
    win.data_combo.activated.connect(lambda index: on_data_chosen(win, index))
    layout.addWidget(win.source)
    win.method_panel = MethodPanel()
    layout.addWidget(win.method_panel, 1)
    win.run_button = QToolButton()
    win.run_button.setDefaultAction(win.run_action)
    win.run_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    win.run_button.setMinimumHeight(34)
    win.run_button.setSizePolicy(win.run_button.sizePolicy().horizontalPolicy().Expanding,
                                  win.run_button.sizePolicy().verticalPolicy())
    font = win.run_button.font()
    font.setBold(True)
    win.run_button.setFont(font)
    win.cancel_button = QToolButton()
    win.cancel_button.setDefaultAction(win.cancel_action)
    win.cancel_button.setMinimumHeight(34)
    win.cancel_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    # as wide as the panel needs (the Lesson panel beside it cannot squeeze its names), scrolling up and down
    scroll = VerticalScrollArea(panel)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    # Run/Cancel stay visible below the scrolling options, whatever the screen height
    dock_body = QWidget()
    dock_layout = QVBoxLayout(dock_body)
    dock_layout.setContentsMargins(0, 0, 0, 6)
    dock_layout.addWidget(scroll, 1)
    buttons = QHBoxLayout()
    buttons.setContentsMargins(6, 0, 6, 0)
    buttons.addWidget(win.run_button, 1)
    buttons.addWidget(win.cancel_button)
    dock_layout.addLayout(buttons)
    win.side_dock = QDockWidget("Prune", win)
    win.side_dock.setObjectName("side_dock")
    win.side_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                               | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
    win.side_dock.setWidget(dock_body)
    panel.setMinimumWidth(330)
    win.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, win.side_dock)
    win.method_panel.options_changed.connect(win._on_options_changed)
    win.method_panel.method_changed.connect(win._refresh_start_hint)
    win._refresh_start_hint()


def build_status_bar(win: MainWindow) -> None:
    """The job's phase, time left and progress, in permanent widgets."""
    bar = win.statusBar()
    win.phase_label = StatusLabel("Ready")  # what the job is doing: elided, whole in its tooltip
    win.progress_bar = QProgressBar()
    win.progress_bar.setMaximumWidth(260)
    win.progress_bar.setTextVisible(True)
    win.progress_bar.setToolTip("Progress of the current phase")
    win.eta_label = QLabel("")
    win.eta_label.setToolTip("Estimated time left in this phase")
    # permanent widgets: temporary messages (hover hints, "Wrote ...") never hide the job's phase
    bar.addPermanentWidget(win.phase_label)
    bar.addPermanentWidget(win.eta_label)
    bar.addPermanentWidget(win.progress_bar)
    win.progress_bar.hide()


def restore_layout(win: MainWindow) -> None:
    """The window's saved size, place and dock layout; the first start fills most of the screen, centred."""
    geometry = win.settings.geometry()
    if geometry is None or not win.restoreGeometry(geometry):
        screen = QGuiApplication.primaryScreen()
        area = screen.availableGeometry() if screen else None
        if area is not None:
            size = QSize(min(1600, int(area.width() * 0.96)), min(1000, int(area.height() * 0.94)))
            win.resize(size)
            win.move(area.center().x() - size.width() // 2, area.center().y() - size.height() // 2)
        else:
            win.resize(1280, 800)
    state = win.settings.window_state()
    if state is not None:
        win.restoreState(state)
