"""Peak memory of `prune` on large torchvision models at 224×224, each in its own process.

Prints, per model, the exit code, the wall time, the peak resident memory of the process (from the
kernel's accounting of the finished child) and the first line of its error, if any. `--root` points
at another checkout (an older PruneLab) to measure it the same way; `--memory-limit` is passed to
checkouts that have it.

    python benchmarks/memory_peaks.py                      # swin_t, vit_b_16, resnet50
    python benchmarks/memory_peaks.py --models resnet18 --ratio 0.5
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(root: Path, model: str, args: argparse.Namespace, out: Path) -> tuple[int, float, int, str]:
    """One prune in a child process: (exit code, seconds, peak RSS bytes, first stderr line)."""
    cmd = [sys.executable, str(root / "main.py"), "prune", "--model", f"torchvision:{model}", "--data", "fashion-mnist",
           "--input-shape", "3,224,224", "--method", args.method, "--ratio", str(args.ratio), "--eval-limit",
           str(args.eval_limit), "--batch-size", str(args.batch_size), "--quiet", "--out", str(out)]
    if args.memory_limit:
        cmd += ["--memory-limit", args.memory_limit]
    if args.no_speed:
        cmd += ["--no-speed"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().strip().splitlines()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    first = next((line for line in err if line.startswith("error")), err[-1] if err else "")
    return proc.returncode, seconds, usage.ru_maxrss * 1024, first


def main() -> int:
    """Measure every model and print one row each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="swin_t,vit_b_16,resnet50")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    parser.add_argument("--method", default="l2")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--eval-limit", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--memory-limit", default="", help="passed on (e.g. 8G); empty: the checkout's default")
    parser.add_argument("--no-speed", action="store_true", help="pass --no-speed (skip latency measurement)")
    args = parser.parse_args()
    print(f"checkout {args.root}, {args.method} at {args.ratio}, 224×224, batch {args.batch_size}, "
          f"{args.eval_limit} test images, memory limit {args.memory_limit or 'default'}")
    sys.path.insert(0, str(ROOT))
    from engine.budget import parse_limit

    budget = parse_limit(args.memory_limit or None)
    print(f"{'model':<12} {'exit':>4} {'seconds':>8} {'peak RSS':>10} {'budget':>7}  message")
    over = 0
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            code, seconds, peak, message = run(args.root, model, args, Path(tmp) / model)
            # the watchdog samples every few ms, so a stopped job may pass the budget by one allocation
            within = peak <= budget * 1.05
            over += not within
            print(f"{model:<12} {code:>4} {seconds:8.1f} {peak / 2 ** 30:8.2f} GiB {'within' if within else 'OVER':>7}"
                  f"  {message[:150]}", flush=True)
    print(f"budget {budget / 2 ** 30:.1f} GiB: {'every run stayed within it' if not over else f'{over} over it'}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
