"""Application start-up: environment, logging to a file, high-DPI and palette, then the main window.

`main()` is what `python main.py` calls.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import select
import signal
import sys
import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QIcon
from PySide6.QtWidgets import QApplication

from engine.paths import log_dir
from gui.dialogs import versions
from gui.graph_view import prepare_webengine

log = logging.getLogger("gui")


def setup_logging() -> Path:
    """Log to a rotating file in the user's data folder (and warnings to stderr); returns the file."""
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prunelab.log"
    root = logging.getLogger()
    if not any(getattr(h, "prunelab", False) for h in root.handlers):
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"))
        handler.prunelab = True
        root.addHandler(handler)
        console = logging.StreamHandler()
        console.setLevel(logging.WARNING)
        console.prunelab = True
        root.addHandler(console)
        root.setLevel(logging.INFO)
    return path


def command_line() -> str:
    """How this install runs the command line (the bundle is one executable)."""
    return "PruneLab" if getattr(sys, "frozen", False) else "python main.py"


def platform_problem(timeout_s: float = 30.0) -> str | None:
    """Why Qt's window platform (QT_QPA_PLATFORM, or the system's) cannot start here, in one line; None when it can.

    Qt aborts the whole process with five lines of plugin errors when it cannot, so a forked child tries first
    and the parent reads what Qt said. Only on Linux (X11/Wayland); elsewhere the platform is always there."""
    from PySide6.QtGui import QGuiApplication

    if not sys.platform.startswith("linux") or QGuiApplication.instance() is not None:
        return None  # (an application that exists has started its platform already)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: open the platform, say nothing on success, never return into the caller
        code = 3
        try:
            os.dup2(write_end, 2)
            QGuiApplication(["prunelab-probe"])
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    said, deadline, status = b"", time.monotonic() + timeout_s, None
    try:
        while status is None and time.monotonic() < deadline:
            if select.select([read_end], [], [], 0.05)[0]:
                said += os.read(read_end, 65536)
            done, code = os.waitpid(pid, os.WNOHANG)
            status = code if done else None
        if status is None:  # a display that never answers
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return _platform_line(f"the display {os.environ.get('DISPLAY', '')} did not answer in {timeout_s:.0f} s")
    finally:
        os.close(read_end)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return _platform_line(_what_is_missing(said.decode("utf-8", "replace")))


def _what_is_missing(qt_said: str) -> str:
    """Qt's plugin errors in a few words: the display, or the system library the plugin needs."""
    parts = []
    if "could not connect to display" in qt_said or "Failed to create wl_display" in qt_said:
        display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        parts.append(f"it cannot connect to the display {display}" if display else
                     "there is no display (DISPLAY and WAYLAND_DISPLAY are not set: no desktop session)")
    for line in qt_said.splitlines():
        if "is needed to load the Qt xcb platform plugin" in line:
            library = line.split("From 6.5.0, ")[-1].split(" is needed")[0]
            parts.append(f"Qt's xcb plugin needs the system library {library} (install it: `make qtdeps`)")
    if not parts:
        first = next((line for line in qt_said.splitlines() if line.strip()), "Qt gave no reason")
        parts.append(f"Qt says: {first.strip()}")
    return "; ".join(parts)


def _platform_line(what: str) -> str:
    return (f"PruneLab cannot open its window: {what}. Without a window, use the command line: "
            f"`{command_line()} --help` (prune, evaluate, explain, sweep, report).")


def create_application(argv: list[str] | None = None) -> QApplication:
    """The QApplication with our attributes (QtWebEngine prepared first, as it requires)."""
    app = QApplication.instance()
    if app is not None:
        return app
    prepare_webengine()
    # fractional scale factors (125 %, 150 %) as the system sets them, instead of rounding to 100/200 %
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
    QApplication.setOrganizationName("PruneLab")
    QApplication.setApplicationName("PruneLab")
    QApplication.setApplicationDisplayName("PruneLab")
    QGuiApplication.setDesktopFileName("prunelab")  # Wayland finds the icon through prunelab.desktop
    app = QApplication(argv if argv is not None else sys.argv)
    # Fusion follows the system's light/dark palette on every platform and renders crisply at any DPI.
    app.setStyle("Fusion")
    app.setWindowIcon(app_icon())
    return app


def app_icon() -> QIcon:
    """The application icon from its PNG renderings (no SVG plugin needed, crisp at every size)."""
    from resources import resource_path

    icon = QIcon()
    for png in sorted(resource_path("icons").glob("prunelab-*.png")):
        icon.addFile(str(png))
    return icon


def main() -> int:
    """Open the main window and run the event loop; returns the exit code (2: no window can open here)."""
    problem = platform_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    app = create_application()
    log_path = setup_logging()
    import torch

    log.info("PruneLab starting: %s", versions())
    # Imported here, on the main thread: torchvision pulls in triton, and importing that first inside the
    # worker thread while QtWebEngine ran crashed the process (seen in a screenshot script).
    import onnx  # noqa: F401  (its C extension loads holding the GIL: 1.7 s of frozen window in the worker)
    import torch_pruning  # noqa: F401
    import torchvision  # noqa: F401
    # leave a core for the UI thread on small machines, so plots stay smooth while the worker computes
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    from engine.budget import freeze_long_lived
    from gui.main_window import MainWindow

    freeze_long_lived()  # the libraries just imported: no collection scans them again
    window = MainWindow(log_path=log_path)
    window.show()

    def excepthook(kind, value, tb) -> None:
        # an exception in a slot must not kill the app: log it and show it
        import traceback

        details = "".join(traceback.format_exception(kind, value, tb))
        log.error("unhandled exception:\n%s", details)
        window.show_error("Unexpected error", f"{kind.__name__}: {value}", details)

    sys.excepthook = excepthook
    return app.exec()
