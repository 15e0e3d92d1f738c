"""How long a teacher's class waits: the built-in lesson walked in a real window, timed step by step.

The app runs under Xvfb with openbox and is clicked with xdotool, as tests/test_real_window.py drives it (the
same `Window`), with the Prune panel's default options, its window over the whole 1280×720 screen and the Lesson
panel open. Each run is a fresh app:
  start to ready   the app started until the demo is loaded and the window idle;
  step N Show me   Show me pressed until what it started (loading, Explain) has ended;
  step 3 run       Run pressed after step 3's Show me (L1 at 30 %, BatchNorm re-estimation, 1 000 test images);
  step 5 run       Run pressed after step 5's Show me (Group L2 at 70 %, 0.3 epochs of fine-tuning);
  step 6 plan      Run plan pressed after step 6's Show me until every run of the plan is in the table.
It prints each figure per run, their medians and the load average before and after (the machine's load changes
these figures more than anything: say it with them).

Run: .venv/bin/python benchmarks/journeys.py [--runs 3] [--keep]
Needs Xvfb, openbox, xdotool and ImageMagick's import (`make testdeps`). A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_real_window import MISSING, Window, _button, _idle  # noqa: E402

PLAN_TIMEOUT_S = 1800.0


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _lesson_open(found: dict) -> bool:
    return any(d["title"].startswith("Lesson") for d in found["docks"])


def walk_the_lesson(win: Window, timings: dict[str, float], plan_runs: int, tabs: list[str]) -> None:
    """Every step's Show me, step 3's and step 5's run, step 6's plan; `tabs`: the tab each Show me opens."""
    win.xdo("key", "F1")
    win.wait_until("the Lesson panel", _lesson_open)
    for step in range(1, 7):
        if step > 1:
            win.click(_button(win.ask(), "Next ▶")["rect"])
            win.ask()  # a tick later: the new step's text is laid out and Show me where it will stay
        t0 = time.monotonic()
        win.click(_button(win.ask(), "Show me")["rect"])
        win.wait_until(f"step {step}'s Show me to open {tabs[step - 1]}", lambda f, step=step:
                       f["state"]["tab"] == tabs[step - 1], timeout=30)  # (a click that missed fails here)
        win.settle(f"step {step}'s Show me", timeout=300)
        timings[f"step {step} Show me"] = time.monotonic() - t0
        win.screenshot(f"step {step} Show me")
        if step in (3, 5):
            done = win.ask()["state"]["finished_runs"]
            t0 = time.monotonic()
            win.click(_button(win.ask(), "Run")["rect"])
            win.wait_until(f"step {step}'s run", lambda f, n=done: f["state"]["finished_runs"] == n + 1 and _idle(f),
                           timeout=900)
            timings[f"step {step} run"] = time.monotonic() - t0
            win.screenshot(f"step {step} run")
        if step == 6:
            t0 = time.monotonic()
            win.click(_button(win.ask(), "Run plan")["rect"])
            win.wait_until("step 6's plan", lambda f: f["plan_runs"] == plan_runs and _idle(f),
                           timeout=PLAN_TIMEOUT_S)
            timings["step 6 plan"] = time.monotonic() - t0
            win.screenshot("step 6 plan done")


def one_run(keep: bool, plan_runs: int, tabs: list[str]) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="prunelab-journeys-"))
    win = Window(folder)
    timings: dict[str, float] = {}
    try:
        start = time.monotonic()
        win.start(options=None)
        win.wait_until("the demo model to load", _idle, timeout=180)
        timings["start to ready"] = time.monotonic() - start
        win.fill_screen()  # as a teacher's projector shows it
        walk_the_lesson(win, timings, plan_runs, tabs)
    finally:
        win.stop()
        if keep:
            print(f"screenshots and logs: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh app runs (median reported)")
    parser.add_argument("--keep", action="store_true", help="keep each run's screenshots and logs")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops the app, openbox and Xvfb
    if MISSING:
        print(f"journeys.py needs {', '.join(MISSING)} (`make testdeps`)", file=sys.stderr)
        return 2
    from gui.lesson_file import builtin_lessons, load_lesson

    steps = load_lesson(builtin_lessons()[0]).steps
    tabs = [step.show_me.get("tab", "Network") for step in steps]
    plan = steps[5].show_me["experiment"]
    plan_runs = len(plan["methods"]) * len(plan["ratios"])
    runs = []
    for i in range(args.runs):
        before = _load()
        timings = one_run(args.keep, plan_runs, tabs)
        runs.append(timings)
        print(f"run {i + 1}: load average {before} before, {_load()} after; "
              + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), flush=True)
    print(f"\nmedian of {len(runs)} runs (the app computes on {max(1, (os.cpu_count() or 2) - 1)} thread(s): cores - 1)")
    for key in runs[0]:
        values = [r[key] for r in runs if key in r]
        print(f"  {key:<18} {statistics.median(values):7.1f} s   ({', '.join(f'{v:.1f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
