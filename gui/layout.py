"""How the main window is laid out: the hint and tabs, the side dock, the status bar, the saved geometry.

`WindowLayout` builds and owns these widgets (the views); the window connects them to the session model
and to its commands, and keeps the behaviour.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QDockWidget, QHBoxLayout, QLabel, QMainWindow, QProgressBar, QScrollArea, QTabWidget,
                               QToolButton, QVBoxLayout, QWidget)

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
    from gui.commands import Commands


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


class WindowLayout:
    """The window's widgets: the hint above the tabs, the Prune dock (model and data, the method panel,
    Run and Cancel) and the status bar's job line, placed in `window`."""

    def __init__(self, window: QMainWindow, commands: Commands, run_action: QAction, cancel_action: QAction) -> None:
        self.window = window
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 0)
        layout.addWidget(self._build_hint())
        layout.addWidget(self._build_tabs(commands), 1)
        window.setCentralWidget(central)
        self._build_side_dock(commands, run_action, cancel_action)
        self._build_status_bar()
        self.teach.attach(self.method_panel, self.graph_view.layer_table, self.tabs)

    def _build_hint(self) -> QWidget:
        """The "what to try next" line, on the alternate background, with a button to hide it."""
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
        return self.hint_frame


    def _build_tabs(self, commands: Commands) -> QTabWidget:
        """The tabs, each a view of the session."""
        self.tabs = ScrollingTabs()
        self.tabs.setDocumentMode(True)
        self.graph_view = GraphView()
        self.plots = LivePlots()
        self.histograms = HistogramView()
        self.results = ResultsView()
        self.experiment = ExperimentTab()
        store = commands.session.settings.value("experiment/store", "", str)
        if store:
            self.experiment.set_store_path(store)
        self.tabs.addTab(self.graph_view, "Network")
        self.tabs.addTab(self.plots, "Live plots")
        self.tabs.addTab(self.histograms, "Weights")
        self.tabs.addTab(self.results, "Results")
        self.tabs.addTab(self.experiment, "Experiment")
        self.teach = TeachTab(commands)
        self.tabs.addTab(self.teach, "Teach")
        self.teach.coupled_layers.connect(lambda layer, names: self.graph_view.highlight_layers(
            names, self.teach.coupling_reasons, selected=layer))
        self.tabs.setTabToolTip(self.tabs.indexOf(self.teach),
                                "Why each channel goes: scores, criteria, groups, feature maps")
        for index, tip in enumerate(("The model's graph (Netron) and its prunable layers",
                                     "Accuracy, parameters, MACs and latency at each pruning step, one curve per run",
                                     "Weight histograms of the selected layer before and after pruning",
                                     "All runs of this session: table, scatter, export",
                                     "Compare several methods and ratios in one plan, rank them by your criteria")):
            self.tabs.setTabToolTip(index, tip)
        return self.tabs

    def _build_side_dock(self, commands: Commands, run_action: QAction, cancel_action: QAction) -> None:
        """The "Prune" dock: model and data, the method panel, and Run/Cancel below them."""
        win = self.window
        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(6, 6, 6, 6)
        self.source = SourcePanel(commands.session.settings)
        self.model_combo, self.data_combo = self.source.model_combo, self.source.data_combo
        self.summary_label = self.source.summary_label
        self.model_combo.activated.connect(lambda index: on_model_chosen(commands, self.source, index))
        self.data_combo.activated.connect(lambda index: on_data_chosen(commands, self.source, index))
        layout.addWidget(self.source)
        self.method_panel = MethodPanel()
        layout.addWidget(self.method_panel, 1)
        self.run_button = QToolButton()
        self.run_button.setDefaultAction(run_action)
        self.run_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.run_button.setMinimumHeight(34)
        self.run_button.setSizePolicy(self.run_button.sizePolicy().horizontalPolicy().Expanding,
                                      self.run_button.sizePolicy().verticalPolicy())
        font = self.run_button.font()
        font.setBold(True)
        self.run_button.setFont(font)
        self.cancel_button = QToolButton()
        self.cancel_button.setDefaultAction(cancel_action)
        self.cancel_button.setMinimumHeight(34)
        self.cancel_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
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
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button)
        dock_layout.addLayout(buttons)
        self.side_dock = QDockWidget("Prune", win)
        self.side_dock.setObjectName("side_dock")
        self.side_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                   | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.side_dock.setWidget(dock_body)
        panel.setMinimumWidth(330)
        win.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.side_dock)

    def _build_status_bar(self) -> None:
        """The job's phase, time left and progress, in permanent widgets."""
        bar = self.window.statusBar()
        self.phase_label = StatusLabel("Ready")  # what the job is doing: elided, whole in its tooltip
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

    def restore(self, geometry: bytes | None, state: bytes | None) -> None:
        """The window's saved size, place and dock layout; the first start fills most of the screen, centred."""
        win = self.window
        if geometry is None or not win.restoreGeometry(geometry):
            screen = QGuiApplication.primaryScreen()
            area = screen.availableGeometry() if screen else None
            if area is not None:
                size = QSize(min(1600, int(area.width() * 0.96)), min(1000, int(area.height() * 0.94)))
                win.resize(size)
                win.move(area.center().x() - size.width() // 2, area.center().y() - size.height() // 2)
            else:
                win.resize(1280, 800)
        if state is not None:
            win.restoreState(state)
