"""The Teach tab (pytest-qt, offscreen): it builds on a tiny demo model, explains a layer through the
window's worker, and fills every view; the feature maps come from a second job."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
os.environ["PRUNELAB_NO_WEBENGINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("pytestqt")


from engine.methods import STRUCTURED, all_methods, get_method  # noqa: E402
from engine.models import ModelBundle  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402
from tests.gui_helpers import tiny_bundle  # noqa: E402
from gui.teach import TeachTab  # noqa: E402

TIMEOUT_MS = 90_000
SCREENSHOT = os.environ.get("PRUNELAB_TEACH_SCREENSHOT")  # a path: save the tab there (docs/screenshot_teach.png)



def load_tiny(qtbot, win: MainWindow, bundle: ModelBundle | None = None, data: str = "fashion-mnist") -> None:
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        assert win.load(None, data, bundle=bundle or tiny_bundle())
    assert win.session.loaded is not None


def test_teach_tab_explains_a_layer(qtbot, window):
    tab = window.ui.teach
    assert isinstance(tab, TeachTab) and window.ui.tabs.indexOf(tab) >= 0
    assert not tab.explain_button.isEnabled()  # nothing loaded yet
    load_tiny(qtbot, window)
    assert tab.layer_combo.count() == len(window.session.loaded.layers)
    window.ui.method_panel.select_method("l2")
    window.ui.method_panel.ratio_slider.setValue(50)
    # selecting a layer in the Network tab picks it here too
    window.ui.graph_view.layer_table.select_layer("layer2.0.conv2")
    window.ui.graph_view.layer_table.layer_selected.emit("layer2.0.conv2")
    assert tab.layer_combo.currentText() == "layer2.0.conv2"
    window.ui.tabs.setCurrentWidget(tab)
    with qtbot.waitSignal(tab.coupled_layers, timeout=TIMEOUT_MS) as coupled:
        assert tab.explain()
    layer, names = coupled.args
    assert layer == "layer2.0.conv2" and "layer2.0.shortcut.0" in names and "layer2.0.bn2" in names
    qtbot.waitUntil(lambda: not window.busy, timeout=10_000)

    explanation = tab.explanation
    chosen = explanation.chosen
    assert chosen.method == "l2" and chosen.n_cut > 0
    # Why: the text says what the score measures, in the registry's words; hover names rank, score, tied layers
    words = tab.why_view.text.text()
    assert "the L2 norm of all weights tied to a channel" in words
    assert f"{chosen.n_cut} of 16 channels go" in words and "layer2.0.shortcut.0" in words
    first = tab.why_view.hover_text(0)
    assert f"Channel {chosen.order[0]}: rank 1 of {len(chosen.order)}" in first and "removed" in first
    assert "layer2.0.shortcut.0" in first
    assert "kept" in tab.why_view.hover_text(len(chosen.order) - 1)
    assert tab.why_view.hover_text(len(chosen.order)) == ""
    # Criteria: every structured method with data, and a Jaccard matrix with ones on the diagonal
    names = tuple(m.name for m in all_methods(STRUCTURED))
    assert explanation.criteria.methods == names
    table = tab.criteria_view.jaccard_table
    assert table.rowCount() == table.columnCount() == len(names)
    assert all(table.item(i, i).text() == "1.00" for i in range(len(names)))
    # whole column names, written upright, so the columns can stay as narrow as a cell
    header = table.horizontalHeader()
    widest = max(header.fontMetrics().horizontalAdvance(name) for name in names)
    assert header.sizeHint().height() >= widest > header.minimumSectionSize()
    assert all(table.horizontalHeaderItem(i).toolTip() == get_method(name).title for i, name in enumerate(names))
    assert "Most alike" in tab.criteria_view.text.text()
    # Dependency group: a row per coupled layer with its reason
    rows = {tab.group_view.table.item(r, 0).text(): tab.group_view.table.item(r, 2).text()
            for r in range(tab.group_view.table.rowCount())}
    assert "residual add" in rows["layer2.0.shortcut.0"] and "BatchNorm" in rows["layer2.0.bn2"]

    # Feature maps: a second job, the removed channels marked as in the Why view at the same ratio
    tab.maps_view.index_spin.setValue(2)
    window.ui.tabs.setCurrentIndex(0)
    tab.views.setCurrentWidget(tab.maps_view)
    qtbot.wait(100)
    assert not window.busy  # Feature maps chosen but the Teach tab not on screen: nothing starts
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        window.ui.tabs.setCurrentWidget(tab)  # on screen: they fill in by themselves, like the other views
    qtbot.wait(200)
    assert not window.busy  # once: its own end does not start it again
    result = tab.maps_view.result
    assert result is not None and result.index == 2
    assert result.maps.maps.shape[0] == 16
    assert np.array_equal(result.cut, chosen.cut)
    assert len(result.original) == len(result.pruned) == 5
    assert "Pruned, before any recovery" in tab.maps_view.predictions_label.text()
    if SCREENSHOT:
        window.resize(1500, 950)
        tab.views.setCurrentWidget(tab.why_view)
        qtbot.wait(200)
        Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
        assert tab.grab().save(SCREENSHOT)


def test_unstructured_method_says_why_there_are_no_channel_scores(qtbot, window):
    load_tiny(qtbot, window)
    window.ui.method_panel.select_method("magnitude-global")
    tab = window.ui.teach
    tab.select_layer("layer1.0.conv1")
    with qtbot.waitSignal(tab.coupled_layers, timeout=TIMEOUT_MS):
        assert tab.explain()
    qtbot.waitUntil(lambda: not window.busy, timeout=10_000)
    assert tab.explanation.chosen is None
    assert "no channel scores" in tab.why_view.text.text()
    assert tab.criteria_view.jaccard_table.rowCount() == len(all_methods(STRUCTURED))


def test_explain_refuses_while_another_job_runs(qtbot, window):
    load_tiny(qtbot, window)
    tab = window.ui.teach
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        assert tab.explain()
        assert not tab.explain()  # the window runs one job at a time
        assert "Wait" in tab.status_label.text()


def test_why_and_group_fill_before_the_other_criteria_are_scored(qtbot, window, monkeypatch):
    """The chosen method's scores fill Why and Dependency group while the job still scores the other criteria;
    the status line names the criterion being scored, and the comparison fills in as they arrive."""
    import time

    from engine.explain import CriteriaSoFar
    from engine.explain import scores as explain_scores
    from gui.teach.jobs import ExplainJob

    load_tiny(qtbot, window)
    window.ui.method_panel.select_method("l1")
    tab = window.ui.teach
    tab.select_layer("layer2.0.conv2")
    seen: list[tuple[bool, int, str, dict]] = []  # per CriteriaSoFar: Why filled, group rows, status, graph marks
    drawn: list[tuple[int, bool]] = []  # per comparison drawn: how many criteria, job still running
    original_event, original_draw, original_score = (ExplainJob.on_event, tab.criteria_view.show_criteria,
                                                     explain_scores.score_layer)

    def on_event(job, event):
        original_event(job, event)
        if isinstance(event, CriteriaSoFar):
            seen.append((tab.why_view.scores is not None, tab.group_view.table.rowCount(), tab.status_label.text(),
                         window.ui.graph_view.highlighted()))

    def show_criteria(criteria):
        drawn.append((len(criteria.methods), window.busy))
        original_draw(criteria)

    def slow_calibration(session, layer, method, data, apply=False):
        if method.calibration is not None:  # a tiny model calibrates faster than a redraw is due
            time.sleep(0.5)
        return (yield from original_score(session, layer, method, data, apply))

    monkeypatch.setattr(ExplainJob, "on_event", on_event)
    monkeypatch.setattr(tab.criteria_view, "show_criteria", show_criteria)
    monkeypatch.setattr(explain_scores, "score_layer", slow_calibration)
    with qtbot.waitSignal(tab.coupled_layers, timeout=TIMEOUT_MS):
        assert tab.explain()
    qtbot.waitUntil(lambda: not window.busy, timeout=10_000)
    assert seen and seen[0][0] and seen[0][1] > 0  # Why and the group filled before the second criterion's event
    marks = seen[0][3]  # and the Network tab marks the group already
    assert marks.get("layer2.0.conv2") == "selected" and marks.get("layer2.0.shortcut.0") == "coupled"
    assert tab.why_view.scores is tab.explanation.chosen and tab.explanation.chosen.method == "l1"
    assert any("Scoring taylor (calibration" in status for _, _, status, _ in seen)
    total = len(all_methods(STRUCTURED))
    assert any(busy and 1 < n < total for n, busy in drawn)  # a partial comparison while the job ran
    assert drawn[-1][0] == total
    assert tab.criteria_view.jaccard_table.rowCount() == total
    assert "Scoring" not in tab.status_label.text()
