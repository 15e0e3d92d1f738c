"""The Results tab's Latency and Speed-up columns are always at the same batch size and say which, and which
estimate (paired or separate) a speed-up is: a tester saw 0.44 ms at batch 1 beside 7.44× from batch 64."""
from __future__ import annotations

from tests.gui_helpers import qt_environment

qt_environment()  # before the first Qt import

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from engine.config import PruneConfig  # noqa: E402
from engine.metrics import Metrics  # noqa: E402
from engine.pruning import RunDone  # noqa: E402


def lat(ms_by_batch: dict[int, float]) -> dict:
    return {str(b): {"median": ms, "p5": ms * 0.9, "p95": ms * 1.2, "runs": 30, "threads": 2}
            for b, ms in ms_by_batch.items()}


def paired(per_batch: dict[int, float]) -> dict:
    """PairedSpeedup.to_json()'s shape: the headline (largest batch) on top, each batch under per_batch."""
    rows = {str(b): {"batch": b, "median": r, "low": r * 0.97, "high": r * 1.02, "coverage": 0.96, "rounds": 9}
            for b, r in per_batch.items()}
    top = rows[str(max(per_batch))]
    return {**top, "threads": 2, "noisy": False, "note": "", "device": "cpu", "per_batch": rows}


def record(run_id: int, before: dict, after: dict, pairs: dict | None):
    from gui.results import RunRecord

    b = Metrics(top1=0.949, params=308_000, nonzero_params=308_000, macs=37_500_000, latency_ms=lat(before))
    a = Metrics(top1=0.853, params=19_800, nonzero_params=19_800, macs=2_460_000, latency_ms=lat(after))
    run = RunRecord(run_id, f"#{run_id}", "#1f77b4", PruneConfig())
    run.done = RunDone("l2", {}, b, a, (), {}, 1.0, 0.5, (), pairs)
    run.status = "done"
    return run


@pytest.fixture
def view(qtbot):
    from gui.results import ResultsView

    widget = ResultsView()
    qtbot.addWidget(widget)
    widget.set_context(("demo:resnet", "fashion-mnist"), "demo on Fashion-MNIST")
    return widget


def cells(view, row: int = 0) -> dict[str, tuple[str, str, float]]:
    """Header → (text, tooltip, sort value) of one row."""
    out = {}
    for col in range(view.model.columnCount()):
        header = view.model.horizontalHeaderItem(col).text()
        item = view.model.item(row, col)
        out[header] = (item.text(), item.toolTip(), item.data(view_sort_role()))
    return out


def view_sort_role():
    from gui.results import SORT_ROLE

    return SORT_ROLE


def test_latency_and_speedup_are_at_the_same_named_batch(view):
    view.add_run(record(1, {1: 1.66, 64: 60.0}, {1: 0.44, 64: 8.0}, paired({1: 3.70, 64: 7.44})))
    row = cells(view)
    assert "Latency, batch 64" in row and "Speed-up, batch 64" in row  # the run's batch, named
    assert row["Latency, batch 64"][0] == "8.00 ms"
    assert row["Speed-up, batch 64"][0].startswith("7.44×") and row["Speed-up, batch 64"][2] == pytest.approx(7.44)
    assert "Batch 64, paired" in row["Speed-up, batch 64"][1].splitlines()[0]  # the shown figure first
    assert "Batch 1, paired" in row["Speed-up, batch 64"][1]  # the other batch is in the tooltip
    assert "batch 64" in view.scatter_plot.getAxis("bottom").labelText

    view.batch_combo.setCurrentIndex(view.batch_combo.findData(1))
    row = cells(view)
    assert row["Latency, batch 1"][0] == "0.44 ms"
    assert row["Speed-up, batch 1"][0].startswith("3.70×")  # not 7.44×, the batch-64 figure
    assert "batch 1" in view.scatter_plot.getAxis("bottom").labelText
    # the scatter compares through the paired rounds: the original's batch-1 latency over the batch-1 pair
    assert view.scatter.data["x"][0] == pytest.approx(1.66 / 3.70)


def test_without_a_paired_figure_at_that_batch_the_speedup_says_separate(view):
    pairs = paired({64: 7.44})
    pairs["per_batch"].pop("1", None)
    view.add_run(record(1, {1: 1.66, 64: 60.0}, {1: 0.44, 64: 8.0}, pairs))
    view.batch_combo.setCurrentIndex(view.batch_combo.findData(1))
    text, tip, value = cells(view)["Speed-up, batch 1"]
    assert text.startswith("3.77× separate") and value == pytest.approx(1.66 / 0.44)
    assert "timed separately" in tip


def test_runs_at_different_batch_sizes_name_their_own(view):
    view.add_run(record(1, {1: 1.0, 64: 60.0}, {1: 0.5, 64: 8.0}, paired({1: 2.0, 64: 7.5})))
    view.add_run(record(2, {1: 1.0, 32: 30.0}, {1: 0.5, 32: 6.0}, paired({1: 2.0, 32: 5.0})))
    first, second = cells(view, 0), cells(view, 1)
    header = "Speed-up, each run's batch"
    assert header in first and first[header][0].endswith("(batch 64)") and second[header][0].endswith("(batch 32)")
    assert second["Latency, each run's batch"][0] == "6.00 ms (batch 32)"


def test_csv_names_the_batch_of_each_figure(view, tmp_path):
    import csv

    view.add_run(record(1, {1: 1.66, 64: 60.0}, {1: 0.44, 64: 8.0}, paired({1: 3.70, 64: 7.44})))
    rows = list(csv.DictReader(view.write_csv(tmp_path / "r.csv").open()))
    run = rows[1]
    assert run["speedup_latency"] == "7.44" and run["speedup_latency_batch"] == "64"
    assert run["speedup_latency_estimate"] == "paired" and float(run["latency_ms_batch"]) == 8.0


def test_experiment_comparison_headers_name_the_batch(qtbot):
    from engine.experiments import RunResult
    from gui.comparison_table import LATENCY_COL, SPEEDUP_COL, ComparisonTable

    table = ComparisonTable()
    qtbot.addWidget(table)
    m = Metrics(top1=0.9, macs=1000, latency_ms=lat({1: 1.0, 64: 30.0}))
    table.show_ranking(None, RunResult("base", "baseline", "original", "none", None, None, False, {}, m))
    assert table.horizontalHeaderItem(LATENCY_COL).text() == "latency ms, batch 64"
    assert table.horizontalHeaderItem(SPEEDUP_COL).text() == "speed-up, batch 64"
    assert table.item(0, LATENCY_COL).text() == "30.000"
