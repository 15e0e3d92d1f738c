"""Small inline SVG charts: pure functions from numbers and text to an SVG string (no JS, no network).

Every piece of text is escaped here and every coordinate formatted, so the strings are well-formed XML
that the report's template may embed as they are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Sequence

import numpy as np

MAX_MATRIX_CLASSES = 40  # beyond this a cell per pair of classes is unreadable: the per-class table stays
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f", "#393b79", "#637939")
SVG_NS = "http://www.w3.org/2000/svg"


@dataclass(frozen=True)
class Point:
    """One data point: a missing x or y (None) is skipped; tip is the hover text, label is drawn beside it."""
    x: float | None
    y: float | None
    tip: str = ""
    label: str = ""
    x_span: tuple[float, float] | None = None  # (low, high) of x, drawn as a horizontal bar (an interval)
    y_span: tuple[float, float] | None = None  # (low, high) of y, drawn as a vertical bar (an accuracy's interval)


@dataclass(frozen=True)
class Series:
    """Points drawn alike (marker: dot, hollow, star, ring or none), optionally joined by a (dashed) line."""
    name: str
    points: Sequence[Point]
    color: str = "#333"
    line: bool = False
    dash: bool = False
    marker: str = "dot"
    width: float = 2

    def drawn(self) -> list[Point]:
        """The points that have both coordinates."""
        return [p for p in self.points if p.x is not None and p.y is not None]


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


def fmt_tick(v: float) -> str:
    """A tick label: thousands grouped, otherwise four significant digits."""
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def _attr(text: object) -> str:
    return escape(str(text), quote=True)


def svg_plot(series: Sequence[Series], xlabel: str, ylabel: str, width: int = 600, height: int = 380,
             title: str = "", xlog: bool = False) -> str:
    """An inline SVG chart of the series on shared axes (x on a log scale when xlog)."""
    pts = [p for s in series for p in s.drawn()]
    if not pts:
        return (f'<svg xmlns="{SVG_NS}" width="{width}" height="60"><text x="10" y="30" fill="#57606a">'
                f'no data for {escape(title)}</text></svg>')
    tx = math.log10 if xlog else (lambda v: v)
    x_all = [v for p in pts for v in (p.x, *(p.x_span or ()))]
    xt = nice_ticks(min(tx(v) for v in x_all), max(tx(v) for v in x_all))
    y_all = [v for p in pts for v in (p.y, *(p.y_span or ()))]
    yt = nice_ticks(min(y_all), max(y_all))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    x1 = x1 if x1 != x0 else x0 + 1
    y1 = y1 if y1 != y0 else y0 + 1
    ml, mr, mt, mb = 62, 70, 28 if title else 12, 46  # margins leave room for tick labels and titles
    pw, ph = width - ml - mr, height - mt - mb

    def sx(v: float) -> float:
        return ml + (tx(v) - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return mt + ph - (v - y0) / (y1 - y0) * ph

    out = [f'<svg xmlns="{SVG_NS}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    if title:
        out.append(f'<text x="{ml}" y="18" font-size="14" font-weight="600">{escape(title)}</text>')
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fff" stroke="#8c959f"/>')
    for v in xt:
        x = ml + (v - x0) / (x1 - x0) * pw
        label = fmt_tick(10 ** v) if xlog else fmt_tick(v)
        out.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{mt + ph}" stroke="#eaeef2"/>'
                   f'<text x="{x:.1f}" y="{mt + ph + 16}" font-size="11" text-anchor="middle">{label}</text>')
    for v in yt:
        y = sy(v)
        out.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" stroke="#eaeef2"/>'
                   f'<text x="{ml - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{fmt_tick(v)}</text>')
    out.append(f'<text x="{ml + pw / 2}" y="{height - 8}" font-size="12" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text transform="translate(14,{mt + ph / 2}) rotate(-90)" font-size="12" text-anchor="middle">'
               f'{escape(ylabel)}</text>')
    for s in series:
        out += _draw_series(s, sx, sy)
    out.append("</svg>")
    return "".join(out)


def _draw_series(s: Series, sx, sy) -> list[str]:
    good, color = s.drawn(), _attr(s.color)
    out = []
    if s.line and len(good) > 1:
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(p.x):.1f},{sy(p.y):.1f}" for i, p in enumerate(good))
        dash = ' stroke-dasharray="6,4"' if s.dash else ""
        out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="{s.width:g}"{dash}/>')
    for p in good:
        x, y = sx(p.x), sy(p.y)
        tip = f"<title>{escape(p.tip)}</title>" if p.tip else ""
        if p.x_span:
            out.append(f'<line x1="{sx(p.x_span[0]):.1f}" y1="{y:.1f}" x2="{sx(p.x_span[1]):.1f}" y2="{y:.1f}" '
                       f'stroke="{color}" stroke-width="1.5"/>')
        if p.y_span:
            out.append(f'<line x1="{x:.1f}" y1="{sy(p.y_span[0]):.1f}" x2="{x:.1f}" y2="{sy(p.y_span[1]):.1f}" '
                       f'stroke="{color}" stroke-width="1.5"/>')
        if s.marker == "dot":
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="{color}" stroke="#fff">{tip}</circle>')
        elif s.marker == "hollow":
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="#fff" stroke="{color}" '
                       f'stroke-width="2">{tip}</circle>')
        elif s.marker == "star":
            out.append(f'<path d="{_star(x, y)}" fill="#111" stroke="#fff">{tip}</path>')
        elif s.marker == "ring":
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="none" stroke="{color}" '
                       f'stroke-width="2.5">{tip}</circle>')
        if p.label:
            out.append(f'<text x="{x + 7:.1f}" y="{y - 7:.1f}" font-size="10.5" fill="#24292f">'
                       f'{escape(p.label)}</text>')
    return out


def _star(x: float, y: float, r: float = 8.0) -> str:
    pts = []
    for i in range(10):
        a = math.pi / 2 + i * math.pi / 5
        rr = r if i % 2 == 0 else r * 0.45
        pts.append(f"{x + rr * math.cos(a):.1f},{y - rr * math.sin(a):.1f}")
    return "M" + " L".join(pts) + " Z"


def confusion_rgb(share: float, diagonal: bool) -> tuple[int, int, int]:
    """Blue for correct predictions, red for confusions; a few percent of confusion already shows (the report's
    matrix and the window's)."""
    if diagonal:
        shade = int(255 - 200 * share)
        return shade, min(255, shade + int(30 * share)), 255
    light = int(255 - 180 * min(1.0, 4 * share))
    return 255, light, light


def _confusion_fill(share: float, diagonal: bool) -> str:
    return "rgb({},{},{})".format(*confusion_rgb(share, diagonal))


def confusion_svg(matrix: np.ndarray, names: Sequence[str], title: str, cell: int = 34) -> str:
    """A confusion-matrix heat map with counts (rows: true class, columns: predicted)."""
    m = np.asarray(matrix, dtype=np.int64)
    n = m.shape[0]
    full = [str(names[i]) if i < len(names) else str(i) for i in range(n)]
    short = [escape(name[:14]) for name in full]  # cut before escaping: never half an entity
    left, top = 110, 110
    w, h = left + n * cell + 10, top + n * cell + 30
    share = m / np.maximum(1, m.sum(1, keepdims=True))
    out = [f'<svg xmlns="{SVG_NS}" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
           f'<text x="4" y="16" font-size="14" font-weight="600">{escape(title)}</text>',
           f'<text x="{left + n * cell / 2}" y="{h - 6}" font-size="11" text-anchor="middle">predicted</text>']
    for i in range(n):
        out.append(f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4}" font-size="10.5" '
                   f'text-anchor="end">{short[i]}</text>')
        out.append(f'<text transform="translate({left + i * cell + cell / 2 + 4},{top - 6}) rotate(-60)" '
                   f'font-size="10.5">{short[i]}</text>')
        for j in range(n):
            v = float(share[i, j])
            color = "#fff" if (i == j and v > 0.6) else "#111"
            out.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
                       f'fill="{_confusion_fill(v, i == j)}" stroke="#fff"><title>true {escape(full[i])}, '
                       f'predicted {escape(full[j])}: {m[i, j]}</title></rect>'
                       f'<text x="{left + j * cell + cell / 2}" y="{top + i * cell + cell / 2 + 4}" font-size="10" '
                       f'text-anchor="middle" fill="{color}">{m[i, j]}</text>')
    out.append("</svg>")
    return "".join(out)
