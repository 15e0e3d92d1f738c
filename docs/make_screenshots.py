"""Drive the real app through the demo and save screenshots of every panel (for docs/ and the README).

Run under a real or virtual display, e.g.:
    Xvfb :99 -screen 0 1366x768x24 &
    DISPLAY=:99 QTWEBENGINE_DISABLE_SANDBOX=1 .venv/bin/python docs/make_screenshots.py --out docs --suffix _1366
The window fills the screen; the whole screen is captured, so Netron's web view is included.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    """Click through load → sensitivity scan → run → second run → plots, weights, graph, results → a small
    experiment plan; save PNGs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo:resnet")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--suffix", default="")
    parser.add_argument("--second-method", default="magnitude-global")
    parser.add_argument("--skip-sensitivity", action="store_true", help="no sensitivity scan screenshot")
    parser.add_argument("--only-sensitivity", action="store_true", help="stop after the sensitivity screenshot")
    parser.add_argument("--skip-experiment", action="store_true", help="no Experiment tab screenshot")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="prunelab-shots-")
    os.environ.setdefault("PRUNELAB_SETTINGS_DIR", tmp)
    os.environ.setdefault("PRUNELAB_LOG_DIR", tmp)

    from PySide6.QtCore import QEventLoop, QTimer

    from gui.app import create_application, setup_logging

    app = create_application([])
    setup_logging()
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    from gui.main_window import MainWindow

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    window = MainWindow(autoload=False)
    screen = app.primaryScreen()
    window.setGeometry(screen.geometry())
    window.show()

    def pause(seconds: float) -> None:
        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()

    def wait_job(timeout_s: float = 900) -> None:
        loop = QEventLoop()
        window.job_stopped.connect(loop.quit)
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        loop.exec()
        window.job_stopped.disconnect(loop.quit)

    def shot(name: str) -> None:
        pause(1.0)
        path = out / f"{name}{args.suffix}.png"
        screen.grabWindow(0).save(str(path))
        print("wrote", path)

    window.load(args.model, "fashion-mnist")
    wait_job()
    if window.loaded is None:
        print("the model could not be loaded:", window.summary_label.text())
        return 1
    pause(5)  # Netron lays the graph out in a web worker
    shot("screenshot_main")
    if not args.skip_sensitivity:
        window.start_sensitivity_scan()
        wait_job()
        window.graph_view.fit_table()
        shot("screenshot_sensitivity")
        if args.only_sensitivity:
            window.close()
            return 0
    panel = window.method_panel
    panel.select_method("l2")
    panel.steps_spin.setValue(4)
    window.start_run()
    wait_job()
    window.plots.flush()
    shot("screenshot_plots_one_run")
    panel.select_method(args.second_method)
    window.start_run()
    wait_job()
    window.plots.flush()
    shot("screenshot_plots")
    window.tabs.setCurrentWidget(window.histograms)
    window.histograms.select_layer("layer2.0.conv1")
    shot("screenshot_weights_unstructured")
    first = min(window.runs)
    window.results.select_run(first)
    window._on_run_selected(first)
    window.histograms.select_layer("layer2.0.conv1")
    shot("screenshot_weights_structured")
    window.tabs.setCurrentWidget(window.graph_view)
    window.graph_view.pruned_radio.setChecked(True)
    pause(5)
    shot("screenshot_graph_pruned")
    window.tabs.setCurrentWidget(window.results)
    shot("screenshot_results")
    if not args.skip_experiment:
        # A small plan: four structured methods × three ratios with BN re-estimation, 2000 test images.
        tab = window.experiment
        tab.set_store_path(Path(tmp) / "plan.sqlite")
        tab.set_methods(["l1", "l2", "taylor", "fpgm"])
        tab.ratios_edit.setText("0.3, 0.5, 0.7")
        tab.finetune_spin.setValue(0)
        tab.bn_check.setChecked(True)
        tab.eval_spin.setValue(2000)
        window.tabs.setCurrentWidget(tab)
        tab.run_button.click()
        wait_job()
        shot("screenshot_experiment")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
