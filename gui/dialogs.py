"""The window's small dialogs: errors, the trust question, the memory limit, About; and plot snapshots."""
from __future__ import annotations

import logging
from html import escape
from pathlib import Path

from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QInputDialog, QMessageBox, QWidget

from engine.budget import DEFAULT_SHARE, parse_limit
from engine.errors import UserError
from gui.settings import Settings

log = logging.getLogger(__name__)


def error_box(parent: QWidget, title: str, message: str, details: str, info: str) -> QMessageBox:
    """An error that does not block (window-modal, opened rather than executed); the app stays usable."""
    box = QMessageBox(QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok, parent)
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    box.setInformativeText(info)
    if details:
        box.setDetailedText(details)
    box.setWindowModality(Qt.WindowModality.WindowModal)
    box.open()
    return box


def ask_trust(parent: QWidget, path: str, message: str, what: str = "pickle") -> bool:
    """Ask whether to load a file that holds code; explains the risk. True only on an explicit yes."""
    return trust_box(parent, path, message, what).exec() == QMessageBox.StandardButton.Yes


def trust_box(parent: QWidget, path: str, message: str, what: str = "pickle") -> QMessageBox:
    """The trust question, not yet shown: No is the default button, so Enter never runs a file's code."""
    holds = {"torchscript": "a TorchScript program (code that runs while it loads), not just weights",
             "code": "weights whose architecture is defined by a Python file, which would be imported (run)",
             "python": "Python code: listing its model classes imports (runs) it"
             }.get(what, "a whole pickled Python object, not just weights")
    box = QMessageBox(QMessageBox.Icon.Warning, "Trust this model file?",
                      f"<b>{escape(Path(path).name)}</b> contains {holds}.",
                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, parent)
    if what == "python":
        box.setInformativeText("Importing it runs the file with your permissions: a malicious file can read or "
                               "delete your data. Import it only if you wrote it or trust its source.\n\n"
                               "Import and run this file?")
    else:
        box.setInformativeText("Loading it runs code stored in the file, with your permissions: a malicious file "
                               "can read or delete your data. Load it only if you created it or trust its source. "
                               "Safer: save the model's state_dict instead.\n\nLoad and run this file?")
    if message:
        box.setDetailedText(message.split(" Pass --trust")[0].split("; pass --model-code")[0])  # no CLI advice
    box.setDefaultButton(QMessageBox.StandardButton.No)
    box.button(QMessageBox.StandardButton.Yes).setText("Trust and load" if what != "python" else "Trust and import")
    return box


def limit_text(settings: Settings) -> str:
    """The memory budget as the user wrote it (default: a share of the machine)."""
    return settings.value("memory/limit", f"{DEFAULT_SHARE:.0%}", str)


def memory_limit(settings: Settings) -> int:
    """The memory budget of every job, in bytes (Settings ▸ Memory limit)."""
    text = limit_text(settings)
    try:
        return parse_limit(text)
    except UserError:
        log.warning("ignoring the stored memory limit %r", text)
        return parse_limit(None)


def ask_memory_limit(parent: QWidget, settings: Settings) -> int | None:
    """Ask for a new memory budget and store it; None when cancelled, UserError (nothing stored) for a non-size."""
    text, ok = QInputDialog.getText(
        parent, "Memory limit", "A job (pruning, evaluation, sensitivity, each run of a plan) stops when PruneLab "
        "uses this much memory, so the machine never runs out.\nA share of this machine such as 70% or a size "
        "such as 8G or 1500M:", text=limit_text(settings))
    if not ok:
        return None
    limit = parse_limit(text.strip())
    settings.set_value("memory/limit", text.strip())
    return limit


def versions() -> dict[str, str]:
    """Versions shown in the About dialog: the engine's, plus Qt, the plots and the graph viewer."""
    import PySide6
    import pyqtgraph
    from PySide6.QtCore import qVersion

    import engine

    try:
        import netron
        netron_version = netron.__version__
    except (ImportError, AttributeError):
        netron_version = "not installed"
    return dict(engine.versions(), qt=qVersion(), pyside6=PySide6.__version__, pyqtgraph=pyqtgraph.__version__,
                netron=netron_version)


def show_about(parent: QWidget, log_path: Path | None) -> None:
    """Versions of PruneLab and what it runs on, and where the log is."""
    v = versions()
    QMessageBox.about(parent, "About PruneLab",
                      f"<h3>PruneLab {v['prunelab']}</h3><p>Point-and-click neural network pruning for teaching "
                      f"and experiments.</p><table><tr><td>PyTorch</td><td>{v['torch']}</td></tr>"
                      f"<tr><td>Torch-Pruning</td><td>{v['torch_pruning']}</td></tr>"
                      f"<tr><td>Qt / PySide6</td><td>{v['qt']} / {v['pyside6']}</td></tr>"
                      f"<tr><td>pyqtgraph</td><td>{v['pyqtgraph']}</td></tr>"
                      f"<tr><td>Netron</td><td>{v['netron']}</td></tr>"
                      f"<tr><td>Python</td><td>{v['python']}</td></tr></table>"
                      + (f"<p>Log file: {log_path}</p>" if log_path else ""))


def save_snapshot(view: QWidget, path: Path) -> Path:
    """Write what `view` shows as SVG (by suffix) or PNG at twice the screen resolution."""
    if path.suffix.lower() == ".svg":
        # Qt's own SVG generator: pyqtgraph 0.14's SVGExporter cannot parse the paths Qt 6.12 writes
        from PySide6.QtSvg import QSvgGenerator

        generator = QSvgGenerator()
        generator.setFileName(str(path))
        generator.setSize(view.size())
        generator.setViewBox(QRect(0, 0, view.width(), view.height()))
        generator.setTitle("PruneLab plots")
        painter = QPainter(generator)
        view.render(painter)
        painter.end()
    else:
        scale = 2  # twice the screen resolution: sharp on slides and in reports
        image = QImage(view.size() * scale, QImage.Format.Format_ARGB32)
        image.setDevicePixelRatio(scale)
        image.fill(view.palette().base().color())
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        view.render(painter)
        painter.end()
        if not image.save(str(path)):
            raise OSError(f"could not write {path}")
    return path
