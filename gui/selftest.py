"""The self-test's checks that need the GUI stack (cli/selftest.py runs them; main.py hands them over).

Without a display they still prove that Qt, QtWebEngine and their system libraries load and that
Netron serves a graph; `--gui` also opens the main window (offscreen unless a platform is set), waits
for the demo to load and for Netron's page to draw the graph inside it.
"""
from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path
from typing import Callable

WINDOW_TIMEOUT_S = 180.0  # the demo loads in seconds; a slow shared machine gets room


def checks(window: bool, files: dict) -> list[tuple[str, Callable[[], str]]]:
    """The GUI checks in order; `files` is filled by the prune check (its ONNX file) before they run."""
    found = [("qt", qt_libraries), ("netron", lambda: netron_page(files.get("onnx")))]
    if window:
        found.append(("window", main_window))
    return found


def qt_libraries() -> str:
    """Import Qt's widgets and QtWebEngine, and start the window platform the user's `python main.py` would use:
    a missing system library (libxcb-*, libnss3, libEGL) or a missing display fails here, in the app's words."""
    import PySide6
    from PySide6 import QtWidgets  # noqa: F401
    from PySide6.QtCore import qVersion

    from gui.app import platform_problem

    try:
        from PySide6 import QtWebEngineWidgets  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"QtWebEngine does not load ({exc}); the graph view would be off") from exc
    problem = platform_problem()
    if problem:
        raise RuntimeError(problem)
    platform = os.environ.get("QT_QPA_PLATFORM") or "the system's default"
    return f"Qt {qVersion()}, PySide6 {PySide6.__version__}, QtWebEngine loads, platform {platform} starts"


def netron_page(onnx_path: str | None) -> str:
    """Serve the pruned model's ONNX file with Netron on localhost and fetch its page over HTTP."""
    import netron

    if not onnx_path:
        raise AssertionError("no ONNX file from the prune check")
    address = netron.start(str(onnx_path), address=("localhost", 0), browse=False)
    try:
        url = f"http://{address[0]}:{address[1]}/"
        with urllib.request.urlopen(url, timeout=10) as reply:
            page = reply.read().decode("utf-8", "replace")
        if "netron" not in page.lower():
            raise AssertionError(f"{url} answered, but not with Netron's page")
        return f"Netron {netron.__version__} serves the graph at {url} ({len(page):,} bytes)"
    finally:
        netron.stop(address)


def main_window() -> str:
    """Open the main window, wait for the demo and for Netron's graph inside it, then close it."""
    import tempfile

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory(prefix="prunelab-selftest-settings-") as folder:
        os.environ.setdefault("PRUNELAB_SETTINGS_DIR", folder)  # the user's window layout stays untouched
        return _open_window(Path(folder))


def _open_window(folder: Path) -> str:
    from PySide6.QtWidgets import QApplication

    from gui.app import create_application, setup_logging
    from gui.main_window import MainWindow

    app = create_application([])
    start = time.perf_counter()
    window = MainWindow(log_path=setup_logging())
    page_ok: list[bool] = []
    view = window.ui.graph_view.web_view
    if view is not None:
        view.loadFinished.connect(page_ok.append)
    window.show()
    try:
        _wait(app, lambda: window.session.loaded is not None, "the demo model to load in the window")
        ready = time.perf_counter() - start
        if view is None:
            return f"{app.platformName()}: window ready in {ready:.1f} s; graph view off " \
                   f"({window.ui.graph_view.disabled_reason})"
        _wait(app, lambda: bool(page_ok), "Netron's page to load in the window")
        if not page_ok[-1]:
            raise AssertionError("Netron's page failed to load in the window")
        deadline = time.perf_counter() + 20  # Netron draws asynchronously after its page has loaded
        drawn = _count_nodes(app, view)
        while not drawn and time.perf_counter() < deadline:
            _wait(app, lambda: False, "", 0.25, fail=False)
            drawn = _count_nodes(app, view)
        if not drawn:
            raise AssertionError("Netron's page loaded but drew no graph")
        return f"{app.platformName()}: window ready in {ready:.1f} s, Netron drew {drawn} nodes"
    finally:
        window.close()
        app.processEvents()


def _count_nodes(app, view) -> int:
    """How many graph nodes Netron has drawn in the window's page."""
    answers: list[int] = []
    script = "document.querySelectorAll('[id^=node-name-]').length"
    view.page().runJavaScript(script, 0, lambda n: answers.append(int(n or 0)))
    _wait(app, lambda: bool(answers), "Netron's page to answer", 10)
    return answers[0]


def _wait(app, done: Callable[[], bool], what: str, timeout: float = WINDOW_TIMEOUT_S, fail: bool = True) -> None:
    """Run the event loop until `done()` or the timeout (then fail naming what never happened)."""
    deadline = time.perf_counter() + timeout
    while not done():
        if time.perf_counter() > deadline:
            if not fail:
                return
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        app.processEvents()
        time.sleep(0.02)
