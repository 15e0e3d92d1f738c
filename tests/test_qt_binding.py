"""The Qt binding must not leak references to None/True: on Python 3.11, PySide6 6.12.0 did, and a
GUI session aborted ("deallocating True or False") after about ten pruning runs."""
from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import sys
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QApplication

app = QApplication([])
action = QAction("x")

class Emitter(QObject):
    changed = Signal(object)

emitter = Emitter()
none, true = sys.getrefcount(None), sys.getrefcount(True)
for _ in range(20000):
    action.setEnabled(True)
    emitter.changed.emit(1)
print(none - sys.getrefcount(None), true - sys.getrefcount(True))
"""


def test_signals_and_setters_keep_none_and_true_alive():
    # a child process: the bug aborts the interpreter, which would take the test run with it
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert proc.returncode == 0, proc.stderr[-500:]
    lost_none, lost_true = (int(v) for v in proc.stdout.split())
    assert abs(lost_none) < 100 and abs(lost_true) < 100, (lost_none, lost_true)
