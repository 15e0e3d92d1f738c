"""A closed and deleted window is freed with everything it holds: its session model's signal connections
once kept every window of a process alive (a GUI test left 16 MB behind, the test workers grew to 2.2 GiB)."""
from __future__ import annotations

import gc
import weakref

from tests.gui_helpers import qt_environment

qt_environment()  # before the first Qt import

import pytest  # noqa: E402

pytest.importorskip("pytestqt")


def test_a_deleted_window_is_freed(qtbot, tmp_path, monkeypatch):
    from PySide6.QtCore import QCoreApplication, QEvent, QSettings

    from gui.main_window import MainWindow
    from gui.settings import Settings

    monkeypatch.setenv("PRUNELAB_SETTINGS_DIR", str(tmp_path / "settings"))
    win = MainWindow(settings=Settings(QSettings(str(tmp_path / "p.ini"), QSettings.Format.IniFormat)),
                     autoload=False, log_path=tmp_path / "prunelab.log")
    win.show()
    qtbot.waitExposed(win)
    alive, session = weakref.ref(win), weakref.ref(win.session)
    win.close()
    win.deleteLater()
    del win
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()
    assert session() is None, "the session model outlived its window"
    assert alive() is None, f"the window is still referenced by {[type(r).__name__ for r in gc.get_referrers(alive())]}"


def test_a_load_frees_the_last_model_and_freezes_nothing(window, qtbot, fashion):
    """A load collects the previous model's reference cycles, and leaves the collector's frozen set as start-up
    left it: freezing at each load made every load unfreeze and scan all 430 000 library objects."""
    from gui_helpers import load_tiny

    frozen = gc.get_freeze_count()
    load_tiny(qtbot, window, fashion)
    first = window.session.loaded.bundle.model
    first.cycle = [first]  # a reference cycle, as torch-pruning's graphs make: only the collector frees it
    gone = weakref.ref(first)
    del first
    load_tiny(qtbot, window, fashion)
    assert gone() is None, "the previous model outlived the next load"
    assert gc.get_freeze_count() <= frozen, "a load froze what it found (frozen objects only ever die)"
