"""The Open model dialog and the window's dataset (pytest-qt, offscreen): the dialog's Dataset row, switching
the window to a dataset the model does not fit, a first layer made for other images, staying on screen,
the words for accuracy and for untrained weights, constructor signatures, and pickers that remember folders."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from shared_fixtures import tiny_resnet, write_image_folder
from PySide6.QtCore import QPoint, QRect, QSettings
from PySide6.QtWidgets import QMessageBox
from test_gui_open_model import (ARCH, CODE, TIMEOUT_MS, check, code_file, open_checked,  # noqa: F401
                                 open_dialog, rgb_state, window)

from engine.models import ModelBundle
from gui import pickers
from gui.data_choice import OPEN_FOLDER, switch_data
from gui.open_model_arch import constructor_signatures
from gui.open_model_recipe import images_words
from gui.settings import Settings
from gui.source_panel import on_data_chosen


def plain_text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html).replace("&#x27;", "'")


@pytest.fixture
def folder_picker(monkeypatch):
    """Folder pickers answer with `answer[0]` and record where they started."""
    answer, started = [None], []

    def pick(parent, title, start=""):
        started.append(start)
        return str(answer[0]) if answer[0] else ""

    monkeypatch.setattr(pickers.QFileDialog, "getExistingDirectory", staticmethod(pick))
    return answer, started


def load_tiny(win, qtbot, spec: str = "fashion-mnist", channels: int = 1, classes: int = 10) -> None:
    """A small model of `classes` outputs loaded in the window (as a file's model would be: it does not adapt)."""
    bundle = ModelBundle(tiny_resnet(channels, classes), "test:tiny", "demo:resnet", None, classes)
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        assert win.load(None, spec, bundle=bundle)
    assert win.session.loaded is not None, win.error_box.text() if win.error_box else ""


def choose_folder_in(win, qtbot, combo, folder_picker, folder: Path, chosen) -> None:
    """Pick "Open an ImageFolder…" in `combo` and answer the picker with `folder`; wait for the job it starts."""
    folder_picker[0][0] = folder
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        chosen(combo.findData(OPEN_FOLDER))
    qtbot.wait(50)  # a follow-up (the dialog's second check) starts on the next turn of the event loop
    qtbot.waitUntil(lambda: not win.busy, timeout=TIMEOUT_MS)


# ===================================================================== 1a: the dialog's Dataset row
def test_the_dialogs_dataset_row_refills_the_input_and_opens_with_that_dataset(window, qtbot, tmp_path,
                                                                               folder_picker):
    folder = write_image_folder(tmp_path / "rgb", classes=("cat", "dog", "fox"), per_class=8)
    dialog = open_dialog(window, qtbot, untrained=True)
    assert dialog.data_combo.currentData() == "fashion-mnist" and dialog.shape_edit.text() == "1,28,28"
    assert dialog.norm_combo.findData("imagenet") < 0  # a 3-channel preset cannot normalise grey images
    dialog.picker.filter_edit.setText(ARCH)
    assert "10 outputs for 10 classes" in check(dialog, qtbot)
    choose_folder_in(window, qtbot, dialog.data_combo, folder_picker, folder, dialog.data_combo.activated.emit)
    qtbot.waitUntil(lambda: dialog.checked is not None and not window.busy, timeout=TIMEOUT_MS)  # checked again
    spec = f"imagefolder:{folder}"
    assert dialog.data_combo.currentData() == spec and dialog.data_spec == spec
    assert dialog.shape_edit.text().startswith("3,") and "cat" in dialog.classes_label.text()
    assert dialog.norm_combo.findData("imagenet") >= 0
    assert "3 outputs for 3 classes of rgb" in plain_text(dialog.result_label.text())
    open_checked(dialog, qtbot)
    assert window.session.loaded.request.data_spec == spec and window.ui.data_combo.currentData() == spec
    assert window.session.loaded.bundle.num_classes == 3


def test_what_the_file_means_is_said_again_for_another_dataset(window, qtbot, tmp_path, folder_picker, rgb_state):
    """The file's head fits Fashion-MNIST's 10 classes; on a 3-class folder the dialog says it will be new."""
    folder = write_image_folder(tmp_path / "rgb", classes=("cat", "dog", "fox"), per_class=8)
    dialog = open_dialog(window, qtbot, rgb_state)
    assert "head will be new" not in dialog.found_label.text()
    choose_folder_in(window, qtbot, dialog.data_combo, folder_picker, folder, dialog.data_combo.activated.emit)
    qtbot.waitUntil(lambda: dialog.raw is not None and dialog.raw.num_classes == 3 and not window.busy,
                    timeout=TIMEOUT_MS)
    assert "the dataset 3 classes: the head will be new" in dialog.found_label.text()


def test_a_dataset_the_dialog_cannot_read_keeps_the_one_in_use(window, qtbot, tmp_path, folder_picker):
    empty = tmp_path / "empty"
    for name in ("cat", "dog"):
        (empty / name).mkdir(parents=True)
    dialog = open_dialog(window, qtbot, untrained=True)
    choose_folder_in(window, qtbot, dialog.data_combo, folder_picker, empty, dialog.data_combo.activated.emit)
    assert dialog.data_combo.currentData() == "fashion-mnist" and dialog.data_spec == "fashion-mnist"
    assert "Could not read this dataset" in dialog.data_label.text() and dialog.raw.name == "Fashion-MNIST"
    assert "Reading" not in dialog.result_label.text()  # no progress line left for a read that ended


# ===================================================================== 1b and 6: switching the window's dataset
def test_a_dataset_the_model_does_not_fit_offers_a_model_for_it(window, qtbot, tmp_path, folder_picker):
    folder = write_image_folder(tmp_path / "rgb", per_class=8)
    load_tiny(window, qtbot)
    choose_folder_in(window, qtbot, window.ui.data_combo, folder_picker, folder, lambda i: on_data_chosen(window.commands, window.ui.source, i))
    qtbot.waitUntil(lambda: getattr(window, "data_question", None) is not None, timeout=5_000)
    box = window.data_question
    assert "The loaded model has 10 outputs; rgb has 3 classes" in box.text()
    assert window.error_box is None  # no dead-end refusal
    assert window.ui.data_combo.currentData() == "fashion-mnist"  # nothing switched while asking
    buttons = {b.text(): b for b in box.buttons()}
    assert {"Open a model for this dataset…", "New untrained architecture…"} <= set(buttons)
    box.button(QMessageBox.StandardButton.Cancel).click()
    assert window.session.loaded.request.data_spec == "fashion-mnist" and window.ui.data_combo.currentData() == "fashion-mnist"
    switch_data(window.commands, f"imagefolder:{folder}")  # asked again at once: the folder was read already
    qtbot.waitUntil(lambda: window.data_question is not box and window.data_question.isVisible(), timeout=5_000)
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        next(b for b in window.data_question.buttons() if b.text().startswith("New untrained")).click()
    dialog = window.open_model_dialog
    assert dialog.isVisible() and dialog.untrained and dialog.data_spec == f"imagefolder:{folder}"
    assert dialog.data_combo.currentData() == f"imagefolder:{folder}" and dialog.shape_edit.text().startswith("3,")


def test_a_dataset_that_fits_is_loaded_with_the_model_as_it_was_opened(window, qtbot, tmp_path, folder_picker):
    folder = write_image_folder(tmp_path / "rgb", per_class=8)
    load_tiny(window, qtbot, channels=3, classes=3, spec=f"imagefolder:{write_image_folder(tmp_path / 'other')}")
    choose_folder_in(window, qtbot, window.ui.data_combo, folder_picker, folder, lambda i: on_data_chosen(window.commands, window.ui.source, i))
    qtbot.waitUntil(lambda: window.session.loaded.request.data_spec == f"imagefolder:{folder}" and not window.busy,
                    timeout=TIMEOUT_MS)
    assert getattr(window, "data_question", None) is None and window.ui.data_combo.currentData().endswith("rgb")


def test_a_refused_dataset_leaves_the_combo_on_the_dataset_in_use(window, qtbot, tmp_path, folder_picker):
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    (empty / "cat" / "readme.txt").write_text("no images here")
    load_tiny(window, qtbot)
    choose_folder_in(window, qtbot, window.ui.data_combo, folder_picker, empty, lambda i: on_data_chosen(window.commands, window.ui.source, i))
    assert window.error_box is not None and window.error_box.windowTitle() == "Could not open the dataset"
    assert window.ui.data_combo.currentData() == "fashion-mnist" and window.session.loaded.request.data_spec == "fashion-mnist"


def test_a_failure_inside_the_dialog_does_not_leave_the_window_saying_failed(window, qtbot, tmp_path):
    fake = tmp_path / "fake.pt"
    fake.write_text("this is just a text file renamed\n")
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        dialog = window.show_open_model(str(fake))
    assert "Could not read this file" in dialog.found_label.text()
    assert window.ui.phase_label.text() != "Failed"


# ===================================================================== 2: a first layer for other images
def test_a_first_layer_for_other_channels_is_a_problem_and_open_stays_disabled(window, qtbot, tmp_path,
                                                                               folder_picker, rgb_state):
    dialog = open_dialog(window, qtbot, rgb_state)
    dialog.picker.select(ARCH)
    text = plain_text(check(dialog, qtbot))
    assert "Cannot open" in text and "first layer (features.0.0) takes 3-channel images" in text
    assert "the dataset's images have 1 channel" in text and "choose a dataset of 3-channel images" in text.lower()
    assert not dialog.open_button.isEnabled() and dialog.checked is None
    folder = write_image_folder(tmp_path / "rgb", per_class=8)  # 3 classes: a new head is only a warning
    choose_folder_in(window, qtbot, dialog.data_combo, folder_picker, folder, dialog.data_combo.activated.emit)
    qtbot.waitUntil(lambda: dialog.checked is not None and not window.busy, timeout=TIMEOUT_MS)
    text = plain_text(dialog.result_label.text())
    assert "features.0.0.weight" not in text and "Cannot open" not in text  # the stem fits; only the head is new
    assert "classifier" in text and dialog.open_button.isEnabled()


def test_a_new_head_stays_a_warning(window, qtbot, tmp_path, folder_picker):
    torch.save(__import__("engine.models", fromlist=["x"]).build_arch(ARCH, in_channels=3, num_classes=5)
               .state_dict(), tmp_path / "five.pth")
    folder = write_image_folder(tmp_path / "rgb", per_class=8)
    dialog = open_dialog(window, qtbot, tmp_path / "five.pth")
    choose_folder_in(window, qtbot, dialog.data_combo, folder_picker, folder, dialog.data_combo.activated.emit)
    dialog.picker.select(ARCH)
    text = plain_text(check(dialog, qtbot))
    assert "classifier" in text and "Cannot open" not in text and dialog.open_button.isEnabled()


# ===================================================================== 3, 4: on screen; untrained words
def test_the_dialog_stays_on_screen_with_its_buttons_after_a_check(window, qtbot):
    dialog = open_dialog(window, qtbot, untrained=True)
    dialog.picker.filter_edit.setText(ARCH)
    text = check(dialog, qtbot)
    area = dialog.screen().availableGeometry()
    assert dialog.height() <= area.height() and dialog.frameGeometry().bottom() <= area.bottom() + 1
    button = QRect(dialog.open_button.mapTo(dialog, QPoint(0, 0)), dialog.open_button.size())
    assert dialog.rect().contains(button)
    assert dialog.scroll.widget().isAncestorOf(dialog.result_label)  # long findings scroll, the buttons stay
    assert "untrained: weights are random (seed 0)" in text and "nothing to match" not in text


# ===================================================================== 5: constructor signatures
def test_a_python_files_classes_show_their_constructor(window, qtbot, tmp_path, code_file):
    code_file.write_text(CODE + "\n\nclass Plain(nn.Module):\n    pass\n")
    dialog = open_dialog(window, qtbot, untrained=False)
    assert dialog.picker.load_code(str(code_file))
    dialog.picker.class_combo.setCurrentText("TinyNet")
    assert "TinyNet(width=4, num_classes=10)" in dialog.picker.signature_label.text()
    assert constructor_signatures(str(code_file), ["TinyNet", "Plain"]) == {
        "TinyNet": "TinyNet(width=4, num_classes=10)", "Plain": "Plain()"}


# ===================================================================== 7: accuracy in words
def test_accuracy_says_the_real_image_count_and_split(window, qtbot, tmp_path):
    assert images_words(1000, 10_000, "test") == "on 1,000 of 10,000 test images (every class in proportion)"
    assert images_words(500, 6, "validation") == "on all 6 validation images"
    spec = f"imagefolder:{write_image_folder(tmp_path / 'rgb', per_class=8)}"
    load_tiny(window, qtbot, spec, channels=3, classes=3)
    qtbot.waitUntil(lambda: "top1" not in window.session.loaded.pending, timeout=TIMEOUT_MS)
    n = window.session.loaded.data.split_size("test")
    card = plain_text(window.ui.summary_label.text())
    assert f"on all {n} test images" in card and "first 1000" not in card


# ===================================================================== 8: pickers remember their folder
def test_pickers_start_where_they_were_last(window, qtbot, tmp_path, monkeypatch, folder_picker):
    chosen, starts = [], []

    def open_file(parent, title, start="", filters=""):
        starts.append(start)
        return (str(chosen.pop(0)), "") if chosen else ("", "")

    monkeypatch.setattr(pickers.QFileDialog, "getOpenFileName", staticmethod(open_file))
    (tmp_path / "models").mkdir()
    dialog = open_dialog(window, qtbot, untrained=True)
    chosen.append(tmp_path / "models" / "a.pt")
    dialog._choose_file()
    qtbot.waitUntil(lambda: not window.busy, timeout=TIMEOUT_MS)  # (no such file: said in the dialog)
    dialog._choose_file()  # cancelled
    assert starts[-1] == str(tmp_path / "models")
    answer, started = folder_picker
    answer[0] = tmp_path / "datasets" / "rgb"
    answer[0].mkdir(parents=True)
    dialog.data_combo.activated.emit(dialog.data_combo.findData(OPEN_FOLDER))
    qtbot.waitUntil(lambda: not window.busy, timeout=TIMEOUT_MS)
    answer[0] = None
    dialog.data_combo.activated.emit(dialog.data_combo.findData(OPEN_FOLDER))
    assert started[-1] == str(tmp_path / "datasets")
    again = Settings(QSettings(window.settings.store.fileName(), QSettings.Format.IniFormat))
    assert pickers.last_folder(again, "model") == str(tmp_path / "models")  # kept across a restart
