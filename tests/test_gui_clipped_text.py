"""Text a tester found clipped or overlapping in a real window (issue 24, item 10): the original's star under
the Pareto legend, an axis labelled "38.33333333333345…" for one value, the Next phase button's words, the
status bar's phase running into the messages. Offscreen, no model, a second or two."""
from __future__ import annotations

from tests.gui_helpers import qt_environment

qt_environment()  # before the first Qt import

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from engine.experiments import DEFAULT_CRITERIA, PlanDone, PlanRunDone, PlanStarted  # noqa: E402
from tests.test_gui_polish import LONG_STORE, result, tab  # noqa: E402,F401 (the fixture)


def test_the_original_star_is_never_under_the_pareto_legend(tab, qtbot):
    """Recovered runs that beat the original put its star (the most MACs) at the bottom right, where the
    legend stood."""
    baseline = result("base", "none", None, 0.80, 37_000_000, "baseline")
    runs = [result("a", "l1", 0.3, 0.90, 20_000_000), result("b", "l2", 0.3, 0.91, 20_000_000),
            result("c", "l1", 0.5, 0.86, 10_000_000), result("d", "l2", 0.5, 0.88, 10_000_000)]
    tab.on_event(PlanStarted("gui", tuple(r.key for r in runs), tuple(r.label for r in runs), baseline, 0,
                             DEFAULT_CRITERIA))
    for i, r in enumerate(runs, 1):
        tab.on_event(PlanRunDone(i, len(runs), r))
    tab.on_event(PlanDone(tuple(runs), baseline, None, LONG_STORE, 30.0, len(runs), 0))
    view = tab.pareto_view
    view.axis.setCurrentIndex(view.axis.findData("macs"))
    qtbot.wait(50)
    vb, legend = view.plot.getPlotItem().getViewBox(), view.legend
    star = vb.mapViewToScene(view.original_point.points()[0].pos())
    assert legend.isVisible() and "original" in view.legend_labels()
    for spot in [*view.scatter.points(), *view.original_point.points()]:
        assert not legend.sceneBoundingRect().contains(vb.mapViewToScene(spot.pos())), spot.pos()
    assert vb.sceneBoundingRect().contains(star)


def test_an_axis_of_one_value_gets_a_readable_span(qtbot):
    from gui.experiment_plots import plot_widget
    from gui.plots import LivePlots

    plot = plot_widget()
    qtbot.addWidget(plot)
    plot.plot([0.3, 0.5, 0.7], [38.333333333333336, 38.33333333333345, 38.333333333333336])
    plot.getPlotItem().getViewBox().updateAutoRange()
    low, high = plot.getPlotItem().getViewBox().viewRange()[1]
    assert low < 38.3 < 38.4 < high and high - low < 10
    live = LivePlots()
    qtbot.addWidget(live)
    assert all(type(p.getViewBox()).__name__ == "SteadyViewBox" for p in live.plots.values())
