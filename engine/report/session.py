"""The session report: every run of one session in a self-contained HTML file a student can hand in.

A session is the window's runs (File ▸ Save session report…) or, headless, the `prune --json` files given to
`report --session`, in the order given. Each run shows its configuration, its figures with their 95 %
intervals and its per-class table and confusion matrix; the plots put every run on shared axes; the teach
views the student opened come as pictures. Drawn with the experiment report's template style and SVG charts.
"""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from markupsafe import Markup

from engine.config import PruneConfig, amount_words, recovery_words
from engine.errors import UserError
from engine.metrics import Metrics
from engine.outputs import atomic_files, check_output_file
from engine.report.svg import MAX_MATRIX_CLASSES, PALETTE, Point, Series, confusion_svg, svg_plot
from engine.timing import speedup_text
from engine.units import fmt_bytes, fmt_count



@dataclass
class SessionRun:
    """One run as the session report shows it (from the window's record or a `prune --json` file)."""

    label: str
    config: dict
    before: Metrics
    after: Metrics
    steps: Sequence[Metrics] = ()  # after each pruning step
    parent: str = ""  # the run it continued from ('' : the loaded model)
    recover_only: bool = False
    note: str = ""  # the student's own words
    notes: Sequence[str] = ()  # what the run said
    paired: dict | None = None  # the paired speed-up (engine.timing.PairedSpeedup.to_json)
    seconds: float = 0.0
    colour: str = ""

    @classmethod
    def from_json(cls, label: str, obj: dict) -> "SessionRun":
        """A run from the object `prune --json` writes."""
        try:
            return cls(label, dict(obj["config"]), Metrics.from_json(obj["before"]), Metrics.from_json(obj["after"]),
                       [Metrics.from_json(s) for s in obj.get("steps") or ()], notes=list(obj.get("notes") or ()),
                       paired=obj.get("latency_speedup"), seconds=float(obj.get("seconds") or 0.0),
                       recover_only=any(str(n).startswith("Recover only") for n in obj.get("notes") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{label} is not a `prune --json` file ({type(exc).__name__}: {exc}); pass the files "
                            "`python main.py prune ... --json FILE` wrote") from None


@dataclass(frozen=True)
class TeachShot:
    """A teach view the student opened, as a picture with the line that was above it."""

    title: str
    caption: str
    png: bytes


@dataclass
class Session:
    """What the report covers: the runs, the teach views, where they came from."""

    runs: list[SessionRun]
    shots: list[TeachShot] = field(default_factory=list)
    model: str = ""
    dataset: str = ""
    source: str = ""


def load_session(paths: Sequence[str | Path]) -> Session:
    """A headless session: the `prune --json` files given, or every *.json file of a folder given (by name)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.json"))
            if not found:
                raise UserError(f"{p} holds no .json file; write runs with `python main.py prune ... --json FILE`")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p} does not exist; pass `prune --json` files or a folder of them to --session")
    runs = []
    for i, f in enumerate(files):
        try:
            obj = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{f} cannot be read as JSON ({exc}); pass the files `prune --json` wrote") from None
        run = SessionRun.from_json(f.name, obj if isinstance(obj, dict) else {})
        run.label = f"#{i + 1} {f.stem}"
        runs.append(run)
    return Session(runs, source=", ".join(str(p) for p in paths))


def _config(run: SessionRun) -> PruneConfig | None:
    try:
        return PruneConfig.from_json(run.config)
    except (UserError, TypeError):
        return None


def _pct(m: Metrics, key: str) -> str:
    return m.figure_text(key)


def _run_context(run: SessionRun, colour: str) -> dict:
    cfg = _config(run)
    a, b = run.after, run.before
    against = f" vs {run.parent}" if run.parent else " vs the original"
    figures = {
        "top-1": _pct(a, "top1"), "top-1 before": _pct(b, "top1"),
        "Δ top-1": f"{(a.top1 - b.top1) * 100:+.2f} pt{against}",
        "macro-F1": _pct(a, "f1_macro"),
        "parameters": f"{fmt_count(a.params)} (before {fmt_count(b.params)}; non-zero {fmt_count(a.nonzero_params)})",
        "MACs": f"{fmt_count(a.macs)} ({b.macs / a.macs if a.macs else 0:.2f}× fewer{against})",
        "size": f"{fmt_bytes(a.size_bytes)} ({fmt_bytes(a.compressed_bytes)} compressed)",
    }
    if run.paired:
        figures["speed-up"] = speedup_text(run.paired)
    if run.seconds:
        figures["time"] = f"{run.seconds:.1f} s"
    config = {k: v for k, v in run.config.items() if v not in ({}, [], None, ())}
    pc = a.per_class or {}
    recall = pc.get("recall") or []
    names = list(pc.get("names") or [str(i) for i in range(len(recall))])
    before_recall = (b.per_class or {}).get("recall")
    if before_recall is not None and len(before_recall) != len(recall):
        before_recall = None
    classes = []
    for i, name in enumerate(names[:len(recall)]):
        r, was = recall[i], before_recall[i] if before_recall else None
        classes.append({"name": name, "images": (pc.get("support") or [""] * len(recall))[i],
                        "recall": f"{r * 100:.1f}", "before": f"{was * 100:.1f}" if was is not None else "–",
                        "delta": f"{(r - was) * 100:+.1f}" if was is not None else "–",
                        "precision": f"{pc['precision'][i] * 100:.1f}", "f1": f"{pc['f1'][i] * 100:.1f}"})
    matrix = ""
    if a.confusion is not None and 0 < len(a.confusion) <= MAX_MATRIX_CLASSES:
        matrix = Markup(confusion_svg(a.confusion, names, f"{run.label}: confusion matrix"))
    return {"label": run.label, "colour": colour, "parent": run.parent,
            "method": "recover only" if run.recover_only else run.config.get("method", "?"),
            "amount": amount_words(cfg, run.recover_only) if cfg else "?",
            "recovery": recovery_words(cfg) if cfg else "?", "figures": figures, "config": config,
            "note": run.note, "notes": list(run.notes), "classes": classes, "matrix": matrix}


def _plots(runs: Sequence[SessionRun], colours: Sequence[str]) -> list[Markup]:
    """Top-1 against MACs for every run (the original as a star), and top-1 after each step."""
    series = []
    first = runs[0].before if runs else None
    if first is not None:
        series.append(Series("original", [Point(first.macs / 1e6, first.top1 * 100, label="original")],
                             color="#444", marker="star"))
    for run, colour in zip(runs, colours):
        ci = run.after.interval("top1")
        tip = f"{run.label}: top-1 {run.after.figure_text('top1')}"
        series.append(Series(run.label, [Point(run.after.macs / 1e6, run.after.top1 * 100, tip=tip,
                                               label=run.label)], color=colour))
        if ci:  # the interval as a vertical bar: two points joined
            series.append(Series(f"{run.label} 95 % interval", [Point(run.after.macs / 1e6, ci[0] * 100),
                                                                Point(run.after.macs / 1e6, ci[1] * 100)],
                                 color=colour, line=True, marker="none", width=1.5))
    out = [Markup(svg_plot(series, "MACs (millions)", "top-1 %", title="Top-1 against MACs, 95 % intervals"))]
    curves = [Series(run.label, [Point(i, m.top1 * 100, tip=f"{run.label} step {i}")
                                 for i, m in enumerate([run.before, *run.steps])], color=colour, line=True)
              for run, colour in zip(runs, colours) if run.steps]
    if curves:
        out.append(Markup(svg_plot(curves, "pruning step (0: the model the run started from)", "top-1 %",
                                   title="Top-1 after each step")))
    return out


def session_html(session: Session) -> str:
    """The whole session report as one HTML string."""
    from engine.report import environment

    colours = [r.colour or PALETTE[i % len(PALETTE)] for i, r in enumerate(session.runs)]
    shots = [{"title": s.title, "caption": s.caption,
              "src": "data:image/png;base64," + base64.b64encode(s.png).decode("ascii")} for s in session.shots]
    return environment().get_template("session.html.j2").render(
        runs=[_run_context(r, c) for r, c in zip(session.runs, colours)], plots=_plots(session.runs, colours),
        shots=shots, model=session.model, dataset=session.dataset, source=session.source,
        legend=[{"name": r.label, "color": c} for r, c in zip(session.runs, colours)],
        generated=time.strftime("%Y-%m-%d %H:%M"))


def check_session_path(out: str | Path, flag: str = "--out") -> Path:
    """Refuse, before any work, a target that is a folder, not writable or not an .html file."""
    return check_output_file(out, flag=flag, suffixes=(".html",))


def write_session_report(session: Session, out: str | Path) -> Path:
    """Write the report whole (or leave `out` as it was)."""
    out = check_session_path(out)
    if not session.runs:
        raise UserError("the session has no finished run yet: run a pruning first")
    text = session_html(session)
    with atomic_files(out) as (tmp,):
        tmp.write_text(text, encoding="utf-8")
    return out
