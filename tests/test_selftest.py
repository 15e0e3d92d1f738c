"""`python main.py --self-test`: passes on a working install, and a failing check makes it exit 1.

Subprocesses, as a lab administrator runs it; the headless part only (the window check is the
bundle's: `make bundle` runs `PruneLab --self-test --gui`).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.data import FASHION_DIR

ROOT = Path(__file__).resolve().parent.parent
needs_fashion = pytest.mark.skipif(not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").exists(),
                                   reason="Debian's dataset-fashion-mnist is not installed")


def self_test(tmp_path: Path, *flags: str, **env: str) -> subprocess.CompletedProcess:
    """Run the self-test with its log in tmp_path; returns the finished process."""
    full = dict(os.environ, PRUNELAB_LOG_DIR=str(tmp_path / "logs"), PRUNELAB_NO_WEBENGINE="1", **env)
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "--self-test", *flags], cwd=tmp_path, env=full,
                          capture_output=True, text=True, timeout=300)


def outcome_lines(stdout: str) -> dict[str, str]:
    """check name -> status, from the report's table."""
    found = {}
    for line in stdout.splitlines():
        parts = line.split()
        if line.startswith("  ") and len(parts) >= 3 and parts[0] in ("pass", "FAIL", "skip"):
            found[parts[1]] = parts[0]
    return found


@pytest.mark.heavy_memory(gib=1.25)
@needs_fashion
def test_self_test_passes_and_writes_the_report(tmp_path: Path) -> None:
    done = self_test(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    checks = outcome_lines(done.stdout)
    for name in ("demo", "evaluate", "prune", "onnx", "qt", "netron"):
        assert checks.get(name) == "pass", (name, done.stdout)
    assert checks["cuda"] in ("pass", "skip")
    assert "top-1" in done.stdout and "500 test images" in done.stdout
    assert "all checks passed" in done.stdout and "torch " in done.stdout  # verdict and versions
    log = (tmp_path / "logs" / "selftest.log").read_text()
    assert "all checks passed" in log and "onnxruntime agrees" in log


@pytest.mark.heavy_memory(gib=1.0)
def test_missing_demo_data_fails_with_exit_1(tmp_path: Path) -> None:
    empty = tmp_path / "no-fashion"
    empty.mkdir()
    done = self_test(tmp_path, "--headless", PRUNELAB_FASHION_DIR=str(empty))
    assert done.returncode == 1, done.stdout + done.stderr
    checks = outcome_lines(done.stdout)
    assert checks["demo"] == "FAIL" and checks["evaluate"] == "FAIL" and checks["prune"] == "FAIL"
    assert "gui" not in checks and "qt" not in checks  # --headless: no Qt checks at all
    assert "FAILED: demo" in done.stdout
    assert "FAILED" in (tmp_path / "logs" / "selftest.log").read_text()


def test_bad_flag_is_bad_input(tmp_path: Path) -> None:
    done = self_test(tmp_path, "--no-such-flag")
    assert done.returncode == 2
