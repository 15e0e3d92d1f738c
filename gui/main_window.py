"""The main window: model & data, method panel, graph, live plots, histograms, results, experiments.

The window puts three parts together and connects them: the session model (gui/session.py: the loaded
model, the runs, the selection; it announces changes with signals), the views (gui/layout.py's
`WindowLayout`, gui/menus.py's `WindowMenus`) and the job runner (gui/job_runner.py: job objects from
gui/jobs.py on the one worker thread). The parts below it get the session and the window's `Commands`
(gui/commands.py), never the window: nothing imports this module but the entry points that open it.
"""
from __future__ import annotations

import gc
import logging
import os
import shutil
from html import escape
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QMainWindow, QMessageBox

from engine.config import amount_words, default_of, only_target
from engine.errors import UserError
from engine.events import Progress
from engine.methods import get_method
from engine.models import ModelBundle
from engine.outputs import process_temp_dir
from engine.sources import ModelSource
from engine.units import fmt_count
from gui import dialogs, theme
from gui.commands import BUSY_MESSAGE, Commands
from gui.engine_calls import LoadRequest, Loaded, Sensitivity
from gui.job_runner import JobRunner
from gui.jobs import DetailsJob, LoadJob, PlanJob, RunJob, SensitivityJob, WorkerJob
from gui.layout import WindowLayout
from gui.lesson import LessonDock, show_lessons
from gui.menus import WindowMenus
from gui.open_model import OpenModelDialog, open_model_dialog
from gui.open_model_recipe import remember_recipe, remembered_dataset, remembered_recipe
from gui.results import RunRecord, context_of
from gui.session import DEFAULT_MODEL, SessionModel
from gui.settings import Settings
from gui.source_panel import DEFAULT_DATA
from gui.watch import start_watch
from gui.widgets import guard_wheel

log = logging.getLogger(__name__)

# The ratio a sensitivity scan aims at when the Prune panel asks for a speed-up instead: the engine's default
SCAN_RATIO = default_of("pruning_ratio")
MODEL_SUFFIXES = (".pt", ".pth", ".pkl", ".ckpt", ".bin", ".tar", ".safetensors")
HINT_START = ("<b>Try it:</b> {model} is loaded and <b>{method}</b> is selected. Press <b>Run</b> "
              "(Ctrl+R) and watch accuracy, size and speed change step by step. Then pick another method and run "
              "again: each run gets its own colour, and the <i>Results</i> tab compares them.")


WORK_PREFIX = "prunelab-gui-"  # + host.pid.random: the window's ONNX graphs and exports, removed on close
ASK_BEFORE_CLOSING = {"run": "A pruning run", "plan": "An experiment plan", "sensitivity": "A sensitivity scan"}


def make_work_dir() -> Path:
    """A temporary folder of this process's own, after removing those of windows whose process is gone."""
    return process_temp_dir(WORK_PREFIX)


class MainWindow(QMainWindow):
    """PruneLab's main window."""

    def __init__(self, settings: Settings | None = None, autoload: bool = True, log_path: Path | None = None) -> None:
        super().__init__()
        self.setWindowTitle("PruneLab")
        self.setAcceptDrops(True)
        self.session = SessionModel(settings or Settings(), make_work_dir(), log_path)
        self.session.setParent(self)  # deleted with the window: unparented, its connections kept the window alive
        self.jobs = JobRunner(self.memory_limit, self)
        self.error_box: QMessageBox | None = None
        self.close_box: QMessageBox | None = None  # "quit while a run is going?", while it is open
        self.continue_box: QMessageBox | None = None  # "continue from this run how?", while it is open
        self.open_model_dialog: OpenModelDialog | None = None  # the last one (one at a time)
        self.lesson_dock: LessonDock | None = None
        self.quit_confirmed = False
        # load and ask_trust are looked up at each call: a test may replace the window's own method
        self.commands = Commands(
            session=self.session, parent=self,
            say=lambda text, ms: self.statusBar().showMessage(text, ms),
            set_phase=lambda text: self.ui.phase_label.setText(text),
            set_hint=lambda text: self.ui.hint_label.setText(text),
            show_source_note=lambda text: self.ui.summary_label.setText(text),
            show_current_source=self.show_current_source,
            show_data_in_use=lambda: self.ui.source.fill_data(self.current_data_spec()),
            show_error=self.show_error,
            ask_trust=lambda path, message, what="pickle": self._ask_trust(path, message, what),
            current_data_spec=self.current_data_spec, load=lambda *args, **kw: self.load(*args, **kw),
            open_model_file=self.open_model_file,
            open_model_dialog=self.show_open_model, choose_model_file=lambda: self.menus.open_model(),
            start_run=self.start_run, busy=lambda: self.jobs.busy, job_stopped=self.jobs.stopped,
            start_job=self.start_job, cancel_job=self.cancel_job)
        self.menus = WindowMenus(self, self.commands)
        self.ui = WindowLayout(self, self.commands, self.menus.run_action, self.menus.cancel_action)
        self._connect_views()
        self.menus.build(self.ui, DEFAULT_DATA, self.ask_memory_limit, self.show_lessons)
        self.ui.restore(self.settings.geometry(), self.settings.window_state())
        self.ui.method_panel.restore(self.settings.options("method"))
        self._update_actions()
        guard_wheel(self)  # the wheel scrolls panels; it changes a value only in the control that has focus
        self.watch = start_watch(self, self.session, self.jobs, self.ui)  # only under the real-window test
        if autoload:
            QTimer.singleShot(0, self, self.load_startup_model)

    def _connect_views(self) -> None:
        """The views follow the session; the user's requests in the views reach the window's commands."""
        ui, session, jobs = self.ui, self.session, self.jobs
        ui.graph_view.layer_table.layer_selected.connect(self._on_layer_selected)
        ui.histograms.layer_selected.connect(self._on_layer_selected)
        ui.results.run_selected.connect(session.select_run)
        ui.results.continue_requested.connect(self.ask_continue)
        ui.results.remove_requested.connect(self.remove_run)
        ui.graph_view.scan_button.clicked.connect(self.start_sensitivity_scan)
        ui.graph_view.time_chart.attach(self.commands)
        ui.graph_view.apply_button.clicked.connect(self._on_apply_suggested_ratios)
        ui.experiment.run_requested.connect(self.start_plan)
        ui.experiment.cancel_requested.connect(self.cancel_job)
        ui.experiment.run_selected.connect(self.show_plan_run)
        ui.method_panel.options_changed.connect(self._on_options_changed)
        ui.method_panel.method_changed.connect(self._refresh_start_hint)
        self._refresh_start_hint()
        session.loaded_changed.connect(self._on_loaded)
        session.detail_found.connect(self.show_detail)
        session.run_step.connect(self._on_run_step)
        session.run_phase.connect(lambda run_id, phase: ui.plots.add_phase(run_id, phase.step, phase.phase,
                                                                            phase.top1))
        session.run_done.connect(self._on_run_done)
        session.run_finished.connect(self._on_run_finished)
        session.run_dropped.connect(ui.plots.remove_run)
        session.run_removed.connect(self._on_run_removed)
        session.run_selected.connect(self._on_run_selected)
        session.sensitivity_changed.connect(self._on_sensitivity)
        session.layer_scores.connect(ui.graph_view.show_sensitivity)
        jobs.started.connect(self._on_job_started)
        jobs.changed.connect(self._on_jobs_changed)
        jobs.progressed.connect(self._on_progress)
        jobs.phase.connect(ui.phase_label.setText)
        jobs.idle.connect(self.start_details)

    # ===================================================================== the window's public face
    @property
    def settings(self) -> Settings:
        return self.session.settings

    @property
    def work_dir(self) -> Path:
        return self.session.work_dir

    @property
    def busy(self) -> bool:
        """True while a job runs or waits to run (a background job alone leaves the window usable)."""
        return self.jobs.busy

    @property
    def job_stopped(self):
        """Emitted after any job the user asked for ended, with its name ("load", "run", ...)."""
        return self.jobs.stopped

    @property
    def run_finished(self):
        """Emitted when a run finished with results."""
        return self.session.run_finished

    # ===================================================================== loading
    def load_startup_model(self) -> None:
        """Load the built-in demo model and Fashion-MNIST (the first screen)."""
        self.load(os.environ.get("PRUNELAB_START_MODEL", DEFAULT_MODEL), DEFAULT_DATA, startup=True)

    def load(self, model_src: str | None, data_spec: str, trust: bool = False, bundle: ModelBundle | None = None,
             startup: bool = False, recipe: Any = None) -> bool:
        """Load a model and dataset in the background (as `recipe`, a ModelRecipe, says); False while busy."""
        if self.busy:
            self.statusBar().showMessage(BUSY_MESSAGE, 5000)
            return False
        request = LoadRequest(model_src, data_spec, trust, bundle, self.session.raw_data_cache.get(data_spec),
                              export_graph=self.ui.graph_view.enabled, work_dir=self.work_dir, recipe=recipe)
        self.ui.summary_label.setText(f"Loading <b>{model_src or bundle.source}</b> with {data_spec}…")
        self.start_job(LoadJob(self.commands, request, startup))
        return True

    def open_model_file(self, path: str) -> bool:
        """Reopen a recent model file exactly as it was opened last time: its remembered recipe (architecture,
        input, normalisation, trust) on its remembered dataset. A file with no recipe is loaded as it is (a
        PruneLab file or a whole model, with the trust question where it holds code); one that holds only
        weights then goes to the Open model dialog, which asks for the architecture (see LoadJob)."""
        recipe = remembered_recipe(self.settings, path)
        if recipe is None:
            return self.load(path, self.current_data_spec())
        data = remembered_dataset(self.settings, path) or self.current_data_spec()
        return self.load(path, data, trust=recipe.trust, recipe=recipe)

    def show_open_model(self, path: str | None = None, untrained: bool = False,
                        data_spec: str | None = None) -> OpenModelDialog | None:
        """The Open model dialog (window-modal, not blocking); None while another job runs."""
        dialog = open_model_dialog(self.commands, path, untrained, data_spec, previous=self.open_model_dialog)
        if dialog is not None:
            self.open_model_dialog = dialog
        return dialog

    def current_data_spec(self) -> str:
        """The dataset spec in use (or selected)."""
        if self.session.loaded is not None:
            return self.session.loaded.request.data_spec
        data = self.ui.data_combo.currentData()
        return data if data and not str(data).startswith("__") else DEFAULT_DATA

    @Slot(object)
    def _on_loaded(self, loaded: Loaded) -> None:
        """`loaded` is the model every view shows and every job works on now."""
        ui = self.ui
        src = loaded.request.model_src
        if src:
            if not ModelSource.parse(src).is_demo:
                self.settings.add_recent("models", src)
            if loaded.request.recipe is not None:  # reopening from the recent list asks nothing
                remember_recipe(self.settings, src, loaded.request.recipe, loaded.request.data_spec)
            ui.source.fill_models(src)
        if loaded.request.data_spec != DEFAULT_DATA:
            self.settings.add_recent("datasets", loaded.request.data_spec)
        ui.source.fill_data(loaded.request.data_spec)
        ui.graph_view.layer_table.set_layers(loaded.layers, loaded.head)
        ui.graph_view.fit_table()
        ui.graph_view.set_original(loaded.onnx_path, "Exporting the graph for Netron in the background…"
                                   if "graph" in loaded.pending else loaded.onnx_error)
        ui.histograms.set_layers([info.name for info in loaded.layers])
        ui.histograms.set_steps([], theme.run_colour(0))
        ui.histograms.set_data({}, (), theme.run_colour(0))
        ui.source.show_summary(loaded)
        ui.experiment.set_model_source(loaded.bundle.source or src or "model", loaded.request.data_spec)
        context, name = context_of(loaded)  # runs belong to the model and dataset they were made on
        ui.results.set_context(context, name)
        ui.plots.set_context(context, name)
        self._refresh_start_hint(new_model=True)
        shown = ui.results.shown_runs()
        if shown:  # loaded again: its latest run fills Weights, the graph and the layer table, as after a click
            latest = max(run.run_id for run in shown)
            ui.results.select_run(latest)
            self.session.select_run(latest)
        self.statusBar().showMessage(f"Loaded {loaded.summary['architecture']} with {loaded.data.name}", 5000)
        if loaded.layers:
            ui.graph_view.layer_table.select_layer(loaded.layers[0].name)
            ui.histograms.select_layer(loaded.layers[0].name)
        # Once every view has let go of the previous model, its reference cycles (torch-pruning's graph, Qt
        # wrappers) go now rather than in a collection the worker would trigger. The libraries were put out
        # of the collector's reach at start-up (engine.budget.freeze_long_lived), so this scans only windows,
        # models and data; freezing those too at each load made every load unfreeze and scan all 430 000.
        gc.collect()

    @Slot(str)
    def show_detail(self, name: str) -> None:
        """A fact found in the background after Ready: the graph, or a line of the card."""
        loaded, ui = self.session.loaded, self.ui
        if name != "graph":
            ui.source.show_summary(loaded)
            return
        ui.graph_view.set_original(loaded.onnx_path, loaded.onnx_error)
        run = self.session.selected_record()  # set_original forgets the pruned graph and the colours: give them back
        if run is not None and run.onnx_path is not None:
            ui.graph_view.set_pruned(run.onnx_path, run.label)
        if self.session.sensitivity is not None:
            ui.graph_view.show_sensitivity(self.session.sensitivity.result.layer_scores())

    def show_current_source(self) -> None:
        """Show the loaded model again in the combo box and card (after a load that did not replace it)."""
        if self.session.loaded is not None:
            self.ui.source.fill_models(self.session.current_model_src())
            self.ui.source.fill_data(self.current_data_spec())
            self.ui.source.show_summary(self.session.loaded)

    @Slot()
    def _refresh_start_hint(self, *_args, new_model: bool = False) -> None:
        """The first hint names the loaded model and the method actually selected (until a run replaces the
        hint; loading another model brings it back, since that model has no run to look at yet)."""
        text = self.ui.hint_label.text()
        if not text or text.startswith("<b>Try it:</b>") or (new_model and text.startswith("<b>Next:</b>")):
            loaded = self.session.loaded
            title = self.ui.method_panel.current_method().title.split(" (")[0]
            source = loaded.bundle.source if loaded is not None else None
            model = ("the demo model" if not source or ModelSource.parse(source).is_demo
                     else f"<b>{escape(loaded.summary.get('architecture', 'your model'))}</b>")
            self.ui.hint_label.setText(HINT_START.format(model=model, method=escape(title)))

    def memory_limit(self) -> int:
        """The memory budget of every job, in bytes (Settings ▸ Memory limit; default a share of the machine)."""
        return dialogs.memory_limit(self.settings)

    @Slot()
    def ask_memory_limit(self) -> None:
        """Let the user set the memory budget; a value that is not a size gets a dialog and changes nothing."""
        current = dialogs.limit_text(self.settings)
        try:
            limit = dialogs.ask_memory_limit(self, self.settings)
        except UserError as exc:
            self.show_error("Not a memory limit", str(exc), info=f"The memory limit is still {current}.")
            return
        if limit is not None:
            self.statusBar().showMessage(f"Memory limit: {limit / 2 ** 30:.1f} GiB", 8000)

    def _ask_trust(self, path: str, message: str, what: str = "pickle") -> bool:
        """Ask whether to load a file that holds code (tests replace this method to answer for the user)."""
        return dialogs.ask_trust(self, path, message, what)

    def show_lessons(self) -> LessonDock:
        """The Lesson panel (Help ▸ Lessons), created the first time."""
        self.lesson_dock = show_lessons(self, self.commands, self.ui)
        return self.lesson_dock

    # ===================================================================== starting jobs
    def start_run(self, *, parent: int | None = None, manual_channels: dict | None = None,
                  recover_only: bool = False) -> bool:
        """Start a pruning run with the panel's options; False when it cannot start. `parent` continues
        from that finished run's pruned model (`recover_only`: its recovery only, nothing cut);
        `manual_channels` runs the manual method on those channels."""
        session, ui = self.session, self.ui
        if self.busy:
            self.statusBar().showMessage(BUSY_MESSAGE, 5000)
            return False
        if session.loaded is None:
            self.show_error("Nothing to prune", "Load a model first (File ▸ Open model, or a demo model).")
            return False
        source = session.runs.get(parent) if parent is not None else None
        if parent is not None and (source is None or source.pruned is None):
            self.show_error("Cannot continue from this run", "Only a finished run has a pruned model to continue from.")
            return False
        bundle = source.pruned if source is not None else session.loaded.bundle
        ignored, ratios = ui.graph_view.layer_table.choices()
        manual = dict(method="manual", manual_channels=manual_channels, **only_target()) if manual_channels else {}
        try:
            cfg = ui.method_panel.config(ignored_layers=ignored, layer_ratios=ratios, **manual)
            cfg.validate()
            bundle.require_prunable()
        except UserError as exc:
            self.show_error("Cannot start this run", str(exc))
            return False
        run_id = session.next_run_id()
        record = RunRecord(run_id, f"#{run_id}", theme.run_colour(run_id - 1), cfg, parent=parent,
                           recover_only=recover_only and parent is not None)
        session.add_run(record)
        lineage = f" ← {source.label}" if source is not None else ""
        what = "recover only" if record.recover_only else get_method(cfg.method).title
        ui.plots.add_run(run_id, f"#{run_id}{lineage} {what}", record.colour)
        ui.tabs.setCurrentWidget(ui.plots)
        self.settings.save_options("method", ui.method_panel.options())
        log.info("run %d%s: %s", run_id, f" from run {parent}" if parent else "", cfg.to_json())
        self.start_job(RunJob(self.commands, ui.method_panel, record, bundle, session.loaded.data,
                              ui.graph_view.enabled, self.work_dir))
        return True

    def start_sensitivity_scan(self) -> bool:
        """Scan each dependency group's accuracy drop in the background (structured methods only)."""
        if self.busy or self.session.loaded is None:
            return False
        panel = self.ui.method_panel
        method = panel.current_method()
        cfg = panel.config()
        # the scan removes channels, so it needs a structured ranking: the panel's, or group L2
        name = method.name if method.structured else "l2"
        ratio = cfg.pruning_ratio if cfg.pruning_ratio is not None else SCAN_RATIO
        self.ui.tabs.setCurrentWidget(self.ui.graph_view)
        loaded = self.session.loaded
        self.start_job(SensitivityJob(self.commands, loaded.bundle, loaded.data, name, ratio, cfg.round_to,
                                      cfg.max_layer_ratio))
        return True

    @Slot(object)
    def start_plan(self, plan) -> bool:
        """Run an experiment plan from the Experiment tab on the loaded model and dataset."""
        experiment, loaded = self.ui.experiment, self.session.loaded
        if self.busy or loaded is None:
            experiment.set_running(False)
            self.show_error("Cannot start the plan", "Another job is running; wait for it or cancel it."
                            if self.busy else "Load a model first (File ▸ Open model, or a demo model).")
            return False
        try:
            loaded.bundle.require_prunable()
        except UserError as exc:
            experiment.set_running(False)
            self.show_error("Cannot start the plan", str(exc))
            return False
        store_path = experiment.store_path()
        self.settings.set_value("experiment/store", str(store_path))
        log.info("plan: %s", plan.to_json())
        self.ui.tabs.setCurrentWidget(experiment)
        self.start_job(PlanJob(self.commands, experiment, plan, store_path, loaded.bundle, loaded.data,
                               self.memory_limit()))
        return True

    def start_job(self, job: WorkerJob) -> bool:
        """Run `job` on the worker thread (gui/job_runner.py); False while another runs."""
        return self.jobs.start(job)

    def start_details(self) -> bool:
        """Find the loaded model's pending facts in the background, when the window is idle (and shown: a closed
        window's last queued signals must not start a thread that nothing would stop)."""
        loaded = self.session.loaded
        if self.jobs.worker is not None or loaded is None or not loaded.pending or not self.isVisible():
            return False
        return self.start_job(DetailsJob(self.commands, loaded))

    def cancel_job(self) -> None:
        """Ask the running job to stop (answers at the engine's next check, well within a second or two)."""
        if self.jobs.cancel():
            self.ui.phase_label.setText("Cancelling…")

    def _update_actions(self) -> None:
        busy, loaded, menus, ui = self.busy, self.session.loaded, self.menus, self.ui
        menus.run_action.setEnabled(not busy and loaded is not None)
        menus.cancel_action.setEnabled(busy)
        menus.open_action.setEnabled(not busy)
        menus.new_model_action.setEnabled(not busy)
        ui.model_combo.setEnabled(not busy)
        ui.data_combo.setEnabled(not busy)
        run = self.session.selected_record()
        menus.export_model_action.setEnabled(not busy and run is not None and run.pruned is not None)
        menus.export_onnx_action.setEnabled(not busy and loaded is not None)
        menus.export_csv_action.setEnabled(ui.results.row_count() > 0)
        can_scan = not busy and loaded is not None and not loaded.bundle.scripted
        ui.graph_view.scan_button.setEnabled(can_scan)
        ui.graph_view.apply_button.setEnabled(not busy and self.session.sensitivity is not None)
        ui.experiment.run_button.setEnabled(not busy and loaded is not None)
        ui.experiment.cancel_button.setEnabled(False)
        ui.experiment.choose_button.setEnabled(not busy)
        menus.open_store_action.setEnabled(not busy)
        job = self.jobs.next_job or self.jobs.job  # the job waiting for a background one to give way is the user's
        for control in job.controls() if job is not None else ():
            control.setEnabled(True)  # the job's own controls (the plan's Cancel) work while it runs

    # ===================================================================== the runner's signals
    @Slot(object)
    def _on_job_started(self, job: WorkerJob) -> None:
        self.ui.progress_bar.setValue(0)
        self.ui.progress_bar.setVisible(not job.background)

    @Slot()
    def _on_jobs_changed(self) -> None:
        if self.jobs.worker is None:
            self.ui.progress_bar.hide()
            self.ui.eta_label.setText("")
        self._update_actions()

    @Slot(object, object)
    def _on_progress(self, job: WorkerJob, event: Progress) -> None:
        ui = self.ui
        if job.background:  # the phase, bar and ETA belong to the work the user asked for
            ui.eta_label.setText(f"{job.progress_prefix()}{event.message}" if event.done < event.total else "")
            return
        ui.phase_label.setText(f"{job.progress_prefix()}{event.phase}: {event.message}")
        ui.progress_bar.setRange(0, 100 if event.total > 0 else 0)  # no total yet (a folder listing): busy
        ui.progress_bar.setValue(int(event.fraction * 100))
        ui.progress_bar.setFormat(f"{event.phase} %p%")
        ui.eta_label.setText(f"ETA {event.eta_s:.0f} s" if event.eta_s is not None and event.done < event.total
                             else "")

    # ===================================================================== the session's signals
    @Slot(int, object)
    def _on_run_step(self, run_id: int, step) -> None:
        record = self.session.runs[run_id]
        self.ui.plots.add_step(run_id, step.step, step.metrics)
        if self.session.selected_run == run_id:
            self.ui.histograms.set_steps(record.steps, record.colour)
            self.ui.graph_view.layer_table.show_stats(step.layers if step.step > 0 else None, record.config)

    @Slot(int)
    def _on_run_done(self, run_id: int) -> None:
        self.ui.results.add_run(self.session.runs[run_id])
        self.ui.results.select_run(run_id)

    @Slot(int)
    def _on_run_finished(self, run_id: int) -> None:
        record = self.session.runs[run_id]
        if self.session.selected_run == run_id:
            self.ui.graph_view.set_pruned(record.onnx_path, record.label)
        self.ui.results.update_continue()  # the pruned model exists now: it can be continued from

    @Slot(object)
    def _on_sensitivity(self, sensitivity: Sensitivity) -> None:
        self.ui.graph_view.show_sensitivity(sensitivity.result.layer_scores())
        self.ui.experiment.show_sensitivity(sensitivity.result)

    # ===================================================================== selection
    @Slot()
    def _on_apply_suggested_ratios(self) -> None:
        sensitivity = self.session.sensitivity
        if sensitivity is not None and sensitivity.proposal is not None:
            self.ui.graph_view.layer_table.set_ratios(sensitivity.proposal.layer_ratios)
            p = sensitivity.proposal
            self.statusBar().showMessage(f"Per-layer ratios set: {p.macs / max(1, p.base_macs):.0%} of the original "
                                         f"MACs (uniform {sensitivity.target_ratio:.0%}: "
                                         f"{p.uniform_macs / max(1, p.base_macs):.0%})", 10000)

    @Slot(str)
    def _on_layer_selected(self, name: str) -> None:
        self.ui.graph_view.layer_table.select_layer(name)
        self.ui.histograms.select_layer(name)

    @Slot(int)
    def _on_run_selected(self, run_id: int) -> None:
        record = self.session.runs[run_id]
        self.ui.plots.select_run(run_id)
        last = record.steps[-1] if record.steps else None
        if last is not None:
            self.ui.histograms.set_steps(record.steps, record.colour)
            self.ui.graph_view.layer_table.show_stats(last.layers if last.step > 0 else None, record.config)
        self.ui.graph_view.set_pruned(record.onnx_path, record.label)
        self._update_actions()

    @Slot(int)
    def remove_run(self, run_id: int) -> bool:
        """Take a finished, cancelled or failed run out of the session (not the one running, not one that runs
        were continued from): Results, the scatter and the live plots forget it."""
        job = self.jobs.job
        record = self.session.remove_run(run_id, running=job is not None and job.name == "run")
        if record is None:
            return False
        self.statusBar().showMessage(f"{record.label} removed from this session", 5000)
        return True

    @Slot(int)
    def _on_run_removed(self, run_id: int) -> None:
        self.ui.results.remove_run(run_id)
        self.ui.plots.remove_run(run_id)
        self._update_actions()

    @Slot()
    def _on_options_changed(self) -> None:
        self.settings.save_options("method", self.ui.method_panel.options())

    @Slot(int)
    def ask_continue(self, run_id: int) -> QMessageBox | None:
        """*Continue from this run* asks first what to do with it: it once pruned run #7 again at once, with
        whatever method and ratio the Prune panel happened to show. Window-modal, not blocking."""
        record = self.session.runs.get(run_id)
        if record is None or self.busy:
            return None
        cfg = self.ui.method_panel.config()
        amount = amount_words(cfg)
        recovery = (f"then fine-tune {cfg.finetune_epochs:g} epoch(s)" if cfg.finetune_epochs else
                    "then BatchNorm re-estimation" if cfg.bn_recalibrate else "with no recovery")
        box = QMessageBox(QMessageBox.Icon.Question, f"Continue from {record.label}",
                          f"Prune {record.label}'s pruned model further with <b>{get_method(cfg.method).title}</b> "
                          f"at <b>{amount}</b> of what is left, {recovery}?", QMessageBox.StandardButton.Cancel, self)
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
        box.buttonClicked.connect(lambda button: self.start_run(parent=run_id) if button is further else
                                  self.start_run(parent=run_id, recover_only=True) if button is recover else None)
        box.open()
        self.continue_box = box
        return box

    @Slot(str)
    def show_plan_run(self, key: str) -> None:
        """A run clicked in the Experiment tab: summarise it and offer its pruned graph in the Network tab."""
        result = self.ui.experiment.result(key)
        if result is None:
            return
        m = result.metrics
        onnx = result.files.get("onnx")
        if onnx and Path(onnx).is_file():
            self.ui.graph_view.set_pruned(Path(onnx), result.label)
        where = f"; saved in {Path(result.files['model']).parent}" if result.files.get("model") else ""
        self.statusBar().showMessage(f"{result.label}: top-1 {m.top1:.2%}, {fmt_count(m.params)} parameters, "
                                     f"{fmt_count(m.macs)} MACs{where}", 15000)

    # ===================================================================== dialogs
    def show_error(self, title: str, message: str, details: str = "", info: str = "The loaded model is unchanged."
                   ) -> QMessageBox:
        """Show an error without blocking (window-modal); the app stays usable afterwards."""
        if self.error_box is not None:
            self.error_box.close()
        if self.session.log_path is not None:
            info += f" The log is in {self.session.log_path}."
        self.error_box = dialogs.error_box(self, title, message, details, info)
        return self.error_box

    # ===================================================================== window events
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt override)
        """Accept model files and dataset folders."""
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile() and not self.busy:
            path = Path(urls[0].toLocalFile())
            if path.is_dir() or path.suffix.lower() in MODEL_SUFFIXES:
                event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt override)
        """A dropped file opens the Open model dialog, a dropped folder is loaded as the dataset."""
        urls = event.mimeData().urls()
        if not urls:
            return
        path = Path(urls[0].toLocalFile())
        if path.is_dir():
            kind = "cifar10" if (path / "batches.meta").exists() else "imagefolder"
            self.load(self.session.current_model_src(), f"{kind}:{path}")
        else:
            self.show_open_model(str(path))
        event.acceptProposedAction()

    def ask_before_closing(self) -> QMessageBox:
        """Ask, without blocking, whether to stop the user's running work and quit; Cancel is the default."""
        job = self.jobs.next_job or self.jobs.job
        what = ASK_BEFORE_CLOSING.get(job.name, "A job")
        if job.name == "run" and self.session.current_run is not None:
            what += f" (#{self.session.current_run})"
        box = QMessageBox(QMessageBox.Icon.Question, "Quit PruneLab?", f"{what} is still going. Quit anyway?",
                          QMessageBox.StandardButton.Cancel, self)
        box.setInformativeText("Stopping it keeps every run that has finished; the work in progress is lost.")
        stop = box.addButton("Stop the run and quit", QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.setEscapeButton(QMessageBox.StandardButton.Cancel)
        box.setWindowModality(Qt.WindowModality.WindowModal)

        def answered(button) -> None:
            self.close_box = None
            if button is stop:
                self.quit_confirmed = True
                self.close()

        box.buttonClicked.connect(answered)
        box.rejected.connect(lambda: setattr(self, "close_box", None))
        box.open()
        self.close_box = box
        return box

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        """Ask first when the user's work is running; then save the layout and options, stop a running job
        cleanly (never terminate the thread) and remove the window's temporary folder."""
        job = self.jobs.next_job or self.jobs.job
        if job is not None and job.name in ASK_BEFORE_CLOSING and not self.quit_confirmed:
            event.ignore()
            if self.close_box is None:
                self.ask_before_closing()
            else:
                self.close_box.raise_()
            return
        self.jobs.shutdown()
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self.settings.save_options("method", self.ui.method_panel.options())
        self.settings.sync()
        self.ui.graph_view.shutdown()
        shutil.rmtree(self.work_dir, ignore_errors=True)
        super().closeEvent(event)
