"""The "where the time goes" chart: the costliest layers by measured time, before and after pruning."""
from __future__ import annotations

import pytest

from test_gui import loaded  # noqa: F401 - the fixture: the window with the tiny model loaded

from engine.profile import LayerTime, Profile


def profile(times: dict[str, float], other: float) -> Profile:
    total = sum(times.values()) + other
    layers = tuple(LayerTime(n, "Conv2d", 8, ms, ms, ms, ms / total) for n, ms in times.items())
    return Profile("torch", "cpu", 2, 64, (3, 32, 32), total, total, total, layers, other, other / total)


def test_rows_rank_by_measured_time_and_group_the_rest():
    from gui.time_chart import OTHER, chart_rows

    before = profile({"a": 1.0, "b": 5.0, "c": 3.0, "d": 0.5}, other=2.0)
    after = profile({"a": 0.5, "b": 2.0, "c": 1.0, "d": 0.25}, other=1.5)
    rows = chart_rows(before, after, most=2)
    assert [r[0] for r in rows] == ["b", "c", OTHER]
    assert rows[0][1:] == (5.0, 2.0)
    assert rows[-1] == (OTHER, pytest.approx(2.0 + 1.0 + 0.5), pytest.approx(1.5 + 0.5 + 0.25))
    assert chart_rows(before)[0][2] is None


def test_the_chart_draws_before_and_after(qtbot):
    from gui.time_chart import TimeChart

    chart = TimeChart()
    qtbot.addWidget(chart)
    assert chart.rows == [] and "measure it" in chart.title.text()
    chart.show_profiles(profile({"a": 1.0, "b": 5.0}, 2.0))
    assert len(chart.plot.getPlotItem().items) == 1 and "original 8.00 ms" in chart.title.text()
    chart.show_profiles(profile({"a": 1.0, "b": 5.0}, 2.0), profile({"a": 0.4, "b": 2.0}, 1.0))
    assert len(chart.plot.getPlotItem().items) == 2 and "pruned 3.40 ms" in chart.title.text()
    assert [r[0] for r in chart.rows] == ["b", "a", "everything else"]


def test_the_profile_job_times_the_original_and_the_selected_run(qtbot, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from shared_fixtures import tiny_resnet
    from engine.events import CancelToken, result_of
    from engine.models import ModelBundle
    from gui.time_chart import ProfileJob, TimeChart

    monkeypatch.setenv("PRUNELAB_CACHE_DIR", str(tmp_path))
    original = ModelBundle(tiny_resnet(), "tiny", "demo:resnet", (1, 12, 12), 10)
    pruned = ModelBundle(tiny_resnet(), "tiny", "demo:resnet", (1, 12, 12), 10)
    record = SimpleNamespace(pruned=pruned, config=SimpleNamespace(batch_size=2))
    session = SimpleNamespace(loaded=SimpleNamespace(bundle=original), selected_record=lambda: record)
    started = []
    commands = SimpleNamespace(session=session, start_job=started.append)
    chart = TimeChart()
    qtbot.addWidget(chart)
    chart.attach(commands)
    chart.measure.click()
    job = started[0]
    assert isinstance(job, ProfileJob) and job.batch == 2 and job.runtime == "torch"
    seen = []
    chart.profiled.connect(lambda b, a: seen.append((b, a)))
    job.on_success(result_of(job.work(CancelToken())))
    before, after = seen[0]
    assert before.batch == 2 and after is not None and [t.name for t in after.layers] == [t.name for t in before.layers]
    assert len(chart.plot.getPlotItem().items) == 2


def test_the_layer_table_shows_each_layers_time(qtbot):
    from engine.layers import LayerInfo
    from gui.layer_table import LayerTable

    table = LayerTable()
    qtbot.addWidget(table)
    table.set_layers([LayerInfo("a", "Conv2d", (8, 4, 4), 10, 10, 1, 8, 0),
                      LayerInfo("b", "Conv2d", (8, 4, 4), 10, 10, 8, 8, 1),
                      LayerInfo("c", "Linear", (10,), 10, 10, 8, 10, -1)], "c")
    table.show_times(profile({"a": 1.0, "b": 5.0}, 2.0), profile({"a": 0.5, "b": 2.0}, 1.0))
    texts = [table.item(r, table.COL_TIME).text() for r in range(3)]
    assert texts == ["1.00 ms (12%) → 0.50", "5.00 ms (62%) → 2.00", ""]
    assert table.horizontalHeaderItem(table.COL_TIME).text() == "Time"


def test_the_speedup_tooltip_names_onnxruntime():
    from types import SimpleNamespace

    from engine.metrics import Metrics
    from gui.speed import speedup_tip

    ort = {"batch": 8, "median": 1.8, "low": 1.6, "high": 2.0, "coverage": 0.96, "rounds": 9, "threads": 2,
           "noisy": False, "note": ""}
    done = SimpleNamespace(before=Metrics(), after=Metrics(), paired=None, onnxruntime=ort)
    assert "onnxruntime: latency 1.80x lower (95 % interval 1.60–2.00" in speedup_tip(done, 8)


def test_measure_in_the_window_fills_the_chart_and_the_time_column(loaded, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNELAB_CACHE_DIR", str(tmp_path / "cache"))
    view = loaded.ui.graph_view
    with qtbot.waitSignal(loaded.job_stopped, timeout=120_000):
        view.time_chart.measure.click()
    table = view.layer_table
    times = [table.item(r, table.COL_TIME).text() for r in range(table.rowCount())]
    assert all(t.endswith("%)") for t in times), times
    assert view.time_chart.before is not None and view.time_chart.plot.isVisible() is not None
