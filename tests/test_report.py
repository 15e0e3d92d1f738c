"""Reports: a self-contained HTML file (inline SVG, no scripts or network) and a CSV of every run."""
from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import jinja2
import numpy as np
import pytest
import torch

from cli.main import main as cli_main
from shared_fixtures import ROOT
from engine.errors import UserError
from engine.experiments import ResultStore, RunResult, load_plan, run_plan
from engine.metrics import Metrics
from engine.models import DemoResNet, ModelBundle, save_model
from engine.report import (Point, Series, confusion_svg, environment, nice_ticks, svg_plot, templates_dir,
                           write_report)

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

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert('x')</script> & \"q\""


class Tables(HTMLParser):
    """Every table of a page as rows of cell texts (headings included), and each row's class."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[list[tuple[str, list[str]]]] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append((dict(attrs).get("class", ""), []))
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1][1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def comparison(text: str) -> list[dict[str, str]]:
    """The comparison table's rows, each a dict from column heading to cell text (plus its class)."""
    table = next(t for t in Tables(text).tables if t[0][1][:2] == ["#", "run"])
    head = table[0][1]
    return [dict(zip(head, cells), css=css) for css, cells in table[1:]]


def svgs(text: str) -> list[ET.Element]:
    """Every inline SVG of the page, parsed as XML (which fails on anything not well-formed)."""
    return [ET.fromstring(s) for s in re.findall(r"<svg\b.*?</svg>", text, flags=re.S)]


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
        assert f">{section}" in text, section
    drawn = svgs(text)
    assert len(drawn) >= 8  # 3 Pareto + ≥3 curves + sensitivity + 2 confusion matrices
    assert all(svg.tag == SVG + "svg" and len(svg) > 1 for svg in drawn)
    assert "sensitivity-guided" in text and "report.csv" in text
    # The second confusion matrix names the top-ranked run honestly: recommended only when it qualifies.
    feasible = "no run meets" not in text
    assert ("Recommended: " in text) == feasible and ("Closest (breaks a constraint): " in text) != feasible
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 1 + 10  # the original + 3 methods × 2 ratios + 2 structured × 2 guided
    assert {r["kind"] for r in rows} == {"baseline", "run"}
    assert all(float(r["top1"]) > 0 for r in rows)
    base = next(r for r in rows if r["kind"] == "baseline")
    assert base["violations"] == ""  # the original breaks no constraint; runs list theirs (see the ranking tests)


def test_every_stored_run_is_a_row_with_its_figures_and_in_the_csv(store, tmp_path):
    html_path, csv_path = write_report(store, tmp_path / "report.html")
    plan = store.plans()[-1]
    runs = store.results(plan["keys"])
    baseline = store.get(plan["baseline"])
    table = {row["run"]: row for row in comparison(html_path.read_text())}
    assert sorted(table) == sorted(r.label for r in [baseline, *runs])
    for r in [baseline, *runs]:
        row = table[r.label]
        low, high = r.metrics.interval("top1")  # the interval travels with the figure (issue 21)
        assert row["top-1 % [95 % CI]"] == f"{r.metrics.top1 * 100:.2f} [{low * 100:.1f}–{high * 100:.1f}]", \
            r.label
        assert row["MACs M"] == f"{r.metrics.macs / 1e6:.2f}", r.label
        assert row["params k"] == f"{r.metrics.params / 1e3:.1f}", r.label
        assert row["Δ pt"] == f"{(r.metrics.top1 - baseline.metrics.top1) * 100:+.2f}", r.label
    assert table[baseline.label]["css"] == "base" and table[baseline.label]["#"] == "–"
    ranks = sorted(int(row["#"].rstrip("=")) for row in table.values() if row["css"] != "base")  # 2=: tied
    assert ranks == list(range(1, len(runs) + 1))
    assert sum(row["css"] == "best" for row in table.values()) <= 1
    assert all(row["constraints"].startswith("✗") == (row["css"] == "broken") for row in table.values()
               if row["css"] != "base")
    rows = list(csv.DictReader(csv_path.open()))
    assert sorted(r["key"] for r in rows) == sorted(r.key for r in [baseline, *runs])
    assert {r["label"]: r["rank"] + ("=" if r["tied_with_first"] == "True" else "") for r in rows
            if r["kind"] == "run"} == {label: row["#"] for label, row in table.items() if row["css"] != "base"}


def test_report_cli_and_unknown_plan(store, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert cli_main(["report", "--store", str(store.path), "--out", str(out)]) == 0
    assert out.exists() and out.with_suffix(".csv").exists()
    with pytest.raises(UserError, match="no plan named"):
        write_report(store, tmp_path / "x.html", plan_name="nope")


# ----------------------------------------------------------------------------- escaping


def hostile_run(key: str, top1: float, kind: str = "run", recovery: str = "") -> RunResult:
    """A run whose every piece of text is markup, as a careless or malicious plan could store."""
    names = [f"cls{i}" for i in range(2)] + ["abcdefghijkl<&x", HOSTILE]  # cut at 14 characters: mid-entity
    confusion = np.array([[5, 1, 0, 0], [0, 6, 0, 0], [1, 0, 4, 1], [0, 0, 2, 3]])
    m = Metrics(top1=top1, f1_macro=top1, macs=4_000_000 * top1, params=9_000, size_bytes=40_000,
                compressed_bytes=30_000, latency_ms={"8": {"median": 2.0 * top1, "p95": 2.5}},
                per_class={"names": names}, confusion=confusion, samples=21)
    method = "none" if kind == "baseline" else f"l2{HOSTILE}"
    return RunResult(key, kind, f"{method} @ {key} {HOSTILE}", method, None if kind == "baseline" else 0.5,
                     None, False, {}, m, model=f"model{HOSTILE}.pt", dataset=HOSTILE, notes=[HOSTILE],
                     files={"model": f"/tmp/{HOSTILE}.pt"}, versions={"torch": HOSTILE},
                     extra={"recovery": recovery, "recovery_summary": HOSTILE})


def test_markup_in_runs_and_plans_is_escaped(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    base = hostile_run("base", 0.9, "baseline")
    runs = [hostile_run("a", 0.8, recovery="ft"), hostile_run("b", 0.85, recovery="bn")]
    for r in (base, *runs):
        store.put(r)
    store.put_plan(f"plan{HOSTILE}", {"keys": [r.key for r in runs], "baseline": "base", "model": HOSTILE,
                                      "methods": [HOSTILE], "prune": {HOSTILE: HOSTILE}})
    store.put_sensitivity("scan", {"plan": f"plan{HOSTILE}", "ratios": [0.5], "baseline_top1": 0.9,
                                   "groups": [{"name": HOSTILE, "layers": [HOSTILE], "channels": 4,
                                               "drops": [1.5], "score": 1.5}]})
    html_path, csv_path = write_report(store, tmp_path / "r.html")
    text = html_path.read_text()
    assert "<script" not in text and "&lt;script&gt;" in text
    assert len(svgs(text)) >= 7  # 3 Pareto + 3 curves + sensitivity + confusion; every one well-formed
    labels = [t.text for svg in svgs(text) for t in svg.iter(SVG + "title")]
    assert any(HOSTILE in (t or "") for t in labels)  # the tooltips carry the text itself, decoded
    table = {row["run"]: row for row in comparison(text)}
    assert sorted(table) == sorted(r.label for r in (base, *runs))  # the text shown is the label as stored
    assert [table[r.label]["recovery"] for r in runs] == [HOSTILE, HOSTILE]  # two recoveries: a column
    rows = list(csv.DictReader(csv_path.open()))
    assert sorted(r["label"] for r in rows) == sorted(table)  # the CSV holds the text as it is, not escaped


def test_templates_escape_and_refuse_missing_values():
    env = environment()
    assert env.autoescape is True and env.undefined is jinja2.StrictUndefined
    with pytest.raises(jinja2.UndefinedError):
        env.get_template("report.html.j2").render(name="x")


def test_the_bundle_carries_the_templates_where_the_report_looks(tmp_path, monkeypatch):
    spec = (ROOT / "packaging" / "prunelab.spec").read_text()
    source, target = re.search(r'\(str\(ROOT / ("[^)]*templates")\), "([^"]+)"\)', spec).groups()
    assert ROOT.joinpath(*re.findall(r'"([^"]+)"', source)) == templates_dir()
    monkeypatch.setattr("sys._MEIPASS", str(tmp_path), raising=False)
    assert templates_dir() == tmp_path / target


# ----------------------------------------------------------------------------- SVG helpers


def test_nice_ticks_cover_the_range():
    ticks = nice_ticks(0.13, 0.87)
    assert ticks[0] <= 0.13 and ticks[-1] >= 0.87 and len(ticks) <= 12
    assert nice_ticks(5.0, 5.0)[-1] > 5.0  # an empty range still gets an axis
    assert nice_ticks(float("nan"), 1.0) == [0.0, 1.0]


def test_svg_plot_is_well_formed_and_escapes_text():
    series = [Series("a<b", [Point(0, 1, "tip <1> & 'x'"), Point(1, 2, "tip2", "label & <2>")], color="#f00",
                     line=True), Series("gaps", [Point(None, 3), Point(0.5, None)])]
    svg = svg_plot(series, "x <axis>", "y & co", title="t <i>")
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter(SVG + "text")]
    assert "x <axis>" in texts and "y & co" in texts and "t <i>" in texts and "label & <2>" in texts
    assert [t.text for t in root.iter(SVG + "title")] == ["tip <1> & 'x'", "tip2"]
    assert len(list(root.iter(SVG + "path"))) == 1 and len(list(root.iter(SVG + "circle"))) == 2
    empty = ET.fromstring(svg_plot([], "x", "y", title="empty <1>"))
    assert "no data for empty <1>" in empty.find(SVG + "text").text


def test_confusion_svg_counts_and_names():
    m = np.array([[3, 1], [0, 4]])
    root = ET.fromstring(confusion_svg(m, ["a very long class name & more", "<b>"], "title & <x>"))
    counts = [t.text for t in root.iter(SVG + "text") if t.text and t.text.isdigit()]
    assert counts == ["3", "1", "0", "4"]
    tips = [t.text for t in root.iter(SVG + "title")]
    assert "true a very long class name & more, predicted <b>: 1" in tips
