"""Experiment plans: TOML parsing, the result store, resume after cancel and after SIGKILL, criteria,
the Pareto front, the ranking and its recommendation, memory across runs, and the Experiment tab."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shared_fixtures import ROOT
from cli.main import main as cli_main
from engine.errors import Cancelled, UserError
from engine.events import CancelToken
from engine.experiments import (DEFAULT_CRITERIA, Criterion, PlanDone, PlanProgress, PlanRunDone, ResultStore,
                                RunResult, criteria_from_toml, load_plan, metric_value, pareto_front, parse_plan,
                                rank, run_plan)
from engine.metrics import Metrics
from engine.models import save_model

TINY_PLAN = """
[plan]
name = "tiny"
save_models = false
[model]
source = "{model}"
[sweep]
methods = {methods}
ratios = {ratios}
[prune]
eval_limit = 128
measure_speed = false
round_to = 4
bn_batches = 2
"""


@pytest.fixture()
def tiny_file(tiny, tmp_path) -> Path:
    return save_model(tiny, tmp_path / "tiny.pt")


def write_plan(tmp_path: Path, model: Path, methods=("l1", "l2"), ratios=(0.3, 0.5), extra: str = "") -> Path:
    text = TINY_PLAN.format(model=model, methods=list(methods), ratios=list(ratios)).replace("'", '"') + extra
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- plan files


def test_example_plan_parses():
    plan = load_plan(ROOT / "examples" / "plan.toml")
    configs = plan.configs()
    assert len(configs) == len(plan.methods) * len(plan.ratios) * len(plan.recoveries)
    assert all(c.bn_recalibrate for c, _ in configs)
    assert {c.name for c in plan.criteria} >= {"accuracy", "latency", "size"}


def test_plan_builds_every_combination(tmp_path, tiny_file):
    plan = load_plan(write_plan(tmp_path, tiny_file, extra="""
[[recovery]]
name = "bn"
bn_recalibrate = true
[[recovery]]
name = "ft"
finetune_batches = 3
"""))
    configs = plan.configs()
    assert len(configs) == 2 * 2 * 2
    assert {(c.method, c.pruning_ratio, r.name) for c, r in configs} == {
        (m, p, r) for m in ("l1", "l2") for p in (0.3, 0.5) for r in ("bn", "ft")}
    assert all(c.eval_limit == 128 and not c.measure_speed for c, _ in configs)
    assert plan.model == str(tiny_file)  # relative paths resolve against the plan's folder


@pytest.mark.parametrize("snippet, names", [
    ("[sweep]\nmethods = ['l2']\nratios = [1.5]", "ratios"),
    ("[sweep]\nmethods = ['nope']\nratios = [0.5]", "nope"),
    ("[sweep]\nmethods = ['l2']\nratios = [0.5]\nspeed = 3", "speed"),
    ("[sweep]\nmethods = ['l2']\nratios = [0.5]\n[prune]\nfinetune_epoch = 1", "finetune_epoch"),
    ("[sweep]\nmethods = ['l2']\nratios = [0.5]\n[criteria.accuracy]\nmax_dorp = 1", "max_dorp"),
    ("[sweep]\nmethods = ['l2']\nratios = [0.5]\n[criteria.speed]\nweight = 1", "metric"),
    ("[sweep]\nmethods = ['l2']\nratios = [0.5]\n[[recovery]]\nbn_recal = true", "bn_recal"),
    ("[sweep]\nmethods = ['l2']", "ratios"),
    ("[sweep]\nmethods = ['l2']\nratios = [0.5]\n[plan]\nseed = 'x'", "seed"),
])
def test_bad_plans_name_the_key(snippet, names):
    with pytest.raises(UserError, match=names):
        parse_plan("[model]\nsource = 'demo:resnet'\n" + snippet)


def test_missing_model_source_and_bad_toml():
    with pytest.raises(UserError, match=r"\[model\] source"):
        parse_plan("[sweep]\nmethods = ['l2']\nratios = [0.5]")
    with pytest.raises(UserError, match="not valid TOML"):
        parse_plan("[sweep\n")


def test_methods_shorthand_expands_the_registry():
    from engine.methods import all_methods

    plan = parse_plan("[model]\nsource = 'demo:resnet'\n[sweep]\nmethods = 'structured'\nratios = [0.5]")
    assert plan.methods == tuple(m.name for m in all_methods("structured"))
    mixed = parse_plan("[model]\nsource = 'demo:resnet'\n[sweep]\nmethods = 'all'\nratios = [0.5]\n"
                       "target_speedups = [2.0]")
    configs = mixed.configs()  # unstructured methods get ratios only: zeroed weights do not cut MACs
    assert len(configs) == len(all_methods()) + len(all_methods("structured"))
    assert all(c.pruning_ratio for c, _ in configs if c.method in [m.name for m in all_methods("unstructured")])


def test_criteria_overrides_keep_the_defaults():
    crit = {c.name: c for c in criteria_from_toml({"accuracy": {"max_drop": 0.5, "weight": 2},
                                                    "latency": {"max_value": 3.0},
                                                    "fast": {"metric": "latency_b1_ms", "weight": 0.1}})}
    assert crit["accuracy"].max_drop == 0.5 and crit["accuracy"].weight == 2
    assert crit["latency"].max_value == 3.0 and crit["latency"].direction == "min"
    assert crit["fast"].unit == "ms" and crit["size"] == next(c for c in DEFAULT_CRITERIA if c.name == "size")
    with pytest.raises(UserError, match="max_drop"):
        Criterion("lat", "latency_ms", max_drop=1.0)


# ----------------------------------------------------------------------------- Pareto front and ranking


def test_pareto_front():
    pts = [(1.0, 90.0), (2.0, 95.0), (1.5, 89.0), (3.0, 95.0), (0.5, 70.0)]
    assert pareto_front(pts, ("min", "max")) == [4, 0, 1]
    assert pareto_front([(1, 1), (1, 1)], ("min", "max")) == [0]
    assert pareto_front([], ("min", "max")) == []


def fake(key: str, top1: float, latency: float, size: int, method: str = "l2", ratio: float = 0.5,
         kind: str = "run") -> RunResult:
    m = Metrics(top1=top1, latency_ms={"64": {"median": latency, "p95": latency}}, size_bytes=size, macs=size,
                params=size, compressed_bytes=size)
    return RunResult(key, kind, f"{method} @ {ratio:g}", method, ratio, None, False, {}, m)


def test_rank_respects_constraints_and_recommends_from_the_table():
    base = fake("b", 0.92, 10.0, 4_000_000, "none", 0.0, "baseline")
    runs = [fake("a", 0.915, 5.0, 2_000_000, "l1", 0.3),  # −0.5 pt, 2× faster
            fake("b2", 0.911, 3.125, 1_000_000, "l2", 0.5),  # −0.9 pt, 3.2× faster: the best feasible
            fake("c", 0.80, 1.0, 500_000, "random", 0.7)]  # fastest but −12 pt: breaks max_drop
    ranking = rank(runs, DEFAULT_CRITERIA, base, model="demo:resnet")
    assert ranking.best.result.key == "b2"
    assert ranking.entries[-1].result.key == "c" and not ranking.entries[-1].feasible
    assert "accuracy drop 12.00 pt > 1 pt" in ranking.entries[-1].violations
    text = ranking.recommendation
    assert "`l2` at 0.5 is best" in text and "3.2× faster" in text and "−0.9 pt" in text
    assert "accuracy drop ≤ 1 pt" in text
    # Stricter constraint: nothing qualifies, and the sentence says so.
    strict = criteria_from_toml({"accuracy": {"max_drop": 0.1}})
    none = rank(runs, strict, base)
    assert none.best is None and "no run meets" in none.recommendation
    # The closest run is the one least far past the limit (−0.5 pt), not the highest score (−12 pt).
    assert none.entries[0].result.key == "a" and "The closest is `l1` at 0.3" in none.recommendation


def test_metric_values_in_display_units():
    r = fake("a", 0.9, 2.5, 3_000_000)
    assert metric_value(r, "top1") == pytest.approx(90.0)
    assert metric_value(r, "latency_ms") == 2.5 and metric_value(r, "size_bytes") == pytest.approx(3.0)
    assert metric_value(r, "peak_memory_bytes") is None  # not measured: ignored, never a violation


# ----------------------------------------------------------------------------- running, storing, resuming


def drain(events):
    return list(events)


def test_run_plan_stores_each_run_and_resumes(tmp_path, tiny_file, tiny, fashion):
    plan = load_plan(write_plan(tmp_path, tiny_file))
    store = ResultStore(tmp_path / "store.sqlite")
    cancel = CancelToken()
    seen = []
    with pytest.raises(Cancelled):
        for ev in run_plan(plan, store, cancel, bundle=tiny, data=fashion):
            if isinstance(ev, PlanRunDone):
                seen.append(ev.result.key)
                assert store.get(ev.result.key) is not None  # stored the moment it finished
                cancel.cancel()
    assert len(seen) == 1 and store.keys() == set(seen)
    events = drain(run_plan(plan, store, CancelToken(), bundle=tiny, data=fashion))
    done = events[-1]
    assert isinstance(done, PlanDone) and done.ran == 3 and done.skipped == 1
    assert sum(isinstance(e, PlanProgress) and e.index > 0 for e in events) == 3
    assert len(store.keys()) == 4 and all(store.count(k) == 1 for k in store.keys())
    assert len(store.results(kind="baseline")) == 1  # evaluated once, reused on resume
    r = store.get(seen[0])
    assert r.versions["torch"] and r.device.startswith("cpu") and r.config["method"] in ("l1", "l2")
    assert r.metrics.confusion is not None and r.steps and r.extra["plan"] == "tiny"
    again = drain(run_plan(plan, store, CancelToken(), bundle=tiny, data=fashion))[-1]
    assert again.ran == 0 and again.skipped == 4
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_memory_stays_flat_over_ten_runs(tmp_path, tiny_file, tiny, fashion):
    plan = load_plan(write_plan(tmp_path, tiny_file, methods=("l1", "l2"),
                                ratios=(0.2, 0.3, 0.4, 0.5, 0.6)))
    rss = [ev.rss_bytes for ev in run_plan(plan, ResultStore(tmp_path / "m.sqlite"), bundle=tiny,
                                           data=fashion) if isinstance(ev, PlanRunDone)]
    assert len(rss) == 10 and rss[1] > 0
    assert rss[9] <= rss[1] * 1.10, f"memory grew from {rss[1] / 2**20:.0f} to {rss[9] / 2**20:.0f} MiB"


def _stored_runs(path: Path) -> list[str]:
    if not path.exists():
        return []
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return [r[0] for r in db.execute("SELECT key FROM runs WHERE kind = 'run'")]
    except sqlite3.OperationalError:
        return []


@pytest.mark.heavy_memory(gib=1.1)
@pytest.mark.slow
def test_sweep_killed_mid_plan_resumes_without_loss_or_duplicates(tmp_path, tiny_file):
    plan_file = write_plan(tmp_path, tiny_file, methods=("l1", "l2", "fpgm"), ratios=(0.2, 0.4, 0.6),
                           extra="[[recovery]]\nname = \"bn\"\nbn_recalibrate = true\n")
    store = tmp_path / "kill.sqlite"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "main.py"), "sweep", str(plan_file), "--store", str(store), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not _stored_runs(store) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _stored_runs(store)
    assert 1 <= len(before) < 9, "the plan must be killed after its first run and before its last"
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    after = _stored_runs(store)
    assert len(after) == 9 and len(set(after)) == 9 and set(before) <= set(after)
    assert f"{9 - len(before)} runs done, {len(before)} already stored" in done.stdout


# ----------------------------------------------------------------------------- command line


def test_sweep_cli_bad_plan_exits_2_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nsource = 'demo:resnet'\n[sweep]\nmethods = ['l2']\nratios = [0.5]\nratio = 2\n")
    assert cli_main(["sweep", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ratio" in err[0] and "valid" in err[0]
    assert cli_main(["sweep", str(tmp_path / "missing.toml")]) == 2
    assert cli_main(["report", "--store", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "r.html")]) == 2


def test_sweep_cli_runs_and_ranks(tmp_path, tiny_file, capsys):
    plan_file = write_plan(tmp_path, tiny_file, methods=("l2",), ratios=(0.5,))
    store = tmp_path / "cli.sqlite"
    assert cli_main(["sweep", str(plan_file), "--store", str(store), "--quiet",
                     "--report", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "1 runs done, 0 already stored" in out and "l2 @ 0.5" in out and "For " in out
    assert (tmp_path / "r.html").exists() and (tmp_path / "r.csv").exists()


# ----------------------------------------------------------------------------- the Experiment tab (GUI)


def test_experiment_tab_builds_plans_and_shows_results(request, tmp_path, tiny, fashion, tiny_file):
    pytest.importorskip("PySide6")
    pytest.importorskip("pytestqt")
    qtbot = request.getfixturevalue("qtbot")
    from gui.experiment_tab import ExperimentTab
    from engine.sensitivity import scan

    tab = ExperimentTab()
    qtbot.addWidget(tab)
    tab.set_model_source(str(tiny_file))
    tab.set_store_path(tmp_path / "gui.sqlite")
    tab.set_methods(["l1", "l2"])
    tab.ratios_edit.setText("0.3, 0.5")
    tab.finetune_spin.setValue(0)
    tab.bn_check.setChecked(False)
    tab.speed_check.setChecked(False)
    tab.eval_spin.setValue(128)
    with qtbot.waitSignal(tab.run_requested, timeout=1000) as blocker:
        tab.run_button.click()
    plan = blocker.args[0]
    assert plan.methods == ("l1", "l2") and plan.ratios == (0.3, 0.5) and plan.model == str(tiny_file)
    assert not tab.run_button.isEnabled() and tab.cancel_button.isEnabled()
    plan.prune.update(round_to=4)
    plan.save_models = False
    for ev in run_plan(plan, ResultStore(tab.store_path()), bundle=tiny, data=fashion):
        tab.on_event(ev)
    assert tab.run_button.isEnabled()
    assert tab.table.rowCount() == 5  # the original + four runs
    assert tab.recommendation_label.text().startswith("For ")
    with qtbot.waitSignal(tab.run_selected, timeout=1000) as chosen:
        tab.select_run(tab.keys()[0])
    assert chosen.args == [tab.keys()[0]]
    # Editing a constraint re-ranks at once (a negative allowed drop cannot be met by any run).
    tab.criteria_table.item(0, 3).setText("-100")
    assert "no run meets" in tab.recommendation_label.text()
    tab.criteria_table.item(0, 3).setText("abc")
    assert "max drop" in tab.criteria_error.text()
    tab.criteria_table.item(0, 3).setText("1")
    html, csv = tab.write_report(tmp_path / "gui.html")
    assert html.exists() and csv.exists()
    tab.show_sensitivity(list(scan(tiny, fashion, ratios=(0.5,), limit=32))[-1])


def test_latency_noise_between_same_shape_runs_does_not_decide_the_ranking():
    """l1 and l2 at one ratio give the same layer shapes; their latencies differ only by noise.
    The more accurate one must rank first even when its timer happened to read 15 % slower."""
    base = fake("base", 0.92, 10.0, 4_000_000, "none", 0.0, "baseline")
    crit = criteria_from_toml({"size": {"weight": 0.0}, "memory": {"weight": 0.0}, "accuracy": {"max_drop": 50.0}})
    runs = [fake("l1", 0.90, 10.5, 1_000_000, "l1"),  # more accurate, slower reading
            fake("l2", 0.89, 9.0, 1_000_000, "l2"),  # same shape, faster reading
            fake("rnd", 0.80, 5.0, 500_000, "random"),
            fake("big", 0.91, 12.0, 3_000_000, "l2", 0.3)]
    ranking = rank(runs, crit, base)
    assert [e.result.key for e in ranking.entries][:2] == ["l1", "l2"]
    assert ranking.entry("l1").values["latency"] == 10.5  # the table still shows what was measured
    # Equal scores: fewer MACs first, whatever the labels say.
    tied = rank([fake("z", 0.9, 5.0, 2_000_000, "a"), fake("y", 0.9, 5.0, 1_000_000, "b")],
                criteria_from_toml({"size": {"weight": 0.0}, "memory": {"weight": 0.0}, "latency": {"weight": 0.0}}))
    assert tied.entries[0].result.key == "y"


def test_constraints_judge_the_measured_figures():
    crit = criteria_from_toml({"latency": {"max_value": 8.0}, "accuracy": {"max_drop": 50.0}})
    runs = [fake("a", 0.90, 7.0, 1_000_000), fake("b", 0.90, 7.5, 1_000_000), fake("c", 0.91, 9.5, 1_000_000)]
    ranking = rank(runs, crit, fake("base", 0.92, 10.0, 4_000_000, "none", 0.0, "baseline"))
    assert not ranking.entry("c").feasible and ranking.entry("a").feasible
    assert ranking.best.result.key != "c"
