"""Run lineage and manual runs in the window: a run continued from another records its parent and sits
under it in the Results tree; channels ticked in the Teach tab run as the manual method."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from gui_helpers import TIMEOUT_MS, quick_tiny_window  # noqa: E402


window = pytest.fixture(quick_tiny_window, name="window")


def run_and_wait(qtbot, win, **kw) -> int:
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        assert win.start_run(**kw)
    record = win.session.runs[win.session.current_run]
    assert record.status == "done", win.error_box.text() if win.error_box else record.status
    return record.run_id


def test_a_continued_run_starts_from_its_parent_and_shows_as_its_child(window, qtbot, tmp_path):
    panel, results = window.ui.method_panel, window.ui.results
    panel.select_method("l2")
    panel.ratio_slider.setValue(30)
    first = run_and_wait(qtbot, window)
    second = run_and_wait(qtbot, window)  # a sibling from the loaded model
    assert results.continue_button.isEnabled()  # the selected run has its pruned model
    results.select_run(first)
    assert results.selected_run() == first
    results.continue_button.click()  # asks first what to do (gui.layout.ask_continue)
    further = next(b for b in window.continue_box.buttons() if b.text() == "Prune further")
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        further.click()
    child = window.session.current_run
    record = window.session.runs[child]
    assert record.status == "done" and record.parent == first
    parent_after = window.session.runs[first].done.after
    # the child started from the parent's pruned model, not from the original
    assert record.done.before.params == parent_after.params < window.session.runs[second].done.before.params
    assert record.done.after.params < parent_after.params
    # shown as a tree: the child under its parent, the sibling at the top level
    assert results.parent_of(child) == first and results.parent_of(second) is None
    assert results.row_count() == 3 and results.model.rowCount() == 2
    assert results.baseline.params == window.session.runs[first].done.before.params  # the star stays the original
    rows = results.write_csv(tmp_path / "runs.csv").read_text().splitlines()
    assert rows[0].startswith("run,parent,") and any(r.startswith(f"#{child},#{first},") for r in rows)


def test_continue_needs_a_finished_run(window):
    assert not window.ui.results.continue_button.isEnabled()
    assert not window.start_run(parent=42)
    assert "finished run" in window.error_box.text()


def test_ticked_channels_run_as_the_manual_method(window, qtbot):
    tab = window.ui.teach
    window.ui.method_panel.select_method("l2")
    window.ui.method_panel.ratio_slider.setValue(50)
    window.ui.method_panel.round_spin.setValue(0)  # exact counts: 4 of the 8 channels are cut
    tab.select_layer("layer1.0.conv2")
    with qtbot.waitSignal(tab.coupled_layers, timeout=TIMEOUT_MS):
        assert tab.explain()
    qtbot.waitUntil(lambda: not window.busy, timeout=10_000)
    why = tab.why_view
    assert not why.run_button.isEnabled()
    why.toggle(2)
    why.toggle(5)
    why.toggle(2)  # untick again
    why.tick_method_cut()
    cut = sorted(int(i) for i in why.scores.cut.nonzero()[0])
    assert len(cut) == 4
    why.toggle(next(c for c in range(8) if c not in cut))
    assert why.run_button.isEnabled() and "channel(s) ticked" in why.tick_label.text()
    ticked = why.manual_channels()["layer1.0.conv2"]
    assert len(ticked) == len(cut) + 1
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        why.run_button.click()
    record = window.session.runs[window.session.current_run]
    assert record.status == "done" and record.config.method == "manual"
    assert record.config.manual_channels == {"layer1.0.conv2": ticked}
    assert record.amount == f"{len(ticked)} channels ticked"
    assert window.ui.results.row_count() == 1  # in Results like any other run
    pruned = dict(record.pruned.model.named_modules())
    assert pruned["layer1.0.conv2"].weight.shape[0] == 8 - len(ticked)
