"""Bugs a person met in the real window (issue 24), each replayed offscreen with the events Qt delivers there:
a hover over the Why chart, the wheel over the Prune panel, a close during a run, the window's temporary folder,
a recent model reopened as it was opened."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
os.environ["PRUNELAB_NO_WEBENGINE"] = "1"

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QWheelEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QComboBox, QScrollArea, QSpinBox, QVBoxLayout, QWidget  # noqa: E402

from tests.gui_helpers import close_window, load_tiny, open_window  # noqa: E402


def _wheel(widget: QWidget, steps: int = -1) -> None:
    """One notch of the wheel over the middle of `widget`, as the platform delivers it."""
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(), QPoint(0, 120 * steps),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_hovering_a_why_bar_shows_its_channel_without_an_error(qtbot):
    from engine.explain.scores import channel_scores
    from gui.teach.views import WhyView
    from tests.gui_helpers import tiny_bundle

    bundle = tiny_bundle()
    scores = channel_scores(bundle.model, "layer2.0.conv2", "l1", None, bundle.input_shape, 10, ratio=0.5)
    view = WhyView()
    qtbot.addWidget(view)
    view.resize(700, 400)
    view.show()
    view.show_scores(scores, "l1")
    qtbot.wait(50)
    # the middle of the first bar, in scene coordinates, as the scene's mouse-move signal hands it over
    scene_point = view.plot.vb.mapViewToScene(QPointF(0, float(scores.scores[scores.order[0]]) / 2))
    view.plot_widget.scene().sigMouseMoved.emit(scene_point)  # an exception here fails the test (pytest-qt)
    assert view.hover_label.text().startswith(f"Channel {int(scores.order[0])}: rank 1 of")


def test_wheel_over_an_unfocused_control_scrolls_the_panel_instead(qtbot, tmp_path, monkeypatch):
    from gui.widgets import guard_wheel

    win = open_window(qtbot, tmp_path, monkeypatch)  # the window guards its own controls
    try:
        panel = win.ui.method_panel
        combo = next(c for c in panel.findChildren(QComboBox) if c.count() > 1 and c.isVisible())
        before = combo.currentIndex()
        _wheel(combo)
        assert combo.currentIndex() == before  # unfocused: the wheel passes it by

        # a spin box in a scroll area: the area scrolls, the value stays
        area, body = QScrollArea(), QWidget()
        column = QVBoxLayout(body)
        spins = [QSpinBox() for _ in range(40)]
        for spin in spins:
            spin.setRange(0, 100)
            spin.setValue(50)
            column.addWidget(spin)
        area.setWidget(body)
        area.resize(200, 200)
        guard_wheel(area)
        qtbot.addWidget(area)
        area.show()
        qtbot.wait(20)
        assert spins[2].focusPolicy() == Qt.FocusPolicy.StrongFocus  # the wheel never gives it focus
        _wheel(spins[2])
        assert spins[2].value() == 50
        assert area.verticalScrollBar().value() > 0
        spins[2].setFocus()  # clicked into: now the wheel is meant for it
        qtbot.waitUntil(spins[2].hasFocus, timeout=2000)
        _wheel(spins[2], steps=1)
        assert spins[2].value() == 51
    finally:
        close_window(qtbot, win)


def _no_display_env(**extra: str) -> dict:
    """The environment of a session without a desktop: no display, Qt's default platform."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    return dict(env, **extra)


@pytest.mark.heavy_memory(gib=0.85)
def test_without_a_display_the_app_says_so_in_one_line_and_exits_2(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(root / "main.py")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=_no_display_env(PRUNELAB_LOG_DIR=str(tmp_path / "logs"),
                                                           TMPDIR=str(tmp_path)))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot open its window" in lines[0] and "display" in lines[0] and "main.py --help" in lines[0]
    assert not list(tmp_path.glob("prunelab-gui-*"))  # nothing left behind


@pytest.mark.heavy_memory(gib=0.9)
def test_self_test_checks_the_platform_the_user_will_use(tmp_path):
    """As the self-test runs it: in a process of its own, before any Qt application exists."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    check = "from gui.selftest import qt_libraries; print(qt_libraries())"

    def run(platform: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", check], cwd=root, capture_output=True, text=True, timeout=120,
                              env=_no_display_env(QT_QPA_PLATFORM=platform, PRUNELAB_NO_WEBENGINE="1"))

    failed = run("xcb")
    assert failed.returncode != 0 and "cannot open its window" in failed.stderr and "display" in failed.stderr
    passed = run("offscreen")
    assert passed.returncode == 0 and "platform offscreen starts" in passed.stdout, passed.stderr


def _endless_run(bundle, data, cfg, cancel=None, gate=None, **_options):
    """Stands in for run_pruning: a run that goes on until it is cancelled."""
    import time

    from engine.events import Progress

    yield Progress("prune", 0, 1, "pruning")
    while True:
        cancel.check()
        time.sleep(0.01)


def test_closing_during_a_run_asks_and_cancel_keeps_the_window(qtbot, tmp_path, monkeypatch, fashion):
    monkeypatch.setattr("gui.engine_calls.run_pruning", _endless_run)
    win = open_window(qtbot, tmp_path, monkeypatch)
    load_tiny(qtbot, win, fashion)
    qtbot.waitUntil(lambda: win.jobs.worker is None, timeout=60_000)  # the background facts are found
    assert win.start_run() and win.busy
    win.close()
    box = win.close_box
    assert box is not None and win.isVisible() and win.busy  # asked, nothing stopped yet
    assert "#1" in box.text() and box.defaultButton() is box.button(box.StandardButton.Cancel)
    box.button(box.StandardButton.Cancel).click()
    qtbot.wait(100)
    assert win.isVisible() and win.busy and win.close_box is None  # Cancel: the run goes on
    win.close()
    stop = next(b for b in win.close_box.buttons() if b.text() == "Stop the run and quit")
    work = win.work_dir
    assert work.is_dir()
    stop.click()
    qtbot.waitUntil(lambda: not win.isVisible(), timeout=30_000)
    assert win.jobs.worker is None or not win.jobs.job_thread.isRunning()
    assert not work.exists()  # the window's temporary folder goes with it


def test_stale_work_folders_of_dead_windows_are_removed(tmp_path):
    import subprocess
    import sys

    from engine.outputs import HOST, remove_stale_dirs
    from gui.main_window import WORK_PREFIX

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"{WORK_PREFIX}{HOST}.{dead_pid}.abc123"
    alive = tmp_path / f"{WORK_PREFIX}{HOST}.{os.getppid()}.def456"  # a window still open
    mine = tmp_path / f"{WORK_PREFIX}{HOST}.{os.getpid()}.ghi789"
    elsewhere = tmp_path / f"{WORK_PREFIX}otherhost.{dead_pid}.jkl012"  # another machine's, on a shared /tmp
    old_style = tmp_path / f"{WORK_PREFIX}x1y2z3"  # no owner in the name: never guessed at
    for folder in (stale, alive, mine, elsewhere, old_style):
        folder.mkdir()
        (folder / "run1.onnx").write_bytes(b"graph")
    remove_stale_dirs(tmp_path, WORK_PREFIX)
    assert not stale.exists()
    assert alive.exists() and mine.exists() and elsewhere.exists() and old_style.exists()


def test_a_recent_model_reopens_as_it_was_opened_from_the_model_box(qtbot, tmp_path, monkeypatch, fashion):
    import torch

    from engine.inputs import ModelRecipe
    from engine.models import build_arch
    from tests.gui_helpers import TIMEOUT_MS, tiny_bundle

    arch = "torchvision:mobilenet_v3_small"
    weights = tmp_path / "grey.pth"
    torch.manual_seed(1)
    torch.save(build_arch(arch, in_channels=1, num_classes=10).state_dict(), weights)
    folder = _grey_folder(tmp_path / "shapes")
    win = open_window(qtbot, tmp_path, monkeypatch)
    try:
        win.session.raw_data_cache["fashion-mnist"] = fashion
        with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):  # opened once, as the dialog opens it
            win.load(str(weights), "fashion-mnist", recipe=ModelRecipe(str(weights), arch, norm="mnist"))
        assert win.session.loaded is not None and win.session.loaded.bundle.arch == arch
        with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):  # another model on another dataset
            win.load(None, f"imagefolder:{folder}", bundle=tiny_bundle())
        assert win.session.loaded.request.data_spec == f"imagefolder:{folder}", win.error_box and win.error_box.text()
        index = win.ui.model_combo.findData(str(weights))
        assert index >= 0
        with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
            win.ui.model_combo.activated.emit(index)  # picked in the Model box
        assert win.error_box is None or not win.error_box.isVisible(), win.error_box.text()
        assert win.session.loaded.request.model_src == str(weights) and win.session.loaded.bundle.arch == arch
        assert win.session.loaded.request.data_spec == "fashion-mnist"  # its own dataset, not the window's
        assert win.session.loaded.data.norm.mean == (0.1307,)  # its remembered normalisation

        # a recent file with no remembered recipe goes to the Open model dialog, never to a command-line hint
        other = tmp_path / "other.pth"
        torch.save(build_arch(arch, in_channels=1, num_classes=10).state_dict(), other)
        win.settings.add_recent("models", str(other))
        menu = _fill_recent_menu(win, lambda menu, w: w.menus._fill_recent(menu))
        next(a for a in menu.actions() if a.text() == str(other)).trigger()
        qtbot.waitUntil(lambda: getattr(win, "open_model_dialog", None) is not None
                        and win.open_model_dialog.isVisible(), timeout=10_000)
        assert win.error_box is None or not win.error_box.isVisible()
        win.open_model_dialog.reject()
    finally:
        close_window(qtbot, win)


def _grey_folder(root):
    """An ImageFolder of ten classes of 28×28 grey images (two each): another dataset the tiny model fits."""
    from PIL import Image

    for label in range(10):
        (root / f"c{label}").mkdir(parents=True)
        for i in range(2):
            Image.new("L", (28, 28), 20 * label + i).save(root / f"c{label}" / f"{i}.png")
    return root


def _fill_recent_menu(win, fill):
    from PySide6.QtWidgets import QMenu

    menu = QMenu(win)
    fill(menu, win)
    return menu


def test_experiment_tab_follows_the_loaded_model(qtbot):
    from engine.experiments.store import RunResult
    from engine.metrics import Metrics
    from gui.experiment_tab import ExperimentTab

    def result(key, model, method="l2", ratio=0.5, kind="run", top1=0.9):
        m = Metrics(top1=top1, latency_ms={"64": {"median": 5.0, "p95": 5.0}}, size_bytes=1000, macs=1000,
                    params=1000, compressed_bytes=1000)
        r = RunResult(key, kind, f"{method} @ {ratio:g}", method, ratio, None, False, {}, m)
        r.model, r.dataset = model, "fashion-mnist"
        return r

    tab = ExperimentTab()
    qtbot.addWidget(tab)
    tab.set_model_source("demo:resnet", "fashion-mnist")
    tab._baseline = result("base", "demo:resnet", "none", 0.0, "baseline", 0.92)
    for r in (result("a", "demo:resnet", "l1"), result("b", "demo:resnet", "l2")):
        tab._add_result(r)
    tab._refresh()
    assert tab.table.rowCount() == 3 and set(tab.keys()) == {"a", "b"}
    assert tab._ratio_curves  # a curve per method
    tab.set_model_source("/models/other.pth", "fashion-mnist")  # another model loaded
    assert tab.table.rowCount() == 0 and tab.keys() == [] and not tab._ratio_curves
    assert "2 runs of another model or dataset kept aside" in tab.recommendation_label.text()
    tab.set_model_source("demo:resnet", "fashion-mnist")  # loaded again: its runs come back
    assert tab.table.rowCount() == 3 and set(tab.keys()) == {"a", "b"}


def test_teach_header_never_describes_a_chart_it_is_not_over(qtbot, tmp_path, monkeypatch, fashion):
    from tests.gui_helpers import TIMEOUT_MS

    win = open_window(qtbot, tmp_path, monkeypatch)
    try:
        load_tiny(qtbot, win, fashion)
        qtbot.waitUntil(lambda: win.jobs.worker is None, timeout=TIMEOUT_MS)
        tab = win.ui.teach
        win.ui.method_panel.select_method("l1")
        win.ui.method_panel.ratio_slider.setValue(30)
        win.ui.tabs.setCurrentWidget(tab)
        with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
            assert tab.explain()
        assert "under l1" in tab.status_label.text() and "out of date" not in tab.status_label.text()
        # the lesson's next step sets another method and ratio; the feature maps follow them
        win.ui.method_panel.select_method("l2")
        win.ui.method_panel.ratio_slider.setValue(70)
        with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
            tab.views.setCurrentWidget(tab.maps_view)
        assert "removed by l2" in tab.status_label.text()
        tab.views.setCurrentWidget(tab.why_view)  # back to the chart explained for l1 at 30 %
        header = tab.status_label.text()
        assert "under l1" in header and "out of date" in header and "70%" in header
        assert "L1" in tab.why_view.plot.titleLabel.text  # the chart is still l1's: the header says so
    finally:
        close_window(qtbot, win)


def _one_quick_run(qtbot, win, fashion) -> None:
    """The tiny model loaded and pruned once (one step, no BatchNorm re-estimation), the window idle again."""
    from tests.gui_helpers import TIMEOUT_MS, quick_options

    load_tiny(qtbot, win, fashion)
    quick_options(win, steps=1, bn=False)
    with qtbot.waitSignal(win.run_finished, timeout=TIMEOUT_MS):
        assert win.start_run()
    qtbot.waitUntil(lambda: not win.busy, timeout=TIMEOUT_MS)


def test_continue_from_a_run_asks_before_pruning_again(qtbot, tmp_path, monkeypatch, fashion):
    from tests.gui_helpers import TIMEOUT_MS

    win = open_window(qtbot, tmp_path, monkeypatch)
    try:
        _one_quick_run(qtbot, win, fashion)
        win.ui.method_panel.select_method("l2")
        win.ui.method_panel.ratio_slider.setValue(70)
        win.ui.results.continue_requested.emit(1)  # the menu entry of run #1
        box = win.continue_box
        assert box.isVisible() and not win.busy and len(win.session.runs) == 1  # asked; nothing started
        assert "#1" in box.text() and "70%" in box.text() and "Group L2" in box.text()
        assert box.defaultButton() is box.button(box.StandardButton.Cancel)
        box.button(box.StandardButton.Cancel).click()
        assert not win.busy and len(win.session.runs) == 1
        win.ui.results.continue_requested.emit(1)
        further = next(b for b in win.continue_box.buttons() if b.text() == "Prune further")
        with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
            further.click()
        assert len(win.session.runs) == 2 and win.session.runs[2].parent == 1
    finally:
        close_window(qtbot, win)


def test_results_say_recovery_reference_and_configuration_and_runs_can_be_removed(qtbot, tmp_path, monkeypatch,
                                                                                   fashion):
    from gui.results import COLUMNS
    from tests.gui_helpers import TIMEOUT_MS

    win = open_window(qtbot, tmp_path, monkeypatch)
    try:
        _one_quick_run(qtbot, win, fashion)
        win.ui.method_panel.bn_check.setChecked(True)
        with qtbot.waitSignal(win.run_finished, timeout=TIMEOUT_MS):
            assert win.start_run(parent=1)
        qtbot.waitUntil(lambda: not win.busy, timeout=TIMEOUT_MS)
        names = [c[0] for c in COLUMNS]
        model = win.ui.results.model
        first, child = model.item(0, 0), model.item(0, 0).child(0, 0)
        assert child is not None and child.text() == "#2"

        def cell(parent_row, header):
            col = names.index(header)
            return model.item(0, col) if parent_row is None else model.item(0, 0).child(0, col)

        assert cell(None, "Recovery").text() == "none" and cell(0, "Recovery").text() == "BN re-est."
        assert cell(0, "Δ top-1").text().endswith("vs #1") and "fewer vs #1" in cell(0, "MACs").text()
        assert not cell(None, "Δ top-1").text().endswith("#1")
        tip = child.toolTip()
        assert "continued from #1" in tip and "bn_recalibrate: True" in tip and "method: " in tip
        assert first.toolTip() != child.toolTip()
        # remove: not a run others continued from; then the child, from every view
        assert not win.remove_run(1)
        assert win.remove_run(2)
        assert 2 not in win.session.runs and win.ui.results.row_count() == 1
        assert not any(label.startswith("#2") for label in win.ui.plots.legend_labels())
    finally:
        close_window(qtbot, win)


def test_a_note_written_in_results_stays_with_its_run(qtbot, tmp_path, monkeypatch, fashion):
    from gui.results import COLUMNS

    win = open_window(qtbot, tmp_path, monkeypatch)
    try:
        _one_quick_run(qtbot, win, fashion)
        names = [c[0] for c in COLUMNS]
        model = win.ui.results.model
        assert not model.item(0, names.index("Top-1")).isEditable()  # figures cannot be typed over
        note = model.item(0, names.index("Note"))
        assert note.isEditable()
        note.setText("no recovery: the baseline for the lab")
        assert win.session.runs[1].note == "no recovery: the baseline for the lab"
        win.ui.results._refill()  # rebuilt (another batch size, another model loaded and back): the note is kept
        assert model.item(0, names.index("Note")).text() == "no recovery: the baseline for the lab"
    finally:
        close_window(qtbot, win)
