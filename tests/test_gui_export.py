"""The GUI's Export pruned model: a new folder chosen by name, the dialog opening beside the model file."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
os.environ["PRUNELAB_NO_WEBENGINE"] = "1"

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QFileDialog, QMessageBox  # noqa: E402

from engine.data import Normalization  # noqa: E402
from engine.models import DemoResNet, ModelBundle  # noqa: E402
from gui import menus  # noqa: E402


def _record(source: Path) -> SimpleNamespace:
    """A finished run's record as the window keeps it: run id, its method, the pruned model."""
    source.write_bytes(b"the model file the run pruned")
    bundle = ModelBundle(DemoResNet(1, 10, widths=(8, 16, 32)).eval(), str(source), "demo:resnet", (1, 28, 28), 10,
                         Normalization((0.5,), (0.25,)), tuple("abcdefghij"), {"widths": [8, 16, 32]})
    return SimpleNamespace(run_id=3, config=SimpleNamespace(method="l1"), pruned=bundle)


def _answer(window, name: str | None, seen: dict) -> None:
    """When the export dialog opens: note where it opened, type `name` and accept (None: cancel)."""
    def close_refusal(dialog: QFileDialog) -> None:
        """A folder dialog refuses a new name in a message box ("Directory not found"): note it and close it."""
        for box in dialog.findChildren(QMessageBox):
            if box.isVisible():
                seen["stuck"] = box.text()
                box.reject()

    def act() -> None:
        shown = [d for d in window.findChildren(QFileDialog) if d.isVisible()]
        if not shown:
            QTimer.singleShot(20, act)
            return
        dialog = shown[0]
        seen["directory"] = Path(dialog.directory().absolutePath())
        seen["proposed"] = dialog.selectedFiles()
        if name is None:
            dialog.reject()
            return
        dialog.selectFile(name)
        # the dialog is the timer's context: once it is deleted the timer is dropped, never fired into a later test
        QTimer.singleShot(3000, dialog, lambda: close_refusal(dialog))
        dialog.accept()
        if dialog.isVisible():  # it opened the folder instead of answering: close it, so the test fails, not hangs
            seen["stuck"] = True
            dialog.reject()

    QTimer.singleShot(0, act)


def test_export_writes_a_new_folder_named_in_the_dialog_beside_the_model(window, qtbot, tmp_path):
    models = tmp_path / "my models"
    models.mkdir()
    record = _record(models / "net.pt")
    window.session.selected_record = lambda: record
    seen: dict = {}
    _answer(window, "deploy me", seen)
    window.menus.export_model()
    assert "stuck" not in seen, seen.get("stuck")
    assert window.busy  # the export job started (the window sees its end only after this test yields)
    qtbot.waitUntil(lambda: not window.busy, timeout=120_000)
    assert seen["directory"] == models  # opens where the model file is
    assert seen["proposed"] == [str(models / "run3_l1")]
    target = models / "deploy me"  # did not exist: the dialog created nothing, the export wrote it whole
    assert window.error_box is None or not window.error_box.isVisible(), window.error_box.text()
    assert {"model.pt2", "model.onnx", "weights.safetensors", "model.json", "README.md"} <= {
        p.name for p in target.iterdir()}
    assert json.loads((target / "model.json").read_text())["preprocessing"]["mean"] == [0.5]
    assert "model.pt2, model.onnx" in window.statusBar().currentMessage() and str(target) in \
        window.statusBar().currentMessage()

    # the next export opens there too; a folder of the user's is refused in a dialog, nothing written
    (models / "theirs").mkdir()
    (models / "theirs" / "keep.txt").write_text("mine")
    _answer(window, "theirs", seen)
    window.menus.export_model()
    assert "stuck" not in seen, "typing an existing folder's name opened it instead of choosing it"
    qtbot.waitUntil(lambda: window.error_box is not None and window.error_box.isVisible(), timeout=10_000)
    assert "PruneLab did not write" in window.error_box.text()
    assert sorted(p.name for p in (models / "theirs").iterdir()) == ["keep.txt"] and not window.busy


def test_without_a_model_file_the_dialog_opens_in_the_last_export_folder(window, qtbot, tmp_path):
    record = _record(tmp_path / "net.pt")
    record.pruned.source = "demo:resnet"
    last = tmp_path / "exports"
    last.mkdir()
    menus.remember_folder(window.settings, menus.EXPORT_PICKER, last)
    window.session.selected_record = lambda: record
    seen: dict = {}
    _answer(window, None, seen)
    window.menus.export_model()
    assert seen["directory"] == last and not window.busy and not any(last.iterdir())
