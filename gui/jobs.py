"""The window's background jobs as objects (Anki's QueryOp shape).

A job pairs its work (a generator run on the worker thread, from gui/engine_calls.py: it yields the
engine's plain events and returns its result) with what the window does on the UI thread:
`on_event` for each event, then exactly one of `on_success(result)`, `on_failure(failure)` or
`on_cancel()`, and `on_stopped()` once the thread is gone. The job runner (gui/job_runner.py) starts
a job and routes the worker's signals to it; it never asks which job is running. A job gets the
session (the state it writes to) and the window's commands (gui/commands.py), never the window.
"""
from __future__ import annotations

import logging
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QWidget

from engine.data import Dataset
from engine.errors import NeedsArchitecture, NeedsTrust
from engine.events import CancelToken, EpochDone, PhaseDone, Progress, StepGate
from engine.experiments import (PlanDone, PlanProgress, PlanRunDone, PlanRunFailed, PlanStarted, ResultStore,
                                run_plan)
from engine.models import ModelBundle
from engine.pruning import RunDone, StepDone
from engine.sensitivity import SensitivityDone
from engine.sources import ModelSource
from gui import engine_calls
from gui.results import RunRecord
from gui.engine_calls import Detail, Exported, LoadRequest, Loaded, PrunedModel, Sensitivity
from gui.worker_thread import Failure

if TYPE_CHECKING:
    from gui.commands import Commands
    from gui.method_panel import MethodPanel
    from gui.experiment_tab import ExperimentTab

log = logging.getLogger(__name__)

HINT_AFTER_RUN = ("<b>Next:</b> open <i>Weights</i> to see what was removed (red channels, or a spike at zero for "
                  "unstructured methods), <i>Network</i> to compare the graphs, or run another method to compare.")


class WorkerJob:
    """One background job: its work (worker thread, no Qt) and its handlers (UI thread)."""

    name = "job"  # in the log, and the argument of the runner's `stopped` signal
    title = "Error"  # of the dialog that reports a failure
    guarded = True  # held to the memory budget as a whole (a plan holds each of its runs itself)
    background = False  # a background job leaves the window usable and gives way to any other job

    def __init__(self, commands: Commands) -> None:
        self.commands = commands
        self.session = commands.session

    def work(self, cancel: CancelToken) -> Generator[Any, None, Any]:
        """Yield events and return the result; runs on the worker thread, so it never touches a widget."""
        raise NotImplementedError

    def controls(self) -> tuple[QWidget, ...]:
        """Widgets usable only while this job runs (a Cancel button of its own)."""
        return ()

    def progress_prefix(self) -> str:
        """What the status bar puts before each progress message ("Run #2, step 1/3 · ")."""
        return ""

    def on_event(self, event: object) -> None:
        """One event of the work (the window has already shown Progress in the status bar)."""

    def on_success(self, result: Any) -> None:
        """The work returned `result`."""

    def on_failure(self, failure: Failure) -> None:
        """The work raised: say so in a dialog (a traceback helps with a bug; bad input needs only its line)."""
        self.commands.show_error(self.title, failure.message, "" if failure.user_error else failure.details)

    def on_cancel(self) -> None:
        """The work stopped at the user's request."""

    def on_stopped(self) -> None:
        """The worker thread is gone and the window idle again: a follow-up job may start now."""


class LoadJob(WorkerJob):
    """Load a model and dataset; the result becomes the window's loaded model."""

    name, title = "load", "Could not load the model"

    def __init__(self, commands: Commands, request: LoadRequest, startup: bool = False) -> None:
        super().__init__(commands)
        self.request = request
        self.startup = startup  # the first screen's demo: a failure is explained in place, not in a dialog
        self.trust_question: tuple[str, str] | None = None  # (message, what) to ask once the thread is gone
        self.needs_dialog = False  # the file holds only weights: the Open model dialog asks for its architecture

    def work(self, cancel: CancelToken) -> Generator[Any, None, Loaded]:
        return (yield from engine_calls.load(self.request, cancel))

    def on_success(self, loaded: Loaded) -> None:
        self.session.set_loaded(loaded)

    def on_failure(self, failure: Failure) -> None:
        commands, request = self.commands, self.request
        if (isinstance(failure.exception, NeedsTrust) and not request.trust and request.model_src
                and not ModelSource.parse(request.model_src).is_demo):
            self.trust_question = (failure.message, failure.exception.what)  # asked in on_stopped
            commands.set_phase("Waiting for your answer")
            return
        if isinstance(failure.exception, NeedsArchitecture) and request.recipe is None and request.model_src:
            self.needs_dialog = True  # opened in on_stopped; never the command line's flags in the window
            return
        if self.startup and self.session.loaded is None:
            commands.show_source_note(
                f"<b>The demo model could not be loaded.</b><br>{escape(failure.message)}<br><br>"
                "Open your own model with <b>File ▸ Open model</b> (Ctrl+O) or drop a file here.")
            commands.say("Demo model unavailable: " + failure.message, 15000)
            commands.set_hint("<b>Start:</b> open a model (Ctrl+O), pick one under <i>File ▸ Recent "
                                   "models</i>, or drop a model file onto this window.")
            return
        commands.show_current_source()
        message = failure.message
        if not failure.user_error:
            # an unexpected exception from a damaged file: say which file, keep the raw error below it
            message = f"{request.model_src or 'The model'} could not be read: {failure.message}"
        commands.show_error(self.title, message, "" if failure.user_error else failure.details)

    def on_cancel(self) -> None:
        self.commands.show_current_source()

    def on_stopped(self) -> None:
        if self.trust_question is not None:
            QTimer.singleShot(0, self.commands.parent, self._ask_trust_and_retry)  # a new load needs the window idle
        elif self.needs_dialog:
            self.commands.show_current_source()
            QTimer.singleShot(0, self.commands.parent, lambda: self.commands.open_model_dialog(self.request.model_src))

    def _ask_trust_and_retry(self) -> None:
        commands, request = self.commands, self.request
        message, what = self.trust_question
        if commands.ask_trust(request.model_src, message, what):
            commands.load(request.model_src, request.data_spec, trust=True)
            return
        commands.set_phase("Not loaded: the file was not trusted")
        if self.session.loaded is not None:
            commands.show_current_source()
        else:
            commands.show_source_note("No model loaded. Open a model file (Ctrl+O).")


class DetailsJob(WorkerJob):
    """The loaded model's slower facts (graph, size, measured top-1), found in the background after Ready.

    Any other job started meanwhile cancels it and goes first; the window starts it again for the
    facts still pending once it is idle."""

    name, title = "details", "Could not describe the model"
    background = True

    def __init__(self, commands: Commands, loaded: Loaded) -> None:
        super().__init__(commands)
        self.loaded = loaded
        self.names = tuple(loaded.pending)  # a copy: the worker never reads what the UI thread changes

    def work(self, cancel: CancelToken) -> Generator[Any, None, None]:
        return (yield from engine_calls.details(self.loaded, self.names, cancel))

    def progress_prefix(self) -> str:
        return "In the background: "

    def on_event(self, event: object) -> None:
        if isinstance(event, Detail):
            loaded = self.loaded
            if event.name in loaded.pending:
                loaded.pending.remove(event.name)
            if event.name == engine_calls.DETAIL_GRAPH:
                loaded.onnx_path, loaded.onnx_error = event.values["onnx_path"], event.values["onnx_error"]
            else:
                loaded.summary.update(event.values)
            if self.session.loaded is loaded:  # a model loaded meanwhile has its own card and graph
                self.session.detail_found.emit(event.name)

    def on_failure(self, failure: Failure) -> None:
        self.loaded.pending.clear()  # said once, in the log and the status bar; not tried again
        self.commands.say("Could not describe the model fully: " + failure.message, 10000)
        log.warning("details of %s: %s", self.loaded.bundle.source, failure.details or failure.message)


PHASE_WORDS = {"prune": "pruning", "bn-recalibrate": "BatchNorm re-estimation", "finetune": "fine-tuning",
               "evaluate": "evaluation"}


class RunJob(WorkerJob):
    """One pruning run of the session: fills its record, the live plots, the histograms and the results.

    With the method panel's "Step through phases" ticked, the run waits on a gate after each phase and
    the panel's "Next phase" button releases it; unticking the box lets the run go on by itself."""

    name, title = "run", "The pruning run failed"

    def __init__(self, commands: Commands, panel: MethodPanel, record: RunRecord, bundle: ModelBundle,
                 data: Dataset, export_graph: bool, work_dir: Path) -> None:
        super().__init__(commands)
        self.record = record
        self.bundle, self.data = bundle, data
        self.export_graph, self.work_dir = export_graph, work_dir
        self.panel = panel  # its step box and Next phase button drive the gate
        self.gate = StepGate() if panel.step_check.isChecked() else None
        if self.gate is not None:
            panel.next_button.clicked.connect(self._on_next_phase)
            panel.step_check.toggled.connect(self._on_step_toggled)

    def work(self, cancel: CancelToken) -> Generator[Any, None, PrunedModel]:
        teacher = self.session.loaded.bundle if self.record.recover_only else None  # distil from the original
        return (yield from engine_calls.prune(self.record.run_id, self.bundle, self.data, self.record.config,
                                      self.export_graph, self.work_dir, cancel, self.gate, self.record.recover_only,
                                      teacher))

    def _on_next_phase(self) -> None:
        self.panel.next_button.setEnabled(False)
        self.gate.release()

    def _on_step_toggled(self, checked: bool) -> None:
        if not checked:  # let the paused run go on by itself
            self.panel.next_button.setEnabled(False)
            self.gate.open()

    def _on_phase_done(self, phase: PhaseDone) -> None:
        self.session.run_phase.emit(self.record.run_id, phase)
        if phase.next_phase is None:
            return
        seen = f": top-1 {phase.top1:.1%} on validation images" if phase.top1 is not None else ""
        button = self.panel.next_button
        button.setText(f"Next: {PHASE_WORDS.get(phase.next_phase, phase.next_phase)}")
        button.setEnabled(True)
        self.commands.set_phase(f"Run {self.record.label}, step {phase.step}: {PHASE_WORDS.get(phase.phase)} done"
                                f"{seen}. Press Next phase")

    def progress_prefix(self) -> str:
        record = self.record
        if record.steps:  # steps[0] is the baseline, so during step k there are k entries; after the last, one more
            return f"Run {record.label}, step {min(len(record.steps), record.config.steps)}/{record.config.steps} · "
        return f"Run {record.label} · "

    def on_event(self, event: object) -> None:
        if isinstance(event, StepDone):
            self._on_step_done(event)
        elif isinstance(event, PhaseDone):
            self._on_phase_done(event)
        elif isinstance(event, EpochDone):
            self.commands.say(f"Fine-tuning epoch {event.epoch}/{event.epochs}: loss {event.train_loss:.3f}, "
                              f"train top-1 {event.train_top1:.1%}", 4000)
        elif isinstance(event, RunDone):
            self._on_run_done(event)

    def _on_step_done(self, step: StepDone) -> None:
        self.record.steps.append(step)
        self.session.run_step.emit(self.record.run_id, step)

    def _on_run_done(self, done: RunDone) -> None:
        record = self.record
        record.done = done
        record.status = "done"
        self.session.run_done.emit(record.run_id)
        speed = done.speedups()
        self.commands.say(
            f"Run {record.label} done in {done.seconds:.1f} s: top-1 {done.before.top1:.2%} → {done.after.top1:.2%}, "
            f"{speed['macs']:.2f}× fewer MACs" + (f", {done.speedup_text()}" if done.speedup_text() else ""), 15000)
        self.commands.set_hint(HINT_AFTER_RUN)
        for note in done.notes:
            log.info("run %s note: %s", record.label, note)

    def on_success(self, pruned: PrunedModel) -> None:
        record = self.record
        record.pruned = pruned.bundle
        record.onnx_path = pruned.onnx_path
        self.session.run_finished.emit(record.run_id)  # the pruned model exists now: it can be continued from

    def on_failure(self, failure: Failure) -> None:
        self.record.status = "failed"
        super().on_failure(failure)

    def on_cancel(self) -> None:
        self.record.status = "cancelled"

    def on_stopped(self) -> None:
        record = self.record
        if record.status in ("cancelled", "failed"):  # Results lists finished runs only: Live plots too
            self.session.run_dropped.emit(record.run_id)
            self.commands.say(f"Run {record.label} {record.status}: not kept in Live plots or Results", 8000)
        if self.gate is not None:
            panel = self.panel
            panel.next_button.clicked.disconnect(self._on_next_phase)
            panel.step_check.toggled.disconnect(self._on_step_toggled)
            panel.next_button.setText("Next phase")
            panel.next_button.setEnabled(False)


class SensitivityJob(WorkerJob):
    """A per-layer sensitivity scan: colours the layers and offers per-layer ratios."""

    name, title = "sensitivity", "The sensitivity scan failed"

    def __init__(self, commands: Commands, bundle: ModelBundle, data: Dataset, method: str, target_ratio: float,
                 round_to: int | None, max_layer_ratio: float) -> None:
        super().__init__(commands)
        self.args = (bundle, data, method, target_ratio, round_to, max_layer_ratio)

    def work(self, cancel: CancelToken) -> Generator[Any, None, Sensitivity]:
        return (yield from engine_calls.scan_sensitivity(*self.args, cancel))

    def on_success(self, sensitivity: Sensitivity) -> None:
        self.session.set_sensitivity(sensitivity)
        self.commands.say(f"Sensitivity scanned in {sensitivity.result.seconds:.0f} s: red layers lose the most "
                          "accuracy when pruned", 10000)


class PlanJob(WorkerJob):
    """An experiment plan from the Experiment tab, run on the loaded model; its events go to that tab."""

    name, title = "plan", "The experiment plan failed"
    guarded = False  # the plan holds each of its runs to the budget itself, so one run fails alone

    def __init__(self, commands: Commands, tab: ExperimentTab, plan: Any, store_path: Path, bundle: ModelBundle,
                 data: Dataset, memory_limit: int) -> None:
        super().__init__(commands)
        self.tab = tab  # the Experiment tab: the plan's events and outcome go there
        self.plan, self.store_path = plan, store_path
        self.bundle, self.data, self.memory_limit = bundle, data, memory_limit
        self.position = ""  # "Plan run 3/24 · " once the plan has started a run

    def work(self, cancel: CancelToken) -> Generator[Any, None, Any]:
        # The store is opened on the worker thread; each of its calls uses its own connection.
        return (yield from run_plan(self.plan, ResultStore(self.store_path), cancel, bundle=self.bundle,
                                    data=self.data, memory_limit=self.memory_limit))

    def controls(self) -> tuple[QWidget, ...]:
        return (self.tab.cancel_button,)

    def progress_prefix(self) -> str:
        return self.position

    def on_event(self, event: object) -> None:
        tab = self.tab
        if isinstance(event, PlanProgress):
            self.position = f"Plan run {event.index}/{event.total} · " if event.index else "Plan: original model · "
        elif isinstance(event, SensitivityDone):
            tab.show_sensitivity(event)
            self.session.layer_scores.emit(event.layer_scores())
        elif isinstance(event, PlanDone):
            self.commands.say(f"Plan done: {event.ran} runs in {event.seconds:.0f} s, {event.skipped} already "
                              "stored", 15000)
            if event.failed:
                self.commands.show_error("Some runs reached the memory limit",
                               f"{len(event.failed)} run(s) were stopped and not stored; the others are. "
                               "Run the plan again to retry them, with a higher limit (Settings ▸ Memory "
                               "limit) or a smaller batch.", "\n".join(event.failed))
        if isinstance(event, (Progress, PlanStarted, PlanProgress, PlanRunDone, PlanRunFailed, PlanDone)):
            tab.on_event(event)

    def on_success(self, _result: Any) -> None:
        self.tab.set_running(False)

    def on_failure(self, failure: Failure) -> None:
        self.tab.set_running(False)
        self.tab.status_label.setText("The plan stopped: " + escape(failure.message) + ". Finished runs are "
                                      "stored; run the plan again to resume.")
        super().on_failure(failure)

    def on_cancel(self) -> None:
        self.tab.set_running(False)
        self.tab.status_label.setText("Cancelled. Finished runs are stored; run the same plan again to resume "
                                      "where it stopped.")


class ExportJob(WorkerJob):
    """Save a model (the pruned one as a deployment set, engine.deploy, or one ONNX file)."""

    name, title = "export", "Export failed"

    def __init__(self, commands: Commands, bundle: ModelBundle, target: Path, structured: bool, what: str) -> None:
        super().__init__(commands)
        self.args = (bundle, target, structured, what)

    def work(self, cancel: CancelToken) -> Generator[Any, None, Exported]:
        return (yield from engine_calls.export(*self.args, cancel))

    def on_success(self, exported: Exported) -> None:
        paths = [Path(p) for p in exported.files.values()]
        folders = {p.parent for p in paths}
        text = (f"Wrote {', '.join(p.name for p in paths)} in {folders.pop()} (README.md says how to use them)"
                if len(paths) > 1 and len(folders) == 1 else "Wrote " + ", ".join(map(str, paths)))
        self.commands.say(text, 12000)
