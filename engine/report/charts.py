"""The report's charts: runs, rankings and scans turned into series for the SVG module."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from engine.experiments import METRICS, Ranking, RunResult, metric_value, pareto_front
from engine.report.svg import PALETTE, Point, Series, svg_plot


@dataclass(frozen=True)
class LegendItem:
    """A swatch of the legend: a method (or layer group) and its colour."""
    name: str
    color: str


def method_colors(results: Sequence[RunResult]) -> dict[str, str]:
    """One palette colour per method, in the order the methods first appear."""
    methods = list(dict.fromkeys(r.method for r in results))
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}


def _top1(r: RunResult) -> float:
    return r.metrics.top1 * 100


def _labelled(front: list[int], pts: list[tuple[float, float]], xs: list[float], ys: list[float]) -> set[int]:
    """Front points to label, skipping one that would sit on a label already placed (its tooltip still
    names it). A label spans about a sixth of the plot's width and a twentieth of its height; the axes
    run from 0 (x) and include the original."""
    x_span = ((max(xs) - min(0.0, min(xs))) or 1.0) if xs else 1.0
    y_span = ((max(ys) - min(ys)) or 1.0) if ys else 1.0
    labelled: set[int] = set()
    for i in front:
        if all(abs(pts[i][0] - pts[j][0]) > x_span / 6 or abs(pts[i][1] - pts[j][1]) > y_span / 20
               for j in labelled):
            labelled.add(i)
    return labelled


def _latency_span(r: RunResult) -> tuple[float, float] | None:
    """The 95 % interval of a latency a comparison round measured (engine.timing.ComparisonRound), in ms."""
    low, high = r.metrics.latency(stat="low"), r.metrics.latency(stat="high")
    return (low, high) if high else None


def _accuracy_span(r: RunResult, metric: str = "top1") -> tuple[float, float] | None:
    """The 95 % interval of an accuracy from the images evaluated (Metrics.interval), in display units."""
    ci = r.metrics.interval(metric) if metric in r.metrics.INTERVALS else None
    return None if ci is None else (ci[0] * METRICS[metric].scale, ci[1] * METRICS[metric].scale)


def _span_words(span: tuple[float, float] | None, unit: str) -> str:
    return f" (95 % interval {span[0]:.4g}–{span[1]:.4g} {unit})" if span else ""


def pareto_svg(ranking: Ranking, baseline: RunResult | None, metric: str, colors: dict[str, str],
               title: str) -> str:
    """Accuracy against one cost metric: every run, the front drawn, broken runs hollow, the best ringed."""
    info = METRICS[metric]
    entries = [e for e in ranking.entries if metric_value(e.result, metric) is not None]
    pts = [(metric_value(e.result, metric), _top1(e.result)) for e in entries]
    front = pareto_front(pts, ("min", "max"))
    series = []
    if front:
        series.append(Series("Pareto front", [Point(*pts[i]) for i in front], color="#6e7781", line=True,
                             dash=True, marker="none", width=1.5))
    base_x = metric_value(baseline, metric) if baseline is not None else None
    xs, ys = [x for x, _ in pts], [y for _, y in pts]
    if base_x is not None:
        xs.append(base_x)
        ys.append(_top1(baseline))
    labelled = _labelled(front, pts, xs, ys)
    for n, (e, (x, y)) in enumerate(zip(entries, pts)):
        span = _latency_span(e.result) if metric == "latency_ms" else None
        top1_span = _accuracy_span(e.result)
        tip = (f"{e.result.label}: top-1 {y:.2f} %{_span_words(top1_span, '%')}, {info.label} {x:.4g} {info.unit}"
               f"{_span_words(span, info.unit)}, rank {e.rank}" + ("" if e.feasible else " — " + "; ".join(e.violations)))
        label = e.result.label if n in labelled else ""
        series.append(Series(e.result.label, [Point(x, y, tip, label, span, top1_span)],
                             color=colors.get(e.result.method, "#333"),
                             marker="dot" if e.feasible else "hollow"))
    if ranking.best is not None and ranking.best in entries:
        b = ranking.best.result
        series.append(Series("recommended", [Point(metric_value(b, metric), _top1(b), "recommended: " + b.label)],
                             color="#2ca02c", marker="ring"))
    if base_x is not None:
        span = _latency_span(baseline) if metric == "latency_ms" else None
        top1_span = _accuracy_span(baseline)
        series.append(Series("original", [Point(base_x, _top1(baseline), f"original: top-1 {_top1(baseline):.2f} %"
                                                f"{_span_words(top1_span, '%')}", "original", span, top1_span)],
                             marker="star"))
    return svg_plot(series, f"{info.label} ({info.unit}) — lower is better", "top-1 accuracy (%)", title=title)


def curves_svg(results: Sequence[RunResult], baseline: RunResult | None, colors: dict[str, str], metric: str,
               title: str) -> str:
    """A metric against the pruning ratio, one line per method (and per recovery / guided variant)."""
    info = METRICS[metric]
    groups: dict[tuple, list[RunResult]] = {}
    for r in results:
        if r.ratio is not None:
            groups.setdefault((r.method, r.guided, r.recovery), []).append(r)
    recoveries = {recovery for _, _, recovery in groups}
    series = []
    for (method, guided, recovery), runs in groups.items():
        name = method + (" guided" if guided else "") + (f" [{recovery}]" if len(recoveries) > 1 else "")
        pts = [Point(0.0, metric_value(baseline, metric), "original", y_span=_accuracy_span(baseline, metric))
               ] if baseline is not None else []
        pts += [Point(r.ratio, metric_value(r, metric), f"{r.label}: {metric_value(r, metric) or 0:.4g} {info.unit}"
                      f"{_span_words(_accuracy_span(r, metric), info.unit)}", y_span=_accuracy_span(r, metric))
                for r in sorted(runs, key=lambda r: r.ratio)]
        series.append(Series(name, pts, color=colors.get(method, "#333"), line=True, dash=guided))
    return svg_plot(series, "pruning ratio (0 = original)", f"{info.label} ({info.unit})", title=title)


def sensitivity_svg(scan: dict) -> tuple[str, list[LegendItem]]:
    """Accuracy drop against ratio, one curve per layer group (most sensitive first), and its legend."""
    series = []
    for i, g in enumerate(sorted(scan["groups"], key=lambda g: -g.get("score", 0))):
        pts = [Point(0.0, 0.0)] + [Point(r, d, f"{g['name']} at {r:.0%}: {d:+.2f} pt")
                                   for r, d in zip(scan["ratios"], g["drops"])]
        series.append(Series(g["name"], pts, color=PALETTE[i % len(PALETTE)], line=True))
    title = (f"Sensitivity ({scan.get('method', 'l2')}, {scan.get('limit') or 'all'} {scan.get('split', 'val')} "
             f"images, {scan.get('seconds', 0):.0f} s)")
    svg = svg_plot(series, "ratio of the group's channels removed", "top-1 drop (points)", title=title, width=640)
    return svg, [LegendItem(s.name, s.color) for s in series]
