"""Self-contained HTML report (a Jinja2 template with inline SVG plots, no JS, no network) and a CSV of all runs.

`svg` draws, `charts` turns runs into series, `content` turns runs into the named rows the template shows;
this module renders the template and writes the HTML and CSV as one set.
"""
from __future__ import annotations

import csv
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import jinja2

from engine.errors import UserError
from engine.experiments import DEFAULT_CRITERIA, Criterion, Ranking, ResultStore, RunResult, apply_final_round, rank
from engine.outputs import atomic_files, check_output_file
from engine.report.content import model_name, report_context
from engine.report.svg import Point, Series, confusion_svg, nice_ticks, svg_plot

__all__ = ["Point", "Series", "build_html", "check_report_path", "confusion_svg", "nice_ticks", "svg_plot",
           "write_csv", "write_report"]


def templates_dir() -> Path:
    """The templates folder, beside this module in a checkout and under sys._MEIPASS in a PyInstaller bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "engine" / "report" / "templates"
    return Path(__file__).resolve().parent / "templates"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The template environment: every value escaped unless it is Markup, a missing name an error."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir()), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def build_html(results: Sequence[RunResult], baseline: RunResult | None, criteria: Sequence[Criterion],
               plan: dict | None = None, scans: Sequence[dict] = (), store_path: str = "",
               csv_name: str = "") -> str:
    """The whole report as one HTML string."""
    plan = plan or {}
    ranking = rank(results, criteria, baseline, model=model_name(plan, baseline))
    context = report_context(results, baseline, criteria, ranking, plan, scans)
    return environment().get_template("report.html.j2").render(
        context, generated=time.strftime("%Y-%m-%d %H:%M"), store_path=store_path, csv_name=csv_name)


def write_csv(results: Sequence[RunResult], path: str | Path, baseline: RunResult | None = None,
              ranking: Ranking | None = None) -> Path:
    """All runs (and the baseline) with every figure, one row each."""
    path = Path(path)
    rows = ([baseline.csv_row()] if baseline else []) + [r.csv_row() for r in results]
    for row in rows:
        e = ranking.entry(row["key"]) if ranking else None
        row["rank"] = e.rank if e else ""
        row["tied_with_first"] = ranking.is_tied(e) if e else ""  # within the evaluation's noise of the leader
        row["score"] = e.score if e else ""
        row["violations"] = "; ".join(e.violations) if e else ""
    fields = list(dict.fromkeys(k for row in rows for k in row))  # every column any row has, in order
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _plan_and_runs(store: ResultStore, plan_name: str | None, criteria: Sequence[Criterion] | None):
    """The plan to report on (default: the most recent one), its runs, original and criteria."""
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
        # latency and speed-up from the plan's final comparison round, when one was stored
        results, baseline = apply_final_round(results, baseline, plan.get("final_round"))
        crit = criteria or tuple(Criterion.from_json(c) for c in plan.get("criteria", [])) or DEFAULT_CRITERIA
    else:
        results = store.results()
        bases = store.results(kind="baseline")
        baseline = bases[-1] if bases else None
        crit = criteria or DEFAULT_CRITERIA
    return plan, results, baseline, crit


def write_report(store: ResultStore, out: str | Path, plan_name: str | None = None,
                 criteria: Sequence[Criterion] | None = None) -> tuple[Path, Path]:
    """Write FILE.html and FILE.csv for a plan of the store (default: the most recent one), as one set:
    both appear whole, or neither changes."""
    out = check_report_path(out, flag="report")
    plan, results, baseline, crit = _plan_and_runs(store, plan_name, criteria)
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
    out = check_output_file(out, flag=flag, suffixes=(".html",))
    check_output_file(out.with_suffix(".csv"), flag=f"{flag} (the CSV beside it)", suffixes=(".csv",))
    return out
