"""GUI responsiveness benchmark: does the UI thread stay responsive while the worker prunes and fine-tunes?

Runs the real main window offscreen, loads a model (timed from after the dataset is read to "Ready";
target 10 s), waits for the facts found in the background after Ready (ONNX for the graph, size,
measured top-1; the window is usable meanwhile), starts a pruning run with fine-tuning through the
real worker, and measures the gaps between ticks of a 10 ms QTimer on the UI thread, while loading,
while the background facts are found, and while running. A gap is time the event loop could not react
(to a click, a repaint); the target is a largest gap under 100 ms.

Run: .venv/bin/python benchmarks/gui_responsiveness.py [--model demo:resnet] [--steps 2] [--finetune 0.05]
     .venv/bin/python benchmarks/gui_responsiveness.py --model torchvision:resnet50 --data imagefolder:PATH \
         --steps 1 --finetune 0.02 --eval 100
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
TARGET_LOAD_S = 10.0
TICK_MS = 10


def gap_figures(gaps: list[float], phases: list[str]) -> dict:
    """Largest, p99 and median gap, the count over the target, and the five worst with what was going on."""
    worst = max(gaps) if gaps else float("nan")
    return {
        "ticks": len(gaps), "max_gap_ms": worst,
        "p99_gap_ms": statistics.quantiles(gaps, n=100)[98] if len(gaps) > 100 else worst,
        "median_gap_ms": statistics.median(gaps) if gaps else float("nan"),
        "gaps_over_100ms": sum(g > TARGET_MS for g in gaps),
        "worst_gaps": [{"ms": g, "during": p} for g, p in sorted(zip(gaps, phases), reverse=True)[:5]],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the gap statistics (and write them as JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo:resnet",
                        help="model source (demo:resnet, torchvision:resnet50, a file); an untrained demo if unavailable")
    parser.add_argument("--data", default="fashion-mnist", help="dataset spec, e.g. imagefolder:PATH of RGB photos")
    parser.add_argument("--eval", type=int, default=1000, help="test images measured after each step "
                        "(one of the method panel's choices: 500, 1000, ...; 0 for all)")
    parser.add_argument("--no-speed", action="store_true",
                        help="skip the latency measurement after each step (minutes for ResNet-50 on two cores)")
    parser.add_argument("--method", default="l2")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--finetune", type=float, default=0.05, help="fine-tuning epochs after each step")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--niceness", type=int, help="the worker thread's nice value (default: the app's own)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("PRUNELAB_SETTINGS_DIR", tmp)
        os.environ.setdefault("PRUNELAB_LOG_DIR", tmp)
        from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer

        from gui.app import create_application, setup_logging

        if args.niceness is not None:
            import gui.worker_thread

            gui.worker_thread.WORKER_NICENESS = args.niceness
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

        def wait_idle(timeout_s: float) -> None:
            """Until no job runs, not even a background one (the window has no signal for that)."""
            loop, poll = QEventLoop(), QTimer()
            poll.timeout.connect(lambda: window.jobs.worker is None and loop.quit())
            poll.start(20)
            QTimer.singleShot(int(timeout_s * 1000), loop.quit)
            loop.exec()
            poll.stop()

        from engine.data import load_dataset

        gaps: list[float] = []
        phases: list[str] = []
        clock = QElapsedTimer()
        ticker = QTimer()
        ticker.setInterval(TICK_MS)
        ticker.setTimerType(ticker.timerType().PreciseTimer)

        def on_tick() -> None:
            gaps.append(clock.restart())
            # what the worker was doing: tells where a stall came from (a background job's words are beside it)
            phases.append(" ".join(filter(None, (window.ui.phase_label.text(), window.ui.eta_label.text()))))

        ticker.timeout.connect(on_tick)
        start = time.perf_counter()
        window.session.raw_data_cache[args.data] = load_dataset(args.data)  # read first: the load is timed without it
        data_seconds = time.perf_counter() - start
        start = time.perf_counter()
        clock.start()
        ticker.start()
        window.load(args.model, args.data)
        wait(window.job_stopped, 600)
        ticker.stop()
        load_seconds = time.perf_counter() - start
        load_gaps = gap_figures(gaps[1:], phases[1:])
        rows = window.ui.graph_view.layer_table.rowCount()
        print(f"loaded {args.model} in {load_seconds:.1f} s after reading {args.data} in {data_seconds:.1f} s; "
              f"largest UI gap while loading {load_gaps['max_gap_ms']:.0f} ms", file=sys.stderr, flush=True)
        gaps.clear()
        phases.clear()
        start = time.perf_counter()
        clock.start()
        ticker.start()
        wait_idle(600)
        ticker.stop()
        details_seconds = time.perf_counter() - start
        details_gaps = gap_figures(gaps[1:], phases[1:]) if len(gaps) > 1 else {}
        print(f"background facts found {details_seconds:.1f} s after Ready; largest UI gap meanwhile "
              f"{details_gaps.get('max_gap_ms', 0):.0f} ms", file=sys.stderr, flush=True)
        gaps.clear()
        phases.clear()
        if window.session.loaded is None:
            print(f"note: {args.model} could not be loaded; using an untrained DemoResNet")
            if window.error_box is not None:
                window.error_box.close()
            window.load(None, "fashion-mnist",
                        bundle=ModelBundle(DemoResNet().eval(), "untrained", "demo:resnet", (1, 28, 28), 10))
            wait(window.job_stopped, 120)
            wait_idle(120)
            load_seconds, load_gaps, rows = float("nan"), {}, window.ui.graph_view.layer_table.rowCount()
            details_seconds, details_gaps = float("nan"), {}
        panel = window.ui.method_panel
        panel.select_method(args.method)
        panel.steps_spin.setValue(args.steps)
        panel.finetune_spin.setValue(args.finetune)
        panel.bn_check.setChecked(True)
        panel.speed_check.setChecked(not args.no_speed)
        index = panel.eval_combo.findData(args.eval)
        if index < 0:
            parser.error(f"--eval {args.eval} is not one of the panel's choices: "
                         f"{[panel.eval_combo.itemData(i) for i in range(panel.eval_combo.count())]}")
        panel.eval_combo.setCurrentIndex(index)
        events = {"count": 0}
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
        record = window.session.runs.get(window.session.current_run)
        window.close()
        app.processEvents()

    run_gaps = gap_figures(gaps[1:], phases[1:])  # the first interval includes starting the run
    result = {
        "model": args.model, "data": args.data, "method": args.method, "steps": args.steps,
        "finetune_epochs": args.finetune, "eval_images": args.eval, "layer_rows": rows,
        "cpu_load_average": [round(v, 1) for v in os.getloadavg()], "cores": os.cpu_count(),
        "dataset_read_seconds": round(data_seconds, 1), "load_to_ready_seconds": round(load_seconds, 1),
        "target_load_seconds": TARGET_LOAD_S, "load_meets_target": load_seconds <= TARGET_LOAD_S,
        "load": load_gaps, "details_after_ready_seconds": round(details_seconds, 1), "details": details_gaps,
        "run_status": record.status if record else "none", "run_seconds": round(seconds, 1), "tick_ms": TICK_MS,
        "progress_events_shown": events["count"], "target_max_gap_ms": TARGET_MS,
        "meets_target": run_gaps["max_gap_ms"] < TARGET_MS, **run_gaps,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["run_status"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
