"""The Teach tab: pick a layer, press Explain, and see what the method sees.

It reads the session's state (the loaded model and data) and the Prune panel's options when asked and
runs the heavy work as jobs through the window's commands; it owns no model.
"""
from __future__ import annotations

import weakref
from html import escape
from typing import TYPE_CHECKING

from PySide6.QtCore import QTimer, Signal, Slot
from PySide6.QtGui import QTextDocumentFragment
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QTabWidget, QVBoxLayout, QWidget

from engine.config import amount_words
from engine.errors import UserError
from engine.explain import ChannelScores, ChosenScores, Coupled, Criteria, CriteriaSoFar, Explanation
from engine.methods import get_method
from gui.teach.jobs import ExplainJob, ImageJob
from gui.teach.maps import FeatureMapView
from gui.teach.views import CriteriaView, GroupView, WhyView

if TYPE_CHECKING:
    from gui.commands import Commands
    from gui.layer_table import LayerTable
    from gui.method_panel import MethodPanel


class TeachTab(QWidget):
    """Why these channels, criteria side by side, dependency groups and feature maps for one layer."""

    # the explained layer and every layer coupled to it: the window may highlight them elsewhere
    coupled_layers = Signal(str, list)

    def __init__(self, commands: Commands) -> None:
        super().__init__()
        self.commands, self.session = commands, commands.session
        self.method_panel: MethodPanel | None = None  # the Prune panel and the window's tabs (attach)
        self.tabs: QTabWidget | None = None
        self.explanation: Explanation | None = None  # the last finished one
        self._criteria_so_far: Criteria | None = None  # drawn by the timer: criteria arrive faster than redraws
        self._chosen_summary = ""  # the status line's first part while the other criteria are scored
        self._coupling_shown: tuple | None = None  # (layer, coupled layers) emitted from the chosen scores
        self.coupling_reasons: dict[str, str] = {}  # coupled layer -> why, for the last coupled_layers
        self._criteria_timer = QTimer(self)
        self._criteria_timer.setSingleShot(True)
        self._criteria_timer.setInterval(150)
        self._criteria_timer.timeout.connect(self._draw_criteria_so_far)
        # the loaded model the layer list was filled from; weakly, so the previous model is freed at a load
        self._model: weakref.ref | None = None
        self._explaining: tuple[str, str] = ("", "")  # (layer, method words) an Explain was started for
        self._explained: tuple[str, str] | None = None  # what the Why, Criteria and Group views show now
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Layer:"))
        self.layer_combo = QComboBox()
        self.layer_combo.setMinimumContentsLength(22)
        self.layer_combo.setToolTip("The layer to explain (selecting a layer in the Network tab picks it too)")
        bar.addWidget(self.layer_combo)
        self.method_label = QLabel("")
        self.method_label.setToolTip("The method and ratio come from the Prune panel on the left")
        self.method_label.setWordWrap(True)  # in a narrow window it wraps rather than widen every tab
        bar.addWidget(self.method_label, 1)
        self.explain_button = QPushButton("Explain")
        self.explain_button.setToolTip("Score this layer with the chosen method and with every structured "
                                       "criterion, and find the layers tied to it")
        self.explain_button.clicked.connect(self.explain)
        bar.addWidget(self.explain_button)
        bar.addStretch(1)
        layout.addLayout(bar)
        self.status_label = QLabel("Load a model, pick a layer and press Explain.")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)

        self.views = QTabWidget()
        self.why_view, self.criteria_view = WhyView(), CriteriaView()
        self.group_view, self.maps_view = GroupView(), FeatureMapView()
        for view, title, tip in (
                (self.why_view, "Why these channels", "The scores the method actually used, sorted, with the cut line"),
                (self.criteria_view, "Criteria side by side", "Every structured criterion on the same layer"),
                (self.group_view, "Dependency group", "The layers that lose the same channels, and why"),
                (self.maps_view, "Feature maps", "One test image through the layer; original vs pruned top-5")):
            self.views.addTab(view, title)
            self.views.setTabToolTip(self.views.count() - 1, tip)
        layout.addWidget(self.views, 1)
        self.group_view.layer_clicked.connect(self._explain_layer_named)
        self.why_view.manual_requested.connect(lambda channels: commands.start_run(manual_channels=channels))
        self.maps_view.show_button.clicked.connect(self.show_image)
        self.views.currentChanged.connect(lambda _index: self._fill_maps())
        self.views.currentChanged.connect(lambda _index: self._refresh_header())
        self.views.currentChanged.connect(lambda _index: self._note_opened())
        self._opened: dict[QWidget, str] = {}  # view -> the line above it when last seen: the session report
        self.layer_combo.currentTextChanged.connect(lambda _text: self._refresh_header())
        commands.job_stopped.connect(self._on_job_stopped)
        self._maps_tried: tuple | None = None  # what the maps were last started for (no retry loop on an error)

    def attach(self, method_panel: MethodPanel, layer_table: LayerTable, tabs: QTabWidget) -> None:
        """Follow the Prune panel's options, the layer table's selection and the window's tabs."""
        self.method_panel, self.tabs = method_panel, tabs
        method_panel.options_changed.connect(self._refresh_method)
        layer_table.layer_selected.connect(self.select_layer)
        # coming back to this tab with Feature maps open fills them too
        tabs.currentChanged.connect(lambda _index: QTimer.singleShot(0, self, self._fill_maps))
        tabs.currentChanged.connect(lambda _index: self._note_opened())
        self._refresh_method()
        self._on_job_stopped("")

    # --------------------------------------------------------------------- state from the session and panel
    def _config(self):
        return self.method_panel.config()

    @Slot()
    def _refresh_method(self) -> None:
        if self.method_panel is None:
            return
        cfg = self._config()
        method = self.method_panel.current_method()
        self.method_label.setText(f"Method: <b>{method.title}</b> at {amount_words(cfg)} ({cfg.scope} scope)")
        self._refresh_header()

    def _method_words(self) -> str:
        return self.method_label.text().removeprefix("Method: ")

    def _note_opened(self) -> None:
        """Remember the view shown, with its line, once there is something in it: the session report has it."""
        view = self.views.currentWidget()
        if self.tabs is None or self.tabs.currentWidget() is not self:
            return
        if self._explained is None and not (view is self.maps_view and self._maps_tried):
            return
        self._opened[view] = QTextDocumentFragment.fromHtml(self.status_label.text()).toPlainText()

    def opened_views(self) -> list[tuple[str, str, QWidget]]:
        """(title, the line above it when last seen, the view) of every view the student opened, in tab order."""
        return [(self.views.tabText(i), self._opened[self.views.widget(i)], self.views.widget(i))
                for i in range(self.views.count()) if self.views.widget(i) in self._opened]

    def _refresh_header(self) -> None:
        """The line above the views speaks of the view shown: the feature maps keep their own line; the other
        views say what they were explained for, and say so plainly when the layer or the Prune panel's method
        or ratio has changed since (the chart stays as it was until Explain)."""
        if self.views.currentWidget() is self.maps_view or self._explained is None:
            return
        layer, words = self._explained
        text = self._chosen_summary
        if (layer, words) != (self.layer_combo.currentText(), self._method_words()):
            text += (f" <b>These charts are out of date:</b> they show {escape(layer)} with {words}; press "
                     f"<b>Explain</b> for {escape(self.layer_combo.currentText())} with {self._method_words()}.")
        self.status_label.setText(text)

    @Slot(str)
    def _on_job_stopped(self, _name: str) -> None:
        self._note_opened()  # an explanation or feature maps just arrived in the view shown
        loaded = self.session.loaded
        busy = self.commands.busy()
        self.explain_button.setEnabled(loaded is not None and not busy)
        self.maps_view.show_button.setEnabled(loaded is not None and not busy)
        if loaded is None or (self._model is not None and loaded is self._model()):
            self._fill_maps()
            return
        self._model = weakref.ref(loaded)
        current = self.layer_combo.currentText()
        self.layer_combo.clear()
        self.layer_combo.addItems([info.name for info in loaded.layers])
        if current in [info.name for info in loaded.layers]:
            self.layer_combo.setCurrentText(current)
        self.maps_view.set_image_count(loaded.data.split_size("test"))
        self.status_label.setText(f"{loaded.summary.get('architecture', 'Model')} loaded: pick a layer and press "
                                  "Explain.")

    def _fill_maps(self) -> None:
        """Feature maps fill in like the other views: when they are on screen and were not drawn for the
        chosen layer, image and method, and nothing else runs, the image job starts by itself (once per
        choice, so a failing image is not retried in a loop)."""
        layer = self.layer_combo.currentText()
        if not self.maps_view.isVisible() or self.session.loaded is None or not layer or self.commands.busy():
            return  # (not on screen: another tab of the window, or another view of this one)
        if self._maps_key() != self._maps_tried:
            self.show_image()

    def _maps_key(self) -> tuple:
        return (id(self.session.loaded), self.layer_combo.currentText(), self.maps_view.index_spin.value(),
                self.method_label.text())

    @Slot(str)
    def select_layer(self, name: str) -> None:
        """Make `name` the layer to explain (unknown names are ignored)."""
        index = self.layer_combo.findText(name)
        if index >= 0:
            self.layer_combo.setCurrentIndex(index)

    # --------------------------------------------------------------------- actions
    @Slot()
    def explain(self) -> bool:
        """Start the explain job for the chosen layer; False when it cannot start now."""
        loaded, layer = self.session.loaded, self.layer_combo.currentText()
        if loaded is None or not layer:
            return False
        try:
            cfg = self._config()
            loaded.bundle.require_prunable()
        except UserError as exc:
            self.status_label.setText(str(exc))
            return False
        started = self.commands.start_job(ExplainJob(self.commands, self, loaded.bundle, loaded.data, layer, cfg))
        if started:
            self._explaining = (layer, self._method_words())
        self.status_label.setText(f"Scoring {layer}…" if started else "Wait for the running job to finish first.")
        return started

    @Slot()
    def show_image(self) -> bool:
        """Start the feature-map job for the chosen layer and test image."""
        loaded, layer = self.session.loaded, self.layer_combo.currentText()
        if loaded is None or not layer:
            return False
        cfg = self._config()
        started = self.commands.start_job(ImageJob(self.commands, self, loaded.bundle, loaded.data, layer, cfg,
                                                   self.maps_view.index_spin.value()))
        if started:
            self._maps_tried = self._maps_key()
        self.status_label.setText(f"Running test image {self.maps_view.index_spin.value()} through {layer}…"
                                  if started else "Wait for the running job to finish first.")
        return started

    @Slot(str)
    def _explain_layer_named(self, name: str) -> None:
        self.select_layer(name)
        if self.layer_combo.currentText() == name:
            self.explain()

    # --------------------------------------------------------------------- results
    @staticmethod
    def _summary(layer: str, method: str, chosen: ChannelScores | None, coupled: tuple[Coupled, ...]) -> str:
        cut = f"{chosen.n_cut} of {len(chosen.scores)} channels go" if chosen is not None else "no channels go"
        return f"<b>{layer}</b> under {method}: {cut}; {len(coupled)} layer(s) are tied to it."

    def show_chosen(self, event: ChosenScores) -> None:
        """Fill Why and Dependency group from the chosen method's scores, before the other criteria exist."""
        self._criteria_so_far = None
        self._criteria_timer.stop()
        self.why_view.show_scores(event.scores, event.method)
        self.group_view.show_group(event)
        self.criteria_view.show_pending(event.layer)
        self._chosen_summary = self._summary(event.layer, event.method, event.scores, event.coupling)
        self._explained = self._explaining
        self.status_label.setText(self._chosen_summary + " Scoring the other criteria…")
        # the coupling is known now: the Network tab need not wait for Taylor's calibration
        self._coupling_shown = (event.layer, [c.layer for c in event.coupling])
        self.coupling_reasons = {c.layer: c.reason for c in event.coupling}
        self.coupled_layers.emit(*self._coupling_shown)

    def show_criteria_so_far(self, event: CriteriaSoFar) -> None:
        """One more criterion scored: say which comes next, and redraw the comparison soon."""
        self._criteria_so_far = event.criteria
        if not self._criteria_timer.isActive():
            self._criteria_timer.start()
        text = self._chosen_summary
        if event.pending:
            name = event.pending[0]
            calibrated = " (calibration on training images)" if get_method(name).calibration is not None else ""
            done = len(event.criteria.methods)
            text += (f" Scoring {name}{calibrated}… {done} of {done + len(event.pending)} criteria compared "
                     "(<i>Criteria side by side</i> fills in as they arrive).")
        self.status_label.setText(text)

    @Slot()
    def _draw_criteria_so_far(self) -> None:
        if self._criteria_so_far is not None:
            self.criteria_view.show_criteria(self._criteria_so_far)
            self._criteria_so_far = None

    def forget_criteria_so_far(self) -> None:
        """Drop a partial comparison not yet drawn (the job ended)."""
        self._criteria_so_far = None
        self._criteria_timer.stop()

    def show_explanation(self, explanation: Explanation) -> None:
        """Fill the views from a finished explanation (the ones already filled from its events are kept)."""
        self.forget_criteria_so_far()
        self.explanation = explanation
        if self.why_view.scores is not explanation.chosen or explanation.chosen is None:
            self.why_view.show_scores(explanation.chosen, explanation.method)
        self.criteria_view.show_criteria(explanation.criteria)
        self.group_view.show_group(explanation)
        self._chosen_summary = self._summary(explanation.layer, explanation.method, explanation.chosen,
                                             explanation.coupling)
        self._explained = self._explaining
        self.status_label.setText(self._chosen_summary)
        coupling = (explanation.layer, [c.layer for c in explanation.coupling])
        if coupling != self._coupling_shown:
            self.coupling_reasons = {c.layer: c.reason for c in explanation.coupling}
            self.coupled_layers.emit(*coupling)
        self._coupling_shown = None
