"""`PruneLab --self-test`: one run a lab administrator makes per machine to see that everything works.

Each check is a function that returns a one-line detail or raises; the report lists every check with
pass/fail and its time, the versions, and goes to stdout and to the log folder. Exit 0 only when
every check that ran passed. The checks that need Qt live under gui/ and are handed in by main.py
(this package imports no Qt), so the headless image runs the same code without PySide6.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

EVAL_IMAGES = 500  # enough for the accuracy check to mean something, small enough for a minute on a laptop
MIN_TOP1 = 0.80  # the demo model scores about 93 %; far below that, the data or the maths is wrong
DEMO_MODEL, DEMO_DATA = "demo:resnet", "fashion-mnist"

Check = Callable[[], str]
GuiChecks = Callable[[bool, "dict"], list[tuple[str, Check]]]


@dataclass
class Outcome:
    """One check's result: passed, failed or skipped, with a line saying why and how long it took."""

    name: str
    status: str  # "pass", "FAIL" or "skip"
    detail: str
    seconds: float


@dataclass
class Context:
    """What the checks hand on to the next one (the loaded demo, the pruned run's files)."""

    work: Path
    bundle: object = None
    data: object = None
    baseline: object = None  # the evaluate check's metrics, reused by the prune check
    files: dict = field(default_factory=dict)


def run_check(name: str, check: Check) -> Outcome:
    """Run one check; any exception is a failure whose first line becomes the detail."""
    start = time.perf_counter()
    try:
        detail, status = check(), "pass"
    except Skipped as exc:
        detail, status = str(exc), "skip"
    except BaseException as exc:  # noqa: BLE001 - a self-test reports every failure, whatever it is
        if isinstance(exc, KeyboardInterrupt):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        detail, status = f"{type(exc).__name__}: {first}", "FAIL"
        traceback.print_exc(file=sys.stderr)
    return Outcome(name, status, detail, time.perf_counter() - start)


class Skipped(Exception):
    """A check that does not apply here (no CUDA, no GUI stack installed)."""


# ----------------------------------------------------------------------------- the headless checks

def _cuda() -> str:
    """The CUDA check: a real kernel on the first GPU (it needs none of the other checks' context)."""
    import torch

    if not torch.cuda.is_available():
        raise Skipped(f"no CUDA device (torch built for CUDA {torch.version.cuda or 'none'}); the CPU is used")
    name = torch.cuda.get_device_name(0)
    x = torch.randn(8, 1, 28, 28, device="cuda")
    conv = torch.nn.Conv2d(1, 8, 3).cuda()
    y = conv(x).sum().item()  # a real kernel: catches a driver too old for the bundled CUDA
    if y != y:
        raise AssertionError("a convolution on the GPU returned NaN")
    total = torch.cuda.get_device_properties(0).total_memory
    return f"{name}, {total / 2**30:.0f} GiB, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"


def engine_checks(ctx: Context) -> list[tuple[str, Check]]:
    """Demo, evaluation, pruning, ONNX and CUDA: what the CLI and the headless image rely on."""

    def demo() -> str:
        from engine.inputs import load_inputs

        inputs = load_inputs(DEMO_MODEL, DEMO_DATA)
        ctx.bundle, ctx.data = inputs.bundle, inputs.data
        params = sum(p.numel() for p in ctx.bundle.model.parameters())
        return f"{DEMO_MODEL} ({params:,} parameters) with {inputs.raw.name}"

    def evaluate() -> str:
        from engine.metrics import evaluate as run

        _need(ctx.bundle, "demo")
        done = _last(run(ctx.bundle.model, ctx.data, limit=EVAL_IMAGES, speed=False))
        m = done.metrics
        if m.samples != EVAL_IMAGES or m.top1 < MIN_TOP1:
            raise AssertionError(f"top-1 {m.top1:.1%} on {m.samples} images; expected at least {MIN_TOP1:.0%} "
                                 f"on {EVAL_IMAGES}")
        ctx.baseline = m
        return f"top-1 {m.top1:.1%} on {m.samples} test images"

    def prune() -> str:
        from engine.config import PruneConfig
        from engine.pruning import run_pruning

        _need(ctx.bundle, "demo")
        # BatchNorm re-estimation (a few batches) keeps the pruned accuracy readable; no fine-tuning, no timing
        cfg = PruneConfig(method="l2", pruning_ratio=0.3, steps=1, eval_limit=EVAL_IMAGES, measure_speed=False,
                          bn_recalibrate=True, bn_batches=10)
        done = _last(run_pruning(ctx.bundle, ctx.data, cfg, out_dir=ctx.work / "pruned", baseline=ctx.baseline))
        if not done.after.params < done.before.params:
            raise AssertionError(f"parameters did not shrink ({done.before.params} -> {done.after.params})")
        ctx.files.update(done.files)  # the same dict the GUI checks were handed
        return (f"l2 at 30 %, one step: parameters {done.before.params:,} -> {done.after.params:,}, "
                f"top-1 {done.before.top1:.1%} -> {done.after.top1:.1%}")

    def onnx() -> str:
        from engine.models import load_model
        from engine.models.saving import check_onnx

        if "onnx" not in ctx.files:
            raise AssertionError("no ONNX file from the prune check")
        pruned = load_model(ctx.files["model"]).model
        result = check_onnx(ctx.files["onnx"], pruned, ctx.data.loader("test", 128, limit=256))
        if result["agreement"] < 0.99:
            raise AssertionError(f"onnxruntime agrees with PyTorch on only {result['agreement']:.1%} of images")
        return (f"onnxruntime agrees with PyTorch on {result['agreement']:.1%} of {result['images']} images "
                f"(largest difference {result['max_abs_diff']:.1e})")

    return [("demo", demo), ("evaluate", evaluate), ("prune", prune), ("onnx", onnx), ("cuda", _cuda)]


def _need(value: object, check: str) -> None:
    if value is None:
        raise AssertionError(f"needs the {check} check, which failed")


def _last(events):
    last = None
    for last in events:
        pass
    return last


# ----------------------------------------------------------------------------- report

def versions() -> dict[str, str]:
    """The versions that matter on a lab machine: the engine's, ONNX's, the OS and how PruneLab runs."""
    import engine

    found = dict(engine.versions())
    for name in ("onnx", "onnxruntime"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = "missing"
    found["os"] = f"{platform.system()} {platform.release()} {platform.machine()}"
    found["frozen"] = "PyInstaller bundle" if getattr(sys, "frozen", False) else "Python sources"
    return found


def format_report(outcomes: list[Outcome], found: dict[str, str], total: float) -> str:
    """The report a lab administrator reads: one line per check, then the versions."""
    failed = [o.name for o in outcomes if o.status == "FAIL"]
    lines = [f"PruneLab self-test, {time.strftime('%Y-%m-%d %H:%M:%S')}"]
    width = max(len(o.name) for o in outcomes)
    lines += [f"  {o.status:<4}  {o.name:<{width}}  {o.seconds:6.1f} s  {o.detail}" for o in outcomes]
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    verdict = f"FAILED: {', '.join(failed)}" if failed else "all checks passed"
    lines.append(f"{verdict} in {total:.1f} s")
    return "\n".join(lines)


def write_log(report: str) -> Path | None:
    """Append the report to selftest.log in the log folder; None when that folder cannot be written."""
    from engine.paths import log_dir

    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "selftest.log"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(report + "\n\n")
        return path
    except OSError:
        return None


def build_parser() -> argparse.ArgumentParser:
    """Flags of the self-test (after --self-test)."""
    p = argparse.ArgumentParser(prog="PruneLab --self-test", description="Check that PruneLab works on this machine.")
    p.add_argument("--gui", action="store_true", help="also open the main window (offscreen unless a platform is set)")
    p.add_argument("--headless", action="store_true", help="only the checks without Qt (the Docker image's health)")
    return p


def main(argv: Sequence[str] = (), gui_checks: GuiChecks | None = None) -> int:
    """Run the checks and print the report; 0 when every check passed, 1 otherwise (2: bad flags)."""
    try:
        args = build_parser().parse_args(list(argv))
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="prunelab-selftest-") as work:
        ctx = Context(Path(work))
        checks = engine_checks(ctx)
        if not args.headless:
            checks += _gui_part(gui_checks, args.gui, ctx)
        outcomes = []
        for name, check in checks:
            outcome = run_check(name, check)
            outcomes.append(outcome)
            print(f"{outcome.status:<4}  {name}: {outcome.detail}", flush=True)
    report = format_report(outcomes, versions(), time.perf_counter() - start)
    where = write_log(report)
    print("\n" + report + (f"\n(report appended to {where})" if where else ""), flush=True)
    return 1 if any(o.status == "FAIL" for o in outcomes) else 0


def _gui_part(gui_checks: GuiChecks | None, window: bool, ctx: Context) -> list[tuple[str, Check]]:
    """The Qt checks when the GUI stack is installed; a skip line when it is not (the headless image)."""
    if gui_checks is None or importlib.util.find_spec("PySide6") is None:
        def absent() -> str:
            raise Skipped("the GUI is not installed (headless install)")
        return [("gui", absent)]
    return gui_checks(window, ctx.files)  # filled by the prune check, which runs first
