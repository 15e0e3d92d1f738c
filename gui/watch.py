"""A watch on the running window for the real-window test (tests/test_real_window.py), on only when the
environment variable PRUNELAB_WATCH names a folder.

Two things a test driving the window from outside (xdotool under Xvfb) cannot see by itself:
- UI stalls: a timer on the GUI thread measures how late it fires; each stall, with what the window was doing,
  where the GUI thread was and how long the app's threads waited for a CPU meanwhile, goes to `stall.json`
  (written by a thread of the watch's own: the GUI thread does no file work for it);
- where things are: when the test creates `ask` in the folder, the watch answers with `widgets.json`: the
  screen, the tab bars and their tabs, the plots, tables and graph views, the buttons, the dialogs open, the
  widgets shown outside the screen, and a few facts of the window's state (loaded, busy, runs).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QRect, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QAbstractButton, QAbstractItemView, QAbstractScrollArea, QAbstractSpinBox, QApplication,
                               QComboBox, QDockWidget, QGraphicsView, QLineEdit, QMainWindow, QTabBar, QWidget)

if TYPE_CHECKING:
    from gui.job_runner import JobRunner
    from gui.layout import WindowLayout
    from gui.session import SessionModel

WATCH_ENV = "PRUNELAB_WATCH"
TICK_S = 0.02
NOTED_S = 0.1  # stalls longer than this are listed, with what the window was doing


def start_watch(window: QMainWindow, session: SessionModel, runner: JobRunner, ui: WindowLayout) -> Watch | None:
    """The watch, when PRUNELAB_WATCH is set (the real-window test); None otherwise."""
    folder = os.environ.get(WATCH_ENV)
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Watch(window, session, runner, ui, Path(folder))


def _rect(widget: QWidget, local: QRect | None = None) -> list[int]:
    """`local` (the whole widget by default) in screen coordinates: x, y, width, height."""
    local = local if local is not None else widget.rect()
    corner = widget.mapToGlobal(local.topLeft())
    return [corner.x(), corner.y(), local.width(), local.height()]


def _queued(tasks: Path) -> dict[str, float]:
    """Seconds each thread of this process has spent waiting for a CPU (Linux schedstat; empty elsewhere)."""
    found = {}
    for task in tasks.iterdir() if tasks.is_dir() else ():
        try:
            found[task.name] = int((task / "schedstat").read_text().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            pass
    return found


def _write(path: Path, obj: Any) -> None:
    """Whole or nothing: the test never reads half a file."""
    temporary = path.with_name(path.name + ".part")
    temporary.write_text(json.dumps(obj, indent=1))
    os.replace(temporary, path)


class Watch(QObject):
    """The stall timer and the answer to `ask` (see the module's docstring)."""

    asked = Signal()  # from the watch thread: the test asked where things are
    freeze = Signal(str, float)  # from the watch thread: the test asks for a freeze ("busy" or "sleep", seconds)

    def __init__(self, window: QMainWindow, session: SessionModel, runner: JobRunner, ui: WindowLayout,
                 folder: Path) -> None:
        super().__init__(window)
        self.window, self.folder = window, folder
        self.session, self.runner, self.ui = session, runner, ui
        self.worst, self.stalls = 0.0, []  # stalls: appended on the GUI thread, written by the watch thread
        self.started = self.last = time.perf_counter()
        self.gui_thread = threading.get_ident()
        self.seen: list[str] = []  # where the GUI thread was while late
        self.queued: list[tuple[float, dict[str, float]]] = []  # (when, every thread's time queued for a CPU)
        self.answer: dict | None = None
        self.excused = 0.0  # seconds of the GUI thread spent answering the test since the last tick
        self.asked.connect(self._describe_now, Qt.ConnectionType.QueuedConnection)
        self.freeze.connect(self._freeze_now, Qt.ConnectionType.QueuedConnection)
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._tick)
        self.timer.start(int(TICK_S * 1000))
        self.reference: list[tuple[float, float]] = []  # (when the reference thread woke, how late)
        threading.Thread(target=self._look, name="watch", daemon=True).start()
        threading.Thread(target=self._reference, name="watch-reference", daemon=True).start()

    def _reference(self) -> None:
        """A timer like the GUI thread's, on a thread that does nothing else: how late a Python thread of this
        process wakes on this machine now (waiting for a CPU, or for the GIL while another thread runs). The
        part of a GUI stall the reference shared is the machine's, not the window's."""
        while True:
            before = time.perf_counter()
            time.sleep(TICK_S)
            now = time.perf_counter()
            self.reference = [r for r in self.reference if r[0] > now - 30] + [(now, now - before - TICK_S)]

    def _tick(self) -> None:
        """On the GUI thread, and nothing but arithmetic: a file written here once blocked it 1.4 s."""
        now = time.perf_counter()
        late, self.last = now - self.last - TICK_S - self.excused, now
        self.excused = 0.0
        if late > NOTED_S:
            seen, self.seen = self.seen, []
            self.stalls.append({"ms": round(late * 1000), "from": now - late - TICK_S, "to": now, "at": time.time(),
                                "while": self._doing(), "in": list(dict.fromkeys(seen))[:4]})
        self.worst = max(self.worst, late)

    def _look(self) -> None:
        """The watch thread: every 40 ms, every thread's time queued for a CPU (Linux schedstat); where the GUI
        thread is while it is late; the stalls to stall.json; the test's questions."""
        tasks, written = Path("/proc/self/task"), -1
        while True:
            time.sleep(TICK_S * 2)
            now = time.perf_counter()
            self.queued = [q for q in self.queued if q[0] > now - 30] + [(now, _queued(tasks))]
            if now - self.last > NOTED_S:
                frame = sys._current_frames().get(self.gui_thread)
                if frame is not None:
                    where = traceback.extract_stack(frame)[-4:]
                    self.seen.append(" < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                                                for f in reversed(where)))
            for stall in self.stalls:
                if "queued_ms" not in stall and stall["to"] < now - TICK_S * 2:
                    stall["queued_ms"] = round(1000 * self._queued_during(stall["from"], stall["to"]))
                    stall["reference_ms"] = round(1000 * self._reference_during(stall["from"], stall["to"]))
            done = [s for s in self.stalls if "queued_ms" in s]
            if len(done) != written or not (self.folder / "stall.json").exists():
                _write(self.folder / "stall.json", {"worst_ms": round(self.worst * 1000), "stalls": done[-200:]})
                written = len(done)
            if self.answer is not None:
                _write(self.folder / "widgets.json", self.answer)
                self.answer = None
            elif (self.folder / "ask").exists():
                (self.folder / "ask").unlink()
                self.asked.emit()
            if (self.folder / "freeze").exists():  # "busy 1.0" or "sleep 1.0": shows the stall check catches it
                how, seconds = (self.folder / "freeze").read_text().split()
                (self.folder / "freeze").unlink()
                self.freeze.emit(how, float(seconds))

    def _reference_during(self, start: float, end: float) -> float:
        """How late the reference thread was, in all, while the GUI thread was late (`start` to `end`)."""
        late = sum(max(0.0, min(when, end) - max(when - lateness, start))
                   for when, lateness in self.reference if when > start and when - lateness < end)
        return min(late, end - start)

    def _queued_during(self, start: float, end: float) -> float:
        """The longest any thread of the app waited for a CPU between `start` and `end`: the GUI thread itself,
        or the thread holding the GIL it waits for. That much of a stall is the machine's load."""
        before = [q for when, q in self.queued if when <= start]
        after = [q for when, q in self.queued if when >= end]
        if not before or not after:
            return 0.0
        return max((after[0][tid] - before[-1].get(tid, after[0][tid]) for tid in after[0]), default=0.0)

    @Slot(str, float)
    def _freeze_now(self, how: str, seconds: float) -> None:
        """A freeze of the GUI thread on purpose: `seconds` of Python computing on it (CPU time: on a loaded
        machine it lasts longer), or sleeping."""
        if how == "sleep":
            time.sleep(seconds)
            return
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            sum(range(1000))

    @Slot()
    def _describe_now(self) -> None:
        start = time.perf_counter()
        self.answer = self.describe()
        self.excused += time.perf_counter() - start  # describing the window is the test's time, not a stall

    def _doing(self) -> str:
        tab = self.ui.tabs.tabText(self.ui.tabs.currentIndex())
        job = self.runner.job.name if self.runner.job is not None else "idle"
        return f"{time.perf_counter() - self.started:.1f} s after start, tab {tab}, job {job}"

    def describe(self) -> dict:
        """Where things are on the screen, and what the window is doing."""
        win = self.window
        screen = QGuiApplication.primaryScreen().geometry()
        shown = [w for w in win.findChildren(QWidget) if w.isVisible() and not w.visibleRegion().isEmpty()]
        tab_bars = [{"tabs": [{"text": bar.tabText(i), "rect": _rect(bar, bar.tabRect(i)),
                               "current": i == bar.currentIndex()} for i in range(bar.count())
                              if bar.isTabVisible(i)]}
                    for bar in shown if isinstance(bar, QTabBar)]
        areas = []
        for w in win.findChildren(QAbstractScrollArea):  # plots, tables, the graph's page: their visible part
            kind = ("web" if type(w).__name__ == "QWebEngineView" else "plot" if isinstance(w, QGraphicsView)
                    else "table" if isinstance(w, QAbstractItemView) else None)
            port = w.viewport()
            part = port.visibleRegion().boundingRect() if kind and w.isVisible() else QRect()
            if part.width() > 20 and part.height() > 20:
                areas.append({"kind": kind, "class": type(w).__name__, "name": w.objectName(),
                              "rect": _rect(port, part)})
        areas += [{"kind": "web", "class": type(w).__name__, "name": w.objectName(), "rect": _rect(w)}
                  for w in shown if type(w).__name__ == "QWebEngineView"]
        buttons = [{"text": b.text().replace("&", ""), "rect": _rect(b), "enabled": b.isEnabled(),
                    "checked": b.isChecked()} for b in shown if isinstance(b, QAbstractButton) and b.text()]
        fields = {w.objectName(): {"rect": _rect(w), "text": w.text()} for w in shown
                  if isinstance(w, (QLineEdit, QAbstractSpinBox)) and w.objectName()}
        # every text field and list shown, named or not (the dialogs' have no names): by placeholder and tooltip
        inputs = [{"class": type(w).__name__, "placeholder": getattr(w, "placeholderText", str)(),
                   "tooltip": w.toolTip(), "text": w.currentText() if isinstance(w, QComboBox) else w.text(),
                   "window": w.window().windowTitle(), "rect": _rect(w)}
                  for w in shown if isinstance(w, (QLineEdit, QComboBox))]
        docks = [{"title": d.windowTitle(), "rect": _rect(d)} for d in shown if isinstance(d, QDockWidget)]
        outside = []
        for w in shown:
            part = w.visibleRegion().boundingRect()
            corner = w.mapToGlobal(part.topLeft())
            where = QRect(corner, part.size())
            if not screen.contains(where):
                outside.append({"class": type(w).__name__, "name": w.objectName(), "rect": _rect(w, part)})
        dialogs = [{"class": type(t).__name__, "title": t.windowTitle(), "rect": _rect(t),
                    "text": getattr(t, "text", lambda: "")() if callable(getattr(t, "text", None)) else ""}
                   for t in QApplication.topLevelWidgets()
                   if t.isVisible() and t is not win
                   and t.windowType() not in (Qt.WindowType.ToolTip, Qt.WindowType.Popup)]
        session, runner, ui = self.session, self.runner, self.ui
        finished = sum(1 for run in session.runs.values() if run.status == "done")
        frame = win.frameGeometry()
        return {"screen": [screen.width(), screen.height()],
                "window": [frame.x(), frame.y(), frame.width(), frame.height()],
                "window_inner": _rect(win), "tab_bars": tab_bars, "areas": areas, "buttons": buttons, "fields": fields,
                "inputs": inputs,
                "docks": docks, "outside": outside[:20], "dialogs": dialogs,
                "minimum": [win.minimumSizeHint().width(), win.minimumSizeHint().height()],
                "plan_runs": len(ui.experiment.keys()),
                "state": {"loaded": session.loaded is not None, "model": session.current_model_src(),
                          "busy": runner.busy,
                          "worker": runner.worker is not None,
                          "runs": len(session.runs), "finished_runs": finished, "phase": ui.phase_label.text(),
                          "tab": ui.tabs.tabText(ui.tabs.currentIndex()), "options": ui.method_panel.options(),
                          "log": str(session.log_path or "")}}
