"""Start-up of the bundled app to a ready window, printed with the bundle's size.

    .venv/bin/python benchmarks/cold_start.py [BUNDLE_FOLDER] [--runs N] [--drop-caches]

Starts dist/PruneLab/PruneLab under Qt's offscreen platform (no display needed) with its log, data
and settings in a temporary folder, and reads the times off its log: "window" when the app has
imported Qt and torch and creates the main window, "ready" when the demo model is loaded and its
graph is handed to Netron (what a user waits for). The first run after a build or a reboot is the
cold one; --drop-caches (root only) empties the page cache before each run to make every run cold.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "packaging"))
from size_report import sizes  # noqa: E402

MARKS = {"window": "PruneLab starting", "ready": "showing original graph"}
TIMEOUT_S = 300


def one_start(exe: Path, drop_caches: bool) -> dict[str, float]:
    """Seconds from launch to each mark in MARKS, for one start of the app."""
    if drop_caches:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    with tempfile.TemporaryDirectory(prefix="prunelab-coldstart-") as folder:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PRUNELAB_LOG_DIR=folder, PRUNELAB_DATA_DIR=folder,
                   PRUNELAB_SETTINGS_DIR=folder, QTWEBENGINE_DISABLE_SANDBOX="1")
        log = Path(folder) / "prunelab.log"
        start = time.perf_counter()
        proc = subprocess.Popen([str(exe)], env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        found: dict[str, float] = {}
        try:
            while len(found) < len(MARKS):
                if proc.poll() is not None:
                    raise RuntimeError(f"the app exited with {proc.returncode} before it was ready")
                if time.perf_counter() - start > TIMEOUT_S:
                    raise TimeoutError(f"not ready after {TIMEOUT_S} s")
                text = log.read_text(errors="replace") if log.exists() else ""
                for name, mark in MARKS.items():
                    if name not in found and mark in text:
                        found[name] = time.perf_counter() - start
                time.sleep(0.05)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        return found


def main(argv: list[str]) -> int:
    """Print the size by part and each start's times, then the median."""
    args = [a for a in argv if not a.startswith("--")]
    runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else 1
    if "--runs" in argv:
        args.remove(str(runs))
    bundle = Path(args[0]) if args else ROOT / "dist" / "PruneLab"
    exe = bundle / "PruneLab"
    if not exe.exists():
        print(f"no bundle at {bundle}: build it with `make bundle` (skipped)", file=sys.stderr)
        return 2 if args else 0  # `make bench` runs every script; the bundle is optional there
    parts = sizes(bundle)
    print(f"bundle {bundle}: {sum(parts.values()) / 1e9:.2f} GB "
          f"({', '.join(f'{k} {v / 1e9:.2f}' for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:4])} GB)")
    results = []
    for run in range(runs):
        times = one_start(exe, "--drop-caches" in argv)
        results.append(times)
        label = "cold (page cache dropped)" if "--drop-caches" in argv else ("first" if run == 0 else "warm")
        print(f"start {run + 1} ({label}): window after {times['window']:.1f} s, ready (demo loaded, graph shown) "
              f"after {times['ready']:.1f} s", flush=True)
    if runs > 1:
        print(f"median: window {statistics.median(r['window'] for r in results):.1f} s, "
              f"ready {statistics.median(r['ready'] for r in results):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
