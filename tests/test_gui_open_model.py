"""The Open model dialog (pytest-qt, offscreen): weights-only files with an architecture picked from the
filtered list or a Python file, the background check, plain errors, the remembered recipe and trust."""
from __future__ import annotations

import os
import re
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
os.environ["PRUNELAB_NO_WEBENGINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QMenu, QMessageBox  # noqa: E402

from engine.models import build_arch, first_conv, list_architectures  # noqa: E402
from gui import dialogs  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402
from gui.open_model import OpenModelDialog  # noqa: E402
from gui.open_model_recipe import parse_shape, plain, remembered_recipe  # noqa: E402

TIMEOUT_MS = 90_000
ARCH = "torchvision:mobilenet_v3_small"  # small and quick at 28×28
MATCHED = re.compile(r"(\d+) of (\d+) tensors matched")
CODE = '''
from pathlib import Path

import torch
import torch.nn as nn

Path(__file__).with_suffix(".imported").touch()  # proves whether the file was imported


class TinyNet(nn.Module):
    def __init__(self, width=4, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


class NotAModel:
    pass
'''


@pytest.fixture
def window(window, fashion):
    """The shared window (tests/conftest.py) with Fashion-MNIST at hand, nothing loaded, and the trust question
    answered by `trust_answer` (recorded in `asked`)."""
    window.session.raw_data_cache["fashion-mnist"] = fashion
    window.asked = []
    window._ask_trust = lambda path, message, what: (window.asked.append(what), window.trust_answer)[1]
    window.trust_answer = True
    return window


@pytest.fixture
def rgb_state(tmp_path) -> Path:
    """A state_dict of the architecture built for RGB images and 10 classes (the stem will not fit grey images)."""
    return _saved_state(tmp_path / "mobilenet_rgb.pth", channels=3)


@pytest.fixture
def grey_state(tmp_path) -> Path:
    """A state_dict of the architecture built for grey images and 10 classes: it fits Fashion-MNIST whole."""
    return _saved_state(tmp_path / "mobilenet_grey.pth", channels=1)


def _saved_state(path: Path, channels: int) -> Path:
    torch.manual_seed(1)
    torch.save(build_arch(ARCH, in_channels=channels, num_classes=10).state_dict(), path)
    return path


@pytest.fixture
def code_file(tmp_path) -> Path:
    path = tmp_path / "mynet.py"
    path.write_text(CODE)
    return path


def open_dialog(win: MainWindow, qtbot, path: Path | None = None, untrained: bool = False) -> OpenModelDialog:
    """The dialog, once it has described the file and read the dataset."""
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        dialog = win.show_open_model(str(path) if path else None, untrained)
        assert dialog is not None
    assert dialog.running is None and dialog.raw is not None, dialog.found_label.text()
    return dialog


def check(dialog: OpenModelDialog, qtbot) -> str:
    """Press Check and wait for it; the findings as plain text."""
    assert dialog.check_button.isEnabled(), dialog.check_button.toolTip()
    with qtbot.waitSignal(dialog.commands.job_stopped, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dialog.check_button, Qt.MouseButton.LeftButton)
    return re.sub(r"<[^>]+>", "", dialog.result_label.text())


def pick_from_list(dialog: OpenModelDialog, qtbot, query: str, name: str) -> None:
    """Type a filter and click the row named `name`, as a user would."""
    picker = dialog.picker
    picker.list_view.setCurrentIndex(picker.proxy.index(-1, 0))  # nothing chosen (not even a guess)
    qtbot.keyClicks(picker.filter_edit, query)
    shown = picker.visible_names()
    assert name in shown, shown[:20]
    rect = picker.list_view.visualRect(picker.proxy.index(shown.index(name), 0))
    qtbot.mouseClick(picker.list_view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert picker.arch() == name


def open_checked(dialog: OpenModelDialog, qtbot) -> None:
    """Press Open and wait for the window to load the model."""
    win = dialog.commands.parent  # the window
    assert dialog.open_button.isEnabled()
    assert dialog.open_button.isDefault() and not dialog.check_button.isDefault()  # Enter opens, not Cancel
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dialog.open_button, Qt.MouseButton.LeftButton)
    assert win.session.loaded is not None, win.error_box.text() if win.error_box else "not loaded"


def test_state_dict_opens_with_an_architecture_from_the_filtered_list(window, qtbot, rgb_state):
    dialog = open_dialog(window, qtbot, rgb_state)
    assert "state_dict" in dialog.found_label.text() and dialog.arch_box.isVisible()
    assert dialog.shape_edit.text() == "1,28,28" and "Trouser" in dialog.classes_label.text()
    pick_from_list(dialog, qtbot, "mobilenet small", ARCH)
    assert not dialog.open_button.isEnabled()  # not before a check
    text = check(dialog, qtbot)
    filled, total = map(int, MATCHED.search(text).groups())
    assert total // 2 < filled < total  # the RGB stem does not fit grey images: named, the rest loads
    assert "features.0.0.weight" in text and "10 outputs for 10 classes" in text
    assert re.search(r"Top-1\s*\d+\.\d% on 500 of 5,000 validation images \(every class in proportion\)", text)
    assert "parameters" in text and "MACs" in text
    # a stem left untrained is a problem, not a warning: Open stays disabled and the words say why
    assert "takes 3-channel images, the dataset's images have 1 channel" in text and "start untrained" in text
    assert not dialog.open_button.isEnabled()
    dialog.shape_edit.setText("3,28,28")  # the grey images copied to three channels: the stem fits
    filled, total = map(int, MATCHED.search(check(dialog, qtbot)).groups())
    assert filled == total and dialog.problem == ""
    open_checked(dialog, qtbot)
    assert window.session.loaded.bundle.arch == ARCH and window.session.loaded.bundle.input_shape == (3, 28, 28)
    assert window.settings.recent("models")[0] == str(rgb_state)
    assert remembered_recipe(window.settings, str(rgb_state)).arch == ARCH
    assert window.asked == []  # weights only: nothing to trust


def test_reopening_from_the_recent_list_asks_nothing(window, qtbot, grey_state):
    dialog = open_dialog(window, qtbot, grey_state)
    pick_from_list(dialog, qtbot, "mobilenet v3 small", ARCH)
    dialog.norm_combo.setCurrentIndex(dialog.norm_combo.findData("mnist"))
    check(dialog, qtbot)
    open_checked(dialog, qtbot)
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):  # another model in between
        window.load(None, "fashion-mnist", bundle=window.session.loaded.bundle.copy())
    assert window.session.loaded.request.recipe is None
    menu = QMenu()
    window.menus._fill_recent(menu)
    action = next(a for a in menu.actions() if a.text() == str(grey_state))
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        action.trigger()
    assert window.session.loaded.request.recipe is not None and window.session.loaded.request.model_src == str(grey_state)
    assert window.session.loaded.bundle.arch == ARCH
    assert window.session.loaded.data.norm.mean == (0.1307,)  # the remembered preset, not the dataset's own
    assert window.open_model_dialog is dialog and not dialog.isVisible()  # no dialog the second time
    assert window.asked == []


def test_safetensors_file_opens_through_the_dialog(window, qtbot, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file(build_arch(ARCH, in_channels=1, num_classes=10).state_dict(), str(path))
    dialog = open_dialog(window, qtbot, path)
    assert ".safetensors" in dialog.found_label.text()
    pick_from_list(dialog, qtbot, "mobilenet_v3_s", ARCH)
    filled, total = map(int, MATCHED.search(check(dialog, qtbot)).groups())
    assert filled == total
    open_checked(dialog, qtbot)
    assert window.session.loaded.bundle.arch == ARCH


def test_python_file_lists_its_classes_after_trust(window, qtbot, tmp_path, code_file):
    torch.save(__import__("runpy").run_path(str(code_file))["TinyNet"](width=6).state_dict(),
               tmp_path / "tiny.pt")
    code_file.with_suffix(".imported").unlink()
    dialog = open_dialog(window, qtbot, tmp_path / "tiny.pt")
    assert dialog.picker.load_code(str(code_file))
    assert window.asked == ["python"] and code_file.with_suffix(".imported").exists()
    assert [dialog.picker.class_combo.itemText(i) for i in range(dialog.picker.class_combo.count())] == ["TinyNet"]
    dialog.picker.kwargs_edit.setText('{"width": 6}')
    text = check(dialog, qtbot)
    assert "9 of 9 tensors matched" in text
    open_checked(dialog, qtbot)
    assert window.session.loaded.bundle.arch == f"code:{code_file}:TinyNet"
    assert window.session.loaded.bundle.model.conv.out_channels == 6


def test_declining_trust_imports_nothing(window, qtbot, rgb_state, code_file):
    window.trust_answer = False
    dialog = open_dialog(window, qtbot, rgb_state)
    assert not dialog.picker.load_code(str(code_file))
    assert window.asked == ["python"] and not code_file.with_suffix(".imported").exists()
    assert dialog.picker.class_combo.count() == 0 and "Not imported" in dialog.picker.code_status.text()


def test_the_trust_question_defaults_to_no(window):
    for what in ("python", "pickle", "torchscript"):
        box = dialogs.trust_box(window, "/x/model.py", "", what)
        assert box.defaultButton() is box.button(QMessageBox.StandardButton.No)
        box.deleteLater()


def test_a_mismatching_file_gets_a_plain_error_and_the_window_stays_usable(window, qtbot, tmp_path, code_file):
    namespace = __import__("runpy").run_path(str(code_file))
    torch.save(namespace["TinyNet"]().state_dict(), tmp_path / "tiny.pt")
    dialog = open_dialog(window, qtbot, tmp_path / "tiny.pt")
    pick_from_list(dialog, qtbot, "mobilenet small", ARCH)
    text = check(dialog, qtbot)
    assert "do not fit the architecture" in text and "Accept a partial match" in text
    assert "--" not in text  # the dialog's words, not command-line flags
    assert not dialog.open_button.isEnabled() and window.session.loaded is None
    dialog.reject()
    assert not dialog.isVisible() and not window.busy
    assert window.menus.open_action.isEnabled() and window.menus.new_model_action.isEnabled()


def test_filtering_matches_the_engine_and_cancel_stops_a_check(window, qtbot):
    dialog = open_dialog(window, qtbot, untrained=True)
    picker = dialog.picker
    assert picker.names_model.rowCount() == len(list_architectures())
    for query in ("resnet 50", "VIT tiny", "efficientnet_b0", "zzz-no-such"):
        picker.filter_edit.setText(query)
        assert picker.visible_names() == list_architectures(query)
    picker.filter_edit.setText("torchvision:resnet18")
    assert picker.arch() == "torchvision:resnet18"  # the one name left is chosen
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dialog.check_button, Qt.MouseButton.LeftButton)
        qtbot.mouseClick(dialog.buttons.button(dialog.buttons.StandardButton.Cancel), Qt.MouseButton.LeftButton)
    assert not dialog.isVisible() and not window.busy and window.session.loaded is None


def test_new_untrained_architecture_takes_the_datasets_channels(window, qtbot):
    dialog = open_dialog(window, qtbot, untrained=True)
    dialog.picker.filter_edit.setText(ARCH)
    text = check(dialog, qtbot)
    assert "untrained" in text and "1×28×28" in text
    open_checked(dialog, qtbot)
    assert first_conv(window.session.loaded.bundle.model)[1].in_channels == 1 and window.session.loaded.bundle.arch == ARCH
    assert window.settings.recent("models")[0] == ARCH


def test_torchvision_by_name_from_the_gui_takes_the_datasets_channels(window, qtbot):
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        assert window.load(ARCH, "fashion-mnist")
    assert window.session.loaded is not None, window.error_box.text() if window.error_box else ""
    assert first_conv(window.session.loaded.bundle.model)[1].in_channels == 1 and window.session.loaded.bundle.num_classes == 10


def test_a_prunelab_file_built_from_code_asks_trust_before_its_check(window, qtbot, tmp_path, code_file):
    from engine.models import ModelBundle, save_model

    model = __import__("runpy").run_path(str(code_file))["TinyNet"]()
    path = save_model(ModelBundle(model, "x", f"code:{code_file}:TinyNet", (1, 28, 28), 10), tmp_path / "own.pt")
    code_file.with_suffix(".imported").unlink()
    window.trust_answer = False
    dialog = open_dialog(window, qtbot, path)
    assert "PruneLab model" in dialog.found_label.text() and not dialog.arch_box.isVisible()
    check(dialog, qtbot)
    qtbot.waitUntil(lambda: window.asked == ["code"], timeout=5_000)
    assert "did not trust" in dialog.result_label.text() and not code_file.with_suffix(".imported").exists()
    window.trust_answer = True
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):  # asked again, yes: checked
        qtbot.mouseClick(dialog.check_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.checked is not None and not window.busy, timeout=TIMEOUT_MS)
    assert "nothing to match" in dialog.result_label.text() and "10 outputs" in dialog.result_label.text()
    open_checked(dialog, qtbot)
    assert window.session.loaded.request.trust and window.session.loaded.bundle.arch == f"code:{code_file}:TinyNet"


def test_dropping_a_file_opens_the_dialog_with_it(window, qtbot, rgb_state):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(rgb_state))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        window.dropEvent(event)
    dialog = window.open_model_dialog
    assert dialog.isVisible() and dialog.path == str(rgb_state) and "state_dict" in dialog.found_label.text()
    assert window.session.loaded is None  # nothing opens before the user accepts


def test_shapes_and_messages_in_the_dialogs_words():
    assert parse_shape("3, 224,224") == (3, 224, 224) and parse_shape("1x28x28") == (1, 28, 28)
    assert parse_shape("  ") is None
    for bad in ("3,224", "0,28,28", "a,b,c", "3,2.5,4"):
        with pytest.raises(Exception, match="three positive whole numbers"):
            parse_shape(bad)
    assert "--" not in plain("the model does not accept inputs of shape (1, 2, 2): x; pass --input-shape C,H,W")
