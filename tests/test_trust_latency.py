"""Latency figures that are compared are measured together: identical architectures share one figure, a plan
ends with one comparison round whose figures replace the per-run ones (store, report, ranking), an interrupted
round leaves the per-run figures labelled, and the report, the store and the GUI show one speed-up."""
from __future__ import annotations

import re

import pytest
import torch

from engine.errors import Cancelled
from engine.events import CancelToken, drain
from engine.experiments import PlanDone, ResultStore, apply_final_round, load_plan, run_plan, same_arch_text
from engine.models import DemoResNet, save_model
from engine.timing import ComparisonRound, architecture_signature, iter_comparison_round

PLAN = """
[plan]
name = "lat"
save_models = false
[model]
source = "{model}"
[sweep]
methods = {methods}
ratios = [0.5]
[prune]
eval_limit = 64
measure_speed = true
latency_repeats = 3
batch_size = 8
threads = 1
round_to = 4
bn_batches = 1
"""


def plan_for(tmp_path, bundle, methods=("l1", "l2")):
    model = save_model(bundle, tmp_path / "tiny.pt")
    path = tmp_path / "plan.toml"
    path.write_text(PLAN.format(model=model, methods=list(methods)).replace("'", '"'))
    return load_plan(path)


def test_signature_follows_layer_shapes_not_weights():
    a, b = DemoResNet(widths=(8, 16, 32)), DemoResNet(widths=(8, 16, 32))
    with torch.no_grad():
        next(b.parameters()).mul_(3.0)
    assert architecture_signature(a) == architecture_signature(b)
    assert architecture_signature(a) != architecture_signature(DemoResNet(widths=(8, 16, 24)))


def test_comparison_round_times_every_model_with_intervals():
    fast, slow = torch.nn.Linear(8, 8), torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(40)])
    done = drain(iter_comparison_round([("original", slow), ("pruned", fast)], (8,), 4, rounds=6,
                                       runs_per_round=2, round_seconds=0.0, threads=1))
    assert isinstance(done, ComparisonRound) and done.rounds == 6 and len(done.figures) == 2
    ref, f = done.figures
    assert ref.speedup == 1.0 and ref.low_ms <= ref.median_ms <= ref.high_ms
    assert f.speedup_low <= f.speedup <= f.speedup_high and f.speedup > 1.0
    assert done.paired_json(1)["source"] == "final round"


def test_plan_shares_figures_and_final_round_replaces_them(tmp_path, tiny, fashion):
    """l1 and l2 at 0.5 with layer scope give the same layer shapes: one figure, 'same architecture as #1';
    the final round's figures are stored with the plan and are what the ranking and the report show."""
    plan = plan_for(tmp_path, tiny)
    store = ResultStore(tmp_path / "s.sqlite")
    events = list(run_plan(plan, store, CancelToken(), bundle=tiny, data=fashion))
    done = events[-1]
    assert isinstance(done, PlanDone)
    first, second = (store.get(k) for k in plan_keys(store))
    assert first.extra["arch"] == second.extra["arch"]
    assert second.extra["same_arch_as"]["index"] == 1 and same_arch_text(second).startswith("same architecture as #1")
    assert second.metrics.latency_ms == first.metrics.latency_ms  # one figure, not two noisy ones
    assert second.metrics.peak_memory_bytes == first.metrics.peak_memory_bytes > 0  # memory is measured too
    assert second.extra["latency_speedup"] == first.extra["latency_speedup"]
    assert "own_latency" in second.extra  # its own measurement is kept, not shown
    final = store.plans()[-1]["final_round"]
    assert list(final["archs"]) == [first.extra["arch"]] and final["archs"][first.extra["arch"]]["keys"] == \
        [first.key, second.key]
    fig = final["archs"][first.extra["arch"]]
    for r in done.results:  # the ranking's figures are the final round's
        assert r.extra["latency_source"] == "final round"
        assert r.metrics.latency() == fig["latency"]["median"]
        assert r.latency_speedup(done.baseline) == fig["speedup"]["median"]
    assert done.baseline.metrics.latency() == final["original"]["latency"]["median"]
    assert "final comparison round" in done.latency_source
    from engine.report import write_report

    html, _ = write_report(ResultStore(store.path, read_only=True), tmp_path / "r.html")
    text = html.read_text()
    assert "final comparison round" in text
    assert re.search(r"\(95 % interval [0-9.]+–[0-9.]+ ms\)", text)  # the latency's spread drawn in the plot
    assert f"{fig['speedup']['median']:.2f} [{fig['speedup']['low']:.2f}–{fig['speedup']['high']:.2f}]" in text


def plan_keys(store):
    return store.plans()[-1]["keys"]


def test_interrupted_final_round_leaves_per_run_figures_labelled(tmp_path, tiny, fashion):
    store = ResultStore(tmp_path / "s.sqlite")
    list(run_plan(plan_for(tmp_path, tiny, methods=("l1",)), store, CancelToken(), bundle=tiny,
                  data=fashion))
    assert "final_round" in store.plans()[-1]  # a complete round of l1 alone is stored ...
    plan = plan_for(tmp_path, tiny)  # ... the same plan with l2 added: that round no longer covers it
    cancel = CancelToken()
    with pytest.raises(Cancelled):
        for ev in run_plan(plan, store, cancel, bundle=tiny, data=fashion):
            if getattr(ev, "phase", "") == "final-round" and ev.done >= 1:
                cancel.cancel()  # the round is cut short: nothing of it is stored
    record = store.plans()[-1]
    assert "final_round" not in record and len(store.results(record["keys"])) == 2
    from engine.report import write_report

    html, _ = write_report(ResultStore(store.path, read_only=True), tmp_path / "r.html")
    assert "per-run figures" in html.read_text() and "interrupted" in html.read_text()
    results, _ = apply_final_round(store.results(record["keys"]), None, record.get("final_round"))
    assert all("latency_source" not in r.extra for r in results)


def test_a_rerun_without_models_keeps_the_round_of_the_same_runs(tmp_path, tiny, fashion):
    plan = plan_for(tmp_path, tiny, methods=("l2",))  # save_models = false: nothing to rebuild from
    store = ResultStore(tmp_path / "s.sqlite")
    list(run_plan(plan, store, CancelToken(), bundle=tiny, data=fashion))
    first = store.plans()[-1]["final_round"]
    again = list(run_plan(plan, store, CancelToken(), bundle=tiny, data=fashion))[-1]
    assert store.plans()[-1]["final_round"] == first and "final comparison round" in again.latency_source
    assert again.results[0].extra["latency_source"] == "final round"


def test_report_speedup_column_is_the_stored_figure_and_the_recommendation_s(tmp_path, tiny, fashion):
    """The report's speed-up column once divided the separately timed medians (5.33 beside 2.97× in the
    recommendation); every place now reads RunResult.latency_speedup."""
    plan = plan_for(tmp_path, tiny, methods=("l2",))
    store = ResultStore(tmp_path / "s.sqlite")
    done = list(run_plan(plan, store, CancelToken(), bundle=tiny, data=fashion))[-1]
    key = plan_keys(store)[0]
    # make the separately timed medians disagree with the paired figure, as on a busy machine
    stored = store.get(key)
    stored.metrics.latency_ms = {k: dict(v, median=v["median"] / 7.0) for k, v in stored.metrics.latency_ms.items()}
    store.put(stored)
    record = store.plans()[-1]
    del record["final_round"]  # compare the per-run figure itself (the round would replace both)
    store.put_plan(record.pop("name"), {k: v for k, v in record.items() if k != "updated"})
    from engine.report import write_report

    html, _ = write_report(ResultStore(store.path, read_only=True), tmp_path / "r.html")
    text = html.read_text()
    speed = store.get(key).latency_speedup(done.baseline)
    column = speedup_column(text)  # the column itself: the wrong figure may equal another cell's by chance
    assert f"{speed:.2f}" in column
    assert f"{speed:.1f}× faster" in text  # the recommendation says the same figure
    wrong = done.baseline.metrics.latency() / stored.metrics.latency()
    assert f"{wrong:.2f}" not in column


def speedup_column(html: str) -> list[str]:
    """The figures of the report's results table's speed-up column (without their intervals)."""
    for table in re.findall(r"<table[^>]*>(.*?)</table>", html, re.S):
        rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)
        heads = [re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"<th[^>]*>(.*?)</th>", rows[0], re.S)] \
            if rows else []
        if "speed-up" in heads:
            at = heads.index("speed-up")
            cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows[1:]]
            return [c[at].strip().split(" ")[0] for c in cells if len(c) > at]
    raise AssertionError("the report has no speed-up column")


def test_gui_results_table_shows_the_store_s_speedup(request, tmp_path, tiny, fashion):
    pytest.importorskip("pytestqt")
    qtbot = request.getfixturevalue("qtbot")
    from gui.experiment_tab import ExperimentTab

    plan = plan_for(tmp_path, tiny, methods=("l2",))
    store = ResultStore(tmp_path / "s.sqlite")
    tab = ExperimentTab()
    qtbot.addWidget(tab)
    tab.set_model_source(plan.model, plan.data)
    for ev in run_plan(plan, store, CancelToken(), bundle=tiny, data=fashion):
        tab.on_event(ev)
    record = store.plans()[-1]
    (arch,) = record["final_round"]["archs"]
    speed = record["final_round"]["archs"][arch]["speedup"]["median"]  # the stored field
    texts = [tab.table.item(r, c).text() for r in range(tab.table.rowCount()) for c in range(tab.table.columnCount())
             if tab.table.item(r, c) is not None]
    assert any(t.startswith(f"{speed:.2f}") for t in texts), texts
    assert len(tab.pareto_view.latency_bars.opts["x"]) == 2  # the run's and the original's latency intervals
    tab.load_store(store.path)  # read back from the store: the same figure
    texts = [tab.table.item(r, c).text() for r in range(tab.table.rowCount()) for c in range(tab.table.columnCount())
             if tab.table.item(r, c) is not None]
    assert any(t.startswith(f"{speed:.2f}") for t in texts), texts
    from engine.report import write_report

    html = write_report(ResultStore(store.path, read_only=True), tmp_path / "r.html")[0].read_text()
    cells = re.findall(r"<td[^>]*>\s*([0-9.]+)(?: \[[0-9.]+–[0-9.]+\])?\s*</td>", html)
    assert f"{speed:.2f}" in cells and f"{speed:.1f}× faster" in html  # the report's column and its recommendation


# ----------------------------------------------------------------------------- the GUI session


def session_run(run_id: int, after_ms: float, ratio: float, arch: str, original_arch: str = "orig"):
    from engine.config import PruneConfig
    from engine.metrics import Metrics
    from engine.pruning import RunDone
    from gui.results import RunRecord

    def lat(ms):
        return {"64": {"median": ms, "p5": ms * 0.9, "p95": ms * 1.2, "runs": 30, "threads": 2}}

    pairs = {"batch": 64, "median": ratio, "low": ratio * 0.9, "high": ratio * 1.1, "coverage": 0.96, "rounds": 9,
             "threads": 2, "noisy": False, "note": "", "device": "cpu"}
    before = Metrics(top1=0.95, macs=37_500_000, latency_ms=lat(150.0))
    after = Metrics(top1=0.9, macs=9_500_000, latency_ms=lat(after_ms))
    run = RunRecord(run_id, f"#{run_id}", "#1f77b4", PruneConfig())
    run.done = RunDone("l2", {}, before, after, (), {}, 1.0, 0.5, (), pairs, arch, original_arch)
    run.status = "done"
    return run


def test_gui_session_runs_of_one_architecture_share_one_figure(request, tmp_path):
    pytest.importorskip("pytestqt")
    qtbot = request.getfixturevalue("qtbot")
    from gui.results import ResultsView

    view = ResultsView()
    qtbot.addWidget(view)
    view.set_context(("demo:resnet", "fashion-mnist"), "demo")
    view.add_run(session_run(1, 26.0, 5.8, "a"))
    view.add_run(session_run(2, 50.6, 3.0, "a"))  # same shapes, timed while the machine was busy
    view.add_run(session_run(3, 210.0, 0.7, "orig"))  # unstructured: the original's shapes
    texts = {}
    for row in range(3):
        for col in range(view.model.columnCount()):
            texts[(row, view.model.horizontalHeaderItem(col).text().split(",")[0])] = view.model.item(row, col).text()
    assert texts[(1, "Latency")].startswith("26.00 ms") and "same architecture as #1" in texts[(1, "Latency")]
    assert texts[(1, "Speed-up")].startswith("5.80×") and "same architecture as #1" in texts[(1, "Speed-up")]
    assert texts[(2, "Speed-up")].startswith("1.00×") and "the original" in texts[(2, "Speed-up")]
    pos = view.positions(view.shown_runs(), True)
    assert pos[1] == pos[2]  # one point for one architecture
    assert pos[1][0] == pytest.approx(150.0 / 5.8) and pos[1][1] < pos[1][0] < pos[1][2]  # with its interval
    assert pos[3] == (150.0, 150.0, 150.0)
    assert len(view.error_bars.opts["x"]) == 3
    import csv

    rows = list(csv.DictReader(view.write_csv(tmp_path / "r.csv").open()))  # the CSV says what the table says
    assert [r["speedup_latency"] for r in rows[1:]] == ["5.8", "5.8", "1.0"]
    assert rows[2]["latency_ms_batch"] == "26.0" and rows[2]["same_arch_as"] == "same architecture as #1"


def test_final_round_rebuilds_saved_models_when_the_sweep_did_not_run_them(tmp_path, tiny, fashion):
    """A re-run (or the Ray driver, whose runs happened elsewhere) has no pruned model in memory: the round
    rebuilds each architecture from its saved weights.safetensors, runs no code from the files."""
    plan = plan_for(tmp_path, tiny, methods=("l2",))
    plan.save_models = True
    store = ResultStore(tmp_path / "s.sqlite")
    list(run_plan(plan, store, CancelToken(), bundle=tiny, data=fashion))
    again = list(run_plan(plan, store, CancelToken(), bundle=tiny, data=fashion))[-1]
    assert again.ran == 0 and again.skipped == 1
    final = store.plans()[-1]["final_round"]
    assert len(final["archs"]) == 1 and not final["left_out"]
    assert "final comparison round" in again.latency_source and "per-run" not in again.latency_source
