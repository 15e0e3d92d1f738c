"""Runs belong to the model and dataset they were made on: after another model is loaded, Live plots and Results
show only its runs (the others are kept, said so in one line, and come back when their model is loaded again),
and "Continue from this run" is offered only for runs of the loaded model."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from gui_helpers import TIMEOUT_MS, load_tiny, quick_tiny_window, tiny_bundle  # noqa: E402


window = pytest.fixture(quick_tiny_window, name="window")


def load_other(qtbot, win, source: str) -> None:
    """The tiny model again under another source name: to the window, another model."""
    bundle = tiny_bundle()
    bundle.source = source
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        assert win.load(None, "fashion-mnist", bundle=bundle)


def test_runs_of_another_model_leave_plots_and_results_and_come_back(window, qtbot):
    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        assert window.start_run()
    first = window.session.current_run
    assert window.session.runs[first].status == "done"
    results, plots = window.ui.results, window.ui.plots
    assert results.row_count() == 1 and results.baseline is not None
    assert len(plots.legend_labels()) == 1

    plots.flush()  # drawn and fitted now, not at the next timer tick
    plots.plots["params"].getViewBox().updateAutoRange()
    params_range = plots.plots["params"].viewRange()[1]
    load_other(qtbot, window, "test:another-model")
    assert results.row_count() == 0 and results.model.rowCount() == 0
    low, high = plots.plots["params"].viewRange()[1]  # no scales left from the other model's runs
    span = params_range[1] - params_range[0]
    assert abs(low - params_range[0]) > 0.05 * span or abs(high - params_range[1]) > 0.05 * span
    assert results.baseline is None and not results.baseline_point.data.size  # no star of the other model
    assert plots.legend_labels() == []
    assert not any(item.isVisible() for item in plots.runs[first].items.values())
    assert not results._can_continue(first)  # a run of another model is not continued from here
    assert results.kept_note.isVisibleTo(results) and "1 run of" in results.kept_note.text()
    assert plots.kept_note.isVisibleTo(plots) and "load that model" in plots.kept_note.text()

    with qtbot.waitSignal(window.job_stopped, timeout=TIMEOUT_MS):
        assert window.start_run()
    second = window.session.current_run
    assert results.row_count() == 1 and results.selected_run() == second
    assert [label.split()[0] for label in plots.legend_labels()] == [f"#{second}"]
    plots.flush()  # no latency timed: the note sits mid-plot on a sane range, not in a corner of ±1e-146
    assert plots.latency_note.isVisible() and plots.plots["latency"].viewRange()[1][1] > 0.5

    load_tiny(qtbot, window, window.session.raw_data_cache["fashion-mnist"])  # the first model again
    assert results.row_count() == 1 and results.model.item(0, 0).text() == f"#{first}"
    assert [label.split()[0] for label in plots.legend_labels()] == [f"#{first}"]
    assert all(item.isVisible() for key, item in plots.runs[first].items.items())
    assert not any(item.isVisible() for item in plots.runs[second].items.values())
    # its run is selected again, so Weights and the layer table show it (they were blank until a click)
    assert window.session.selected_run == first and results.selected_run() == first
    assert window.ui.histograms.step_combo.count() > 0
    assert results._can_continue(first) and results.continue_button.isEnabled()
    assert "another-model" in results.kept_note.text() or "1 run of" in results.kept_note.text()
