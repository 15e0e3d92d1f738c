"""GUI tests (pytest-qt, offscreen, QtWebEngine off): window, loading, real worker runs, cancel, errors.

Tiny models and a few hundred test images keep the whole file well under a minute and a half.
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

# Before any Qt import: no display, no Chromium (see gui/graph_view.py for the fallback).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
os.environ["PRUNELAB_NO_WEBENGINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402

from engine.methods import all_methods  # noqa: E402
from engine.models import DemoResNet, ModelBundle, demo_path  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402
from gui_helpers import tiny_bundle  # noqa: E402
from gui.settings import Settings  # noqa: E402

LOAD_TIMEOUT_MS = 60_000
RUN_TIMEOUT_MS = 90_000


def make_settings(folder: Path) -> Settings:
    """Settings in a temporary INI file, so tests never touch the user's settings."""
    return Settings(QSettings(str(folder / "prunelab.ini"), QSettings.Format.IniFormat))


def fast_options(win: MainWindow, steps: int = 2, finetune: float = 0.0) -> None:
    """Small, quick run settings: few test images, no latency timing."""
    panel = win.ui.method_panel
    panel.steps_spin.setValue(steps)
    panel.eval_combo.setCurrentIndex(panel.eval_combo.findData(500))
    panel.speed_check.setChecked(False)
    panel.bn_check.setChecked(False)
    panel.finetune_spin.setValue(finetune)


def quick_plan(tab, store: Path, ratios: str) -> None:
    """A fast plan in the Experiment tab: l1 and l2 at `ratios`, no recovery, no timing, 256 images."""
    tab.set_store_path(store)
    tab.set_methods(["l1", "l2"])
    tab.ratios_edit.setText(ratios)
    tab.speedups_edit.setText("")
    tab.finetune_spin.setValue(0)
    tab.bn_check.setChecked(False)
    tab.speed_check.setChecked(False)
    tab.guided_check.setChecked(False)
    tab.eval_spin.setValue(256)


@pytest.fixture
def loaded(window, qtbot, fashion):
    """The window with the tiny model and Fashion-MNIST loaded through the real worker."""
    window.session.raw_data_cache["fashion-mnist"] = fashion
    with qtbot.waitSignal(window.job_stopped, timeout=LOAD_TIMEOUT_MS):
        assert window.load(None, "fashion-mnist", bundle=tiny_bundle())
    assert window.session.loaded is not None, window.error_box.text() if window.error_box else "load failed"
    return window


def test_main_window_opens_and_closes(qtbot, tmp_path):
    win = MainWindow(settings=make_settings(tmp_path), autoload=False)
    qtbot.addWidget(win)
    win.show()
    assert win.isVisible()
    assert win.ui.tabs.count() == 6  # graph, weights, plots, results, experiment, teach
    assert not win.menus.run_action.isEnabled()  # nothing loaded yet
    win.close()
    assert not win.isVisible()


def test_every_registered_method_is_in_the_panel(window):
    panel = window.ui.method_panel
    assert panel.method_names() == [m.name for m in all_methods()]
    for method in all_methods():
        panel.select_method(method.name)
        assert panel.current_method().name == method.name
        assert method.title in panel.explain_view.toPlainText()
        cfg = panel.config()
        assert cfg.method == method.name
        cfg.validate()


def test_gpu_choice_is_explained_when_cuda_is_missing(window):
    combo = window.ui.method_panel.device_combo
    gpu = combo.model().item(combo.findData("cuda"))
    if torch.cuda.is_available():
        assert gpu.isEnabled()
    else:
        assert not gpu.isEnabled()
        assert "GPU disabled" in combo.toolTip()


def test_model_loads_and_layer_table_fills(loaded):
    table = loaded.ui.graph_view.layer_table
    names = [info.name for info in loaded.session.loaded.layers]
    assert table.rowCount() == len(names) > 5
    assert "fc" in names and loaded.session.loaded.head == "fc"
    groups = [info.group for info in loaded.session.loaded.layers if info.name != "fc"]
    assert len(set(groups)) < len(groups), "residual partners must share a dependency group"
    head = next(info for info in loaded.session.loaded.layers if info.name == "fc")
    assert head.group == -1 and table.item(names.index("fc"), table.COL_GROUP).text() == "–"
    assert loaded.menus.run_action.isEnabled()
    assert "Parameters" in loaded.ui.summary_label.text()
    # selecting a row selects the layer in the histogram view too
    table.selectRow(3)
    assert loaded.ui.histograms.current_layer() == names[3]


def test_demo_model_loads_or_explains_why_not(window, qtbot, fashion):
    window.session.raw_data_cache["fashion-mnist"] = fashion
    with qtbot.waitSignal(window.job_stopped, timeout=LOAD_TIMEOUT_MS):
        window.load_startup_model()
    if demo_path("resnet").exists():
        assert window.session.loaded is not None and window.ui.graph_view.layer_table.rowCount() > 5
    else:
        assert window.session.loaded is None
        assert "could not be loaded" in window.ui.summary_label.text()
        assert window.error_box is None  # a missing demo is explained in place, not with a modal dialog


def test_pruning_run_updates_plots_histograms_and_results(loaded, qtbot, tmp_path):
    seen: list = []
    loaded.jobs.progressed.connect(lambda _job, event: seen.append(event))  # what the status bar is given
    fast_options(loaded, steps=2)
    loaded.ui.method_panel.bn_check.setChecked(True)
    before = {k: v.clone() for k, v in loaded.session.loaded.bundle.model.state_dict().items()}
    with qtbot.waitSignal(loaded.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        assert loaded.start_run()
    run_id = finished.args[0]
    qtbot.waitUntil(lambda: not loaded.busy, timeout=10_000)
    record = loaded.session.runs[run_id]
    assert seen and {"baseline", "prune", "evaluate"} <= {e.phase for e in seen}
    assert record.status == "done" and len(record.steps) == 3  # step 0 + two steps
    assert record.done.after.params < record.done.before.params  # channels really removed
    loaded.ui.plots.flush()
    assert loaded.ui.plots.point_count(run_id) == 3
    assert loaded.ui.histograms.has_data()
    assert loaded.ui.histograms.step_combo.count() == 3  # original, step 1, step 2
    loaded.ui.histograms.step_combo.setCurrentIndex(1)
    assert loaded.ui.histograms.has_data()
    assert loaded.ui.results.row_count() == 1
    assert record.pruned is not None
    # the loaded model is untouched
    after = loaded.session.loaded.bundle.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the layer table shows channels before -> after
    table = loaded.ui.graph_view.layer_table
    texts = [table.item(r, table.COL_CHANNELS).text() for r in range(table.rowCount())]
    assert any("→" in t for t in texts)
    # exports: plots as PNG and SVG, results as CSV
    png = loaded.menus.write_plots(tmp_path / "plots.png")
    svg = loaded.menus.write_plots(tmp_path / "plots.svg")
    assert png.stat().st_size > 1000 and "<svg" in svg.read_text()[:500]
    csv_text = loaded.ui.results.write_csv(tmp_path / "results.csv").read_text()
    assert csv_text.count("\n") == 3 and "original" in csv_text


def test_cancel_answers_quickly_and_keeps_the_model(loaded, qtbot):
    fast_options(loaded, steps=5, finetune=2.0)  # long enough that only cancel can end it in time
    before = {k: v.clone() for k, v in loaded.session.loaded.bundle.model.state_dict().items()}
    assert loaded.start_run()
    record = loaded.session.runs[loaded.session.current_run]
    # cancel in the middle of fine-tuning, the phase with the longest stretches between checks
    qtbot.waitUntil(lambda: "finetune" in loaded.ui.phase_label.text(), timeout=RUN_TIMEOUT_MS)
    # the work done after the cancel, as the process's CPU time: on a busy machine the wall time is the
    # other processes' too (a cancel ignored until fine-tuning ends costs many CPU seconds either way)
    start = time.process_time()
    with qtbot.waitSignal(loaded.job_stopped, timeout=60_000):
        loaded.cancel_job()
    elapsed = time.process_time() - start
    assert elapsed < 2.0, f"cancel took {elapsed:.2f} s of CPU"
    assert record.status == "cancelled"
    after = loaded.session.loaded.bundle.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert loaded.menus.run_action.isEnabled() and not loaded.menus.cancel_action.isEnabled()


@pytest.mark.heavy_memory(gib=1.5)  # it grows its own worker by up to 0.77 GiB, on purpose
def test_a_run_past_the_memory_limit_fails_alone(window, qtbot, fashion):
    from engine.budget import rss_bytes
    from tests.test_budget import HUNGER, HungryResNet

    window.session.raw_data_cache["fashion-mnist"] = fashion
    bundle = ModelBundle(HungryResNet(1, 10, widths=(8, 16, 32)).eval(), "test:hungry", "demo:resnet", (1, 28, 28), 10,
                         arch_kwargs={"widths": [8, 16, 32]})
    with qtbot.waitSignal(window.job_stopped, timeout=LOAD_TIMEOUT_MS):
        assert window.load(None, "fashion-mnist", bundle=bundle)
    fast_options(window, steps=1)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS):
        assert window.start_run()
    qtbot.waitUntil(lambda: not window.busy, timeout=RUN_TIMEOUT_MS)
    window.settings.set_value("memory/limit", str(rss_bytes() + 400 * 2 ** 20))
    HUNGER["on"] = True
    try:
        with qtbot.waitSignal(window.job_stopped, timeout=RUN_TIMEOUT_MS):
            assert window.start_run()
    finally:
        HUNGER["on"] = False
    box = window.error_box
    assert box is not None and box.isVisible() and "reached the memory limit" in box.text()
    box.close()
    assert [r.status for r in window.session.runs.values()] == ["done", "failed"]  # the first run is still listed
    assert window.menus.run_action.isEnabled() and window.menus.open_action.isEnabled()


def test_jobs_are_objects_a_failing_one_gets_on_failure_and_the_window_stays_usable(window, qtbot):
    """The window routes the worker's signals to the job object: events to on_event, the work's
    return value to on_success, an exception to on_failure (whose default shows the job's title)."""
    from engine.errors import UserError
    from engine.events import Progress
    from gui.jobs import WorkerJob

    class Probe(WorkerJob):
        name, title = "probe", "The probe failed"

        def __init__(self, win, fail: bool) -> None:
            super().__init__(win.commands)
            self.fail, self.calls = fail, []

        def work(self, cancel):
            yield Progress("probe", 0, 1, "working")
            if self.fail:
                raise UserError("the probe broke; try again")
            return {"answer": 42}

        def on_event(self, event):
            self.calls.append(("event", event.phase))

        def on_success(self, result):
            self.calls.append(("success", result))

        def on_failure(self, failure):
            self.calls.append(("failure", failure.message))
            super().on_failure(failure)

    failing = Probe(window, fail=True)
    with qtbot.waitSignal(window.job_stopped, timeout=10_000) as stopped:
        assert window.start_job(failing)
        assert window.busy and not window.menus.open_action.isEnabled()
        assert not window.start_job(Probe(window, fail=False))  # one job at a time
    assert stopped.args == ["probe"]
    assert failing.calls == [("event", "probe"), ("failure", "the probe broke; try again")]
    box = window.error_box
    assert box is not None and box.isVisible() and box.windowTitle() == "The probe failed"
    assert box.detailedText() == ""  # bad input: no traceback
    box.close()
    assert not window.busy and window.jobs.job is None and window.menus.open_action.isEnabled()
    assert window.ui.phase_label.text() == "Failed"
    working = Probe(window, fail=False)
    with qtbot.waitSignal(window.job_stopped, timeout=10_000):
        assert window.start_job(working)
    assert working.calls == [("event", "probe"), ("success", {"answer": 42})]
    assert window.ui.phase_label.text() == "Ready" and not window.busy


def test_corrupt_model_file_shows_error_and_window_stays_usable(loaded, qtbot, tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not a PyTorch file" * 10)
    with qtbot.waitSignal(loaded.job_stopped, timeout=LOAD_TIMEOUT_MS):
        assert loaded.open_model_file(str(bad))
    box = loaded.error_box
    assert box is not None and box.isVisible()
    assert "broken.pt" in box.text()
    box.close()
    assert loaded.session.loaded.bundle.source == "test:tiny-resnet"  # the previous model stays loaded
    assert loaded.menus.run_action.isEnabled() and loaded.menus.open_action.isEnabled()


def test_untrusted_pickle_asks_before_loading(window, qtbot, tmp_path, fashion):
    path = tmp_path / "whole_module.pt"
    torch.save(tiny_bundle().model, path)
    window.session.raw_data_cache["fashion-mnist"] = fashion
    asked: list[str] = []
    window._ask_trust = lambda p, message, what: (asked.append(message), True)[1]
    with qtbot.waitSignal(window.job_stopped, timeout=LOAD_TIMEOUT_MS):
        window.open_model_file(str(path))
    qtbot.waitUntil(lambda: window.session.loaded is not None and not window.busy, timeout=LOAD_TIMEOUT_MS)
    assert asked and "pickled" in asked[0]
    assert window.session.loaded.request.trust


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_asks_first_and_a_no_runs_nothing(loaded, qtbot, hostile_torchscript):
    archive, marker = hostile_torchscript
    asked: list[str] = []
    loaded._ask_trust = lambda p, message, what: (asked.append(what), False)[1]
    with qtbot.waitSignal(loaded.job_stopped, timeout=LOAD_TIMEOUT_MS):
        assert loaded.open_model_file(str(archive))
    qtbot.waitUntil(lambda: bool(asked) and not loaded.busy, timeout=LOAD_TIMEOUT_MS)
    assert asked == ["torchscript"]
    assert not marker.exists()  # declined: the archive's code never ran
    assert "not trusted" in loaded.ui.phase_label.text()
    assert loaded.session.loaded.bundle.source == "test:tiny-resnet"
    assert loaded.menus.run_action.isEnabled() and loaded.menus.open_action.isEnabled()


@pytest.mark.parametrize("content, expected", [
    (b"\x17" + random.Random(0).randbytes(4095), "not a PyTorch file"),
    (b"PK\x03\x04" + random.Random(1).randbytes(200), "not a PyTorch file"),
    (b"", "empty"),
])
def test_garbage_gets_an_error_never_the_trust_dialog(loaded, qtbot, tmp_path, content, expected):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(content)
    asked: list[str] = []
    loaded._ask_trust = lambda p, message, what: (asked.append(what), False)[1]
    with qtbot.waitSignal(loaded.job_stopped, timeout=LOAD_TIMEOUT_MS):
        assert loaded.open_model_file(str(bad))
    box = loaded.error_box
    assert box is not None and box.isVisible() and expected in box.text()
    assert box.detailedText() == ""  # bad input: the one line says it all, no traceback for a student
    box.close()
    assert not asked
    assert loaded.session.loaded.bundle.source == "test:tiny-resnet" and loaded.menus.run_action.isEnabled()


def test_the_first_hint_names_the_selected_method(window):
    window.ui.method_panel.select_method("taylor")
    title = window.ui.method_panel.current_method().title.split(" (")[0]
    assert title in window.ui.hint_label.text() and window.ui.hint_label.text().startswith("<b>Try it:</b>")


def test_loading_your_own_model_brings_back_a_start_hint_that_names_it(window, qtbot, fashion):
    """After a run the hint points to the Weights tab; another model has no run yet, so the hint starts
    over, naming that model rather than "the demo model"."""
    from gui.jobs import HINT_AFTER_RUN

    window.ui.hint_label.setText(HINT_AFTER_RUN)
    window.session.raw_data_cache["fashion-mnist"] = fashion
    with qtbot.waitSignal(window.job_stopped, timeout=LOAD_TIMEOUT_MS):
        assert window.load(None, "fashion-mnist", bundle=tiny_bundle())
    text = window.ui.hint_label.text()
    assert text.startswith("<b>Try it:</b>") and "demo model" not in text
    assert window.session.loaded.summary["architecture"] in text


def test_options_and_recent_files_persist(qtbot, tmp_path):
    settings = make_settings(tmp_path)
    first = MainWindow(settings=settings, autoload=False)
    qtbot.addWidget(first)
    first.ui.method_panel.select_method("taylor")
    first.ui.method_panel.steps_spin.setValue(7)
    settings.add_recent("models", "/some/model.pt")
    first.close()
    second = MainWindow(settings=make_settings(tmp_path), autoload=False)
    qtbot.addWidget(second)
    assert second.ui.method_panel.current_method().name == "taylor"
    assert second.ui.method_panel.steps_spin.value() == 7
    assert "/some/model.pt" in [second.ui.model_combo.itemData(i) for i in range(second.ui.model_combo.count())]
    second.close()


def test_layer_table_choices_reach_the_run(loaded, qtbot):
    table = loaded.ui.graph_view.layer_table
    names = [info.name for info in table.layers]
    skip = "layer3.0.conv1"  # its own dependency group: leaving it alone keeps all its channels
    table.item(names.index(skip), table.COL_INCLUDE).setCheckState(Qt.CheckState.Unchecked)
    # 0.5 of 16 keeps 8, a multiple of 8 (0.25 would keep 12, which rounds to the nearest allowed count: 16)
    table.cellWidget(names.index("layer2.0.conv1"), table.COL_RATIO).setValue(0.5)
    ignored, ratios = table.choices()
    assert ignored == (skip,) and ratios == {"layer2.0.conv1": 0.5}
    fast_options(loaded, steps=1)
    with qtbot.waitSignal(loaded.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        assert loaded.start_run()
    record = loaded.session.runs[finished.args[0]]
    assert record.config.ignored_layers == (skip,)
    stats = {s.name: s for s in record.steps[-1].layers}
    assert stats[skip].channels_after == stats[skip].channels_before
    assert stats["layer2.0.conv1"].channels_after < stats["layer2.0.conv1"].channels_before


def test_sensitivity_scan_colours_layers_and_suggests_ratios(loaded, qtbot, monkeypatch):
    import functools

    from engine import sensitivity

    # the window's scan, on fewer images and BatchNorm batches: what is shown is the same, in a quarter of the time
    monkeypatch.setattr(sensitivity, "scan", functools.partial(sensitivity.scan, limit=200, bn_batches=2))
    table = loaded.ui.graph_view.layer_table
    with qtbot.waitSignal(loaded.job_stopped, timeout=RUN_TIMEOUT_MS):
        assert loaded.start_sensitivity_scan()
    assert loaded.session.sensitivity is not None, loaded.error_box.text() if loaded.error_box else "scan failed"
    texts = [table.item(r, table.COL_SENSITIVITY).text() for r in range(table.rowCount())]
    assert sum(t.endswith("pt") for t in texts) >= 5
    assert loaded.ui.graph_view.apply_button.isEnabled()
    loaded.ui.graph_view.apply_button.click()
    _, ratios = table.choices()
    assert ratios and all(0.0 <= r < 1.0 for r in ratios.values())


def test_experiment_tab_runs_a_plan_through_the_worker(loaded, qtbot, tmp_path):
    """The Experiment tab is part of the window: its plan runs on the worker with the loaded model,
    each run reaches the table as it finishes, and clicking a run names it in the status bar."""
    tab = loaded.ui.experiment
    assert loaded.ui.tabs.indexOf(tab) >= 0
    quick_plan(tab, tmp_path / "plan.sqlite", "0.5")
    with qtbot.waitSignal(loaded.job_stopped, timeout=RUN_TIMEOUT_MS) as stopped:
        tab.run_button.click()
        assert loaded.busy and tab.cancel_button.isEnabled() and not loaded.menus.run_action.isEnabled()
        # the store cannot change under a running plan
        assert not tab.choose_button.isEnabled() and not loaded.menus.open_store_action.isEnabled()
    assert stopped.args == ["plan"]
    assert loaded.error_box is None or not loaded.error_box.isVisible(), loaded.error_box.text()
    assert tab.table.rowCount() == 3  # the original + two runs
    assert tab.recommendation_label.text().startswith("For ")
    assert tab.run_button.isEnabled() and not tab.cancel_button.isEnabled() and tab.choose_button.isEnabled()
    tab.select_run(tab.keys()[0])
    assert "top-1" in loaded.statusBar().currentMessage()
    # Running the same plan again resumes: nothing new is computed, both runs come from the store.
    with qtbot.waitSignal(loaded.job_stopped, timeout=RUN_TIMEOUT_MS):
        tab.run_button.click()
    assert "2 already stored" in tab.status_label.text()


def test_sensitivity_colours_reach_the_graph_nodes(qtbot, tmp_path):
    """The graph's node ids come from the ONNX export; each scanned layer must find its node."""
    from engine.models import export_onnx
    from gui.graph_view import GraphView, module_of_node, node_colours

    assert module_of_node("/layer2/layer2.0/shortcut/shortcut.0/Conv") == "layer2.0.shortcut.0"
    assert module_of_node("/stem/stem.0/Conv") == "stem.0"
    assert module_of_node("/fc/Gemm") == "fc"
    model = tiny_bundle().model
    path = export_onnx(model, (1, 28, 28), tmp_path / "tiny.onnx")
    convs = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    found = node_colours(path, {name: "#ff0000" for name in convs})
    assert sorted(module_of_node(n) for n in found) == sorted(convs)
    view = GraphView()
    qtbot.addWidget(view)
    view.set_original(path)
    view.show_sensitivity({"stem.0": 20.0, "layer1.0.conv1": 0.0})
    script = view.paint_script()
    from gui import theme

    full, none = theme.share_colour_opaque(1.0), theme.share_colour_opaque(0.0)
    assert full.red() > 200 and full.green() < 100 and none.name() == "#ffffff"
    assert f'"/stem/stem.0/Conv": "{full.name()}"' in script
    assert f'"/layer1/layer1.0/conv1/Conv": "{none.name()}"' in script
    view.set_original(path)  # another model: its colours are gone
    assert view.paint_script() is None


def test_cancelled_plan_keeps_finished_runs_and_resumes(loaded, qtbot, tmp_path):
    """Cancel a plan after its first run: that run stays stored, the tab says how to resume, and
    running the plan again computes only what is missing."""
    from engine.experiments import ResultStore

    tab = loaded.ui.experiment
    quick_plan(tab, tmp_path / "plan.sqlite", "0.3, 0.5")
    with qtbot.waitSignal(loaded.job_stopped, timeout=RUN_TIMEOUT_MS):
        tab.run_button.click()
        qtbot.waitUntil(lambda: len(tab.keys()) >= 1, timeout=RUN_TIMEOUT_MS)
        tab.cancel_button.click()
    stored = ResultStore(tmp_path / "plan.sqlite").keys("run")
    if len(stored) < 4:  # the plan was still running when Cancel arrived
        assert "Cancelled" in tab.status_label.text() and tab.run_button.isEnabled()
    assert len(stored) >= 1
    with qtbot.waitSignal(loaded.job_stopped, timeout=RUN_TIMEOUT_MS):
        tab.run_button.click()
    assert f"{len(stored)} already stored" in tab.status_label.text()
    assert len(ResultStore(tmp_path / "plan.sqlite").keys("run")) == 4


def test_the_graph_shows_every_batchnorm_and_no_shared_tensor_boxes(tmp_path):
    """The Netron graph keeps BatchNorm layers (a deployment export folds them into the convolution) and
    draws no Identity boxes for shared tensors; both exports compute the same as the model."""
    import collections

    import numpy as np
    import onnx
    import onnxruntime as ort

    from engine.models import export_onnx
    from gui.graph_view import node_modules

    model = tiny_bundle().model.eval()
    x = torch.randn(2, 1, 28, 28)
    bns = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    kinds = {}
    for keep in (False, True):
        path = export_onnx(model, (1, 28, 28), tmp_path / f"keep{keep}.onnx", keep_batchnorm=keep)
        kinds[keep] = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
        out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
        assert np.abs(out - model(x).detach().numpy()).max() < 1e-4
    assert kinds[True]["BatchNormalization"] == len(bns) and kinds[True]["Identity"] == 0
    assert kinds[False]["BatchNormalization"] == 0  # folded for deployment
    assert sorted(m for m in node_modules(path).values() if m in bns) == bns  # each BatchNorm node names its layer
