"""How long a teacher's class waits: the built-in lesson walked in a real window, timed step by step.

The app runs under Xvfb with openbox and is clicked with xdotool, as tests/test_real_window.py drives it (the
same `Window`), with the Prune panel's default options, its window over the whole 1280×720 screen and the Lesson
panel open. Each run is a fresh app:
  start to ready   the app started until the demo is loaded and the window idle;
  step N Show me   Show me pressed until what it started (loading, Explain) has ended;
  step 3 run       Run pressed after step 3's Show me (L1 at 30 %, BatchNorm re-estimation, 1 000 test images);
  step 5 run       Run pressed after step 5's Show me (Group L2 at 70 %, 0.3 epochs of fine-tuning);
  step 6 plan      Run plan pressed after step 6's Show me until every run of the plan is in the table.
With --journey own-model, a practitioner's first minutes instead: a torchvision resnet18 state_dict and an image
folder (made in a temporary folder) opened with File ▸ Open model (the file typed into the file dialog, the
architecture picked from the list, the folder through the Dataset list, Check, Open), then one prune with the
panel's defaults:
  own model: chosen / checked   Ctrl+O until the dataset is read / until the check has passed;
  open own model                Ctrl+O until the model is open and the window idle;
  own model: prune              Run pressed until the run is in the table.
It prints each figure per run, their medians and the load average before and after (the machine's load changes
these figures more than anything: say it with them), and for the long steps the app's CPU seconds ("… CPU",
every thread), which the load changes much less.

Run: .venv/bin/python benchmarks/journeys.py [--runs 3] [--keep] [--plan-only] [--journey lesson|own-model]
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
FOLDER_TITLE = "Choose an ImageFolder (one sub-folder per class)"  # gui.data_choice's folder dialog
LESSON, OWN_MODEL = "lesson", "own-model"


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def app_cpu(win: Window) -> float:
    """Seconds of CPU the app has used (user and system, all its threads): what a step costs whatever the load."""
    fields = Path(f"/proc/{win.app.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lesson_open(found: dict) -> bool:
    return any(d["title"].startswith("Lesson") for d in found["docks"])


def walk_the_lesson(win: Window, timings: dict[str, float], plan_runs: int, tabs: list[str],
                    plan_only: bool = False) -> None:
    """Every step's Show me, step 3's and step 5's run, step 6's plan; `tabs`: the tab each Show me opens.
    `plan_only`: Next to step 6, its Show me and its plan."""
    win.xdo("key", "F1")
    win.wait_until("the Lesson panel", _lesson_open)
    for step in range(1, 7):
        if step > 1:
            win.click(_button(win.ask(), "Next ▶")["rect"])
            win.ask()  # a tick later: the new step's text is laid out and Show me where it will stay
        if plan_only and step < 6:
            continue
        t0 = time.monotonic()
        win.click(_button(win.ask(), "Show me")["rect"])
        win.wait_until(f"step {step}'s Show me to open {tabs[step - 1]}", lambda f, step=step:
                       f["state"]["tab"] == tabs[step - 1], timeout=30)  # (a click that missed fails here)
        win.settle(f"step {step}'s Show me", timeout=300)
        timings[f"step {step} Show me"] = time.monotonic() - t0
        win.screenshot(f"step {step} Show me")
        if step in (3, 5):
            done = win.ask()["state"]["finished_runs"]
            t0, c0 = time.monotonic(), app_cpu(win)
            win.click(_button(win.ask(), "Run")["rect"])
            win.wait_until(f"step {step}'s run", lambda f, n=done: f["state"]["finished_runs"] == n + 1 and _idle(f),
                           timeout=900)
            timings[f"step {step} run"] = time.monotonic() - t0
            timings[f"step {step} run CPU"] = app_cpu(win) - c0
            win.screenshot(f"step {step} run")
        if step == 6:
            t0, c0 = time.monotonic(), app_cpu(win)
            win.click(_button(win.ask(), "Run plan")["rect"])
            win.wait_until("step 6's plan", lambda f: f["plan_runs"] == plan_runs and _idle(f),
                           timeout=PLAN_TIMEOUT_S)
            timings["step 6 plan"] = time.monotonic() - t0
            timings["step 6 plan CPU"] = app_cpu(win) - c0
            win.screenshot("step 6 plan done")


class JourneyWindow(Window):
    """The test's window, where the dialogs a journey opens on purpose are no failure."""

    EXPECTED = ("Open a model", "Open model", FOLDER_TITLE)

    warned = False

    def check(self, found: dict) -> None:
        """As the test, but a widget outside the screen is said once, not fatal: a benchmark still times the
        steps (the real-window test fails on it)."""
        if found["outside"] and not self.warned:
            self.warned = True
            print(f"warning: shown outside the screen: {found['outside'][:3]}", flush=True)
        super().check(dict(found, outside=[],
                           dialogs=[d for d in found["dialogs"] if d["title"] not in self.EXPECTED]))

    def dialog(self, title: str, timeout: float = 60.0) -> dict:
        return self.wait_until(f"the {title!r} dialog", lambda f: any(d["title"] == title for d in f["dialogs"]),
                               timeout)

    def type_path(self, title: str, path: Path) -> None:
        """In Qt's file dialog `title`: the path typed into its name field, then Return."""
        found = self.dialog(title)
        for _ in range(5):  # typed again when a key was lost; Return again when it only took the completion
            field = found["fields"]["fileNameEdit"]
            if field["text"] != str(path):
                self.click(field["rect"])
                self.xdo("key", "ctrl+a", "type", "--delay", 5, str(path))
                time.sleep(0.5)
            self.xdo("key", "Return")
            try:
                self.wait_until(f"the {title!r} dialog to close", lambda f: all(d["title"] != title
                                                                                for d in f["dialogs"]), 10)
                return
            except AssertionError:
                found = self.ask()
        raise AssertionError(f"the {title!r} dialog did not take {path}")


def _input(found: dict, window: str, **match: str) -> dict:
    """The text field or list of `window` whose placeholder or tooltip starts with the given words."""
    hits = [i for i in found["inputs"] if i["window"] == window
            and all(i[key].startswith(words) for key, words in match.items())]
    assert hits, f"no field {match} in {window!r}: {[(i['class'], i['placeholder'], i['tooltip'][:30]) for i in found['inputs'] if i['window'] == window]}"
    return hits[0]


def scrolled_to(win: JourneyWindow, title: str, text: str) -> dict:
    """The button `text` of dialog `title`, after turning the wheel over the dialog's left edge until it shows
    (at 720 px the Open model dialog scrolls: its findings push Check out of sight)."""
    for _ in range(20):
        found = win.ask()
        buttons = [b for b in found["buttons"] if b["text"] == text]
        if buttons:
            return buttons[0]
        x, y, _w, h = next(d for d in found["dialogs"] if d["title"] == title)["rect"]
        win.xdo("mousemove", x + 12, y + h // 2, "click", 5, "click", 5)
    raise AssertionError(f"no button {text!r} in the {title!r} dialog, however far it scrolls")


def own_model_files(folder: Path) -> tuple[Path, Path]:
    """A user's model and data: torchvision's resnet18 (3 classes, untrained weights: the timing is the point)
    saved as a state_dict, and an image folder of 3 classes × 40 PNG images of 32×32 (a colour per class)."""
    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    rng = np.random.default_rng(0)
    images = folder / "my_images"
    for label, name in enumerate(("cat", "dog", "fox")):
        (images / name).mkdir(parents=True)
        for i in range(40):
            pixels = rng.integers(0, 120, (32, 32, 3)) + np.array([120 if c == label else 0 for c in range(3)])
            Image.fromarray(pixels.astype(np.uint8)).save(images / name / f"{i:03d}.png")
    torch.manual_seed(0)
    weights = folder / "my_resnet18.pt"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), weights)
    return weights, images


def open_own_model(win: JourneyWindow, weights: Path, images: Path, timings: dict[str, float]) -> None:
    """File ▸ Open model (Ctrl+O) as a person does it: the file typed into the file dialog, torchvision's
    resnet18 picked from the list, the image folder chosen through the Dataset list, Check, Open."""
    t0, c0 = time.monotonic(), app_cpu(win)
    win.xdo("key", "ctrl+o")
    win.type_path("Open a model", weights)
    win.dialog("Open model")
    win.screenshot("own model described")
    found = win.wait_until("the architecture list", lambda f: any(
        i["window"] == "Open model" and i["placeholder"].startswith("Filter, e.g.") for i in f["inputs"]), 120)
    win.click(_input(found, "Open model", placeholder="Filter, e.g.")["rect"])
    win.xdo("type", "--delay", 5, "torchvision resnet18")
    time.sleep(0.3)  # the list filters as one types
    names = next(a for a in win.ask()["areas"] if a["class"] == "QListView")
    x, y, w, _h = names["rect"]
    win.xdo("mousemove", "--sync", x + w // 3, y + 9, "click", 1)  # the first name: torchvision:resnet18
    combo = _input(win.ask(), "Open model", tooltip="The dataset the model is checked")
    win.click(combo["rect"])  # its list opens; "Open an ImageFolder…" is the last but one
    time.sleep(0.3)
    win.xdo("key", "End", "Up", "Return")
    win.type_path(FOLDER_TITLE, images)
    win.wait_until("the dataset to be read", lambda f: _input(f, "Open model", tooltip="The dataset the model")
                   ["text"] == f"ImageFolder: {images.name}" and not f["state"]["worker"], 120)
    timings["own model: chosen"] = time.monotonic() - t0
    win.click(scrolled_to(win, "Open model", "Check")["rect"])
    deadline = time.monotonic() + 3  # the check starts on the worker within a few event-loop turns
    while time.monotonic() < deadline and not win.ask()["state"]["worker"]:
        time.sleep(0.05)
    found = win.wait_until("the check", lambda f: not f["state"]["worker"] and any(
        b["text"] == "Open" and b["enabled"] for b in f["buttons"]), 300)  # "Open (check first)" before
    timings["own model: checked"] = time.monotonic() - t0
    win.screenshot("own model checked")
    win.click(_button(found, "Open")["rect"])
    win.wait_until("the model to open", lambda f: weights.name in f["state"]["model"] and _idle(f)
                   and not f["dialogs"], 300)
    timings["open own model"] = time.monotonic() - t0
    timings["open own model CPU"] = app_cpu(win) - c0
    win.screenshot("own model open")
    t0, c0 = time.monotonic(), app_cpu(win)
    win.click(_button(win.ask(), "Run")["rect"])
    win.wait_until("the prune", lambda f: f["state"]["finished_runs"] == 1 and _idle(f), timeout=900)
    timings["own model: prune"] = time.monotonic() - t0
    timings["own model: prune CPU"] = app_cpu(win) - c0
    win.screenshot("own model pruned")


def one_run(keep: bool, journey: str, plan_runs: int, tabs: list[str], plan_only: bool = False) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="prunelab-journeys-"))
    win = JourneyWindow(folder)
    timings: dict[str, float] = {}
    try:
        if journey == OWN_MODEL:
            weights, images = own_model_files(folder / "user")
        start = time.monotonic()
        win.start(options=None)
        win.wait_until("the demo model to load", _idle, timeout=180)
        timings["start to ready"] = time.monotonic() - start
        timings["start to ready CPU"] = app_cpu(win)
        win.fill_screen()  # as a teacher's projector shows it
        if journey == OWN_MODEL:
            open_own_model(win, weights, images, timings)
        else:
            walk_the_lesson(win, timings, plan_runs, tabs, plan_only)
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
    parser.add_argument("--plan-only", action="store_true",
                        help="the lesson's step 6 only (Next to it, Show me, Run plan)")
    parser.add_argument("--journey", choices=(LESSON, OWN_MODEL), default=LESSON,
                        help="the built-in lesson (default), or a user's resnet18 state_dict and image folder opened "
                             "with File ▸ Open model and pruned once with the panel's defaults")
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
        timings = one_run(args.keep, args.journey, plan_runs, tabs, args.plan_only)
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
