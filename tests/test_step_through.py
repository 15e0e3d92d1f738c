"""Step-through: a run pauses after each phase on a gate, shows a quick top-1 per phase, and still cancels."""
from __future__ import annotations

import queue
import threading
import time

import pytest
import torch

from engine.config import PruneConfig
from engine.errors import Cancelled
from engine.events import CancelToken, PhaseDone, StepGate
from engine.models import DemoResNet, ModelBundle
from engine.pruning import RunDone, StepDone, run_pruning

PHASES = ["prune", "bn-recalibrate", "finetune", "evaluate"]


@pytest.fixture()
def tiny(fashion) -> ModelBundle:
    torch.manual_seed(0)
    model = DemoResNet(widths=(4, 8, 16)).eval()
    return ModelBundle(model, "tiny", "demo:resnet", (1, 28, 28), 10, fashion.norm, fashion.class_names,
                       arch_kwargs={"widths": [4, 8, 16]})


def stepping(**kw) -> PruneConfig:
    base = dict(method="l2", pruning_ratio=0.5, eval_limit=64, measure_speed=False, round_to=None,
                bn_recalibrate=True, bn_batches=1, finetune_batches=1, steps=1)
    base.update(kw)
    return PruneConfig(**base)


def in_thread(events) -> tuple[queue.Queue, threading.Thread]:
    """Drain `events` on a thread (as the GUI's worker does); the queue gets each event, then the error or None."""
    out: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            for ev in events:
                out.put(ev)
            out.put(None)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            out.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return out, thread


def next_phase(out: queue.Queue, timeout: float = 60) -> PhaseDone:
    while True:
        ev = out.get(timeout=timeout)
        if isinstance(ev, (PhaseDone, Exception)) or ev is None:
            return ev


def test_phases_come_in_order_and_each_waits_for_the_gate(tiny, fashion):
    gate = StepGate()
    out, thread = in_thread(run_pruning(tiny, fashion, stepping(), gate=gate))
    seen = []
    for expected in PHASES:
        ev = next_phase(out)
        assert isinstance(ev, PhaseDone), ev
        seen.append(ev)
        assert ev.phase == expected and ev.step == 1 and ev.top1 is not None and ev.params > 0
        if expected != "evaluate":
            assert ev.next_phase == PHASES[PHASES.index(expected) + 1]
            time.sleep(0.3)
            assert out.empty(), "the run went on without the gate"  # it waits for the user
            gate.release()
    assert seen[-1].next_phase is None  # the last phase of the last step does not wait
    thread.join(60)
    rest = []
    while not out.empty():
        rest.append(out.get())
    assert any(isinstance(e, RunDone) for e in rest) and rest[-1] is None
    assert seen[0].params == seen[-1].params < sum(p.numel() for p in tiny.model.parameters())  # pruned at once
    done = next(e for e in rest if isinstance(e, RunDone))
    assert done.steps[1].top1_after_prune == seen[0].top1  # the same quick look the step records


def test_cancel_while_waiting_ends_the_run(tiny, fashion):
    gate, cancel = StepGate(), CancelToken()
    out, thread = in_thread(run_pruning(tiny, fashion, stepping(), cancel=cancel, gate=gate))
    ev = next_phase(out)
    assert isinstance(ev, PhaseDone) and ev.next_phase == "bn-recalibrate"
    t0 = time.process_time()  # CPU time: the run's work after the cancel, whatever else the machine runs
    cancel.cancel()
    thread.join(60)
    assert not thread.is_alive() and time.process_time() - t0 < 2
    assert isinstance(out.get_nowait(), Cancelled)


def test_without_a_gate_phases_are_reported_and_nothing_waits(tiny, fashion):
    events = list(run_pruning(tiny, fashion, stepping(finetune_batches=None, steps=2)))
    phases = [(e.step, e.phase) for e in events if isinstance(e, PhaseDone)]
    assert phases == [(1, "prune"), (1, "bn-recalibrate"), (1, "evaluate"),
                      (2, "prune"), (2, "bn-recalibrate"), (2, "evaluate")]
    assert all(e.next_phase is None for e in events if isinstance(e, PhaseDone))
    steps = [e for e in events if isinstance(e, StepDone)]
    evaluate = [e for e in events if isinstance(e, PhaseDone) and e.phase == "evaluate"]
    assert [e.top1 for e in evaluate] == [s.metrics.top1 for s in steps[1:]]


def test_an_opened_gate_lets_the_run_finish():
    gate = StepGate()
    gate.open()
    gate.wait(CancelToken())  # returns at once, and again
    gate.wait(CancelToken())
    assert gate.is_open


# ----------------------------------------------------------------------------- GUI

def test_next_phase_advances_the_run_and_each_phase_gets_a_plot_point(window, qtbot, fashion):
    from PySide6.QtCore import Qt
    from gui_helpers import TIMEOUT_MS, load_tiny, quick_options

    load_tiny(qtbot, window, fashion)
    quick_options(window, steps=1, bn=True)
    panel = window.ui.method_panel
    panel.select_method("l2")
    panel.step_check.setChecked(True)
    assert not panel.next_button.isEnabled()
    assert window.start_run()
    run_id = window.session.current_run
    # paused after pruning: the button offers the BatchNorm re-estimation, the plot has the pruned point
    qtbot.waitUntil(lambda: panel.next_button.isEnabled(), timeout=TIMEOUT_MS)
    assert "BatchNorm" in panel.next_button.text()
    window.ui.plots.flush()
    assert window.ui.plots.phase_count(run_id) == 1
    qtbot.wait(300)
    assert window.busy and window.ui.plots.phase_count(run_id) == 1  # it waits for the user
    qtbot.mouseClick(panel.next_button, Qt.MouseButton.LeftButton)
    assert not panel.next_button.isEnabled()
    qtbot.waitUntil(lambda: panel.next_button.isEnabled(), timeout=TIMEOUT_MS)
    assert "evaluation" in panel.next_button.text()
    window.ui.plots.flush()
    assert window.ui.plots.phase_count(run_id) == 2
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        panel.next_button.click()
    window.ui.plots.flush()
    assert window.ui.plots.phase_count(run_id) == 3  # pruned, BN, evaluated
    assert window.session.runs[run_id].status == "done" and not panel.next_button.isEnabled()
    x, y = window.ui.plots.runs[run_id].items["phases"].getData()
    assert list(x) == [0.0, 0.25, 0.5, 1.0]  # from the original, through each phase, to the step


def test_unticking_step_lets_a_paused_run_finish(window, qtbot, fashion):
    from gui_helpers import TIMEOUT_MS, load_tiny, quick_options

    load_tiny(qtbot, window, fashion)
    quick_options(window, steps=2, bn=True)
    panel = window.ui.method_panel
    panel.step_check.setChecked(True)
    assert window.start_run()
    qtbot.waitUntil(lambda: panel.next_button.isEnabled(), timeout=TIMEOUT_MS)
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        panel.step_check.setChecked(False)
    assert window.session.runs[window.session.current_run].status == "done"


def test_latency_plot_shows_the_run_batch_with_a_band_and_batch_1_on_request(qtbot):
    pytest.importorskip("pytestqt")
    from gui_helpers import qt_environment

    qt_environment()
    from engine.metrics import Metrics
    from gui.plots import LivePlots

    plots = LivePlots()
    qtbot.addWidget(plots)
    plots.add_run(1, "#1", "#0072B2")
    for step, ms in ((0, 10.0), (1, 6.0)):
        plots.add_step(1, step, Metrics(top1=0.9, params=100, macs=100, latency_ms={
            "1": {"median": ms / 50, "p5": ms / 60, "p95": ms / 40},
            "64": {"median": ms, "p5": ms - 1, "p95": ms + 2}}))
    plots.flush()
    curves = plots.runs[1]
    assert list(curves.items["latency"].getData()[1]) == [10.0, 6.0]  # the run's batch (64), not batch 1
    low, high = (edge.getData()[1] for edge in curves.band_edges)
    assert list(low) == [9.0, 5.0] and list(high) == [12.0, 8.0]
    plots.batch1_check.setChecked(True)
    assert list(curves.items["latency"].getData()[1]) == [0.2, 0.12]
