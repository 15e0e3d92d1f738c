"""The suite's hooks: worker folders, the order and scheduling of modules, the resource report.

The fixtures (tiny models, Fashion-MNIST, tiny ImageFolder and CIFAR-10 trees) are in shared_fixtures.py,
registered in the processes that run tests only: the xdist controller hands out tests and never needed
torch, which made it a 0.55 GiB process for the whole run."""
from __future__ import annotations

import importlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from resource_report import (pytest_runtest_logreport, pytest_runtest_makereport,  # noqa: E402,F401  (hooks)
                             pytest_runtest_protocol, pytest_runtest_teardown, pytest_sessionfinish,
                             pytest_sessionstart, pytest_terminal_summary, pytest_testnodedown)

# Modules whose tests must not overlap one another under pytest-xdist: memory by design (budgets, memory
# limits), a Ray cluster, the real window's X display, with about how many GiB a test of each holds beyond its
# worker (measured; the budget tests' 1 GiB command plus their own growth of the worker by up to 0.7 GiB). They
# run on one worker, one after the other (see pytest_xdist_make_scheduler); tests elsewhere run beside them.
# The group is the largest unit of work, so xdist hands it out first.
ALONE = {"test_real_window.py": 2.1, "test_budget.py": 1.9, "test_ray.py": 1.6, "test_bad_inputs_2.py": 0.9}

# Tests marked `heavy_memory(gib=N)` hold about N GiB beyond their worker, mostly in interpreters they start
# (a sweep's workers, the deploy set's clean interpreter, the self-test). They join the ALONE group, so no two
# of them overlap: the real window and the Ray cluster met one of them on the other worker and the run peaked
# at 5 GiB. The group runs the largest first (pytest_collection_modifyitems), while the other worker is young
# (a worker keeps what its tests leave: 0.9 GiB after collection, 1.2-1.4 GiB by the end).
HEAVY_MARK = "heavy_memory"


def pytest_configure(config: pytest.Config) -> None:
    """Register our markers so `-m "not slow"` works without a pytest.ini; give this process (an xdist worker,
    or the one pytest) PruneLab folders of its own, so parallel workers never share a store, a log or settings,
    and the shared fixtures."""
    config.addinivalue_line("markers", "slow: takes more than a few seconds (deselect with -m 'not slow')")
    config.addinivalue_line("markers", f"{HEAVY_MARK}(gib=N): holds about N GiB beyond its worker (mostly in the "
                                       "processes it starts); runs in the ALONE group, the largest first")
    if not hasattr(config, "workerinput") and getattr(config.option, "numprocesses", None):
        return  # the xdist controller runs no test
    config.pluginmanager.register(importlib.import_module("shared_fixtures"), "prunelab-shared-fixtures")
    own = Path(tempfile.mkdtemp(prefix=f"prunelab-tests-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-"))
    for name, sub in (("PRUNELAB_DATA_DIR", "data"), ("PRUNELAB_LOG_DIR", "logs"), ("PRUNELAB_CACHE_DIR", "cache"),
                      ("PRUNELAB_SETTINGS_DIR", "settings")):
        os.environ[name] = str(own / sub)
    config.add_cleanup(lambda: shutil.rmtree(own, ignore_errors=True))


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """The ALONE group first, its largest tests first (ALONE's modules and the heavy tests by their size); then
    every other test (a stable sort: every xdist worker collects the same order, as xdist requires)."""
    def rank(item) -> tuple[int, float]:
        name = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
        if name in ALONE:
            return (0, -ALONE[name])
        mark = item.get_closest_marker(HEAVY_MARK)
        return (0, -float(mark.kwargs.get("gib", 1.0))) if mark else (1, 0.0)

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadgroup` with the ALONE modules as one group, every other test on its own.

    xdist's own loadgroup reads `xdist_group` marks by renaming node ids, which pytest 9 no longer allows
    (the marks had no effect), so the grouping is said here, by module. The scheduler (xdist_scheduling.py)
    also fails a crashed worker's test once instead of hanging the run."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist_scheduling import make_scheduler

    folder = Path(__file__).parent
    return make_scheduler(config, log, tuple(ALONE), modules_with_shared_fixtures(folder), heavy_tests(folder))


def heavy_tests(folder: Path) -> tuple[str, ...]:
    """`file::test` of each test marked heavy_memory, and `file` of each module marked so, read from the
    source: the controller that schedules collects no test, so it sees node ids, not marks."""
    marked = re.compile(rf"@pytest\.mark\.{HEAVY_MARK}\b[^\n]*\n(?:[ \t]*@[^\n]*\n)*[ \t]*def (test_\w+)")
    whole = re.compile(rf"^pytestmark\s*=.*\bpytest\.mark\.{HEAVY_MARK}\b", re.MULTILINE)
    out: list[str] = []
    for path in sorted(folder.glob("test_*.py")):
        text = path.read_text()
        out += [path.name] if whole.search(text) else [f"{path.name}::{name}" for name in marked.findall(text)]
    return tuple(out)


def modules_with_shared_fixtures(folder: Path) -> tuple[str, ...]:
    """Test files that define a module- or session-scoped fixture: spread test by test over both workers, each
    worker built it (test_report's store of trained runs took 13 s on each)."""
    shared = re.compile(r"@pytest\.fixture\(\s*scope=[\"'](module|session)[\"']")
    return tuple(sorted(path.name for path in folder.glob("test_*.py") if shared.search(path.read_text())))
