"""Choosing a dataset: the choices both dataset combo boxes offer (the window's and the Open model
dialog's), the folder pickers behind "Open…", and switching the window's dataset.

Switching reads the new dataset first (a job), then compares it with the loaded model: a model made
for 10 classes cannot classify 3, so instead of a refusal the user is offered a model for the new
dataset (the Open model dialog with it preselected) or a new untrained architecture.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QComboBox, QMessageBox, QWidget

from engine.data import Dataset, load_dataset_events
from engine.errors import UserError
from engine.events import CancelToken
from engine.sources import DataSource
from gui.jobs import WorkerJob
from gui.pickers import pick_folder
from gui.settings import Settings
from gui.worker_thread import Failure

if TYPE_CHECKING:
    from gui.commands import Commands
    from gui.engine_calls import Loaded

DEFAULT_DATA = "fashion-mnist"
OPEN_FOLDER, OPEN_CIFAR = "__imagefolder__", "__cifar10__"
ADAPTS = ("torchvision:", "timm:")  # built by name for the data: channels and head follow any dataset


def data_title(spec: str) -> str:
    """A dataset spec as the combo boxes show it."""
    if spec == DEFAULT_DATA:
        return "Fashion-MNIST (built-in)"
    try:
        source = DataSource.parse(spec)
    except UserError:  # an edited settings file's entry: shown as it is; choosing it says what is wrong
        return spec
    return f"{'CIFAR-10' if source.scheme == 'cifar10' else 'ImageFolder'}: {Path(source.path or '').name}"


def fill_data_combo(combo: QComboBox, settings: Settings, current: str | None = None) -> None:
    """The built-in dataset, recent folders and "Open…", with `current` selected (added when it is new)."""
    combo.blockSignals(True)
    combo.clear()
    combo.addItem(data_title(DEFAULT_DATA), DEFAULT_DATA)
    specs = [s for s in settings.recent("datasets") if s != DEFAULT_DATA]
    if current and current != DEFAULT_DATA and current not in specs:
        specs.insert(0, current)
    for spec in specs:
        combo.addItem(data_title(spec), spec)
        combo.setItemData(combo.count() - 1, spec, Qt.ItemDataRole.ToolTipRole)
    combo.addItem("Open an ImageFolder…", OPEN_FOLDER)
    combo.addItem("Open a CIFAR-10 folder…", OPEN_CIFAR)
    if current:
        combo.setCurrentIndex(max(0, combo.findData(current)))
    combo.blockSignals(False)


def resolve_choice(parent: QWidget, settings: Settings, choice: Any) -> str | None:
    """The dataset spec a combo item stands for, asking for the folder behind "Open…"; None when cancelled."""
    if choice not in (OPEN_FOLDER, OPEN_CIFAR):
        return choice or None
    cifar = choice == OPEN_CIFAR
    folder = pick_folder(parent, settings, "cifar10" if cifar else "imagefolder",
                         "Choose a CIFAR-10 folder (cifar-10-batches-py)" if cifar
                         else "Choose an ImageFolder (one sub-folder per class)")
    return f"{'cifar10' if cifar else 'imagefolder'}:{folder}" if folder else None


def misfit(loaded: Loaded, raw: Dataset) -> tuple[str, bool]:
    """Why the loaded model does not fit `raw`, in plain words ("" when it does), and whether converting the
    images would do (same class count, other channels)."""
    request = loaded.request
    recipe = request.recipe
    if (recipe is not None and recipe.file is None) or (recipe is None and (request.model_src or "").startswith(ADAPTS)):
        return "", False  # an architecture by name is rebuilt for the new dataset
    bundle = loaded.bundle
    channels = bundle.input_shape[0] if bundle.input_shape else raw.input_shape[0]
    if bundle.num_classes and bundle.num_classes != raw.num_classes:
        return (f"The loaded model has {bundle.num_classes} outputs; {raw.name} has {raw.num_classes} classes."), False
    if channels != raw.input_shape[0]:
        return (f"The loaded model takes {channels}-channel images; {raw.name} has {raw.input_shape[0]}-channel "
                "images."), True
    return "", False


class DataProbeJob(WorkerJob):
    """Read a dataset the user picked for the window, then load it with the model or ask what to do."""

    name, title = "dataset", "Could not open the dataset"

    def __init__(self, commands: Commands, spec: str) -> None:
        super().__init__(commands)
        self.spec = spec
        self.raw: Dataset | None = None

    def work(self, cancel: CancelToken) -> Generator[Any, None, Dataset]:
        raw = yield from load_dataset_events(self.spec)
        cancel.check()
        return raw

    def on_success(self, raw: Dataset) -> None:
        self.raw = raw
        self.session.raw_data_cache[self.spec] = raw  # the load that follows reads it from here

    def on_failure(self, failure: Failure) -> None:
        self.commands.show_data_in_use()
        self.commands.show_error(self.title, failure.message, "" if failure.user_error else failure.details,
                                 info="The loaded model and dataset are unchanged.")

    def on_cancel(self) -> None:
        self.commands.show_data_in_use()

    def on_stopped(self) -> None:
        if self.raw is not None:
            # the next job needs the window idle; dropped if the window is gone by then
            QTimer.singleShot(0, self.commands.parent, lambda: data_read(self.commands, self.spec, self.raw))


def switch_data(commands: Commands, spec: str) -> None:
    """Use dataset `spec` in the window: read it (unless it is at hand), then load the model with it."""
    session = commands.session
    if session.loaded is None:
        commands.load(session.current_model_src(), spec)
    elif spec in session.raw_data_cache:
        data_read(commands, spec, session.raw_data_cache[spec])
    elif not commands.start_job(DataProbeJob(commands, spec)):
        commands.show_data_in_use()


def data_read(commands: Commands, spec: str, raw: Dataset) -> None:
    """The dataset is read: load the model with it when it fits, else ask (the window stays as it was)."""
    loaded = commands.session.loaded
    if loaded is None:
        return
    problem, convertible = misfit(loaded, raw)
    if problem:
        ask_misfit(commands, spec, raw, problem, convertible)
    else:
        reload_with(commands, spec)


def reload_with(commands: Commands, spec: str) -> None:
    """Load the loaded model again, as it was opened (recipe, trust), with dataset `spec`."""
    request = commands.session.loaded.request
    if not commands.load(request.model_src or commands.session.current_model_src(), spec, trust=request.trust,
                         bundle=request.bundle if request.model_src is None else None, recipe=request.recipe):
        commands.show_data_in_use()


def ask_misfit(commands: Commands, spec: str, raw: Dataset, problem: str, convertible: bool) -> QMessageBox:
    """Offer a model for the new dataset instead of a refusal (window-modal, not blocking)."""
    commands.show_data_in_use()  # nothing switched yet, whatever the answer
    box = QMessageBox(QMessageBox.Icon.Question, "The model does not fit this dataset", problem,
                      QMessageBox.StandardButton.NoButton, commands.parent)
    box.setInformativeText(f"Open a model made for {raw.name}, or start from a new untrained architecture. "
                           "Until then the window keeps the loaded model and dataset.")
    open_button = box.addButton("Open a model for this dataset…", QMessageBox.ButtonRole.AcceptRole)
    new_button = box.addButton("New untrained architecture…", QMessageBox.ButtonRole.AcceptRole)
    convert_button = None
    if convertible:
        channels = commands.session.loaded.bundle.input_shape[0]
        convert_button = box.addButton(f"Use it anyway (images converted to {channels} channel"
                                       f"{'' if channels == 1 else 's'})", QMessageBox.ButtonRole.AcceptRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(open_button)
    box.setWindowModality(Qt.WindowModality.WindowModal)

    def answered(button: Any) -> None:
        if button is open_button:
            commands.open_model_dialog(data_spec=spec)
        elif button is new_button:
            commands.open_model_dialog(untrained=True, data_spec=spec)
        elif button is convert_button:
            reload_with(commands, spec)

    box.buttonClicked.connect(answered)
    box.open()
    commands.parent.data_question = box  # for tests, and so the box lives as long as it is shown
    return box
