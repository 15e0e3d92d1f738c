"""A main window for GUI tests that need one (imported lazily, so engine tests in the same file stay Qt-free)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from engine.models import DemoResNet, ModelBundle

TIMEOUT_MS = 90_000


def qt_environment() -> None:
    """No display, no Chromium: set before the first Qt import."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    os.environ["PRUNELAB_NO_WEBENGINE"] = "1"


def tiny_bundle() -> ModelBundle:
    torch.manual_seed(0)
    model = DemoResNet(1, 10, widths=(8, 16, 32)).eval()
    return ModelBundle(model, "test:tiny-resnet", "demo:resnet", (1, 28, 28), 10, arch_kwargs={"widths": [8, 16, 32]})


def open_window(qtbot, tmp_path: Path, monkeypatch):
    """A shown main window with temporary settings and no demo load."""
    qt_environment()
    from PySide6.QtCore import QSettings

    from gui.main_window import MainWindow
    from gui.settings import Settings

    monkeypatch.setenv("PRUNELAB_SETTINGS_DIR", str(tmp_path / "settings"))
    settings = Settings(QSettings(str(tmp_path / "prunelab.ini"), QSettings.Format.IniFormat))
    win = MainWindow(settings=settings, autoload=False, log_path=tmp_path / "prunelab.log")
    qtbot.addWidget(win)
    win.show()
    return win


def close_window(qtbot, win) -> None:
    """Cancel a job still running, then close. A cancelled job ends at its next event: a slow one on a loaded
    machine takes a while; one still running after TIMEOUT_MS is a warning, so the test's own result stands."""
    import warnings

    from pytestqt.exceptions import TimeoutError as QtTimeout

    if win.busy:
        try:
            with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
                win.cancel_job()
        except QtTimeout:
            warnings.warn(f"job {win.jobs.job.name if win.jobs.job else '?'} still running at teardown", stacklevel=1)
    win.close()


def load_tiny(qtbot, win, fashion) -> None:
    """The tiny model and Fashion-MNIST, loaded through the real worker."""
    win.session.raw_data_cache["fashion-mnist"] = fashion
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        assert win.load(None, "fashion-mnist", bundle=tiny_bundle())
    assert win.session.loaded is not None


def quick_options(win, steps: int = 1, bn: bool = True, finetune: float = 0.0) -> None:
    """A fast run: 500 test images, no latency timing."""
    panel = win.ui.method_panel
    panel.steps_spin.setValue(steps)
    panel.eval_combo.setCurrentIndex(panel.eval_combo.findData(500))
    panel.speed_check.setChecked(False)
    panel.bn_check.setChecked(bn)
    panel.finetune_spin.setValue(finetune)


def quick_tiny_window(qtbot, tmp_path: Path, monkeypatch, fashion):
    """A window with the tiny model loaded and quick one-step options (a fixture body: yields, then closes)."""
    win = open_window(qtbot, tmp_path, monkeypatch)
    load_tiny(qtbot, win, fashion)
    quick_options(win, steps=1, bn=False)
    yield win
    close_window(qtbot, win)
