"""Screenshots for docs/teaching.md: every Teach view on the demo and on an untrained torchvision ResNet-18
adapted to Fashion-MNIST, the coupled layers marked in the Network tab, and the Lesson panel.

Run from the repository root, on a screen or under Xvfb (the graph needs QtWebEngine):
    xvfb-run -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_teach_screenshots.py
Offscreen (QT_QPA_PLATFORM=offscreen PRUNELAB_NO_WEBENGINE=1) works too, without the graph.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QSettings  # noqa: E402

from gui.app import create_application  # noqa: E402

APP = create_application()
import torchvision.models  # noqa: E402,F401  (imported here, not first in the worker thread beside QtWebEngine)

from gui.lesson import show_lessons  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402
from gui.settings import Settings  # noqa: E402

OUT = ROOT / "docs"


def wait(win: MainWindow, seconds: float = 600) -> None:
    """Process events until the window's job ends."""
    end = time.monotonic() + seconds
    APP.processEvents()
    while win.busy and time.monotonic() < end:
        APP.processEvents()
        time.sleep(0.02)
    pause(0.3)


def pause(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        APP.processEvents()
        time.sleep(0.02)


def save(widget, name: str) -> None:
    pause(0.4)
    path = OUT / f"teach_{name}.png"
    assert widget.grab().save(str(path)), path
    print("wrote", path)


def teach_views(win: MainWindow, prefix: str, layer: str, image: int) -> None:
    """Explain `layer` and save the four views, then the Network tab with the coupled layers marked."""
    tab = win.ui.teach
    win.ui.tabs.setCurrentWidget(tab)
    tab.select_layer(layer)
    start = time.monotonic()
    assert tab.explain(), tab.status_label.text()
    wait(win)
    print(f"{prefix}: explained {layer} in {time.monotonic() - start:.1f} s (every criterion)")
    for view, name in ((tab.why_view, "why"), (tab.criteria_view, "criteria"), (tab.group_view, "group")):
        tab.views.setCurrentWidget(view)
        save(tab, f"{prefix}_{name}")
    tab.views.setCurrentWidget(tab.maps_view)
    tab.maps_view.index_spin.setValue(image)
    assert tab.show_image()
    wait(win)
    save(tab, f"{prefix}_maps")
    win.ui.tabs.setCurrentWidget(win.ui.graph_view)
    win.ui.graph_view.layer_table.select_layer(layer)
    pause(4)  # Netron draws, then the marks are applied
    save(win.ui.graph_view, f"{prefix}_coupled")


def main() -> None:
    folder = Path("/tmp/prunelab-teach-shots")
    settings = Settings(QSettings(str(folder / "prunelab.ini"), QSettings.Format.IniFormat))
    win = MainWindow(settings=settings, autoload=False, log_path=folder / "prunelab.log")
    win.resize(1500, 950)
    win.show()
    pause(0.5)
    assert win.load("demo:resnet", "fashion-mnist")
    wait(win)
    win.ui.method_panel.select_method("l2")
    win.ui.method_panel.ratio_slider.setValue(30)
    teach_views(win, "demo", "layer2.0.conv2", 0)

    dock = show_lessons(win)
    dock.panel.go_to(1)
    dock.panel.reveal_answer()
    win.ui.tabs.setCurrentWidget(win.ui.graph_view)
    save(win, "lesson")
    dock.hide()

    assert win.load("torchvision:resnet18", "fashion-mnist")
    wait(win)
    win.ui.method_panel.select_method("l2")
    win.ui.method_panel.ratio_slider.setValue(30)
    teach_views(win, "resnet18", "layer2.0.conv2", 0)
    win.close()


if __name__ == "__main__":
    main()
