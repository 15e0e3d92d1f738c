"""The main window: model & data, method panel, graph, live plots, histograms, results, experiments.

Widgets react to state through `_on_<event>` slots; the window owns the state (the loaded model,
the runs of the session) and hands long work to the one worker (gui/worker_thread.py) as job objects
(gui/jobs.py), which handle their own events and outcome.
"""
from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
from html import escape
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QMainWindow, QMessageBox

from engine.data import Dataset
from engine.errors import UserError
from engine.events import Progress
from engine.methods import get_method
from engine.models import ModelBundle
from engine.outputs import HOST, _pid_alive
from gui import dialogs, theme
from gui.jobs import DetailsJob, WorkerJob, LoadJob, PlanJob, RunJob, SensitivityJob
from gui.layout import build_central, build_side_dock, build_status_bar, restore_layout
from gui.menus import build_actions, build_menus
from gui.open_model import open_model_dialog
from gui.open_model_recipe import remember_recipe, remembered_dataset, remembered_recipe
from gui.results import RunRecord, context_of
from gui.settings import Settings
from gui.source_panel import DEFAULT_DATA
from gui.watch import start_watch
from gui.widgets import guard_wheel
from gui.engine_calls import LoadRequest, Loaded, Sensitivity
from gui.worker_thread import Failure, Worker, start_worker

log = logging.getLogger(__name__)

DEFAULT_MODEL = "demo:resnet"
MODEL_SUFFIXES = (".pt", ".pth", ".pkl", ".ckpt", ".bin", ".tar", ".safetensors")
HINT_START = ("<b>Try it:</b> {model} is loaded and <b>{method}</b> is selected. Press <b>Run</b> "
              "(Ctrl+R) and watch accuracy, size and speed change step by step. Then pick another method and run "
              "again: each run gets its own colour, and the <i>Results</i> tab compares them.")


WORK_PREFIX = "prunelab-gui-"  # + host.pid.random: the window's ONNX graphs and exports, removed on close
ASK_BEFORE_CLOSING = {"run": "A pruning run", "plan": "An experiment plan", "sensitivity": "A sensitivity scan"}


def make_work_dir() -> Path:
    """A temporary folder of this process's own, after removing those of windows whose process is gone."""
    remove_stale_work_dirs(Path(tempfile.gettempdir()))
    return Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{HOST}.{os.getpid()}."))


def remove_stale_work_dirs(root: Path) -> None:
    """Remove the work folders a crashed or killed window left in `root` (its process is gone, on this host),
    as engine.outputs does for a writer's temporaries; another live window's folder stays."""
    for entry in root.glob(f"{WORK_PREFIX}*"):
        parts = entry.name[len(WORK_PREFIX):].split(".")
        if len(parts) == 3 and parts[0] == HOST and parts[1].isdigit() and int(parts[1]) != os.getpid() \
                and not _pid_alive(int(parts[1])) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


class MainWindow(QMainWindow):
    """PruneLab's main window."""

    job_stopped = Signal(str)  # emitted after any background job ended, with its name ("load", "run", ...)
    run_finished = Signal(int)  # a run finished with results

    def __init__(self, settings: Settings | None = None, autoload: bool = True, log_path: Path | None = None) -> None:
        super().__init__()
        self.settings = settings or Settings()
        self.log_path = log_path
        self.setWindowTitle("PruneLab")
        self.setAcceptDrops(True)
        self.work_dir = make_work_dir()

        # state
        self.loaded: Loaded | None = None
        self.raw_data_cache: dict[str, Dataset] = {}
        self.runs: dict[int, RunRecord] = {}
        self.selected_run: int | None = None
        self.current_run: int | None = None  # the latest run started
        self.sensitivity: Sensitivity | None = None
        self.job: WorkerJob | None = None  # the running job; with it, its worker and thread
        self.next_job: WorkerJob | None = None  # waits for a background job to give way
        self.worker: Worker | None = None
        self.job_thread = None
        self.error_box: QMessageBox | None = None
        self.close_box: QMessageBox | None = None  # "quit while a run is going?", while it is open
        self.quit_confirmed = False

        build_actions(self)
        build_central(self)
        build_side_dock(self)
        build_status_bar(self)
        build_menus(self, DEFAULT_DATA)
        restore_layout(self)
        self.method_panel.restore(self.settings.options("method"))
        self._update_actions()
        guard_wheel(self)  # the wheel scrolls panels; it changes a value only in the control that has focus
        self.watch = start_watch(self)  # only under the real-window test (PRUNELAB_WATCH)
        if autoload:
            QTimer.singleShot(0, self.load_startup_model)

    # ===================================================================== loading
    def load_startup_model(self) -> None:
        """Load the built-in demo model and Fashion-MNIST (the first screen)."""
        self.load(os.environ.get("PRUNELAB_START_MODEL", DEFAULT_MODEL), DEFAULT_DATA, startup=True)

    def load(self, model_src: str | None, data_spec: str, trust: bool = False, bundle: ModelBundle | None = None,
             startup: bool = False, recipe: Any = None) -> bool:
        """Load a model and dataset in the background (as `recipe`, a ModelRecipe, says); False while busy."""
        if self.busy:
            self.statusBar().showMessage("Wait for the running job to finish (or cancel it) first", 5000)
            return False
        request = LoadRequest(model_src, data_spec, trust, bundle, self.raw_data_cache.get(data_spec),
                              export_graph=self.graph_view.enabled, work_dir=self.work_dir, recipe=recipe)
        self.summary_label.setText(f"Loading <b>{model_src or bundle.source}</b> with {data_spec}…")
        self.start_job(LoadJob(self, request, startup))
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

    def set_loaded(self, loaded: Loaded) -> None:
        """Make `loaded` the model every view shows and every job works on."""
        self.loaded = loaded
        # Move everything alive now (Qt wrappers, torch, the model, the dataset) out of the cyclic GC's
        # reach: a full collection triggered by the worker would otherwise scan it all while holding the
        # GIL, freezing the UI for ~200 ms (measured by benchmarks/gui_responsiveness.py). Unfreeze and collect
        # first, once per load: frozen objects are never collected, so the previous model's reference cycles
        # (torch-pruning's graph, Qt wrappers) and any garbage not yet collected would otherwise stay for good.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.raw_data_cache = {loaded.request.data_spec: loaded.raw_data}  # one dataset in memory at a time
        src = loaded.request.model_src
        if src:
            if not src.startswith("demo:"):
                self.settings.add_recent("models", src)
            if loaded.request.recipe is not None:  # reopening from the recent list asks nothing
                remember_recipe(self.settings, src, loaded.request.recipe, loaded.request.data_spec)
            self.source.fill_models(src)
        if loaded.request.data_spec != DEFAULT_DATA:
            self.settings.add_recent("datasets", loaded.request.data_spec)
        self.source.fill_data(loaded.request.data_spec)
        self.graph_view.layer_table.set_layers(loaded.layers, loaded.head)
        self.graph_view.fit_table()
        self.graph_view.set_original(loaded.onnx_path, "Exporting the graph for Netron in the background…"
                                     if "graph" in loaded.pending else loaded.onnx_error)
        self.histograms.set_layers([info.name for info in loaded.layers])
        self.histograms.set_steps([], theme.run_colour(0))
        self.histograms.set_data({}, (), theme.run_colour(0))
        self.source.show_summary(loaded)
        self.sensitivity = None  # a scan belongs to the model it was made on
        self.experiment.set_model_source(loaded.bundle.source or src or "model", loaded.request.data_spec)
        self.selected_run = None
        context, name = context_of(loaded)  # runs belong to the model and dataset they were made on
        self.results.set_context(context, name)
        self.plots.set_context(context, name)
        self._refresh_start_hint(new_model=True)
        shown = self.results.shown_runs()
        if shown:  # loaded again: its latest run fills Weights, the graph and the layer table, as after a click
            latest = max(run.run_id for run in shown)
            self.results.select_run(latest)
            self._on_run_selected(latest)
        self.statusBar().showMessage(f"Loaded {loaded.summary['architecture']} with {loaded.data.name}", 5000)
        if loaded.layers:
            self.graph_view.layer_table.select_layer(loaded.layers[0].name)
            self.histograms.select_layer(loaded.layers[0].name)

    def show_detail(self, name: str) -> None:
        """A fact found in the background after Ready: the graph, or a line of the card."""
        if name != "graph":
            self.source.show_summary(self.loaded)
            return
        self.graph_view.set_original(self.loaded.onnx_path, self.loaded.onnx_error)
        run = self.selected_record()  # set_original forgets the pruned graph and the colours: give them back
        if run is not None and run.onnx_path is not None:
            self.graph_view.set_pruned(run.onnx_path, run.label)
        if self.sensitivity is not None:
            self.graph_view.show_sensitivity(self.sensitivity.result.layer_scores())

    def show_current_source(self) -> None:
        """Show the loaded model again in the combo box and card (after a load that did not replace it)."""
        if self.loaded is not None:
            self.source.fill_models(self.current_model_src())
            self.source.fill_data(self.current_data_spec())
            self.source.show_summary(self.loaded)

    @Slot()
    def _refresh_start_hint(self, *_args, new_model: bool = False) -> None:
        """The first hint names the loaded model and the method actually selected (until a run replaces the
        hint; loading another model brings it back, since that model has no run to look at yet)."""
        text = self.hint_label.text()
        if not text or text.startswith("<b>Try it:</b>") or (new_model and text.startswith("<b>Next:</b>")):
            title = self.method_panel.current_method().title.split(" (")[0]
            source = self.loaded.bundle.source if self.loaded is not None else "demo:"
            model = ("the demo model" if (source or "demo:").startswith("demo:")
                     else f"<b>{escape(self.loaded.summary.get('architecture', 'your model'))}</b>")
            self.hint_label.setText(HINT_START.format(model=model, method=escape(title)))

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

    # ===================================================================== starting jobs
    @property
    def busy(self) -> bool:
        """True while a job runs or waits to run (a background job alone leaves the window usable)."""
        return self.worker is not None and (not self.job.background or self.next_job is not None)

    def start_run(self, *, parent: int | None = None, manual_channels: dict | None = None,
                  recover_only: bool = False) -> bool:
        """Start a pruning run with the panel's options; False when it cannot start. `parent` continues
        from that finished run's pruned model (`recover_only`: its recovery only, nothing cut);
        `manual_channels` runs the manual method on those channels."""
        if self.busy:
            self.statusBar().showMessage("Wait for the running job to finish (or cancel it) first", 5000)
            return False
        if self.loaded is None:
            self.show_error("Nothing to prune", "Load a model first (File ▸ Open model, or a demo model).")
            return False
        source = self.runs.get(parent) if parent is not None else None
        if parent is not None and (source is None or source.pruned is None):
            self.show_error("Cannot continue from this run", "Only a finished run has a pruned model to continue from.")
            return False
        bundle = source.pruned if source is not None else self.loaded.bundle
        ignored, ratios = self.graph_view.layer_table.choices()
        manual = dict(method="manual", manual_channels=manual_channels, pruning_ratio=None,
                      target_speedup=None) if manual_channels else {}
        try:
            cfg = self.method_panel.config(ignored_layers=ignored, layer_ratios=ratios, **manual)
            cfg.validate()
            bundle.require_prunable()
        except UserError as exc:
            self.show_error("Cannot start this run", str(exc))
            return False
        run_id = (max(self.runs) + 1) if self.runs else 1
        record = RunRecord(run_id, f"#{run_id}", theme.run_colour(run_id - 1), cfg, parent=parent,
                           recover_only=recover_only and parent is not None)
        self.runs[run_id] = record
        self.current_run = self.selected_run = run_id
        lineage = f" ← {source.label}" if source is not None else ""
        what = "recover only" if record.recover_only else get_method(cfg.method).title
        self.plots.add_run(run_id, f"#{run_id}{lineage} {what}", record.colour)
        self.tabs.setCurrentWidget(self.plots)
        self.settings.save_options("method", self.method_panel.options())
        log.info("run %d%s: %s", run_id, f" from run {parent}" if parent else "", cfg.to_json())
        self.start_job(RunJob(self, record, bundle, self.loaded.data, self.graph_view.enabled, self.work_dir))
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
        self.start_job(SensitivityJob(self, self.loaded.bundle, self.loaded.data, name, ratio, cfg.round_to,
                                      cfg.max_layer_ratio))
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
        store_path = self.experiment.store_path()
        self.settings.set_value("experiment/store", str(store_path))
        log.info("plan: %s", plan.to_json())
        self.tabs.setCurrentWidget(self.experiment)
        self.start_job(PlanJob(self, plan, store_path, self.loaded.bundle, self.loaded.data, self.memory_limit()))
        return True

    def start_job(self, job: WorkerJob) -> bool:
        """Run `job` on the worker thread and route the worker's signals to it; False while another runs.

        A background job running now is cancelled and `job` starts as soon as its thread is gone."""
        if self.busy:
            return False
        if self.worker is not None:  # a background job: it stops at its next check
            if job.background:
                return False
            self.next_job = job
            self.worker.cancel()
            self._update_actions()
            return True
        self.job = job
        # No automatic cyclic GC while a job runs: a full collection holds the GIL for 50–200 ms on a busy
        # machine and the UI thread would stall with it. Jobs free nearly everything by reference counting;
        # the few cycles (torch-pruning's graph) are collected once the job is over.
        gc.disable()
        self.worker = Worker(job.work, job.name, self.memory_limit() if job.guarded else None)
        self.worker.progressed.connect(self._on_job_event)
        self.worker.finished.connect(self._on_job_finished)
        self.worker.failed.connect(self._on_job_failed)
        self.worker.cancelled.connect(self._on_job_cancelled)
        self.job_thread = start_worker(self.worker, on_thread_done=self._on_thread_done)
        self.progress_bar.setValue(0)
        self.progress_bar.setVisible(not job.background)
        self._update_actions()
        return True

    def start_details(self) -> bool:
        """Find the loaded model's pending facts in the background, when the window is idle (and shown: a closed
        window's last queued signals must not start a thread that nothing would stop)."""
        if self.worker is not None or self.loaded is None or not self.loaded.pending or not self.isVisible():
            return False
        return self.start_job(DetailsJob(self, self.loaded))

    def cancel_job(self) -> None:
        """Ask the running job to stop (answers at the engine's next check, well within a second or two)."""
        if self.next_job is not None:  # not started yet: it ends here
            job, self.next_job = self.next_job, None
            self._on_job_cancelled(job)
            self._update_actions()
            self.job_stopped.emit(job.name)
            job.on_stopped()
        elif self.worker is not None and not self.job.background:
            self.worker.cancel()
            self.phase_label.setText("Cancelling…")

    def _update_actions(self) -> None:
        busy = self.busy
        self.run_action.setEnabled(not busy and self.loaded is not None)
        self.cancel_action.setEnabled(busy)
        self.open_action.setEnabled(not busy)
        self.new_model_action.setEnabled(not busy)
        self.model_combo.setEnabled(not busy)
        self.data_combo.setEnabled(not busy)
        run = self.selected_record()
        self.export_model_action.setEnabled(not busy and run is not None and run.pruned is not None)
        self.export_onnx_action.setEnabled(not busy and self.loaded is not None)
        self.export_csv_action.setEnabled(self.results.row_count() > 0)
        can_scan = not busy and self.loaded is not None and not self.loaded.bundle.scripted
        self.graph_view.scan_button.setEnabled(can_scan)
        self.graph_view.apply_button.setEnabled(not busy and self.sensitivity is not None)
        self.experiment.run_button.setEnabled(not busy and self.loaded is not None)
        self.experiment.cancel_button.setEnabled(False)
        self.experiment.choose_button.setEnabled(not busy)
        self.open_store_action.setEnabled(not busy)
        job = self.next_job or self.job  # the job waiting for a background one to give way is the user's
        for control in job.controls() if job is not None else ():
            control.setEnabled(True)  # the job's own controls (the plan's Cancel) work while it runs

    # ===================================================================== worker slots
    @Slot(object)
    def _on_job_event(self, event: object) -> None:
        if isinstance(event, Progress):  # every job's progress goes to the status bar
            self._on_progress(event)
        self.job.on_event(event)

    def _on_progress(self, event: Progress) -> None:
        if self.job.background:  # the phase, bar and ETA belong to the work the user asked for
            self.eta_label.setText(f"{self.job.progress_prefix()}{event.message}" if event.done < event.total else "")
            return
        self.phase_label.setText(f"{self.job.progress_prefix()}{event.phase}: {event.message}")
        self.progress_bar.setRange(0, 100 if event.total > 0 else 0)  # no total yet (a folder listing): busy
        self.progress_bar.setValue(int(event.fraction * 100))
        self.progress_bar.setFormat(f"{event.phase} %p%")
        self.eta_label.setText(f"ETA {event.eta_s:.0f} s" if event.eta_s is not None and event.done < event.total
                               else "")

    @Slot(object)
    def _on_job_finished(self, result: Any) -> None:
        if not self.job.background:
            self.phase_label.setText("Ready")
        self.job.on_success(result)

    @Slot(object)
    def _on_job_failed(self, failure: Failure) -> None:
        if not self.job.background:
            self.phase_label.setText("Failed")
        self.job.on_failure(failure)

    @Slot()
    def _on_job_cancelled(self, job: WorkerJob | None = None) -> None:
        job = job or self.job
        if not job.background:
            self.phase_label.setText("Cancelled — the loaded model is unchanged")
        job.on_cancel()

    @Slot()
    def _on_thread_done(self) -> None:
        job = self.job
        if self.job_thread is not None:
            self.job_thread.wait()  # `finished` comes just before the thread exits; let it exit first
        gc.enable()
        self.job = self.worker = self.job_thread = None
        self.progress_bar.hide()
        self.eta_label.setText("")
        self._update_actions()
        if not job.background:  # a background job's end is no news: nobody asked for it
            self.job_stopped.emit(job.name)
        job.on_stopped()
        waiting, self.next_job = self.next_job, None
        if waiting is not None and not self.start_job(waiting):
            self.next_job = waiting  # a handler of job_stopped started another job: this one goes next
        if self.worker is None:
            self.start_details()

    # ===================================================================== selection
    @Slot()
    def _on_apply_suggested_ratios(self) -> None:
        if self.sensitivity is not None and self.sensitivity.proposal is not None:
            self.graph_view.layer_table.set_ratios(self.sensitivity.proposal.layer_ratios)
            p = self.sensitivity.proposal
            self.statusBar().showMessage(f"Per-layer ratios set: {p.macs / max(1, p.base_macs):.0%} of the original "
                                         f"MACs (uniform {self.sensitivity.target_ratio:.0%}: "
                                         f"{p.uniform_macs / max(1, p.base_macs):.0%})", 10000)

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
            self.graph_view.layer_table.show_stats(last.layers if last.step > 0 else None, record.config)
        self.graph_view.set_pruned(record.onnx_path, record.label)
        self._update_actions()

    @Slot(int)
    def remove_run(self, run_id: int) -> bool:
        """Take a finished, cancelled or failed run out of the session (not the one running, not one that runs
        were continued from): Results, the scatter and the live plots forget it."""
        record = self.runs.get(run_id)
        running = self.job is not None and self.current_run == run_id and self.job.name == "run"
        if record is None or running or any(r.parent == run_id for r in self.runs.values()):
            return False
        del self.runs[run_id]
        self.results.remove_run(run_id)
        self.plots.remove_run(run_id)
        if self.selected_run == run_id:
            self.selected_run = None
        self._update_actions()
        self.statusBar().showMessage(f"{record.label} removed from this session", 5000)
        return True

    @Slot()
    def _on_options_changed(self) -> None:
        self.settings.save_options("method", self.method_panel.options())

    # ===================================================================== export
    def selected_record(self) -> RunRecord | None:
        """The run selected in the Results tab (or the latest one started), if any."""
        return self.runs.get(self.selected_run) if self.selected_run else None

    def export_plots(self, path: str | Path) -> Path:
        """Write the current tab's plots (live plots unless Weights or Results is shown) as PNG or SVG."""
        current = self.tabs.currentWidget()
        if current is self.histograms:
            view = self.histograms.canvas
        elif current is self.results:
            view = self.results.scatter_widget
        else:
            self.plots.flush()
            view = self.plots.canvas
        return dialogs.save_snapshot(view, Path(path))

    # ===================================================================== dialogs
    def show_error(self, title: str, message: str, details: str = "", info: str = "The loaded model is unchanged."
                   ) -> QMessageBox:
        """Show an error without blocking (window-modal); the app stays usable afterwards."""
        if self.error_box is not None:
            self.error_box.close()
        if self.log_path is not None:
            info += f" The log is in {self.log_path}."
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
            self.load(self.current_model_src(), f"{kind}:{path}")
        else:
            open_model_dialog(self, str(path))
        event.acceptProposedAction()

    def ask_before_closing(self) -> QMessageBox:
        """Ask, without blocking, whether to stop the user's running work and quit; Cancel is the default."""
        job = self.next_job or self.job
        what = ASK_BEFORE_CLOSING.get(job.name, "A job")
        if job.name == "run" and self.current_run is not None:
            what += f" (#{self.current_run})"
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
        job = self.next_job or self.job
        if job is not None and job.name in ASK_BEFORE_CLOSING and not self.quit_confirmed:
            event.ignore()
            if self.close_box is None:
                self.ask_before_closing()
            else:
                self.close_box.raise_()
            return
        self.next_job = None
        if self.worker is not None and self.job_thread is not None:
            self.worker.cancel()
            self.job_thread.wait(30_000)  # cancel answers within ~2 s; never destroy a running QThread
        gc.enable()
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self.settings.save_options("method", self.method_panel.options())
        self.settings.sync()
        self.graph_view.shutdown()
        shutil.rmtree(self.work_dir, ignore_errors=True)
        super().closeEvent(event)

