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
    parser.add_argument("--only-open-model", action="store_true",
                        help="only the Open model dialog: a state_dict with its Python file, and a timm model")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="prunelab-shots-")
    os.environ.setdefault("PRUNELAB_SETTINGS_DIR", tmp)
    os.environ.setdefault("PRUNELAB_LOG_DIR", tmp)
    os.environ.setdefault("PRUNELAB_DATA_DIR", tmp)  # never the user's own result store

    from PySide6.QtCore import QEventLoop, QTimer

    from gui.app import create_application, setup_logging

    app = create_application([])
    setup_logging()
    import torch
    # As gui.app.main does: torchvision pulls in triton, whose first import in a worker thread segfaults.
    import torch_pruning  # noqa: F401
    import torchvision  # noqa: F401

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

    if args.only_open_model:
        open_model_shots(window, Path(tmp), out, args.suffix, pause, wait_job)
        window.close()
        return 0
    window.load(args.model, "fashion-mnist")
    wait_job()
    if window.session.loaded is None:
        print("the model could not be loaded:", window.ui.summary_label.text())
        return 1
    pause(5)  # Netron lays the graph out in a web worker
    shot("screenshot_main")
    if not args.skip_sensitivity:
        window.start_sensitivity_scan()
        wait_job()
        window.ui.graph_view.fit_table()
        shot("screenshot_sensitivity")
        if args.only_sensitivity:
            window.close()
            return 0
    panel = window.ui.method_panel
    panel.select_method("l2")
    panel.steps_spin.setValue(4)
    window.start_run()
    wait_job()
    window.ui.plots.flush()
    shot("screenshot_plots_one_run")
    panel.select_method(args.second_method)
    window.start_run()
    wait_job()
    window.ui.plots.flush()
    shot("screenshot_plots")
    window.ui.tabs.setCurrentWidget(window.ui.histograms)
    window.ui.histograms.select_layer("layer2.0.conv1")
    shot("screenshot_weights_unstructured")
    first = min(window.session.runs)
    window.ui.results.select_run(first)
    window._on_run_selected(first)
    window.ui.histograms.select_layer("layer2.0.conv1")
    shot("screenshot_weights_structured")
    window.ui.tabs.setCurrentWidget(window.ui.graph_view)
    window.ui.graph_view.pruned_radio.setChecked(True)
    pause(5)
    shot("screenshot_graph_pruned")
    window.ui.tabs.setCurrentWidget(window.ui.results)
    shot("screenshot_results")
    if not args.skip_experiment:
        # A small plan: four structured methods × three ratios with BN re-estimation, 2000 test images.
        tab = window.ui.experiment
        tab.set_store_path(Path(tmp) / "plan.sqlite")
        tab.set_methods(["l1", "l2", "taylor", "fpgm"])
        tab.ratios_edit.setText("0.3, 0.5, 0.7")
        tab.finetune_spin.setValue(0)
        tab.bn_check.setChecked(True)
        tab.eval_spin.setValue(2000)
        window.ui.tabs.setCurrentWidget(tab)
        tab.run_button.click()
        wait_job()
        tab.result_tabs.setCurrentWidget(tab.pareto_view)  # a sensitivity scan would have left its tab in front
        shot("screenshot_experiment")
    window.close()
    return 0


USER_CODE = '''"""The model of a training script: a small CNN for 28x28 grey images."""
import torch.nn as nn


class PartsNet(nn.Module):
    def __init__(self, width=16, num_classes=10, dropout=0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class Augment(nn.Module):
    def forward(self, x):
        return x
'''


def quick_train(model, data, steps: int):
    """A few hundred Adam steps, so the screenshots show a model that learned something (not chance)."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for i, (x, y) in enumerate(data.loader("train", 128, shuffle=True)):
        if i >= steps:
            break
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def open_model_shots(window, tmp: Path, out: Path, suffix: str, pause, wait_job) -> None:
    """The Open model dialog twice: a state_dict with the Python file of its class, and a timm state_dict."""
    import runpy

    import torch

    from engine.models import build_arch
    from gui.open_model import open_model_dialog

    from engine.data import load_dataset

    window._ask_trust = lambda path, message, what: True  # the script's own files: answer the question for it
    project = tmp / "my-project"
    project.mkdir()
    code = project / "parts_net.py"
    code.write_text(USER_CODE)
    data = load_dataset("fashion-mnist")
    window.session.raw_data_cache["fashion-mnist"] = data
    torch.manual_seed(0)
    net = quick_train(runpy.run_path(str(code))["PartsNet"](width=24), data, 300)
    torch.save(net.state_dict(), project / "parts_net_best.pth")
    timm_net = quick_train(build_arch("timm:mobilenetv3_small_050", 1, 10), data, 300)
    torch.save({"epoch": 30, "state_dict": timm_net.state_dict()}, project / "mobilenetv3_parts.ckpt")

    def shot(dialog, name: str) -> None:
        dialog.resize(780, 860)
        pause(1.0)
        path = out / f"{name}{suffix}.png"
        dialog.grab().save(str(path))
        print("wrote", path)

    dialog = open_model_dialog(window, str(project / "parts_net_best.pth"))
    wait_job()
    dialog.picker.load_code(str(code))
    dialog.picker.class_combo.setCurrentText("PartsNet")
    dialog.picker.kwargs_edit.setText('{"width": 24}')
    dialog.norm_combo.setCurrentIndex(dialog.norm_combo.findData("fashion-mnist"))
    dialog.start_check()
    wait_job()
    shot(dialog, "screenshot_open_model_code")
    dialog.reject()
    dialog = open_model_dialog(window, str(project / "mobilenetv3_parts.ckpt"))
    wait_job()
    dialog.picker.filter_edit.setText("mobilenetv3 small")
    dialog.picker.select("timm:mobilenetv3_small_050")
    dialog.start_check()
    wait_job()
    shot(dialog, "screenshot_open_model_timm")
    dialog.reject()


if __name__ == "__main__":
    sys.exit(main())
