"""What the window lets the parts below it do, as plain callables, so that none of them needs the window.

Jobs, dialogs, the lesson and the teach tab get the session (the state) and these commands; the window
builds them once from its own methods. A test may build them from fakes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtWidgets import QWidget

from gui.session import SessionModel

BUSY_MESSAGE = "Wait for the running job to finish (or cancel it) first"  # a command refused while busy


@dataclass(frozen=True)
class Commands:
    """The window's services, each a callable (see MainWindow for what each does)."""

    session: SessionModel
    parent: QWidget  # the parent of dialogs
    say: Callable[[str, int], None]  # a message in the status bar for so many ms
    set_phase: Callable[[str], None]  # the status bar's job line
    set_hint: Callable[[str], None]  # the "what to try next" line
    show_source_note: Callable[[str], None]  # a line in place of the model card (a load failed, nothing loaded)
    show_current_source: Callable[[], None]  # the loaded model again in the combo boxes and card
    show_data_in_use: Callable[[], None]  # the dataset combo box shows the dataset in use again
    show_error: Callable[..., Any]  # (title, message, details="", info=...) a window-modal dialog
    ask_trust: Callable[[str, str, str], bool]  # (path, message, what): may this file's code run?
    current_data_spec: Callable[[], str]  # the dataset in use, or the one chosen
    load: Callable[..., bool]  # (model_src, data_spec, trust=, bundle=, recipe=) in the background
    open_model_file: Callable[[str], bool]  # a recent model file, as it was opened last time
    open_model_dialog: Callable[..., Any]  # (path=None, untrained=False, data_spec=None) the Open model dialog
    choose_model_file: Callable[[], None]  # a file picker, then the Open model dialog
    start_run: Callable[..., bool]  # (parent=, manual_channels=, recover_only=) a run with the panel's options
    busy: Callable[[], bool]  # a job runs or waits: another cannot start
    job_stopped: Any  # the runner's `stopped` signal: a job the user asked for ended, with its name
    start_job: Callable[[Any], bool]  # a WorkerJob on the worker thread; False while another runs
    cancel_job: Callable[[], None]
