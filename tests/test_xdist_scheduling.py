"""The suite's xdist scheduler survives a worker that dies: the test it died on fails once, every other test
still runs, and the run ends (xdist 3.8.0's own scope scheduling hung or restarted the crash)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

CONFTEST = f'''
import sys
sys.path.insert(0, {str(TESTS)!r})
import pytest

@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist_scheduling import make_scheduler
    return make_scheduler(config, log, ("test_together.py",))
'''

DIE = "import os; os._exit(1)"


def test_a_crashed_worker_fails_its_test_and_the_run_ends(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_many.py").write_text("".join(f"def test_{i}():\n    pass\n" for i in range(6)))
    (tmp_path / "test_crash.py").write_text(f"def test_dies():\n    {DIE}\n\ndef test_after():\n    pass\n")
    (tmp_path / "test_together.py").write_text(
        f"def test_first():\n    pass\n\ndef test_dies_in_group():\n    {DIE}\n\ndef test_last():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                               "--dist", "loadgroup", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=240)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the run hung after a worker crashed:\n{exc.stdout}") from None
    out = done.stdout
    assert done.returncode == 1, out
    assert "2 failed, 9 passed" in out, out  # each crash once; test_after and test_last still ran
    assert out.count("FAILED test_together.py::test_dies_in_group") == 1, out
    assert out.count("FAILED test_crash.py::test_dies ") == 1, out
