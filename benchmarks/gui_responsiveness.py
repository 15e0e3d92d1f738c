"""GUI responsiveness benchmark: does the UI thread stay responsive while the worker prunes and fine-tunes?

Runs the real main window offscreen, starts a pruning run with fine-tuning through the real worker,
and measures the gaps between ticks of a 10 ms QTimer on the UI thread. A gap is time the event loop
could not react (to a click, a repaint); the target is a largest gap under 100 ms.

Run: .venv/bin/python benchmarks/gui_responsiveness.py [--model demo:resnet] [--steps 2] [--finetune 0.05]
It is a benchmark, not a timed test: results depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PRUNELAB_NO_WEBENGINE", "1")  # Chromium needs a display; the graph is not measured here
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_MS = 100.0
TICK_MS = 10


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the gap statistics (and write them as JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo:resnet", help="model source; an untrained demo if unavailable")
    parser.add_argument("--method", default="l2")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--finetune", type=float, default=0.05, help="fine-tuning epochs after each step")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("PRUNELAB_SETTINGS_DIR", tmp)
        os.environ.setdefault("PRUNELAB_LOG_DIR", tmp)
        from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer

        from gui.app import create_application, setup_logging

        app = create_application([])
        setup_logging()
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))  # as gui.app.main does
        from engine.models import DemoResNet, ModelBundle
        from gui.main_window import MainWindow

        window = MainWindow(autoload=False)
        window.resize(1366, 768)
        window.show()

        def wait(signal, timeout_s: float) -> None:
            loop = QEventLoop()
            signal.connect(loop.quit)
            QTimer.singleShot(int(timeout_s * 1000), loop.quit)
            loop.exec()

        window.load(args.model, "fashion-mnist")
        wait(window.job_stopped, 120)
        if window.loaded is None:
            print(f"note: {args.model} could not be loaded; using an untrained DemoResNet")
            if window.error_box is not None:
                window.error_box.close()
            window.load(None, "fashion-mnist",
                        bundle=ModelBundle(DemoResNet().eval(), "untrained", "demo:resnet", (1, 28, 28), 10))
            wait(window.job_stopped, 120)
        panel = window.method_panel
        panel.select_method(args.method)
        panel.steps_spin.setValue(args.steps)
        panel.finetune_spin.setValue(args.finetune)
        panel.bn_check.setChecked(True)
        panel.speed_check.setChecked(True)
        panel.eval_combo.setCurrentIndex(panel.eval_combo.findData(1000))

        gaps: list[float] = []
        clock = QElapsedTimer()
        ticker = QTimer()
        ticker.setInterval(TICK_MS)
        ticker.setTimerType(ticker.timerType().PreciseTimer)
        events = {"count": 0}

        phases: list[str] = []

        def on_tick() -> None:
            gaps.append(clock.restart())
            phases.append(window.phase_label.text())  # what the worker was doing: tells where a stall came from

        ticker.timeout.connect(on_tick)
        original = window._on_progress

        def counting(event: object) -> None:
            events["count"] += 1
            original(event)

        window._on_progress = counting  # called by the window's _on_job_event slot, on the UI thread
        start = time.perf_counter()
        clock.start()
        ticker.start()
        window.start_run()
        wait(window.job_stopped, 1200)
        ticker.stop()
        seconds = time.perf_counter() - start
        record = window.runs.get(window.current_run)
        window.close()
        app.processEvents()

    gaps, phases = gaps[1:], phases[1:]  # the first interval includes starting the run
    worst = max(gaps) if gaps else float("nan")
    result = {
        "model": args.model, "method": args.method, "steps": args.steps, "finetune_epochs": args.finetune,
        "run_status": record.status if record else "none", "run_seconds": round(seconds, 1),
        "ticks": len(gaps), "tick_ms": TICK_MS, "max_gap_ms": worst,
        "p99_gap_ms": statistics.quantiles(gaps, n=100)[98] if len(gaps) > 100 else worst,
        "median_gap_ms": statistics.median(gaps) if gaps else float("nan"),
        "gaps_over_100ms": sum(g > TARGET_MS for g in gaps), "progress_events_shown": events["count"],
        "target_max_gap_ms": TARGET_MS, "meets_target": worst < TARGET_MS,
        "worst_gaps": [{"ms": g, "during": p} for g, p in sorted(zip(gaps, phases), reverse=True)[:5]],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["run_status"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
