"""The session model: what the window shows and works on, with no widget in it (napari's model/view shape).

It holds the loaded model and dataset, the runs of the session and the one selected, the last sensitivity
scan and the settings, and says every change with a signal; the views subscribe (the window connects them)
and the jobs write here, not into widgets. The jobs themselves run in gui/job_runner.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from engine.data import Dataset
from gui.results import RunRecord
from gui.settings import Settings

if TYPE_CHECKING:
    from gui.engine_calls import Loaded, Sensitivity

DEFAULT_MODEL = "demo:resnet"


class SessionModel(QObject):
    """The state of one window's session and the signals that announce its changes."""

    loaded_changed = Signal(object)  # a Loaded: the model every view shows and every job works on
    detail_found = Signal(str)  # a fact of the loaded model found in the background ("graph", a card line)
    run_step = Signal(int, object)  # a run's StepDone (its record has it already)
    run_phase = Signal(int, object)  # a run's PhaseDone
    run_done = Signal(int)  # a run measured its pruned model (record.done is set)
    run_finished = Signal(int)  # a run finished with results and a pruned model
    run_dropped = Signal(int)  # a run cancelled or failed: not kept
    run_removed = Signal(int)  # the user took a run out of the session
    run_selected = Signal(int)
    sensitivity_changed = Signal(object)  # a Sensitivity scan of the loaded model
    layer_scores = Signal(object)  # {layer: score} to colour the graph by (a plan's own scan)

    def __init__(self, settings: Settings, work_dir: Path, log_path: Path | None = None) -> None:
        super().__init__()
        self.settings, self.work_dir, self.log_path = settings, work_dir, log_path
        self.loaded: Loaded | None = None
        self.raw_data_cache: dict[str, Dataset] = {}
        self.runs: dict[int, RunRecord] = {}
        self.selected_run: int | None = None
        self.current_run: int | None = None  # the latest run started
        self.sensitivity: Sensitivity | None = None

    def current_model_src(self) -> str:
        """The model source in use."""
        if self.loaded is not None and self.loaded.request.model_src:
            return self.loaded.request.model_src
        return DEFAULT_MODEL

    def set_loaded(self, loaded: Loaded) -> None:
        """Make `loaded` the session's model; a scan and the selection belong to the model before it."""
        self.loaded = loaded
        self.raw_data_cache = {loaded.request.data_spec: loaded.raw_data}  # one dataset in memory at a time
        self.sensitivity = None
        self.selected_run = None
        self.loaded_changed.emit(loaded)

    def set_sensitivity(self, sensitivity: Sensitivity) -> None:
        self.sensitivity = sensitivity
        self.sensitivity_changed.emit(sensitivity)

    def add_run(self, record: RunRecord) -> None:
        """A run just started: it is the current and the selected one."""
        self.runs[record.run_id] = record
        self.current_run = self.selected_run = record.run_id

    def next_run_id(self) -> int:
        return (max(self.runs) + 1) if self.runs else 1

    def select_run(self, run_id: int) -> bool:
        if run_id not in self.runs:
            return False
        self.selected_run = run_id
        self.run_selected.emit(run_id)
        return True

    def selected_record(self) -> RunRecord | None:
        """The run selected in the Results tab (or the latest one started), if any."""
        return self.runs.get(self.selected_run) if self.selected_run else None

    def remove_run(self, run_id: int, running: bool) -> RunRecord | None:
        """Take a finished, cancelled or failed run out (not the one `running`, not one that runs were continued
        from); the removed record, or None when it may not go."""
        record = self.runs.get(run_id)
        running = running and self.current_run == run_id
        if record is None or running or any(r.parent == run_id for r in self.runs.values()):
            return None
        del self.runs[run_id]
        if self.selected_run == run_id:
            self.selected_run = None
        self.run_removed.emit(run_id)
        return record
