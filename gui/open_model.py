"""The Open model dialog: a model file (or a new untrained architecture), what PruneLab found in it,
the architecture for weights-only files, the input and normalisation, and a background check before
the user accepts.

The check is a job like any other (engine.inputs.check_recipe on the worker thread, gui.open_model_jobs); what the user
chose is an engine.inputs.ModelRecipe, remembered with the file in the recent list so that reopening
it asks nothing.
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QFrame,
                               QGroupBox, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QRadioButton,
                               QScrollArea, QVBoxLayout, QWidget)

from engine.data import Dataset
from engine.errors import UserError
from engine.events import Progress
from engine.inputs import NORM_PRESETS, NORM_TITLES, ModelRecipe, RecipeChecked
from engine.sources import ModelKind, ModelSource
from engine.units import parse_numbers
from gui.commands import BUSY_MESSAGE
from gui.data_choice import data_title, fill_data_combo, resolve_choice
from gui.jobs import WorkerJob
from gui.open_model_arch import ArchitecturePicker
from gui.open_model_jobs import CHECK_IMAGES, CheckJob, DescribeJob
from gui.open_model_recipe import (ERR, checked_html, found_text, parse_shape, plain, remembered_recipe,
                                    stem_problem)
from gui.pickers import pick_file
from gui.widgets import guard_wheel
from gui.engine_calls import Described
from gui.worker_thread import Failure

if TYPE_CHECKING:
    from gui.commands import Commands

MODEL_FILTER = "PyTorch models (*.pt *.pth *.pkl *.ckpt *.bin *.tar *.safetensors);;All files (*)"


# ===================================================================== the dialog
class OpenModelDialog(QDialog):
    """Choose a model file (or an untrained architecture), check it in the background, then open it."""

    def __init__(self, commands: Commands, path: str | None = None, untrained: bool = False,
                 data_spec: str | None = None) -> None:
        super().__init__(commands.parent)
        self.commands = commands
        self.settings = commands.session.settings
        self.data_spec = data_spec or commands.current_data_spec()  # opened with it; the Dataset row changes it
        self.path: str | None = None
        self.info = None  # engine.models.FileInfo of the file
        self.raw: Dataset | None = None
        self.trusted = False
        self.checked: ModelRecipe | None = None  # the recipe the last successful check was for
        self.running: WorkerJob | None = None
        self.close_when_stopped = False
        self.trust_question: tuple[str, str] | None = None  # (message, what), asked once the check stopped
        self.problem = ""  # why the checked recipe cannot be opened (open_model_recipe.stem_problem)
        self.recheck = False  # check again once the new dataset is read
        self.setWindowTitle("Open model")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setMinimumWidth(620)
        layout = QVBoxLayout(self)
        # Everything but the buttons scrolls: however long the check's findings, Open and Cancel stay in view.
        self.body = QWidget()
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 0, 0, 0)
        body.addWidget(self._source_box())
        self.arch_box = QGroupBox("Architecture")
        self.picker = ArchitecturePicker(commands.ask_trust, settings=self.settings)
        QVBoxLayout(self.arch_box).addWidget(self.picker)
        body.addWidget(self.arch_box, 1)
        body.addWidget(self._input_box())
        body.addWidget(self._check_box())
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.body)
        self.follow_findings = False
        self.scroll.verticalScrollBar().rangeChanged.connect(self._show_findings)
        layout.addWidget(self.scroll, 1)
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
        self.fill_data()
        self.data_combo.activated.connect(self._on_data_chosen)
        self.shape_edit.textChanged.connect(self._fill_norms)
        self.refresh()
        self.fit_screen()
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
        box = QGroupBox("Dataset and input")
        form = QFormLayout(box)
        self.data_combo = QComboBox()
        self.data_combo.setToolTip("The dataset the model is checked and opened with; Open switches the window to "
                                   "it. Its images are converted to the input shape below")
        form.addRow("Dataset", self.data_combo)
        self.data_label = QLabel()
        self.data_label.setWordWrap(True)
        self.data_label.setTextFormat(Qt.TextFormat.RichText)
        self.data_label.setVisible(False)
        form.addRow(self.data_label)
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
        self.stop_button.clicked.connect(self.commands.cancel_job)
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
    def start(self, job: WorkerJob) -> bool:
        """Run one of the dialog's jobs on the window's worker."""
        if not self.commands.start_job(job):
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
        self.fit_screen()  # the architecture list or the findings may have made it taller
        if self.trust_question is not None:
            QTimer.singleShot(0, self, self._ask_trust_and_check)  # a new check needs the window idle
        elif self.recheck:
            self.recheck = False
            QTimer.singleShot(0, self, self._recheck)

    def _ask_trust_and_check(self) -> None:
        message, what = self.trust_question
        self.trust_question = None
        if self.commands.ask_trust(self.path, message, what):
            self.trusted = True
            self.start_check()
        else:
            self.result_label.setText("Not checked: you did not trust the file, so none of its code ran.")

    def show_progress(self, event: Progress) -> None:
        """A job's progress, in the dialog's own bar."""
        self.progress.setValue(int(event.fraction * 100))
        self.progress.setFormat(f"{event.message} %p%")

    def show_failure(self, title: str, failure: Failure, label: QLabel | None = None) -> None:
        """An error in plain words, in the dialog; the window and its loaded model are untouched."""
        text = plain(failure.message) if failure.user_error else f"{failure.message} (details in the log)"
        label = label or (self.found_label if isinstance(self.running, DescribeJob) else self.result_label)
        label.setText(f"<b>{escape(title)}.</b> " + ERR.format(escape(text)))
        label.setVisible(True)

    def fit_screen(self) -> None:
        """As tall as the contents want, but inside the screen's free area (the body scrolls beyond it)."""
        screen = self.screen() or self.commands.parent.screen()
        if screen is None:
            return
        area, inner, outer = screen.availableGeometry(), self.geometry(), self.frameGeometry()
        shown = self.isVisible() and outer != inner
        above = inner.top() - outer.top() if shown else 32  # the title bar (known once shown)
        below = outer.bottom() - inner.bottom() if shown else 4
        margins = self.layout().contentsMargins()
        want = (self.body.sizeHint().height() + self.buttons.sizeHint().height() + margins.top() + margins.bottom()
                + self.layout().spacing() + 2)
        height = min(max(want, self.height() if self.isVisible() else 0), area.height() - above - below)
        width = min(max(self.width(), self.body.sizeHint().width() + 40), area.width())
        self.resize(width, height)
        if self.isVisible():
            top = min(max(inner.top(), area.top() + above), area.bottom() - below - height + 1)
            left = min(max(inner.left(), area.left()), area.right() - width + 1)
            self.move(left - (inner.left() - outer.left()), top - above)  # move() places the frame

    # ----------------------------------------------------------------- the dataset
    def fill_data(self) -> None:
        """The dataset combo: the window's choices, the dialog's dataset selected."""
        fill_data_combo(self.data_combo, self.settings, self.data_spec)

    def _on_data_chosen(self, index: int) -> None:
        spec = None if self.running is not None else resolve_choice(self, self.settings,
                                                                    self.data_combo.itemData(index))
        if spec is None or spec == self.data_spec:
            self.fill_data()
            return
        self.choose_data(spec)

    def choose_data(self, spec: str) -> bool:
        """Read dataset `spec` (in the background); the shape, normalisations and classes follow it, and a
        recipe that could be checked is checked again on it."""
        self.recheck = self.checked is not None or self.check_button.isEnabled()
        self.checked = None
        self.data_label.setVisible(False)
        self.result_label.setText(f"Reading {escape(data_title(spec))}…")
        return self.start(DescribeJob(self, None, spec))

    def _fill_norms(self) -> None:
        """Offer only the normalisations that fit the input's channels (a 1-channel preset fits any)."""
        try:
            shape = parse_shape(self.shape_edit.text())
        except UserError:
            return
        channels = shape[0] if shape else (self.raw.input_shape[0] if self.raw is not None else None)
        current = self.norm_combo.currentData()
        self.norm_combo.blockSignals(True)
        self.norm_combo.clear()
        for key, title in NORM_TITLES.items():
            preset = NORM_PRESETS.get(key)
            if preset is None or channels is None or len(preset.mean) in (1, channels):
                self.norm_combo.addItem(title[:1].upper() + title[1:], key)
        self.norm_combo.setCurrentIndex(max(0, self.norm_combo.findData(current)))
        self.norm_combo.blockSignals(False)
        self.refresh()

    # ----------------------------------------------------------------- what was found
    def _on_mode(self, _id: int, checked: bool) -> None:
        if checked:
            self.checked = None
            self.refresh()

    def _choose_file(self) -> None:
        path = pick_file(self, self.settings, "model", "Open a model", MODEL_FILTER,
                         str(Path(self.path).parent) if self.path else "")
        if path:
            self.open_file(path)

    def open_file(self, path: str) -> bool:
        """Describe another file (in the background)."""
        self.file_radio.setChecked(True)
        return self.start(DescribeJob(self, path))

    def show_described(self, path: str | None, described: Described, data_spec: str | None = None) -> None:
        """Fill the dialog from the file's description and the dataset."""
        old = self.raw
        self.raw = described.raw_data
        self.data_label.setVisible(False)  # a dataset that could not be read earlier is no longer the question
        self.data_spec = data_spec or self.data_spec
        self.fill_data()
        self.picker.set_names(described.architectures)
        data = self.raw
        names = ", ".join(data.class_names[:12]) + (f", … ({data.num_classes} in all)"
                                                     if data.num_classes > 12 else "")
        self.classes_label.setText(f"{escape(names)} <small>(from {escape(data.name)}, "
                                   f"{data.split_size('val'):,} validation images)</small>")
        shown = self.shape_edit.text().strip()
        if old is None or not shown or shown == ",".join(map(str, old.input_shape)):
            self.shape_edit.setText(",".join(map(str, data.input_shape)))  # the dataset's shape follows the dataset
        if self.info is not None and self.info.input_shape and path is None:
            self.shape_edit.setText(",".join(map(str, self.info.input_shape)))  # recorded in the file: kept
        self._fill_norms()
        self.recheck = self.recheck and path is None  # checked again once this job is over (job_stopped)
        if path is None:
            if self.info is not None:  # another dataset: what the file means for it (its head) is said again
                self.found_label.setText(found_text(self.info, data))
            return
        self.path, self.info, self.trusted, self.checked = path, described.info, False, None
        self.file_edit.setText(path)
        info = described.info
        self.found_label.setText(found_text(info, data))
        if info.input_shape:
            self.shape_edit.setText(",".join(map(str, info.input_shape)))
        recipe = remembered_recipe(self.settings, path)
        if recipe is not None:
            self.apply_recipe(recipe)
        elif info.arch and info.needs_arch and ModelSource.parse(info.arch).kind is not ModelKind.CODE:
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
        if self.untrained and ModelSource.parse(arch).kind is ModelKind.CODE:
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
        ok = not busy and recipe is not None and recipe == self.checked
        self.open_button.setEnabled(ok)
        # Enter does the next thing to do: Check, then Open (a disabled default fell through to Cancel)
        (self.open_button if ok else self.check_button).setDefault(True)
        (self.check_button if ok else self.open_button).setDefault(False)
        self.open_button.setText("Open" if ok else "Open (check first)" if not self.problem else "Open (see Check)")
        self.open_button.setToolTip("Open the model in PruneLab" + (f" with {self.raw.name}" if self.raw else "")
                                    if ok else "Check first: Open is enabled for a model the check found usable")

    def start_check(self) -> bool:
        """Check the current recipe in the background; code-carrying files are trusted first (No by default)."""
        try:
            recipe = self.recipe()
        except UserError as exc:
            self.result_label.setText(ERR.format(escape(plain(str(exc)))))
            return False
        if self.info is not None and self.info.needs_trust and not recipe.trust and not self.untrained:
            if not self.commands.ask_trust(self.path, self.info.summary, self.info.kind):
                self.result_label.setText("Not checked: you did not trust the file, so nothing of it was loaded. "
                                          "Save the model's state_dict and open that instead.")
                return False
            self.trusted = True
            recipe = self.recipe()
        self.checked, self.problem = None, ""
        self.result_label.setText("Checking…")
        return self.start(CheckJob(self, recipe, self.raw))

    def _recheck(self) -> None:
        if self.running is None and self.check_button.isEnabled():
            self.start_check()
        else:
            self.result_label.setText("The dataset changed: press Check.")

    def show_checked(self, recipe: ModelRecipe, c: RecipeChecked) -> None:
        """The check's findings, one line each; a first layer made for other images keeps Open disabled."""
        self.problem = stem_problem(c) if not c.untrained else ""
        self.checked = None if self.problem else recipe
        raw = self.raw
        self.result_label.setText(checked_html(c, raw.name if raw else "the dataset",
                                               raw.split_size("val") if raw else None, self.problem))
        # the findings' height is known only after a layout pass or two: follow the scroll range for a moment
        self.follow_findings = True
        self._show_findings()
        QTimer.singleShot(500, self, lambda: setattr(self, "follow_findings", False))

    def _show_findings(self, *_range) -> None:
        """Scroll the Check box to the top, so as much of the findings shows as fits."""
        if not self.follow_findings:
            return
        box = self.result_label.parentWidget()
        self.scroll.verticalScrollBar().setValue(box.mapTo(self.body, box.rect().topLeft()).y())


    # ----------------------------------------------------------------- closing
    def accept(self) -> None:
        """Open the checked model in the window (which remembers the recipe once it loaded)."""
        if self.checked is None or self.running is not None:
            return
        recipe = self.checked
        super().accept()
        self.commands.load(recipe.file or recipe.arch, self.data_spec, trust=recipe.trust, recipe=recipe)

    def reject(self) -> None:
        """Cancel: a running job is stopped first (within a second or two), then the dialog closes."""
        if self.running is not None:
            self.close_when_stopped = True
            self.commands.cancel_job()
            return
        super().reject()


def open_model_dialog(commands: Commands, path: str | None = None, untrained: bool = False,
                      data_spec: str | None = None, previous: OpenModelDialog | None = None
                      ) -> OpenModelDialog | None:
    """Show the dialog (window-modal, not blocking) for dataset `data_spec` (the window's by default); None while
    another job runs. The `previous` one goes: the window owns it, so it would live as long as the window."""
    if commands.busy():
        commands.say(BUSY_MESSAGE, 5000)
        return None
    if previous is not None:
        previous.deleteLater()
    dialog = OpenModelDialog(commands, path, untrained, data_spec)
    guard_wheel(dialog)
    dialog.open()
    return dialog
