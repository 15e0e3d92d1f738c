"""The Open model dialog's background jobs: describing the file and reading the dataset, and the check.

Their failures are said in the dialog, not in an error box: the window and its loaded model are
untouched, so the window's status bar says Ready again once they stop.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generator, Protocol

from engine.data import Dataset
from engine.data import load_dataset_events
from engine.errors import NeedsTrust, UserError
from engine.events import CancelToken, Progress
from engine.inputs import ModelRecipe, RecipeChecked
from engine.models import FileInfo
from gui import engine_calls
from gui.jobs import WorkerJob
from gui.engine_calls import Described
from gui.worker_thread import Failure


if TYPE_CHECKING:
    from PySide6.QtWidgets import QLabel, QLineEdit

    from gui.commands import Commands


class Dialog(Protocol):
    """What the jobs use of the dialog that started them (gui.open_model.OpenModelDialog, which imports these
    jobs, so it is described here rather than imported)."""

    commands: Commands
    data_spec: str
    recheck: bool
    path: str | None
    info: FileInfo | None
    checked: ModelRecipe | None
    trust_question: tuple[str, str] | None
    result_label: QLabel
    data_label: QLabel
    found_label: QLabel
    file_edit: QLineEdit

    def fill_data(self) -> None: ...
    def job_stopped(self) -> None: ...
    def show_progress(self, event: Progress) -> None: ...
    def show_failure(self, title: str, failure: Failure, label: QLabel | None = None) -> None: ...
    def show_described(self, path: str | None, described: Described, data_spec: str | None = None) -> None: ...
    def show_checked(self, recipe: ModelRecipe, c: RecipeChecked) -> None: ...

CHECK_IMAGES = 500  # validation images the check classifies: enough to tell a fitting file from a wrong one


class DatasetUnreadable(UserError):
    """The dataset, not the model file, could not be read (the dialog says which)."""


class DescribeJob(WorkerJob):
    """Read the dataset, describe the file and list the architectures; the dialog shows what was found."""

    name = "describe"

    def __init__(self, dialog: Dialog, path: str | None, data_spec: str | None = None) -> None:
        super().__init__(dialog.commands)
        self.dialog, self.path = dialog, path
        self.data_spec = data_spec or dialog.data_spec  # another one when the user changes the dialog's dataset
        self.raw = dialog.commands.session.raw_data_cache.get(self.data_spec)

    def work(self, cancel: CancelToken) -> Generator[Any, None, Described]:
        raw = self.raw
        if raw is None:
            yield Progress("open", 0, 3, "reading the dataset")
            try:
                raw = yield from load_dataset_events(self.data_spec)
            except UserError as exc:
                raise DatasetUnreadable(str(exc)) from exc
        return (yield from engine_calls.describe(self.path, self.data_spec, raw, cancel))

    def on_event(self, event: object) -> None:
        if isinstance(event, Progress):
            self.dialog.show_progress(event)

    def on_success(self, described: Described) -> None:
        self.session.raw_data_cache[self.data_spec] = described.raw_data
        self.dialog.show_described(self.path, described, self.data_spec)

    def on_failure(self, failure: Failure) -> None:
        dialog = self.dialog
        dialog.recheck = False
        dialog.fill_data()  # the dataset in use stays the one the combo shows
        if isinstance(failure.exception, DatasetUnreadable):
            changed = self.data_spec != dialog.data_spec  # the user's new choice: said under the Dataset row
            if changed:
                dialog.result_label.setText("")  # its "Reading …" line: the dataset in use stays
            dialog.show_failure("Could not read this dataset" if changed else "Could not read the dataset", failure,
                                dialog.data_label if changed else None)
            return
        if self.path is not None:  # the file that failed is no longer the one to open
            dialog.path, dialog.info, dialog.checked = None, None, None
            dialog.file_edit.setText(self.path)
        dialog.show_failure("Could not read this file", failure)

    def on_cancel(self) -> None:
        self.dialog.fill_data()
        self.dialog.found_label.setText("Stopped.")

    def on_stopped(self) -> None:
        self.commands.set_phase("Ready")  # what failed is said in the dialog; the window is unchanged
        self.dialog.job_stopped()


class CheckJob(WorkerJob):
    """Open the recipe's model on the dataset and measure it (engine.inputs.check_recipe)."""

    name = "check"

    def __init__(self, dialog: Dialog, recipe: ModelRecipe, raw: Dataset) -> None:
        super().__init__(dialog.commands)
        self.dialog, self.recipe, self.raw = dialog, recipe, raw

    def work(self, cancel: CancelToken) -> Generator[Any, None, RecipeChecked]:
        return (yield from engine_calls.check_model(self.recipe, self.raw, CHECK_IMAGES, cancel))

    def on_event(self, event: object) -> None:
        if isinstance(event, Progress):
            self.dialog.show_progress(event)

    def on_success(self, checked: RecipeChecked) -> None:
        self.dialog.show_checked(self.recipe, checked)

    def on_failure(self, failure: Failure) -> None:
        if isinstance(failure.exception, NeedsTrust) and not self.recipe.trust:
            # a PruneLab file built from the user's code: ask, as for any file that runs code
            self.dialog.trust_question = (failure.message, failure.exception.what)
            return
        self.dialog.show_failure("The check failed", failure)

    def on_cancel(self) -> None:
        self.dialog.result_label.setText("Check stopped; nothing was opened.")

    def on_stopped(self) -> None:
        self.commands.set_phase("Ready")  # what failed is said in the dialog; the window is unchanged
        self.dialog.job_stopped()
