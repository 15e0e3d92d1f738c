"""What the report says, as named rows and ready-drawn charts for the template (no HTML here)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from markupsafe import Markup

from engine.experiments import (Criterion, Ranking, RunResult, describe_gain, latency_source_text, metric_value,
                                same_arch_text)
from engine.report.charts import LegendItem, curves_svg, method_colors, pareto_svg, sensitivity_svg
from engine.report.svg import confusion_svg

NONE = "–"  # an empty cell or setting


@dataclass(frozen=True)
class Column:
    """A column of the comparison table: the row key it shows, its heading, and text (left) or figures."""
    key: str
    head: str
    left: bool = False


COLUMNS = (Column("rank", "#"), Column("run", "run", True), Column("recovery", "recovery", True),
           Column("score", "score"), Column("top1", "top-1 % [95 % CI]"), Column("delta", "Δ pt"),
           Column("f1", "F1 % [95 % CI]"),
           Column("precision", "prec. %"), Column("recall", "rec. %"), Column("latency", "latency ms"),
           Column("speedup", "speed-up"), Column("throughput", "img/s"), Column("macs", "MACs M"),
           Column("params", "params k"), Column("size", "size MB"), Column("compressed", "compr. MB"),
           Column("peak_memory", "peak mem MB"), Column("run_seconds", "run s"),
           Column("constraints", "constraints", True))


@dataclass(frozen=True)
class ComparisonRow:
    """One run of the comparison table: its style (base, best, broken or plain) and its cells by column key."""
    css: str
    cells: dict[str, str]


@dataclass(frozen=True)
class CriterionRow:
    """One criterion as the criteria table shows it."""
    name: str
    label: str
    metric: str
    better: str
    unit: str
    weight: str
    constraint: str


@dataclass(frozen=True)
class GroupRow:
    """One layer group of a sensitivity scan: the drop in points at each ratio, and their mean."""
    name: str
    layers: str
    channels: int
    drops: list[str]
    mean: str


@dataclass(frozen=True)
class ScanView:
    """One sensitivity scan: its chart, legend and table."""
    chart: Markup
    legend: list[LegendItem]
    baseline_top1: str
    images: str
    ratios: list[str]
    groups: list[GroupRow]


@dataclass(frozen=True)
class GuidedRow:
    """A sensitivity-guided run beside its uniform twin (same method, ratio and recovery)."""
    run: str
    uniform_top1: str
    guided_top1: str
    delta: str
    uniform_macs: str
    guided_macs: str


@dataclass(frozen=True)
class Chart:
    """A drawn chart; the SVG module escaped its text, so the template embeds it as it is."""
    svg: Markup
    title: str = ""


@dataclass
class Verdict:
    """The top-ranked run: 'Recommended' only when it meets every constraint."""
    word: str = ""
    model_file: str = ""
    gain: str = ""
    charts: list[Chart] = field(default_factory=list)


def cell(v: float | None, digits: str = ".2f") -> str:
    """A figure, or a dash when it was not measured."""
    return NONE if v is None else format(v, digits)


def latency_text(m) -> str:
    """The latency at the evaluation batch, with its 95 % interval when a comparison round measured it."""
    value = m.latency() or None
    low, high = m.latency(stat="low"), m.latency(stat="high")
    return cell(value, ".3f") + (f" [{low:.3f}–{high:.3f}]" if value and high else "")


def speedup_text(r: RunResult, baseline: RunResult | None) -> str:
    """The stored speed-up (RunResult.latency_speedup, the one every view shows), with its interval."""
    if r.kind == "baseline":
        return "1.00"
    speed = r.latency_speedup(baseline)
    paired = r.extra.get("latency_speedup") or {}
    if speed and paired.get("high"):
        return f"{speed:.2f} [{paired['low']:.2f}–{paired['high']:.2f}]"
    return cell(speed, ".2f")


def accuracy_cell(m, key: str) -> str:
    """'93.60 [91.9–95.0]': an accuracy with its 95 % interval from the images evaluated (Metrics.interval)."""
    ci = m.interval(key)
    return f"{getattr(m, key) * 100:.2f}" + (f" [{ci[0] * 100:.1f}–{ci[1] * 100:.1f}]" if ci else "")


def comparison_row(r: RunResult, baseline: RunResult | None, rank: str, score: str, css: str,
                   constraints: str) -> ComparisonRow:
    """Every figure of one run, formatted for the table."""
    m, bm = r.metrics, baseline.metrics if baseline else None
    delta = (m.top1 - bm.top1) * 100 if bm else None
    same = same_arch_text(r)
    return ComparisonRow(css, {
        "rank": rank, "run": r.label + (f" ({same})" if same else ""),
        "recovery": r.extra.get("recovery_summary", r.recovery) or NONE,
        "score": score, "top1": accuracy_cell(m, "top1"), "delta": cell(delta, "+.2f"),
        "f1": accuracy_cell(m, "f1_macro"),
        "precision": f"{m.precision_macro * 100:.2f}", "recall": f"{m.recall_macro * 100:.2f}",
        "latency": latency_text(m), "speedup": speedup_text(r, baseline),
        "throughput": cell(m.throughput_ips or None, ".0f"), "macs": f"{m.macs / 1e6:.2f}",
        "params": f"{m.params / 1e3:.1f}", "size": f"{m.size_bytes / 1e6:.3f}",
        "compressed": f"{m.compressed_bytes / 1e6:.3f}",
        "peak_memory": cell(m.peak_memory_bytes / 1e6 if m.peak_memory_bytes else None, ".1f"),
        "run_seconds": cell(r.seconds if r.kind == "run" else None, ".1f"), "constraints": constraints})


def comparison(ranking: Ranking, baseline: RunResult | None) -> tuple[list[Column], list[ComparisonRow]]:
    """Every run with every figure; broken constraints marked, the recommended run highlighted."""
    one_recovery = len({e.result.recovery for e in ranking.entries}) <= 1  # then the setup names it
    columns = [c for c in COLUMNS if not (one_recovery and c.key == "recovery")]
    rows = [comparison_row(baseline, baseline, NONE, NONE, "base", "original model")] if baseline else []
    for e in ranking.entries:
        css = "best" if ranking.best is e else ("broken" if not e.feasible else "")
        constraints = ("✓ meets all" if e.feasible else "✗ " + "; ".join(e.violations)) + e.noise_text
        rank = ranking.rank_text(e)
        rows.append(comparison_row(e.result, baseline, rank, f"{e.score:.3f}", css, constraints))
    return columns, rows


def criterion_rows(criteria: Sequence[Criterion]) -> list[CriterionRow]:
    """The criteria: metric, direction, unit, weight, constraints."""
    return [CriterionRow(c.name, c.label, c.metric, "higher" if c.direction == "max" else "lower", c.unit,
                         f"{c.weight:g}", c.constraint_text() or NONE) for c in criteria]


def setup(results: Sequence[RunResult], baseline: RunResult | None, plan: dict, model: str) -> dict[str, str]:
    """The settings of the sweep, by name, in the order shown."""
    total_s = sum(r.seconds for r in results)
    versions = baseline.versions if baseline else (results[0].versions if results else {})
    recoveries = "; ".join(f"{r['name']}: {r.get('summary', '')}" for r in plan.get("recoveries", [])) or NONE
    return {
        "model": model, "dataset": plan.get("data") or (baseline.dataset if baseline else ""),
        "methods": ", ".join(plan.get("methods", sorted({r.method for r in results}))),
        "ratios": ", ".join(f"{v:g}" for v in plan.get("ratios", [])) or NONE,
        "target speed-ups": ", ".join(f"{v:g}×" for v in plan.get("target_speedups", [])) or NONE,
        **({"target latencies": ", ".join(f"{v:g} ms" for v in plan["target_latencies"])}
           if plan.get("target_latencies") else {}),
        **({"target latency speed-ups": ", ".join(f"{v:g}× lower" for v in plan["target_latency_speedups"])}
           if plan.get("target_latency_speedups") else {}),
        "recovery": recoveries, "sensitivity-guided runs": "yes" if plan.get("sensitivity_guided") else "no",
        "seed": str(plan.get("seed", NONE)),
        "shared pruning options": ", ".join(f"{k}={v}" for k, v in (plan.get("prune") or {}).items()) or NONE,
        "device": baseline.device if baseline else (results[0].device if results else NONE),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "runs": f"{len(results)} stored, {total_s / 60:.1f} min of run time in total",
        "latency figures": latency_source_text(plan.get("final_round"), results) or NONE,
        "evaluation images": str(baseline.metrics.samples or NONE) if baseline else NONE}


def pareto_charts(ranking: Ranking, baseline: RunResult | None, colors: dict[str, str], latency: bool) -> list[Chart]:
    """Accuracy against latency (MACs when latency was not measured), size and compressed size."""
    cost = ("latency_ms", "Accuracy vs latency") if latency else ("macs", "Accuracy vs MACs (latency not measured)")
    return [Chart(Markup(pareto_svg(ranking, baseline, metric, colors, title)), title)
            for metric, title in (cost, ("size_bytes", "Accuracy vs size on disk"),
                                  ("compressed_bytes", "Accuracy vs compressed size"))]


def curve_charts(results: Sequence[RunResult], baseline: RunResult | None, colors: dict[str, str],
                 latency: bool) -> list[Chart]:
    """Top-1, latency (when measured), MACs and F1 against the pruning ratio."""
    wanted = [("top1", "Top-1 accuracy vs pruning ratio")]
    wanted += [("latency_ms", "Latency vs pruning ratio")] if latency else []
    wanted += [("macs", "MACs vs pruning ratio"), ("f1_macro", "F1 (macro) vs pruning ratio")]
    return [Chart(Markup(curves_svg(results, baseline, colors, metric, title)), title) for metric, title in wanted]


def scan_view(scan: dict) -> ScanView:
    """A sensitivity scan's chart and table, most sensitive group first."""
    svg, legend = sensitivity_svg(scan)
    groups = [GroupRow(g["name"], ", ".join(g["layers"]), g["channels"], [f"{d:+.2f}" for d in g["drops"]],
                       f"{g.get('score', 0):.2f}") for g in sorted(scan["groups"], key=lambda g: -g.get("score", 0))]
    return ScanView(Markup(svg), legend, f"{scan['baseline_top1'] * 100:.2f}", str(scan.get("limit") or "all"),
                    [f"{r:.0%}" for r in scan["ratios"]], groups)


def guided_rows(results: Sequence[RunResult]) -> list[GuidedRow]:
    """Each sensitivity-guided run against its uniform twin, where the sweep has one."""
    rows = []
    for g in (r for r in results if r.guided):
        twin = next((r for r in results if not r.guided and r.method == g.method and r.ratio == g.ratio
                     and r.recovery == g.recovery), None)
        if twin:
            rows.append(GuidedRow(f"{g.method} @ {g.ratio:g}", f"{twin.metrics.top1 * 100:.2f}",
                                  f"{g.metrics.top1 * 100:.2f}", f"{(g.metrics.top1 - twin.metrics.top1) * 100:+.2f}",
                                  f"{twin.metrics.macs / 1e6:.2f}", f"{g.metrics.macs / 1e6:.2f}"))
    return rows


def verdict(ranking: Ranking, baseline: RunResult | None) -> Verdict:
    """The top-ranked run, its confusion matrix beside the original's, and what it gains."""
    best = ranking.best or (ranking.entries[0] if ranking.entries else None)
    v = Verdict()
    if best:
        v.word = "Recommended" if best.feasible else "Closest (breaks a constraint)"
        v.model_file = best.result.files.get("model", "not saved")
        v.gain = describe_gain(best.result, baseline)
    names = (baseline.metrics.per_class.get("names") or []) if baseline and baseline.metrics.per_class else []
    shown = [("Original", baseline)] + ([(f"{v.word}: {best.result.label}", best.result)] if best else [])
    for title, r in shown:
        if r is not None and r.metrics.confusion is not None:
            n = r.metrics.confusion.shape[0]
            title = f"{title}: top-1 {r.metrics.figure_text('top1')}"
            v.charts.append(Chart(Markup(confusion_svg(r.metrics.confusion, names or [str(i) for i in range(n)],
                                                       title)), title))
    return v


def model_name(plan: dict, baseline: RunResult | None) -> str:
    """The model the sweep pruned, as the plan or the original's run names it."""
    return plan.get("model") or (baseline.model if baseline else "the model")


def report_context(results: Sequence[RunResult], baseline: RunResult | None, criteria: Sequence[Criterion],
                   ranking: Ranking, plan: dict, scans: Sequence[dict]) -> dict:
    """Everything the template shows, by name."""
    model = model_name(plan, baseline)
    colors = method_colors(results)
    latency = any(metric_value(r, "latency_ms") for r in results)
    columns, rows = comparison(ranking, baseline)
    return {
        "name": plan.get("name", "results"), "recommendation": ranking.recommendation,
        "recommended": ranking.best is not None, "setup": setup(results, baseline, plan, model),
        "criteria": criterion_rows(criteria), "columns": columns, "rows": rows,
        "legend_items": [LegendItem(m, c) for m, c in colors.items()],
        "pareto": pareto_charts(ranking, baseline, colors, latency),
        "curves": curve_charts(results, baseline, colors, latency),
        "scans": [scan_view(s) for s in scans], "guided": guided_rows(results) if scans else [],
        "verdict": verdict(ranking, baseline)}
