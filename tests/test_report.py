"""Reports: a self-contained HTML file (inline SVG, no scripts or network) and a CSV of every run."""
from __future__ import annotations

import csv
import re

import pytest
import torch

from cli.main import main as cli_main
from engine.errors import UserError
from engine.experiments import ResultStore, load_plan, run_plan
from engine.models import DemoResNet, ModelBundle, save_model
from engine.report import nice_ticks, svg_plot, write_report

PLAN = """
[plan]
name = "report-test"
save_models = false
[model]
source = "tiny.pt"
[sweep]
methods = ["l1", "l2", "magnitude-global"]
ratios = [0.3, 0.6]
sensitivity_guided = true
[sensitivity]
ratios = [0.3, 0.6]
limit = 64
[prune]
eval_limit = 128
measure_speed = false
round_to = 4
[criteria.accuracy]
max_drop = 0.5
"""


@pytest.fixture(scope="module")
def store(fashion, tmp_path_factory) -> ResultStore:
    tmp_path = tmp_path_factory.mktemp("report")
    torch.manual_seed(0)
    bundle = ModelBundle(DemoResNet(widths=(8, 16, 32)).eval(), "tiny", "demo:resnet", (1, 28, 28), 10,
                         fashion.norm, fashion.class_names, arch_kwargs={"widths": [8, 16, 32]})
    save_model(bundle, tmp_path / "tiny.pt")
    (tmp_path / "plan.toml").write_text(PLAN)
    plan = load_plan(tmp_path / "plan.toml")
    s = ResultStore(tmp_path / "r.sqlite")
    for _ in run_plan(plan, s, bundle=bundle, data=fashion):
        pass
    return s


def test_report_is_self_contained_and_complete(store, tmp_path):
    html_path, csv_path = write_report(store, tmp_path / "out" / "report.html")
    text = html_path.read_text()
    assert "<script" not in text and not re.search(r"(src|href)=['\"]?https?:", text)
    assert "<link" not in text
    for section in ("Setup", "Criteria", "Comparison", "Pareto fronts", "Per-method curves", "Sensitivity",
                    "Confusion matrices", "Recommendation"):
        assert section in text, section
    assert text.count("<svg") >= 8  # 3 Pareto + ≥3 curves + sensitivity + 2 confusion matrices
    assert "sensitivity-guided" in text and "report.csv" in text
    # The second confusion matrix names the top-ranked run honestly: recommended only when it qualifies.
    feasible = "no run meets" not in text
    assert ("Recommended: " in text) == feasible and ("Closest (breaks a constraint): " in text) != feasible
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 1 + 10  # the original + 3 methods × 2 ratios + 2 structured × 2 guided
    assert {r["kind"] for r in rows} == {"baseline", "run"}
    assert all(r["top1"] for r in rows)
    base = next(r for r in rows if r["kind"] == "baseline")
    assert base["violations"] == ""  # the original breaks no constraint; runs list theirs (see the ranking tests)


def test_report_cli_and_unknown_plan(store, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert cli_main(["report", "--store", str(store.path), "--out", str(out)]) == 0
    assert out.exists() and out.with_suffix(".csv").exists()
    with pytest.raises(UserError, match="no plan named"):
        write_report(store, tmp_path / "x.html", plan_name="nope")


def test_svg_helpers():
    ticks = nice_ticks(0.13, 0.87)
    assert ticks[0] <= 0.13 and ticks[-1] >= 0.87 and len(ticks) <= 12
    svg = svg_plot([{"name": "a", "color": "#f00", "line": True, "points": [(0, 1, "tip"), (1, 2, "tip2")]}],
                   "x", "y", title="t")
    assert svg.startswith("<svg") and "<path" in svg and "<title>tip</title>" in svg
    assert "no data" in svg_plot([], "x", "y", title="empty")
