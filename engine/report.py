"""Self-contained HTML report (inline SVG plots drawn here, no JS, no network) and a CSV of all runs."""
from __future__ import annotations

import csv
import html
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import UserError
from engine.experiments import (DEFAULT_CRITERIA, METRICS, Criterion, Ranking, ResultStore, RunResult,
                                describe_gain, metric_value, pareto_front, rank)
from engine.outputs import atomic_files

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f", "#393b79", "#637939")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px auto;max-width:1320px;
color:#1b1f24;background:#fff;line-height:1.4;padding:0 16px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.muted{color:#57606a;font-size:13px}.verdict{background:#eef6ee;border-left:5px solid #2ca02c;padding:10px 14px;
font-size:16px;margin:12px 0}.verdict.none{background:#fff4e5;border-color:#ff7f0e}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}th,td{border:1px solid #d0d7de;padding:3px 7px;
text-align:right;white-space:nowrap}th{background:#f6f8fa}td.l,th.l{text-align:left}
tr.broken td{background:#fff0f0;color:#8a1f1f}tr.best td{background:#eaf5ea;font-weight:600}
tr.base td{background:#f3f6fb;font-style:italic}.grid{display:flex;flex-wrap:wrap;gap:18px}
.card{border:1px solid #d0d7de;border-radius:6px;padding:8px}.card h3{font-size:14px;margin:2px 0 6px}
.kv td{text-align:left}.legend span{display:inline-block;margin-right:12px;font-size:12px}
.sw{display:inline-block;width:11px;height:11px;border-radius:6px;margin-right:4px;vertical-align:middle}
svg text{font-family:inherit}.wide{overflow-x:auto}td:last-child{white-space:normal;min-width:150px}
"""


# ----------------------------------------------------------------------------- SVG plotting


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = [round(start, 10)]
    while ticks[-1] < hi - 1e-12 and len(ticks) < 25:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def svg_plot(series: Sequence[dict], xlabel: str, ylabel: str, width: int = 600, height: int = 380,
             title: str = "", xlog: bool = False) -> str:
    """An inline SVG chart. Each series: name, color, points [(x, y, tooltip)], optional line (bool),
    dash (bool), marker ('dot', 'hollow', 'star', 'none'), width (line width)."""
    pts = [(p[0], p[1]) for s in series for p in s["points"] if p[0] is not None and p[1] is not None]
    if not pts:
        return f'<svg width="{width}" height="60"><text x="10" y="30" fill="#57606a">no data for {html.escape(title)}' \
               f'</text></svg>'
    tx = (lambda v: math.log10(v)) if xlog else (lambda v: v)
    xs, ys = [tx(p[0]) for p in pts], [p[1] for p in pts]
    xt = nice_ticks(min(xs), max(xs))
    yt = nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    ml, mr, mt, mb = 62, 70, 28 if title else 12, 46
    pw, ph = width - ml - mr, height - mt - mb

    def sx(v: float) -> float:
        return ml + (tx(v) - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return mt + ph - (v - y0) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img">']
    if title:
        out.append(f'<text x="{ml}" y="18" font-size="14" font-weight="600">{html.escape(title)}</text>')
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fff" stroke="#8c959f"/>')
    for v in xt:
        x = ml + (v - x0) / (x1 - x0) * pw
        label = _fmt_tick(10 ** v) if xlog else _fmt_tick(v)
        out.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{mt + ph}" stroke="#eaeef2"/>'
                   f'<text x="{x:.1f}" y="{mt + ph + 16}" font-size="11" text-anchor="middle">{label}</text>')
    for v in yt:
        y = sy(v)
        out.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" stroke="#eaeef2"/>'
                   f'<text x="{ml - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{_fmt_tick(v)}</text>')
    out.append(f'<text x="{ml + pw / 2}" y="{height - 8}" font-size="12" text-anchor="middle">'
               f'{html.escape(xlabel)}</text>')
    out.append(f'<text transform="translate(14,{mt + ph / 2}) rotate(-90)" font-size="12" text-anchor="middle">'
               f'{html.escape(ylabel)}</text>')
    for s in series:
        good = [p for p in s["points"] if p[0] is not None and p[1] is not None]
        color = s.get("color", "#333")
        if s.get("line") and len(good) > 1:
            path = " ".join(f"{'M' if i == 0 else 'L'}{sx(p[0]):.1f},{sy(p[1]):.1f}" for i, p in enumerate(good))
            dash = ' stroke-dasharray="6,4"' if s.get("dash") else ""
            out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="{s.get("width", 2)}"{dash}/>')
        marker = s.get("marker", "dot")
        for p in good:
            x, y = sx(p[0]), sy(p[1])
            tip = f"<title>{html.escape(str(p[2]))}</title>" if len(p) > 2 and p[2] else ""
            if marker == "dot":
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="{color}" stroke="#fff">{tip}</circle>')
            elif marker == "hollow":
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="#fff" stroke="{color}" '
                           f'stroke-width="2">{tip}</circle>')
            elif marker == "star":
                out.append(f'<path d="{_star(x, y)}" fill="#111" stroke="#fff">{tip}</path>')
            elif marker == "ring":
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="none" stroke="{color}" '
                           f'stroke-width="2.5">{tip}</circle>')
            if len(p) > 3 and p[3]:
                out.append(f'<text x="{x + 7:.1f}" y="{y - 7:.1f}" font-size="10.5" fill="#24292f">'
                           f'{html.escape(p[3])}</text>')
    out.append("</svg>")
    return "".join(out)


def _star(x: float, y: float, r: float = 8.0) -> str:
    pts = []
    for i in range(10):
        a = math.pi / 2 + i * math.pi / 5
        rr = r if i % 2 == 0 else r * 0.45
        pts.append(f"{x + rr * math.cos(a):.1f},{y - rr * math.sin(a):.1f}")
    return "M" + " L".join(pts) + " Z"


def legend(items: Sequence[tuple[str, str]]) -> str:
    """A row of coloured swatches with names."""
    return '<div class="legend">' + "".join(f'<span><i class="sw" style="background:{c}"></i>{html.escape(n)}</span>'
                                            for n, c in items) + "</div>"


def confusion_svg(matrix: np.ndarray, names: Sequence[str], title: str, cell: int = 34) -> str:
    """A confusion-matrix heat map with counts (rows: true class, columns: predicted)."""
    m = np.asarray(matrix, dtype=np.int64)
    n = m.shape[0]
    left, top = 110, 110
    w, h = left + n * cell + 10, top + n * cell + 30
    norm = m / np.maximum(1, m.sum(1, keepdims=True))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
           f'<text x="4" y="16" font-size="14" font-weight="600">{html.escape(title)}</text>',
           f'<text x="{left + n * cell / 2}" y="{h - 6}" font-size="11" text-anchor="middle">predicted</text>']
    for i in range(n):
        name = html.escape(str(names[i] if i < len(names) else i))[:14]
        out.append(f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4}" font-size="10.5" '
                   f'text-anchor="end">{name}</text>')
        out.append(f'<text transform="translate({left + i * cell + cell / 2 + 4},{top - 6}) rotate(-60)" '
                   f'font-size="10.5">{name}</text>')
        for j in range(n):
            v = float(norm[i, j])
            shade = int(255 - 200 * v)
            fill = f"rgb({shade},{shade + int(30 * v) if shade + int(30 * v) < 256 else 255},255)" if i == j else \
                f"rgb(255,{int(255 - 180 * min(1.0, 4 * v))},{int(255 - 180 * min(1.0, 4 * v))})"
            color = "#fff" if (i == j and v > 0.6) else "#111"
            out.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
                       f'fill="{fill}" stroke="#fff"><title>true {name}, predicted '
                       f'{html.escape(str(names[j] if j < len(names) else j))}: {m[i, j]}</title></rect>'
                       f'<text x="{left + j * cell + cell / 2}" y="{top + i * cell + cell / 2 + 4}" font-size="10" '
                       f'text-anchor="middle" fill="{color}">{m[i, j]}</text>')
    out.append("</svg>")
    return "".join(out)


# ----------------------------------------------------------------------------- content


def _colors(results: Sequence[RunResult]) -> dict[str, str]:
    methods = []
    for r in results:
        if r.method not in methods:
            methods.append(r.method)
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}


def pareto_svg(ranking: Ranking, baseline: RunResult | None, metric: str, colors: dict[str, str],
               title: str) -> str:
    """Accuracy against one cost metric: every run, the front drawn, broken runs hollow, the best ringed."""
    info = METRICS[metric]
    entries = [e for e in ranking.entries if metric_value(e.result, metric) is not None]
    pts = [(metric_value(e.result, metric), e.result.metrics.top1 * 100) for e in entries]
    front = pareto_front(pts, ("min", "max"))
    series = []
    if front:
        series.append({"name": "Pareto front", "color": "#6e7781", "line": True, "dash": True, "marker": "none",
                       "width": 1.5, "points": [(pts[i][0], pts[i][1], "") for i in front]})
    # Label front points, but not one that would sit on a label already placed (its tooltip still
    # names it). A label spans about a sixth of the plot's width and a twentieth of its height; the
    # axes run from 0 (x) and include the original.
    xs, ys = [x for x, _ in pts], [y for _, y in pts]
    if baseline is not None and metric_value(baseline, metric) is not None:
        xs.append(metric_value(baseline, metric))
        ys.append(baseline.metrics.top1 * 100)
    x_span = (max(xs) - min(0.0, min(xs))) or 1.0 if xs else 1.0
    y_span = (max(ys) - min(ys)) or 1.0 if ys else 1.0
    labelled: set[int] = set()
    for i in front:
        if all(abs(pts[i][0] - pts[j][0]) > x_span / 6 or abs(pts[i][1] - pts[j][1]) > y_span / 20
               for j in labelled):
            labelled.add(i)
    for n, (e, (x, y)) in enumerate(zip(entries, pts)):
        tip = (f"{e.result.label}: top-1 {y:.2f} %, {info.label} {x:.4g} {info.unit}, rank {e.rank}"
               + ("" if e.feasible else " — " + "; ".join(e.violations)))
        label = e.result.label if n in labelled else ""
        series.append({"name": e.result.label, "color": colors.get(e.result.method, "#333"),
                       "marker": "dot" if e.feasible else "hollow", "points": [(x, y, tip, label)]})
    if ranking.best is not None and ranking.best in entries:
        b = ranking.best
        series.append({"name": "recommended", "color": "#2ca02c", "marker": "ring",
                       "points": [(metric_value(b.result, metric), b.result.metrics.top1 * 100,
                                   "recommended: " + b.result.label)]})
    if baseline is not None and metric_value(baseline, metric) is not None:
        series.append({"name": "original", "marker": "star",
                       "points": [(metric_value(baseline, metric), baseline.metrics.top1 * 100,
                                   f"original: top-1 {baseline.metrics.top1 * 100:.2f} %", "original")]})
    return svg_plot(series, f"{info.label} ({info.unit}) — lower is better", "top-1 accuracy (%)", title=title)


def curves_svg(results: Sequence[RunResult], baseline: RunResult | None, colors: dict[str, str], metric: str,
               title: str) -> str:
    """A metric against the pruning ratio, one line per method (and per recovery / guided variant)."""
    info = METRICS[metric]
    groups: dict[tuple, list[RunResult]] = {}
    for r in results:
        if r.ratio is not None:
            groups.setdefault((r.method, r.guided, r.recovery), []).append(r)
    recoveries = {k[2] for k in groups}
    series = []
    for (method, guided, rec), runs in groups.items():
        runs = sorted(runs, key=lambda r: r.ratio)
        name = method + (" guided" if guided else "") + (f" [{rec}]" if len(recoveries) > 1 else "")
        pts = [(0.0, metric_value(baseline, metric), "original")] if baseline is not None else []
        pts += [(r.ratio, metric_value(r, metric), f"{r.label}: {metric_value(r, metric) or 0:.4g} {info.unit}")
                for r in runs]
        series.append({"name": name, "color": colors.get(method, "#333"), "line": True, "dash": guided,
                       "points": pts})
    return svg_plot(series, "pruning ratio (0 = original)", f"{info.label} ({info.unit})", title=title)


def sensitivity_svg(scan: dict) -> str:
    """Accuracy drop against ratio, one curve per layer group."""
    series = []
    for i, g in enumerate(sorted(scan["groups"], key=lambda g: -g.get("score", 0))):
        pts = [(0.0, 0.0, "")] + [(r, d, f"{g['name']} at {r:.0%}: {d:+.2f} pt") for r, d in
                                  zip(scan["ratios"], g["drops"])]
        series.append({"name": g["name"], "color": PALETTE[i % len(PALETTE)], "line": True, "points": pts})
    title = (f"Sensitivity ({scan.get('method', 'l2')}, {scan.get('limit') or 'all'} {scan.get('split', 'val')} "
             f"images, {scan.get('seconds', 0):.0f} s)")
    return svg_plot(series, "ratio of the group's channels removed", "top-1 drop (points)", title=title,
                    width=640) + legend([(s["name"], s["color"]) for s in series])


def _cell(v, digits: str = ".2f") -> str:
    return "–" if v is None else format(v, digits)


def comparison_table(ranking: Ranking, baseline: RunResult | None) -> str:
    """Every run with every figure; broken constraints marked, the recommended run highlighted."""
    bm = baseline.metrics if baseline else None
    head = ["#", "run", "recovery", "score", "top-1 %", "Δ pt", "F1 %", "prec. %", "rec. %", "latency ms",
            "speed-up", "img/s", "MACs M", "params k", "size MB", "compr. MB", "peak mem MB", "run s", "constraints"]
    one_recovery = len({e.result.recovery for e in ranking.entries}) <= 1  # then the setup names it
    if one_recovery:
        head.remove("recovery")
    left = ("run", "recovery", "constraints")
    rows = ["<div class='wide'><table><tr>" + "".join(f'<th class="{"l" if h in left else ""}">{html.escape(h)}</th>'
                                                      for h in head) + "</tr>"]

    def row(r: RunResult, rank_text: str, score: str, css: str, constraint: str) -> str:
        m = r.metrics
        delta = (m.top1 - bm.top1) * 100 if bm else None
        speed = bm.latency() / m.latency() if bm and m.latency() and bm.latency() else None
        cells = [rank_text, html.escape(r.label), html.escape(r.extra.get("recovery_summary", r.recovery) or "–"), score, f"{m.top1 * 100:.2f}",
                 _cell(delta, "+.2f"), f"{m.f1_macro * 100:.2f}", f"{m.precision_macro * 100:.2f}",
                 f"{m.recall_macro * 100:.2f}", _cell(m.latency() or None, ".3f"), _cell(speed, ".2f"),
                 _cell(m.throughput_ips or None, ".0f"), f"{m.macs / 1e6:.2f}", f"{m.params / 1e3:.1f}",
                 f"{m.size_bytes / 1e6:.3f}", f"{m.compressed_bytes / 1e6:.3f}",
                 _cell(m.peak_memory_bytes / 1e6 if m.peak_memory_bytes else None, ".1f"),
                 _cell(r.seconds if r.kind == "run" else None, ".1f"), constraint]
        if one_recovery:
            del cells[2]
        left = {1, 17} if one_recovery else {1, 2, 18}
        return f'<tr class="{css}">' + "".join(f'<td class="{"l" if i in left else ""}">{c}</td>'
                                               for i, c in enumerate(cells)) + "</tr>"

    if baseline:
        rows.append(row(baseline, "–", "–", "base", "original model"))
    for e in ranking.entries:
        css = "best" if ranking.best is e else ("broken" if not e.feasible else "")
        constraint = "✓ meets all" if e.feasible else "✗ " + html.escape("; ".join(e.violations))
        rows.append(row(e.result, str(e.rank), f"{e.score:.3f}", css, constraint))
    rows.append("</table></div>")
    return "".join(rows)


def criteria_table(criteria: Sequence[Criterion]) -> str:
    """The criteria as a table: metric, direction, unit, weight, constraints."""
    rows = ['<table><tr><th class="l">criterion</th><th class="l">metric</th><th>better</th><th>unit</th>'
            '<th>weight</th><th class="l">constraint</th></tr>']
    for c in criteria:
        rows.append(f'<tr><td class="l">{html.escape(c.name)}</td><td class="l">{html.escape(c.label)} '
                    f'(<code>{c.metric}</code>)</td><td>{"higher" if c.direction == "max" else "lower"}</td>'
                    f'<td>{html.escape(c.unit)}</td><td>{c.weight:g}</td>'
                    f'<td class="l">{html.escape(c.constraint_text() or "–")}</td></tr>')
    rows.append("</table>")
    return "".join(rows)


def _kv(items: Sequence[tuple[str, str]]) -> str:
    return '<table class="kv">' + "".join(f'<tr><th class="l">{html.escape(k)}</th><td>{html.escape(str(v))}</td>'
                                          f"</tr>" for k, v in items) + "</table>"


def write_csv(results: Sequence[RunResult], path: str | Path, baseline: RunResult | None = None,
              ranking: Ranking | None = None) -> Path:
    """All runs (and the baseline) with every figure, one row each."""
    path = Path(path)
    rows = ([baseline.csv_row()] if baseline else []) + [r.csv_row() for r in results]
    for row in rows:
        e = ranking.entry(row["key"]) if ranking else None
        row["rank"] = e.rank if e else ""
        row["score"] = e.score if e else ""
        row["violations"] = "; ".join(e.violations) if e else ""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def build_html(results: Sequence[RunResult], baseline: RunResult | None, criteria: Sequence[Criterion],
               plan: dict | None = None, scans: Sequence[dict] = (), store_path: str = "",
               csv_name: str = "") -> str:
    """The whole report as one HTML string."""
    plan = plan or {}
    model = plan.get("model") or (baseline.model if baseline else "the model")
    ranking = rank(results, criteria, baseline, model=model)
    colors = _colors(results)
    best = ranking.best or (ranking.entries[0] if ranking.entries else None)
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>PruneLab report — "
             f"{e(plan.get('name', 'results'))}</title><style>{CSS}</style></head><body>",
             f"<h1>PruneLab report: {e(plan.get('name', 'results'))}</h1>",
             f"<div class='muted'>generated {time.strftime('%Y-%m-%d %H:%M')} from {e(store_path)}"
             + (f" · all runs as CSV: <a href='{e(csv_name)}'>{e(csv_name)}</a>" if csv_name else "") + "</div>",
             f"<div class='verdict{'' if ranking.best else ' none'}'><b>Recommendation.</b> "
             f"{e(ranking.recommendation)}</div>"]
    # setup
    total_s = sum(r.seconds for r in results)
    versions = baseline.versions if baseline else (results[0].versions if results else {})
    recov = "; ".join(f"{r['name']}: {r.get('summary', '')}" for r in plan.get("recoveries", [])) or "–"
    setup = [("model", model), ("dataset", plan.get("data") or (baseline.dataset if baseline else "")),
             ("methods", ", ".join(plan.get("methods", sorted({r.method for r in results})))),
             ("ratios", ", ".join(f"{v:g}" for v in plan.get("ratios", [])) or "–"),
             ("target speed-ups", ", ".join(f"{v:g}×" for v in plan.get("target_speedups", [])) or "–"),
             ("recovery", recov), ("sensitivity-guided runs", "yes" if plan.get("sensitivity_guided") else "no"),
             ("seed", plan.get("seed", "–")),
             ("shared pruning options", ", ".join(f"{k}={v}" for k, v in (plan.get("prune") or {}).items()) or "–"),
             ("device", baseline.device if baseline else (results[0].device if results else "–")),
             ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
             ("runs", f"{len(results)} stored, {total_s / 60:.1f} min of run time in total"),
             ("evaluation images", str(baseline.metrics.samples or "–") if baseline else "–")]
    parts.append("<h2>Setup</h2>" + _kv(setup))
    parts.append("<h2>Criteria</h2><p class='muted'>Each weighted criterion is scaled to 0–1 across the runs (1 = "
                 "best of them); the score is the weighted mean. Runs breaking a constraint are ranked after "
                 "the others (least far past the limits first) and marked ✗.</p>" + criteria_table(criteria))
    parts.append("<h2>Comparison</h2>" + comparison_table(ranking, baseline))
    # Pareto
    parts.append("<h2>Pareto fronts</h2><p class='muted'>Filled: meets the constraints; hollow: breaks one; "
                 "ring: recommended; star: original; dashed: the front (no run is better on both axes).</p>")
    parts.append(legend(list(colors.items())))
    lat_metric = "latency_ms" if any(metric_value(r, "latency_ms") for r in results) else "macs"
    parts.append("<div class='grid'><div class='card'>"
                 + pareto_svg(ranking, baseline, lat_metric, colors,
                              "Accuracy vs latency" if lat_metric == "latency_ms" else
                              "Accuracy vs MACs (latency not measured)")
                 + "</div><div class='card'>"
                 + pareto_svg(ranking, baseline, "size_bytes", colors, "Accuracy vs size on disk")
                 + "</div><div class='card'>"
                 + pareto_svg(ranking, baseline, "compressed_bytes", colors, "Accuracy vs compressed size")
                 + "</div></div>")
    # curves
    parts.append("<h2>Per-method curves</h2>" + legend(list(colors.items()))
                 + "<p class='muted'>Dashed: sensitivity-guided per-layer ratios at the same MACs as uniform.</p>")
    cards = [curves_svg(results, baseline, colors, "top1", "Top-1 accuracy vs pruning ratio")]
    if lat_metric == "latency_ms":
        cards.append(curves_svg(results, baseline, colors, "latency_ms", "Latency vs pruning ratio"))
    cards.append(curves_svg(results, baseline, colors, "macs", "MACs vs pruning ratio"))
    cards.append(curves_svg(results, baseline, colors, "f1_macro", "F1 (macro) vs pruning ratio"))
    parts.append("<div class='grid'>" + "".join(f"<div class='card'>{c}</div>" for c in cards) + "</div>")
    # sensitivity
    parts.append("<h2>Sensitivity</h2>")
    if scans:
        for scan in scans:
            rows = "".join(f"<tr><td class='l'>{e(g['name'])}</td><td class='l'>{e(', '.join(g['layers']))}</td>"
                           f"<td>{g['channels']}</td>" + "".join(f"<td>{d:+.2f}</td>" for d in g["drops"])
                           + f"<td>{g.get('score', 0):.2f}</td></tr>"
                           for g in sorted(scan["groups"], key=lambda g: -g.get("score", 0)))
            heads = "".join(f"<th>{r:.0%}</th>" for r in scan["ratios"])
            parts.append("<div class='grid'><div class='card'>" + sensitivity_svg(scan) + "</div><div class='card'>"
                         f"<h3>Drop in points when one group is pruned alone (baseline top-1 "
                         f"{scan['baseline_top1'] * 100:.2f} % on {scan.get('limit') or 'all'} images)</h3>"
                         f"<table><tr><th class='l'>group</th><th class='l'>layers</th><th>ch</th>{heads}"
                         f"<th>mean</th></tr>{rows}</table></div></div>")
        guided = [r for r in results if r.guided]
        if guided:
            lines = []
            for g in guided:
                twin = next((r for r in results if not r.guided and r.method == g.method and r.ratio == g.ratio
                             and r.recovery == g.recovery), None)
                if twin:
                    lines.append(f"<tr><td class='l'>{e(g.method)} @ {g.ratio:g}</td>"
                                 f"<td>{twin.metrics.top1 * 100:.2f}</td><td>{g.metrics.top1 * 100:.2f}</td>"
                                 f"<td>{(g.metrics.top1 - twin.metrics.top1) * 100:+.2f}</td>"
                                 f"<td>{twin.metrics.macs / 1e6:.2f}</td><td>{g.metrics.macs / 1e6:.2f}</td></tr>")
            if lines:
                parts.append("<h3>Sensitivity-guided against uniform ratios</h3><table><tr><th class='l'>run</th>"
                             "<th>uniform top-1 %</th><th>guided top-1 %</th><th>Δ pt</th><th>uniform MACs M</th>"
                             "<th>guided MACs M</th></tr>" + "".join(lines) + "</table>")
    else:
        parts.append("<p class='muted'>No sensitivity scan in this store (run `python main.py sensitivity ... "
                     "--store PATH`, or set sensitivity_guided = true in the plan).</p>")
    # confusion matrices
    parts.append("<h2>Confusion matrices</h2><div class='grid'>")
    names = []
    if baseline and baseline.metrics.per_class:
        names = baseline.metrics.per_class.get("names") or []
    # the top-ranked run: "recommended" only when it meets every constraint
    verdict = ("Recommended" if best.feasible else "Closest (breaks a constraint)") if best else ""
    for title, r in (("Original", baseline), (f"{verdict}: {best.result.label}" if best else "", best.result
                                              if best else None)):
        if r is not None and r.metrics.confusion is not None:
            n = r.metrics.confusion.shape[0]
            parts.append("<div class='card'>" + confusion_svg(r.metrics.confusion, names or [str(i) for i in range(n)],
                                                              f"{title} (top-1 {r.metrics.top1 * 100:.2f} %)")
                         + "</div>")
    parts.append("</div>")
    if best:
        parts.append(f"<p class='muted'>{verdict} model file: {e(best.result.files.get('model', 'not saved'))}"
                     f" · {e(describe_gain(best.result, baseline))}</p>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(store: ResultStore, out: str | Path, plan_name: str | None = None,
                 criteria: Sequence[Criterion] | None = None) -> tuple[Path, Path]:
    """Write FILE.html and FILE.csv for a plan of the store (default: the most recent one), as one set:
    both appear whole, or neither changes."""
    out = check_report_path(out, flag="report")
    plans = store.plans()
    plan = None
    if plan_name:
        plan = next((p for p in plans if p["name"] == plan_name), None)
        if plan is None:
            raise UserError(f"no plan named {plan_name!r} in {store.path}; stored plans: "
                            f"{', '.join(p['name'] for p in plans) or 'none'}")
    elif plans:
        plan = plans[-1]
    if plan:
        results = store.results(plan.get("keys"))
        baseline = store.get(plan.get("baseline", "")) if plan.get("baseline") else None
        crit = criteria or tuple(Criterion.from_json(c) for c in plan.get("criteria", [])) or DEFAULT_CRITERIA
    else:
        results = store.results()
        bases = store.results(kind="baseline")
        baseline = bases[-1] if bases else None
        crit = criteria or DEFAULT_CRITERIA
    scans = store.sensitivity()
    if plan:
        mine = [s for s in scans if s.get("plan") == plan["name"]]
        scans = mine or scans
    if not results and not scans:
        raise UserError(f"{store.path} holds no runs yet; run `python main.py sweep PLAN.toml --store {store.path}`")
    csv_path = out.with_suffix(".csv")
    ranking = rank(results, crit, baseline)
    text = build_html(results, baseline, crit, plan, scans, str(store.path), csv_path.name)
    with atomic_files(out, csv_path) as (html_tmp, csv_tmp):  # both files or neither
        write_csv(results, csv_tmp, baseline, ranking)
        html_tmp.write_text(text, encoding="utf-8")
    return out, csv_path


def check_report_path(out: str | Path, flag: str = "--out") -> Path:
    """Refuse, before any work, a report target that is a folder, not writable or not an .html file."""
    from engine.outputs import check_output_file

    out = check_output_file(out, flag=flag, suffixes=(".html",))
    check_output_file(out.with_suffix(".csv"), flag=f"{flag} (the CSV beside it)", suffixes=(".csv",))
    return out
