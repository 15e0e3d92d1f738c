"""Layout checks a tester found wrong in a real window: legends that covered data or sat empty, a left pane wider
than its viewport, an unreadable legend, a Pareto plot without a key. Offscreen, no model, a second or two."""
from __future__ import annotations

from tests.gui_helpers import qt_environment

qt_environment()  # before the first Qt import

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from PySide6.QtCore import QRectF  # noqa: E402
from PySide6.QtWidgets import QScrollArea, QSplitter  # noqa: E402

from engine.experiments import DEFAULT_CRITERIA, PlanDone, PlanRunDone, PlanStarted, RunResult  # noqa: E402
from engine.metrics import Metrics  # noqa: E402
from gui import theme  # noqa: E402

LONG_STORE = "/root/.local/share/prunelab/a-folder-with-a-rather-long-name/results.sqlite"


def result(key: str, method: str, ratio: float | None, top1: float, macs: int, kind: str = "run") -> RunResult:
    """A stored run with just the figures the plots read."""
    m = Metrics(top1=top1, macs=macs, params=macs // 100, size_bytes=macs // 10, compressed_bytes=macs // 20)
    label = "original" if kind == "baseline" else f"{method} @ {ratio:g}"
    return RunResult(key, kind, label, method, ratio, None, False, {}, m)


@pytest.fixture
def tab(qtbot, tmp_path, monkeypatch):
    """The Experiment tab alone, at the width it gets in a 1536 px window, settings in a temporary folder."""
    monkeypatch.setenv("PRUNELAB_SETTINGS_DIR", str(tmp_path / "settings"))
    from gui.experiment_tab import ExperimentTab

    widget = ExperimentTab()
    qtbot.addWidget(widget)
    widget.set_store_path(LONG_STORE)
    widget.resize(1180, 860)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def feed_plan(tab) -> list[RunResult]:
    """A finished plan of two methods × two ratios, as run_plan's events bring it."""
    baseline = result("base", "none", None, 0.94, 37_000_000, "baseline")
    runs = [result("a", "l1", 0.3, 0.30, 13_000_000), result("b", "l2", 0.3, 0.52, 13_000_000),
            result("c", "l1", 0.7, 0.10, 2_500_000), result("d", "l2", 0.7, 0.12, 2_500_000)]
    tab.on_event(PlanStarted("gui", tuple(r.key for r in runs), tuple(r.label for r in runs), baseline, 0,
                             DEFAULT_CRITERIA))
    for i, r in enumerate(runs, 1):
        tab.on_event(PlanRunDone(i, len(runs), r))
    tab.on_event(PlanDone(tuple(runs), baseline, None, LONG_STORE, 30.0, len(runs), 0))
    return runs


def test_live_plots_legend_is_hidden_until_a_run_and_covers_no_plot(qtbot):
    """Before a run there is no legend box; after one the legend sits above the plots, not over the accuracy
    curve and its phase labels."""
    from gui.plots import LivePlots

    plots = LivePlots()
    qtbot.addWidget(plots)
    plots.resize(1180, 760)
    plots.show()
    qtbot.waitExposed(plots)
    assert not plots.legend.isVisible() and plots.legend_labels() == []
    plots.add_run(1, "#1 Group L2 magnitude (DepGraph)", theme.run_colour(0))
    plots.add_step(1, 0, Metrics(top1=0.94, params=300_000, macs=37_000_000))
    plots.add_phase(1, 1, "prune", 0.12)
    plots.add_step(1, 1, Metrics(top1=0.90, params=170_000, macs=21_000_000))
    plots.flush()
    qtbot.wait(50)  # the layout places the legend row
    assert plots.legend.isVisible() and plots.legend_labels() == ["#1 Group L2 magnitude (DepGraph)"]
    legend = plots.legend.mapRectToScene(plots.legend.boundingRect())
    for plot in plots.plots.values():
        view = plot.vb.mapRectToScene(plot.vb.boundingRect())
        assert not legend.intersects(view), f"the legend covers the {plot.titleLabel.text!r} plot"
    labels = [lbl.mapRectToScene(lbl.boundingRect()) for c in plots.runs.values() for lbl in c.phase_labels]
    assert labels and not any(legend.intersects(QRectF(r)) for r in labels)


def test_experiment_left_pane_never_needs_a_sideways_scroll_bar(tab, qtbot):
    """The plan editor fits its viewport, also with a long store path, a long status and the splitter pushed
    to the left; the store path is elided in the middle (file name whole) with the full path in the tooltip."""
    scroll = tab.findChild(QScrollArea)
    panel = scroll.widget()
    feed_plan(tab)  # the status line now names the store
    splitter = scroll.parentWidget()  # the plan editor sits in a column (Run plan below it) inside the splitter
    while not isinstance(splitter, QSplitter):
        splitter = splitter.parentWidget()
    for sizes in ([10_000, 10_000], [1, 10_000]):  # as laid out, and dragged as far left as it goes
        splitter.setSizes(sizes)
        qtbot.wait(20)
        assert scroll.horizontalScrollBar().maximum() == 0, f"sideways scroll at {scroll.width()} px"
        assert panel.width() <= scroll.viewport().width()
        assert panel.width() >= panel.minimumSizeHint().width()
    label = tab.store_label
    assert label.full_text() == LONG_STORE and LONG_STORE in label.toolTip()
    assert label.text() != LONG_STORE and label.text().endswith("/results.sqlite")
    assert label.fontMetrics().horizontalAdvance(label.text()) <= label.width()
    assert label.height() < 2 * label.fontMetrics().height()  # one line, not a half-hidden second one
    assert "done: 4 runs" in tab.status_label.text()
    splitter.setSizes([1, 10_000])  # the plan editor as narrow as it goes (about what a 1400 px window gives it)
    qtbot.wait(20)
    criteria = tab.criteria_table  # every column of the criteria editor shows, headers whole
    assert criteria.horizontalScrollBar().maximum() == 0, f"criteria scroll sideways at {criteria.width()} px"
    header = criteria.horizontalHeader()
    for col in range(criteria.columnCount()):
        lines = criteria.horizontalHeaderItem(col).text().split("\n")
        assert max(header.fontMetrics().horizontalAdvance(line) for line in lines) <= header.sectionSize(col)


def test_pareto_plot_has_a_legend_per_method_and_hover_names_the_run(tab):
    """Each method's colour is in the Pareto legend (with the marks that appear), hovering a point names its
    run, and the ratio plot's legend is readable (palette text colour), hidden until there are curves."""
    ratio_legend = tab.ratio_plot.getPlotItem().legend
    assert not ratio_legend.isVisible()
    runs = feed_plan(tab)
    labels = tab.pareto_view.legend_labels()
    assert labels[:2] == ["l1", "l2"] and "original" in labels and "breaks a constraint" in labels
    assert tab.pareto_view.legend.isVisible()
    tip = tab.scatter.opts["tip"](x=13.0, y=52.0, data=runs[1].key)
    assert runs[1].label in tip and "top-1 52.00 %" in tip
    assert ratio_legend.isVisible()
    fg = theme.plot_foreground().name()
    assert [label.text for _sample, label in ratio_legend.items] == ["l1", "l2"]
    for _sample, label in ratio_legend.items:
        assert label.opts["color"].name() == fg
    tab.clear_results()
    assert not ratio_legend.isVisible() and not tab.pareto_view.legend.isVisible()
