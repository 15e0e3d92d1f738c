"""The Open model dialog: a model file (or a new untrained architecture), what PruneLab found in it,
the architecture for weights-only files, the input and normalisation, and a background check before
the user accepts.

The check is a job like any other (engine.inputs.check_recipe on the worker thread); what the user
chose is an engine.inputs.ModelRecipe, remembered with the file in the recent list so that reopening
it asks nothing.
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog,
                               QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton,
                               QRadioButton, QVBoxLayout, QWidget)

from engine.data import Dataset
from engine.errors import NeedsTrust, UserError
from engine.events import CancelToken, Progress
from engine.inputs import NORM_TITLES, ModelRecipe, RecipeChecked
from engine.units import parse_numbers
from gui import work
from gui.jobs import Job
from gui.open_model_arch import ArchitecturePicker
from gui.open_model_recipe import ERR, checked_html, parse_shape, plain, remembered_recipe
from gui.work import Described
from gui.worker import Failure

if TYPE_CHECKING:
    from gui.main_window import MainWindow

CHECK_IMAGES = 500  # validation images the check classifies: enough to tell a fitting file from a wrong one
MODEL_FILTER = "PyTorch models (*.pt *.pth *.pkl *.ckpt *.bin *.tar *.safetensors);;All files (*)"


# ===================================================================== the dialog's jobs
class DescribeJob(Job):
    """Read the dataset, describe the file and list the architectures; the dialog shows what was found."""

    name = "describe"

    def __init__(self, dialog: OpenModelDialog, path: str | None) -> None:
        super().__init__(dialog.win)
        self.dialog, self.path = dialog, path
        self.data_spec = dialog.data_spec
        self.raw = dialog.win.raw_data_cache.get(dialog.data_spec)

    def work(self, cancel: CancelToken) -> Generator[Any, None, Described]:
        return (yield from work.describe(self.path, self.data_spec, self.raw, cancel))

    def on_event(self, event: object) -> None:
        if isinstance(event, Progress):
            self.dialog.show_progress(event)

    def on_success(self, described: Described) -> None:
        self.window.raw_data_cache[self.data_spec] = described.raw_data
        self.dialog.show_described(self.path, described)

    def on_failure(self, failure: Failure) -> None:
        dialog = self.dialog
        if self.path is not None:  # the file that failed is no longer the one to open
            dialog.path, dialog.info, dialog.checked = None, None, None
            dialog.file_edit.setText(self.path)
        dialog.show_failure("Could not read this file", failure)

    def on_cancel(self) -> None:
        self.dialog.found_label.setText("Stopped.")

    def on_stopped(self) -> None:
        self.dialog.job_stopped()


class CheckJob(Job):
    """Open the recipe's model on the dataset and measure it (engine.inputs.check_recipe)."""

    name = "check"

    def __init__(self, dialog: OpenModelDialog, recipe: ModelRecipe, raw: Dataset) -> None:
        super().__init__(dialog.win)
        self.dialog, self.recipe, self.raw = dialog, recipe, raw

    def work(self, cancel: CancelToken) -> Generator[Any, None, RecipeChecked]:
        return (yield from work.check_model(self.recipe, self.raw, CHECK_IMAGES, cancel))

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
        self.dialog.job_stopped()


# ===================================================================== the dialog
class OpenModelDialog(QDialog):
    """Choose a model file (or an untrained architecture), check it in the background, then open it."""

    def __init__(self, win: MainWindow, path: str | None = None, untrained: bool = False) -> None:
        super().__init__(win)
        self.win = win
        self.data_spec = win.current_data_spec()
        self.path: str | None = None
        self.info = None  # engine.models.FileInfo of the file
        self.raw: Dataset | None = None
        self.trusted = False
        self.checked: ModelRecipe | None = None  # the recipe the last successful check was for
        self.running: Job | None = None
        self.close_when_stopped = False
        self.trust_question: tuple[str, str] | None = None  # (message, what), asked once the check stopped
        self.setWindowTitle("Open model")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setMinimumWidth(620)
        layout = QVBoxLayout(self)
        layout.addWidget(self._source_box())
        self.arch_box = QGroupBox("Architecture")
        self.picker = ArchitecturePicker(win._ask_trust)
        QVBoxLayout(self.arch_box).addWidget(self.picker)
        layout.addWidget(self.arch_box, 1)
        layout.addWidget(self._input_box())
        layout.addWidget(self._check_box())
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        self.open_button = self.buttons.button(QDialogButtonBox.StandardButton.Open)
        self.open_button.setToolTip("Open the model in PruneLab (after a successful check)")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.picker.changed.connect(self.refresh)
        for edit in (self.shape_edit, self.mean_edit, self.std_edit):
            edit.textChanged.connect(self.refresh)
        self.norm_combo.currentIndexChanged.connect(self.refresh)
        self.partial_check.toggled.connect(self.refresh)
        self.new_radio.setChecked(untrained)
        self.file_radio.setChecked(not untrained)
        self.mode_group.idToggled.connect(self._on_mode)
        self.refresh()
        self.start(DescribeJob(self, path))

    def _source_box(self) -> QWidget:
        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.file_radio = QRadioButton("A trained model file")
        self.new_radio = QRadioButton("A new untrained architecture (random weights, adapted to the dataset): "
                                      "for teaching and trying methods")
        self.mode_group = QButtonGroup(self)
        self.mode_group.addButton(self.file_radio, 0)
        self.mode_group.addButton(self.new_radio, 1)
        form.addRow(self.file_radio)
        form.addRow(self.new_radio)
        row = QHBoxLayout()
        self.file_edit = QLineEdit()
        self.file_edit.setReadOnly(True)
        self.file_edit.setPlaceholderText("no file chosen")
        row.addWidget(self.file_edit, 1)
        self.choose_button = QPushButton("Choose a file…")
        self.choose_button.clicked.connect(self._choose_file)
        row.addWidget(self.choose_button)
        form.addRow("File", row)
        self.found_label = QLabel("Choose a model file: a state_dict, a training checkpoint, a .safetensors file, "
                                  "a PruneLab model, TorchScript or a pickled model.")
        self.found_label.setWordWrap(True)
        self.found_label.setTextFormat(Qt.TextFormat.RichText)
        self.found_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("Found", self.found_label)
        return box

    def _input_box(self) -> QWidget:
        box = QGroupBox("Input")
        form = QFormLayout(box)
        self.shape_edit = QLineEdit()
        self.shape_edit.setToolTip("Channels, height and width of the images the model takes; the dataset's "
                                   "images are converted to it")
        form.addRow("Input shape (C,H,W)", self.shape_edit)
        self.norm_combo = QComboBox()
        for key, title in NORM_TITLES.items():
            self.norm_combo.addItem(title[:1].upper() + title[1:], key)
        self.norm_combo.setToolTip("The mean and std the model was trained with; a wrong choice costs accuracy")
        form.addRow("Normalisation", self.norm_combo)
        row = QHBoxLayout()
        self.mean_edit, self.std_edit = QLineEdit(), QLineEdit()
        self.mean_edit.setPlaceholderText("mean, one per channel: 0.5, 0.5, 0.5")
        self.std_edit.setPlaceholderText("std: 0.25, 0.25, 0.25")
        row.addWidget(self.mean_edit)
        row.addWidget(self.std_edit)
        form.addRow("Custom", row)
        self.classes_label = QLabel()
        self.classes_label.setWordWrap(True)
        form.addRow("Classes", self.classes_label)
        self.partial_check = QCheckBox("Accept a partial match (fill only the weights that fit)")
        self.partial_check.setToolTip("Normally a file that fills under half of the architecture is refused: it is "
                                      "almost always the wrong architecture")
        form.addRow(self.partial_check)
        return box

    def _check_box(self) -> QWidget:
        box = QGroupBox("Check")
        layout = QVBoxLayout(box)
        row = QHBoxLayout()
        self.check_button = QPushButton("Check")
        self.check_button.setToolTip(f"Load the model, run it once and classify {CHECK_IMAGES} validation images "
                                     "(in the background)")
        self.check_button.clicked.connect(self.start_check)
        row.addWidget(self.check_button)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.win.cancel_job)
        row.addWidget(self.stop_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        row.addWidget(self.progress, 1)
        layout.addLayout(row)
        self.result_label = QLabel("Choose, then press Check: PruneLab loads the model, runs it and measures it "
                                   "before you open it.")
        self.result_label.setWordWrap(True)
        self.result_label.setTextFormat(Qt.TextFormat.RichText)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.result_label)
        return box

    # ----------------------------------------------------------------- jobs
    def start(self, job: Job) -> bool:
        """Run one of the dialog's jobs on the window's worker."""
        if not self.win.start_job(job):
            return False
        self.running = job
        self.refresh()
        return True

    def job_stopped(self) -> None:
        """A job of the dialog ended (whatever the outcome)."""
        self.running = None
        self.progress.setValue(0)
        self.progress.setFormat("")
        if self.close_when_stopped:
            super().reject()
            return
        self.refresh()
        if self.trust_question is not None:
            QTimer.singleShot(0, self._ask_trust_and_check)  # a new check needs the window idle

    def _ask_trust_and_check(self) -> None:
        message, what = self.trust_question
        self.trust_question = None
        if self.win._ask_trust(self.path, message, what):
            self.trusted = True
            self.start_check()
        else:
            self.result_label.setText("Not checked: you did not trust the file, so none of its code ran.")

    def show_progress(self, event: Progress) -> None:
        """A job's progress, in the dialog's own bar."""
        self.progress.setValue(int(event.fraction * 100))
        self.progress.setFormat(f"{event.message} %p%")

    def show_failure(self, title: str, failure: Failure) -> None:
        """An error in plain words, in the dialog; the window and its loaded model are untouched."""
        text = plain(failure.message) if failure.user_error else f"{failure.message} (details in the log)"
        label = self.found_label if isinstance(self.running, DescribeJob) else self.result_label
        label.setText(f"<b>{escape(title)}.</b> " + ERR.format(escape(text)))

    # ----------------------------------------------------------------- what was found
    def _on_mode(self, _id: int, checked: bool) -> None:
        if checked:
            self.checked = None
            self.refresh()

    def _choose_file(self) -> None:
        start = str(Path(self.path).parent) if self.path else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open a model", start, MODEL_FILTER)
        if path:
            self.open_file(path)

    def open_file(self, path: str) -> bool:
        """Describe another file (in the background)."""
        self.file_radio.setChecked(True)
        return self.start(DescribeJob(self, path))

    def show_described(self, path: str | None, described: Described) -> None:
        """Fill the dialog from the file's description and the dataset."""
        self.raw = described.raw_data
        self.picker.set_names(described.architectures)
        data = self.raw
        names = ", ".join(data.class_names[:12]) + (f", … ({data.num_classes} in all)"
                                                     if data.num_classes > 12 else "")
        self.classes_label.setText(f"{escape(names)} <small>(from {escape(data.name)})</small>")
        self.shape_edit.setText(",".join(map(str, data.input_shape)))
        if path is None:
            return
        self.path, self.info, self.trusted, self.checked = path, described.info, False, None
        self.file_edit.setText(path)
        info = described.info
        text = escape(info.summary[:1].upper() + info.summary[1:], quote=False) + "."
        if info.head_outputs and info.head_outputs != data.num_classes and info.needs_arch:
            text += (f" Its last layer has {info.head_outputs} outputs, the dataset {data.num_classes} classes: "
                     "the head will be new (untrained).")
        if info.needs_arch:
            text += " Choose its architecture below." if not info.arch else " Check the architecture below."
        self.found_label.setText(text)
        if info.input_shape:
            self.shape_edit.setText(",".join(map(str, info.input_shape)))
        recipe = remembered_recipe(self.win.settings, path)
        if recipe is not None:
            self.apply_recipe(recipe)
        elif info.arch and info.needs_arch and not info.arch.startswith("code:"):
            self.picker.select(info.arch)  # never a Python file unasked: selecting it would import it

    def apply_recipe(self, recipe: ModelRecipe) -> None:
        """Show a remembered recipe's choices."""
        if recipe.arch:
            self.picker.select(recipe.arch)
        self.picker.kwargs_edit.setText(json.dumps(recipe.model_kwargs) if recipe.model_kwargs else "")
        shape = recipe.input_shape or (self.raw.input_shape if self.raw is not None else None)
        self.shape_edit.setText(",".join(map(str, shape)) if shape else "")
        self.norm_combo.setCurrentIndex(max(0, self.norm_combo.findData(recipe.norm)))
        self.mean_edit.setText(", ".join(map(str, recipe.mean or ())))
        self.std_edit.setText(", ".join(map(str, recipe.std or ())))
        self.partial_check.setChecked(recipe.partial_weights)
        self.trusted = recipe.trust

    # ----------------------------------------------------------------- the recipe
    @property
    def untrained(self) -> bool:
        """True when a new untrained architecture is chosen instead of a file."""
        return self.new_radio.isChecked()

    def recipe(self) -> ModelRecipe:
        """What the dialog's fields say; UserError in plain words when something is missing or malformed."""
        needs_arch = self.untrained or (self.info is not None and self.info.needs_arch)
        if not self.untrained and self.path is None:
            raise UserError("choose a model file first")
        arch = self.picker.arch() if needs_arch else None
        if needs_arch and not arch:
            raise UserError("choose an architecture: pick a name from the list, or a Python file and its class")
        if self.untrained and arch.startswith("code:"):
            raise UserError("a new untrained model is built by name: pick a torchvision or timm architecture")
        norm = self.norm_combo.currentData()
        mean = std = None
        if norm == "custom":
            mean = parse_numbers(self.mean_edit.text(), "the mean")
            std = parse_numbers(self.std_edit.text(), "the std", low=0)
            if not mean or len(mean) != len(std):
                raise UserError("a custom normalisation needs a mean and a std with one value per channel")
        shape = parse_shape(self.shape_edit.text())
        if self.raw is not None and shape == tuple(self.raw.input_shape):
            shape = None  # the dataset's: the recipe follows the dataset it is opened with
        return ModelRecipe(None if self.untrained else self.path, arch, self.picker.kwargs(), shape, norm, mean, std,
                           self.trusted and not self.untrained, self.partial_check.isChecked())

    def refresh(self) -> None:
        """Enable what can be used now; Open only for the recipe the last check passed."""
        busy = self.running is not None
        self.choose_button.setEnabled(not busy and not self.untrained)
        self.arch_box.setVisible(self.untrained or (self.info is not None and self.info.needs_arch))
        custom = self.norm_combo.currentData() == "custom"
        self.mean_edit.setEnabled(custom)
        self.std_edit.setEnabled(custom)
        try:
            recipe, problem = self.recipe(), ""
        except UserError as exc:
            recipe, problem = None, str(exc)
        ready = recipe is not None and self.raw is not None
        self.check_button.setEnabled(not busy and ready)
        self.check_button.setToolTip(problem[:1].upper() + problem[1:] if problem else
                                     f"Load the model, run it once and classify {CHECK_IMAGES} validation images")
        self.stop_button.setEnabled(busy)
        self.open_button.setEnabled(not busy and recipe is not None and recipe == self.checked)
        self.open_button.setText("Open" if self.open_button.isEnabled() else "Open (check first)")

    def start_check(self) -> bool:
        """Check the current recipe in the background; code-carrying files are trusted first (No by default)."""
        try:
            recipe = self.recipe()
        except UserError as exc:
            self.result_label.setText(ERR.format(escape(plain(str(exc)))))
            return False
        if self.info is not None and self.info.needs_trust and not recipe.trust and not self.untrained:
            if not self.win._ask_trust(self.path, self.info.summary, self.info.kind):
                self.result_label.setText("Not checked: you did not trust the file, so nothing of it was loaded. "
                                          "Save the model's state_dict and open that instead.")
                return False
            self.trusted = True
            recipe = self.recipe()
        self.checked = None
        self.result_label.setText("Checking…")
        return self.start(CheckJob(self, recipe, self.raw))

    def show_checked(self, recipe: ModelRecipe, c: RecipeChecked) -> None:
        """The check's findings, one line each."""
        self.checked = recipe
        self.result_label.setText(checked_html(c, self.raw.name if self.raw else "the dataset"))


    # ----------------------------------------------------------------- closing
    def accept(self) -> None:
        """Open the checked model in the window (which remembers the recipe once it loaded)."""
        if self.checked is None or self.running is not None:
            return
        recipe = self.checked
        super().accept()
        self.win.load(recipe.file or recipe.arch, self.data_spec, trust=recipe.trust, recipe=recipe)

    def reject(self) -> None:
        """Cancel: a running job is stopped first (within a second or two), then the dialog closes."""
        if self.running is not None:
            self.close_when_stopped = True
            self.win.cancel_job()
            return
        super().reject()


def open_model_dialog(win: MainWindow, path: str | None = None, untrained: bool = False) -> OpenModelDialog | None:
    """Show the dialog (window-modal, not blocking); None while another job runs."""
    if win.busy:
        win.statusBar().showMessage("Wait for the running job to finish (or cancel it) first", 5000)
        return None
    old = getattr(win, "open_model_dialog", None)
    if old is not None:
        old.deleteLater()  # one dialog at a time; the window owns it, so it would live as long as the window
    dialog = OpenModelDialog(win, path, untrained)
    win.open_model_dialog = dialog
    dialog.open()
    return dialog
