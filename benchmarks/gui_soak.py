"""GUI soak benchmark: many consecutive prune-and-evaluate runs in one window must not leak.

Opens the real main window offscreen (with the embedded Netron graph, as the app; --no-webengine as the
GUI tests), loads the demo model with Fashion-MNIST through the worker, then clicks Run N times (the same
button a user clicks), rotating through structured methods and ratios with a small evaluation set. Every
run evaluates the model before and after each step (the GUI has no separate Evaluate action; evaluation
is part of a run). After each run the benchmark selects the run in the Results tab and shows its pruned
graph, as a user comparing runs does, and records:

  * resident memory (RSS, sampled after gc.collect() and malloc_trim), the web view's child processes, and
    what the window keeps for its runs by design (each run's pruned model, step metrics and weight
    histograms stay listed in the Results tab: "kept"),
  * Python threads (threading.active_count()), OS threads, worker QThreads alive, open file descriptors,
  * the reference counts of None and True (on Python < 3.12 they are mortal: an extension that returns them
    without a reference drains them until the interpreter aborts with "deallocating None"),
  * the runs listed in the Results table.

After a warm-up (5 runs), RSS must stay within 10 % of its post-warm-up value, and threads, file
descriptors and those reference counts must not fall or grow. A table (every 5th run) and PASS/FAIL per
check are printed; exit 1 on FAIL. --pad-refcounts lets a soak that would abort run to the end.

Run: .venv/bin/python benchmarks/gui_soak.py [--runs 50] [--no-webengine] [--pad-refcounts] [--diagnose]
It is a benchmark, not a timed test: a run takes seconds, 50 runs 5-10 minutes on a busy machine.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

# Before any Qt import: no display; Chromium refuses to start as root without this.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

TOLERANCE = 0.10
DEFAULT_METHODS = "l1,l2,fpgm,taylor"  # 4 methods × 3 ratios: 12 combinations
DEFAULT_RATIOS = "0.3,0.5,0.7"


@dataclass
class Sample:
    """The figures recorded after one run."""

    run: int
    method: str
    ratio: float
    status: str
    seconds: float
    top1: float | None
    rss_mb: float  # after gc.collect() and malloc_trim(0): what the process really holds
    raw_rss_mb: float  # before trimming: includes free memory the C allocator caches for reuse
    children_mb: float  # RSS of child processes (QtWebEngine's renderer, GPU and zygote processes)
    retained_mb: float  # what the session keeps for its runs by design
    py_threads: int
    os_threads: int
    qthreads: int  # worker QThreads still alive (named prunelab-*)
    fds: int
    refs: dict  # sys.getrefcount of None, True and False: falls steadily when an extension releases what it never owned
    listed: int  # rows in the Results table
    records: int  # runs the window keeps


def qthread_names() -> list[str]:
    """Names of the OS threads Qt started for our workers (QThread sets the name from objectName)."""
    names = []
    for task in Path("/proc/self/task").glob("*/comm"):
        try:
            name = task.read_text().strip()
        except OSError:  # the thread ended while we looked
            continue
        if name.startswith("prunelab-"):
            names.append(name)
    return names


def tensor_bytes(model: Any) -> int:
    """Bytes of a module's parameters and buffers (each storage once)."""
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def retained_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Approximate bytes held by a run record: numpy arrays, tensors, models, containers, dataclasses."""
    import numpy as np
    import torch

    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, torch.Tensor):
        return obj.untyped_storage().nbytes()
    if isinstance(obj, torch.nn.Module):
        return tensor_bytes(obj)
    if isinstance(obj, (str, bytes, int, float, bool, type(None), Path)):
        return sys.getsizeof(obj)
    if isinstance(obj, dict):
        return sys.getsizeof(obj) + sum(retained_bytes(k, seen) + retained_bytes(v, seen) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sys.getsizeof(obj) + sum(retained_bytes(v, seen) for v in obj)
    if is_dataclass(obj):
        return sys.getsizeof(obj) + sum(retained_bytes(getattr(obj, f.name), seen) for f in fields(obj))
    if hasattr(obj, "__dict__"):
        return sys.getsizeof(obj) + retained_bytes(vars(obj), seen)
    return sys.getsizeof(obj)


def trim_malloc() -> bool:
    """Give free C-heap memory back to the OS (glibc only); True when it could be done."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    libc.malloc_trim(0)
    return True


SINGLETONS = {"None": None, "True": True, "False": False}
# Like CPython 3.11's own static objects (999 999 999); below 2**31, so code compiled for 3.12+, which
# takes a negative low 32-bit count for "immortal", still counts these objects normally.
PAD = 1 << 30


def singletons_are_mortal() -> bool:
    """True on Pythons where None, True and False are reference counted (3.12 made them immortal, PEP 683)."""
    return sys.version_info < (3, 12)


def pad_refcount(obj: object, amount: int = PAD) -> None:
    """Raise an object's reference count by `amount` (CPython < 3.12: ob_refcnt is the object's first field)."""
    import ctypes

    ctypes.c_ssize_t.from_address(id(obj)).value += amount


def children_rss(process: psutil.Process) -> int:
    """Bytes resident in the process's children (QtWebEngine runs Chromium's renderer in its own process)."""
    total = 0
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # a child that just ended
            continue
    return total


def type_counts() -> Counter:
    """Live objects tracked by the cyclic GC, counted by type name."""
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def wait_for(signal, timeout_s: float) -> bool:
    """Run the event loop until `signal` fires or the timeout passes; True when it fired."""
    from PySide6.QtCore import QEventLoop, QTimer

    fired: list[bool] = []
    loop = QEventLoop()

    def on_signal(*_args) -> None:
        fired.append(True)
        loop.quit()

    signal.connect(on_signal)
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    timer.start(int(timeout_s * 1000))
    loop.exec()
    timer.stop()
    signal.disconnect(on_signal)
    return bool(fired)


def settle(ms: int = 50) -> None:
    """Let queued events (deferred deletes, redraw timers) run."""
    from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()
    QCoreApplication.sendPostedEvents(None, 0)


def check_flat(name: str, values: list[float], reference: float, tolerance: float, unit: str) -> tuple[bool, str]:
    """PASS when every value after warm-up stays at most `tolerance` above the reference."""
    worst = max(values) if values else reference
    limit = reference * (1 + tolerance)
    ok = worst <= limit
    return ok, (f"{name}: after warm-up {reference:.1f} {unit}, highest {worst:.1f} {unit} "
                f"({(worst / reference - 1) * 100:+.1f} %, limit +{tolerance * 100:.0f} %)")


def check_no_growth(name: str, values: list[int], reference: int) -> tuple[bool, str]:
    """PASS when the last runs settle at or below the reference (Netron's server thread and its sockets come
    and go with each page load, so a single sample may be one or two above it; a leak raises them all)."""
    worst = max(values) if values else reference
    settled = min(values[-5:]) if values else reference
    return settled <= reference, (f"{name}: after warm-up {reference}, lowest of the last 5 runs {settled}, "
                                  f"highest {worst}")


def check_refs(name: str, samples: list[Sample], warmup: int, at_start: int, padded: bool) -> tuple[bool, str]:
    """PASS when a singleton's reference count after the last run is not below its post-warm-up value."""
    ref, last = samples[warmup - 1].refs[name], samples[-1].refs[name]
    recent = samples[-6:]
    rate = (recent[0].refs[name] - recent[-1].refs[name]) / max(1, len(recent) - 1)
    text = (f"{name} reference count: {at_start} after loading, {ref} after warm-up, {last} after run "
            f"{samples[-1].run} ({(at_start - last) / len(samples):.0f} released per run on average, "
            f"{rate:.0f} in the last runs)")
    crossed = next((s.run for s in samples if s.refs[name] <= 0), None)
    if crossed is not None:
        text += f"; without the pad Python would have aborted ('deallocating {name}') by run {crossed}"
    elif rate > 0:
        # the loss per run grows with the number of runs, so this is an upper bound
        text += (f"; at that rate {'without the pad ' if padded else ''}Python aborts ('deallocating {name}') "
                 f"within about {last / rate:.0f} more runs")
    return last >= ref, text


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    return statistics.linear_regression(xs, ys).slope


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print the table and the checks; returns 0 when every check passes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="consecutive runs (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="runs before the reference sample (default 5)")
    parser.add_argument("--model", default="demo:resnet", help="model source (default demo:resnet)")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"methods to rotate (default {DEFAULT_METHODS})")
    parser.add_argument("--ratios", default=DEFAULT_RATIOS, help=f"ratios to rotate (default {DEFAULT_RATIOS})")
    parser.add_argument("--steps", type=int, default=2, help="pruning steps per run (default 2)")
    parser.add_argument("--eval", type=int, default=500, choices=(500, 1000, 2000, 5000),
                        help="test images evaluated after each step (the panel's choices; default 500)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one run may take (default 300)")
    parser.add_argument("--every", type=int, default=5, help="print every n-th run (default 5)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="allowed RSS growth (default 0.10)")
    parser.add_argument("--no-webengine", action="store_true",
                        help="no embedded Netron, as in the GUI tests (by default it is on, as in the app: each run "
                             "then exports ONNX and the benchmark shows the pruned graph)")
    parser.add_argument("--pad-refcounts", action="store_true",
                        help="on Python < 3.12, add 2**30 to the reference counts of None, True and False first, "
                             "so that a GUI which releases references it does not own can still finish the soak "
                             "(the decline is still measured and still fails its check)")
    parser.add_argument("--diagnose", action="store_true",
                        help="also trace Python allocations (tracemalloc, slow) and print the growing lines")
    parser.add_argument("--json", help="write every sample and the checks to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.warmup < args.runs:
        parser.error("--warmup must be at least 1 and smaller than --runs")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    except ValueError:
        parser.error(f"--ratios must be numbers between 0.05 and 0.95, got {args.ratios!r}")
    if not methods or not ratios or not all(0.05 <= r <= 0.95 for r in ratios):
        parser.error("--methods and --ratios need at least one value each; ratios between 0.05 and 0.95")
    from engine.errors import UserError
    from engine.methods import get_method

    for name in methods:
        try:
            get_method(name)
        except UserError as exc:
            parser.error(str(exc))
    if args.no_webengine:
        os.environ["PRUNELAB_NO_WEBENGINE"] = "1"

    with tempfile.TemporaryDirectory(prefix="prunelab-soak-") as tmp:
        # settings and log in a temporary folder, as the tests do: the user's settings stay untouched
        os.environ["PRUNELAB_SETTINGS_DIR"] = str(Path(tmp) / "settings")
        os.environ["PRUNELAB_LOG_DIR"] = tmp
        return soak(args, methods, ratios, Path(tmp))


def soak(args: argparse.Namespace, methods: list[str], ratios: list[float], tmp: Path) -> int:
    """The soak itself (inside the temporary folder)."""
    from PySide6.QtCore import QSettings

    from gui.app import create_application, setup_logging

    app = create_application([])
    log_path = setup_logging()
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))  # as gui.app.main does
    from engine.methods import get_method
    from gui.main_window import MainWindow
    from gui.settings import Settings

    for name in methods:
        if not get_method(name).structured:
            print(f"note: {name} is unstructured; the soak is meant for structured methods", file=sys.stderr)

    errors: list[str] = []

    def excepthook(kind, value, tb) -> None:
        # an exception in a slot would only be printed by PySide; the soak counts it as a failure
        errors.append("".join(traceback.format_exception(kind, value, tb)))
        print(errors[-1], file=sys.stderr)

    sys.excepthook = excepthook
    process = psutil.Process()
    padded = bool(args.pad_refcounts and singletons_are_mortal())
    if padded:
        for obj in SINGLETONS.values():
            pad_refcount(obj)
    pad = PAD if padded else 0

    def refs() -> dict[str, int]:
        # shown without the pad: a negative figure is a count at which Python would already have aborted
        return {name: sys.getrefcount(obj) - pad for name, obj in SINGLETONS.items()}

    settings = Settings(QSettings(str(tmp / "settings" / "prunelab.ini"), QSettings.Format.IniFormat))
    window = MainWindow(settings=settings, autoload=False, log_path=log_path)
    window.resize(1366, 768)
    window.show()

    start = time.perf_counter()
    window.load(args.model, "fashion-mnist")
    if not wait_for(window.job_stopped, args.timeout) or window.session.loaded is None:
        print(f"could not load {args.model}: "
              f"{window.error_box.text() if window.error_box else 'timed out'}", file=sys.stderr)
        return 1
    print(f"loaded {window.session.loaded.summary['architecture']} with {window.session.loaded.data.name} "
          f"in {time.perf_counter() - start:.1f} s; graph view {'on' if window.ui.graph_view.enabled else 'off'}; "
          f"{args.runs} runs, warm-up {args.warmup}, methods {','.join(methods)}, ratios "
          f"{','.join(f'{r:g}' for r in ratios)}, {args.steps} steps, {args.eval} test images")

    panel = window.ui.method_panel
    panel.mode_combo.setCurrentIndex(panel.mode_combo.findData("ratio"))
    panel.steps_spin.setValue(args.steps)
    panel.eval_combo.setCurrentIndex(panel.eval_combo.findData(args.eval))
    panel.speed_check.setChecked(False)  # latency timing is the slow part and allocates nothing new
    panel.bn_check.setChecked(True)
    panel.finetune_spin.setValue(0.0)

    samples: list[Sample] = []
    counts_warm: Counter | None = None
    snapshot_warm = None
    header = (f"{'run':>4} {'method':<8} {'ratio':>5} {'s':>5} {'top-1':>6} {'RSS MB':>8} {'Δ%':>6} {'raw MB':>7} "
              f"{'web MB':>7} "
              f"{'kept MB':>8} {'py thr':>6} {'os thr':>6} {'QThr':>4} {'fds':>4} {'None refs':>9} {'True refs':>9} "
              f"{'listed':>6}")
    print(header)
    soak_start = time.perf_counter()
    trimmed = True
    refs_at_start = previous_refs = refs()
    largest_drop = {name: 0 for name in SINGLETONS}
    for index in range(args.runs):
        near = [name for name in SINGLETONS if largest_drop[name] > 0
                and previous_refs[name] < 2 * largest_drop[name] + 1000]
        if singletons_are_mortal() and not padded and near:
            # one more run could deallocate the singleton and abort the interpreter: stop while we can report
            name = near[0]
            errors.append(f"stopped before run {index + 1}: the reference count of {name} is {previous_refs[name]} "
                          f"and a run lowers it by up to {largest_drop[name]}; Python would abort with "
                          f"'deallocating {name}' (rerun with --pad-refcounts to measure the rest)")
            break
        method = methods[index % len(methods)]
        ratio = ratios[index % len(ratios)]  # both rotate every run, so the warm-up sees every ratio
        panel.select_method(method)
        panel.ratio_slider.setValue(round(ratio * 100))
        t0 = time.perf_counter()
        if not window.menus.run_action.isEnabled():
            errors.append(f"run {index + 1}: the Run action is disabled")
            break
        window.ui.run_button.click()
        if not wait_for(window.job_stopped, args.timeout):
            errors.append(f"run {index + 1}: no answer within {args.timeout:.0f} s")
            break
        seconds = time.perf_counter() - t0
        run_id = window.session.current_run
        record = window.session.runs.get(run_id)
        if record is None or record.status != "done":
            message = window.error_box.text() if window.error_box else "no record"
            errors.append(f"run {index + 1} ({method} {ratio}): {record.status if record else '?'}: {message}")
            if window.error_box is not None:
                window.error_box.close()
        else:
            # what a user does next: look at the run in the Results tab (histograms, plots, graph follow)
            window.ui.tabs.setCurrentWidget(window.ui.results)
            window.ui.results.run_selected.emit(run_id)
            if window.ui.graph_view.enabled and record.onnx_path is not None:
                window.ui.graph_view.pruned_radio.setChecked(True)  # serve the pruned graph through Netron
        settle()
        gc.collect()  # the app collects cycles only between jobs; measure what is really kept
        raw_rss = process.memory_info().rss
        # glibc keeps freed blocks of the large evaluation batches cached in its arenas, so raw RSS swings by
        # ±10 % from run to run; trimming first measures what is really held (the raw figure is kept too)
        trimmed = trim_malloc() and trimmed
        retained = sum(retained_bytes(r, set()) for r in window.session.runs.values())
        sample = Sample(
            run=index + 1, method=method, ratio=ratio, status=record.status if record else "missing",
            seconds=seconds, top1=record.done.after.top1 if record and record.done else None,
            rss_mb=process.memory_info().rss / 2**20, raw_rss_mb=raw_rss / 2**20,
            children_mb=children_rss(process) / 2**20, retained_mb=retained / 2**20,
            py_threads=threading.active_count(), os_threads=process.num_threads(), qthreads=len(qthread_names()),
            fds=process.num_fds(), refs=refs(), listed=window.ui.results.row_count(), records=len(window.session.runs))
        samples.append(sample)
        for name in SINGLETONS:
            largest_drop[name] = max(largest_drop[name], previous_refs[name] - sample.refs[name])
        previous_refs = sample.refs
        if index + 1 == args.warmup:
            counts_warm = type_counts()
            if args.diagnose:
                import tracemalloc

                tracemalloc.start(12)
                snapshot_warm = tracemalloc.take_snapshot()
        reference = samples[args.warmup - 1] if len(samples) >= args.warmup else None
        if (index + 1) % args.every == 0 or index == 0 or index + 1 == args.runs:
            delta = f"{(sample.rss_mb / reference.rss_mb - 1) * 100:+6.1f}" if reference else f"{'':>6}"
            top1 = f"{sample.top1:6.1%}" if sample.top1 is not None else f"{'–':>6}"
            print(f"{sample.run:>4} {method:<8} {ratio:>5.2f} {seconds:>5.1f} {top1} {sample.rss_mb:>8.1f} {delta} "
                  f"{sample.raw_rss_mb:>7.0f} {sample.children_mb:>7.0f} "
                  f"{sample.retained_mb:>8.2f} {sample.py_threads:>6} {sample.os_threads:>6} {sample.qthreads:>4} "
                  f"{sample.fds:>4} {sample.refs['None']:>9} {sample.refs['True']:>9} {sample.listed:>6}", flush=True)
    total_s = time.perf_counter() - soak_start

    counts_end = type_counts()
    snapshot_end = None
    if args.diagnose and snapshot_warm is not None:
        import tracemalloc

        snapshot_end = tracemalloc.take_snapshot()
        tracemalloc.stop()

    window.close()
    settle()

    # ------------------------------------------------------------------ checks
    checks: list[tuple[bool, str]] = []
    done = [s for s in samples if s.status == "done"]
    checks.append((len(done) == args.runs and not errors,
                   f"runs: {len(done)}/{args.runs} finished, {len(errors)} errors"))
    if len(samples) > args.warmup:
        ref = samples[args.warmup - 1]
        after = samples[args.warmup:]
        checks.append(check_flat("RSS (after malloc_trim)" if trimmed else "RSS", [s.rss_mb for s in after],
                                 ref.rss_mb, args.tolerance, "MB"))
        if ref.children_mb > 0:
            checks.append(check_flat("RSS of the web view's processes", [s.children_mb for s in after],
                                     ref.children_mb, args.tolerance, "MB"))
        checks.append(check_no_growth("Python threads", [s.py_threads for s in after], ref.py_threads))
        checks.append(check_no_growth("OS threads", [s.os_threads for s in after], ref.os_threads))
        checks.append(check_no_growth("worker QThreads alive", [s.qthreads for s in after], 0))
        checks.append(check_no_growth("open file descriptors", [s.fds for s in after], ref.fds))
        if singletons_are_mortal():
            for name in SINGLETONS:
                checks.append(check_refs(name, samples, args.warmup, refs_at_start[name], padded))
        else:
            checks.append((True, "None, True, False: immortal on this Python (3.12+), nothing to check"))
        last = samples[-1]
        checks.append((last.listed == len(done) and last.records == len(samples),
                       f"runs listed: {last.listed} in the Results table, {last.records} kept by the window"))

    # ------------------------------------------------------------------ growth per run
    print(f"\n{len(samples)} runs in {total_s:.0f} s ({total_s / max(1, len(samples)):.1f} s per run)")
    if len(samples) > args.warmup + 1:
        after = samples[args.warmup:]
        xs = [float(s.run) for s in after]
        rss_slope = slope(xs, [s.rss_mb * 1024 for s in after])
        kept_slope = slope(xs, [s.retained_mb * 1024 for s in after])
        print(f"growth after warm-up (least squares): RSS {rss_slope:+.0f} KB/run; kept by design "
              f"{kept_slope:+.0f} KB/run (each run's pruned model, step metrics and weight histograms); "
              f"RSS beyond that {rss_slope - kept_slope:+.0f} KB/run")
    if counts_warm is not None:
        growth = Counter({k: counts_end[k] - counts_warm.get(k, 0) for k in counts_end})
        growing = [(k, v) for k, v in growth.most_common(15) if v > 0]
        runs_since = len(samples) - args.warmup
        print(f"Python objects growing since warm-up ({runs_since} runs):")
        for name, extra in growing:
            print(f"  {extra:>8} {extra / max(1, runs_since):>8.1f}/run  {name}")
    if snapshot_end is not None:
        print("Python allocations growing since warm-up (tracemalloc, top 10):")
        import tracemalloc

        ours = [tracemalloc.Filter(False, __file__), tracemalloc.Filter(False, tracemalloc.__file__)]
        growth_stats = snapshot_end.filter_traces(ours).compare_to(snapshot_warm.filter_traces(ours), "lineno")
        for stat in growth_stats[:10]:
            print(f"  {stat.size_diff / 1024:>+9.1f} KB {stat.count_diff:>+7} blocks  {stat.traceback[0]}")

    if len(samples) > args.warmup:
        raw = [s.raw_rss_mb for s in samples[args.warmup:]]
        ref_raw = samples[args.warmup - 1].raw_rss_mb
        print(f"raw RSS (information, allocator caches included): after warm-up {ref_raw:.0f} MB, "
              f"range {min(raw):.0f}–{max(raw):.0f} MB ({(max(raw) / ref_raw - 1) * 100:+.1f} % at most)")
    print()
    for ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    for error in errors[:10]:
        print(f"error: {error.strip().splitlines()[-1] if error.strip() else error}")
    passed = all(ok for ok, _ in checks)
    print("PASS" if passed else "FAIL")
    if args.json:
        Path(args.json).write_text(json.dumps({"samples": [asdict(s) for s in samples],
                                               "checks": [{"ok": ok, "text": t} for ok, t in checks],
                                               "errors": errors, "seconds": total_s}, indent=1))
    del app
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
