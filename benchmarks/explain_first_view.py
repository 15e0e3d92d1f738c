"""How long after pressing Explain the Teach tab's first view (Why these channels) is filled, and the rest.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/explain_first_view.py [--method l1] [--runs 3]

An untrained torchvision ResNet-18 (no download) at 3×224×224 with Fashion-MNIST, layer layer4.1.conv2,
explained through the window's own job as a user would: each run is a cold Explain (the traced session
forgotten), timed from the button's slot to the chosen method's scores drawn, the first partial comparison
drawn, and the whole explanation shown. Prints the 1-minute load average before and after.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["PRUNELAB_NO_WEBENGINE"] = "1"

from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def main() -> None:
    """Explain the layer `--runs` times, cold; print the seconds to each view."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="l1")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--layer", default="layer4.1.conv2")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    from engine.data import load_dataset
    from engine.explain import scores as explain_scores
    from engine.inputs import model_for_data
    from gui.main_window import MainWindow
    from gui.settings import Settings

    folder = Path(tempfile.mkdtemp(prefix="prunelab-bench-"))
    os.environ["PRUNELAB_SETTINGS_DIR"] = str(folder / "settings")
    win = MainWindow(settings=Settings(QSettings(str(folder / "p.ini"), QSettings.Format.IniFormat)),
                     autoload=False, log_path=folder / "prunelab.log")
    win.show()

    def wait_until(condition, timeout: float = 600.0) -> None:
        end = time.perf_counter() + timeout
        while not condition():
            if time.perf_counter() > end:
                raise TimeoutError("the window did not get there in time")
            app.processEvents()
            time.sleep(0.005)

    def idle_for(seconds: float) -> None:  # no job at all: the background details job would compete
        quiet = time.perf_counter()
        while time.perf_counter() - quiet < seconds:
            if win.jobs.worker is not None:
                quiet = time.perf_counter()
            app.processEvents()
            time.sleep(0.01)

    shape = (3, 224, 224)
    bundle = model_for_data("torchvision:resnet18", load_dataset("fashion-mnist").adapted(shape), input_shape=shape)
    assert win.load(None, "fashion-mnist", bundle=bundle)
    wait_until(lambda: win.session.loaded is not None and not win.busy)
    idle_for(3.0)
    win.ui.method_panel.select_method(args.method)
    tab = win.ui.teach
    tab.select_layer(args.layer)
    marks: dict[str, float] = {}
    for name in ("show_chosen", "show_explanation"):
        original = getattr(tab, name)
        setattr(tab, name, lambda event, name=name, original=original: (original(event), marks.setdefault(
            name, time.perf_counter())))
    draw = tab.criteria_view.show_criteria
    tab.criteria_view.show_criteria = lambda c: (draw(c), marks.setdefault("first comparison", time.perf_counter()))
    print(f"{args.layer}, method {args.method}, load average (1 min) {os.getloadavg()[0]:.2f}", flush=True)
    for run in range(args.runs):
        explain_scores._LAST.clear()  # cold: copy and trace again
        idle_for(2.0)
        marks.clear()
        start = time.perf_counter()
        assert tab.explain()
        wait_until(lambda: "show_explanation" in marks and not win.busy)
        print(f"run {run + 1}: Why filled {marks['show_chosen'] - start:.2f} s, first comparison "
              f"{marks['first comparison'] - start:.2f} s, everything {marks['show_explanation'] - start:.2f} s, "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
    win.close()


if __name__ == "__main__":
    main()
