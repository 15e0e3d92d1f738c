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
# plugins these suites do not use, left out of each of their processes (the hypothesis plugin's import alone
# took 0.9 s of CPU a process: 15 s of the 20 s this module spent)
NO_PLUGINS = ("-p", "no:hypothesispytest", "-p", "no:pytestqt", "-p", "no:anyio")


def run_suites(folders: list[Path], crash: bool) -> list[subprocess.CompletedProcess]:
    """pytest -n 2 --dist loadgroup over a small suite with a group of modules kept together, with or without
    two tests that kill their worker; one run per folder, all at once (they mostly sleep)."""
    die = DIE if crash else "pass"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    runs = []
    for folder in folders:
        (folder / "conftest.py").write_text(CONFTEST)
        (folder / "test_many.py").write_text("".join(f"def test_{i}():\n    pass\n" for i in range(6)))
        (folder / "test_crash.py").write_text(f"def test_dies():\n    {die}\n\ndef test_after():\n    pass\n")
        (folder / "test_together.py").write_text(  # slow enough that the other worker finishes and leaves first
            f"import time\n\ndef test_first():\n    time.sleep(1)\n\ndef test_dies_in_group():\n    {die}\n\n"
            + "".join(f"def test_last_{i}():\n    time.sleep(1)\n" for i in range(3)))
        runs.append(subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *NO_PLUGINS,
                                      "-n", "2", "--dist", "loadgroup", str(folder)], cwd=folder, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    done = []
    try:
        for run in runs:
            try:
                out, err = run.communicate(timeout=240)
            except subprocess.TimeoutExpired:
                run.kill()
                raise AssertionError(f"the run hung:\n{run.communicate()[0]}") from None
            done.append(subprocess.CompletedProcess(run.args, run.returncode, out, err))
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    return done


def test_a_run_without_crashes_ends_cleanly(tmp_path):
    done, = run_suites([tmp_path], crash=False)
    assert done.returncode == 0 and "13 passed" in done.stdout and "INTERNALERROR" not in done.stdout, done.stdout


def test_a_crashed_worker_fails_its_test_and_the_run_ends(tmp_path):
    """Three runs, since a replacement's collection races the scheduling."""
    folders = [tmp_path / f"attempt{i}" for i in range(3)]
    for folder in folders:
        folder.mkdir()
    for done in run_suites(folders, crash=True):
        out = done.stdout
        assert done.returncode == 1, out
        assert "2 failed, 11 passed" in out, out  # each crash once; test_after and test_last still ran
        assert out.count("FAILED test_together.py::test_dies_in_group") == 1, out
        assert out.count("FAILED test_crash.py::test_dies ") == 1, out


def test_each_whole_module_is_one_unit_of_work():
    """A module whose fixtures are built once per module stays on one worker; other modules' tests spread."""
    from xdist_scheduling import ModulesTogether

    class Scheduler:
        together, whole, heavy = ("test_alone.py",), ("test_whole.py",), ()

    scope = lambda nodeid: ModulesTogether._split_scope(Scheduler, nodeid)  # noqa: E731
    assert {scope(f"tests/test_whole.py::test_{i}[x]") for i in range(3)} == {"test_whole.py"}
    assert scope("tests/test_alone.py::test_a") == scope("tests/test_alone.py::test_b") == "together"
    assert scope("tests/test_many.py::test_a") != scope("tests/test_many.py::test_b")


def test_modules_with_module_wide_fixtures_are_found(tmp_path):
    from conftest import modules_with_shared_fixtures

    (tmp_path / "test_plain.py").write_text("import pytest\n\n@pytest.fixture\ndef f():\n    return 1\n")
    (tmp_path / "test_module.py").write_text('import pytest\n\n@pytest.fixture(scope="module")\ndef f():\n    pass\n')
    (tmp_path / "test_session.py").write_text("@pytest.fixture(scope='session')\ndef f():\n    pass\n")
    assert modules_with_shared_fixtures(tmp_path) == ("test_module.py", "test_session.py")


def test_heavy_tests_join_the_alone_group_and_nothing_else_does(tmp_path):
    """Tests marked heavy_memory (one by one, parametrized, or a whole module) are found in the source and
    scheduled with the ALONE modules; an unmarked test of the same module, and a mark in a string, are not."""
    from conftest import heavy_tests
    from xdist_scheduling import ModulesTogether

    (tmp_path / "test_some.py").write_text(
        "import pytest\n\n@pytest.mark.heavy_memory\ndef test_big():\n    pass\n\n"
        "@pytest.mark.heavy_memory(gib=1.5)\n@pytest.mark.parametrize('x', [1, 2])\ndef test_many(x):\n    pass\n\n"
        "def test_small():\n    'not @pytest.mark.heavy_memory'\n")
    (tmp_path / "test_all.py").write_text("import pytest\n\npytestmark = pytest.mark.heavy_memory\n\n"
                                          "def test_a():\n    pass\n")
    (tmp_path / "test_none.py").write_text("def test_a():\n    pass\n")
    found = heavy_tests(tmp_path)
    assert found == ("test_all.py", "test_some.py::test_big", "test_some.py::test_many")

    class Scheduler:
        together, whole, heavy = ("test_alone.py",), (), found

    scope = lambda nodeid: ModulesTogether._split_scope(Scheduler, nodeid)  # noqa: E731
    assert {scope("tests/test_alone.py::test_a"), scope("tests/test_some.py::test_big"),
            scope("tests/test_some.py::test_many[2]"), scope("tests/test_all.py::test_a")} == {"together"}
    assert scope("tests/test_some.py::test_small") == "tests/test_some.py::test_small"
    assert scope("tests/test_none.py::test_a") == "tests/test_none.py::test_a"


def test_the_suite_marks_its_heavy_tests():
    """The marks the suite's memory peak depends on are still there (a renamed test would drop out silently)."""
    from conftest import heavy_tests

    found = heavy_tests(Path(__file__).parent)
    for name in ("test_bad_inputs.py", "test_deploy.py::test_the_set_works_without_prunelab",
                 "test_store_safety.py::test_two_sweeps_on_one_store_share_the_work",
                 "test_data_folders.py"):
        assert name in found


def test_the_alone_group_runs_first_and_its_largest_trees_lead():
    """The ALONE modules and the heavy tests run first, the largest first (the window and the budgets lead);
    then everything else in collection order."""
    from types import SimpleNamespace

    import conftest

    def item(nodeid, gib=None):
        mark = None if gib is None else SimpleNamespace(kwargs={"gib": gib})
        return SimpleNamespace(nodeid=nodeid, get_closest_marker=lambda name: mark if name == conftest.HEAVY_MARK
                               else None)

    items = [item("tests/test_a.py::test_plain"), item("tests/test_budget.py::test_b"),
             item("tests/test_small.py::test_s", 0.8), item("tests/test_ray.py::test_r"),
             item("tests/test_big.py::test_g", 1.6), item("tests/test_real_window.py::test_w"),
             item("tests/test_z.py::test_plain")]
    conftest.pytest_collection_modifyitems(None, None, items)
    assert [i.nodeid.split("::")[1] for i in items] == ["test_w", "test_b", "test_r", "test_g", "test_s",
                                                       "test_plain", "test_plain"]
    assert items[-2].nodeid.startswith("tests/test_a.py")


def test_the_fork_server_a_module_started_is_ended_after_it():
    """The data loaders' fork server (torch imported, 0.5 GiB) no longer lives on in a worker for the rest of
    the run: the suite ends it after each module (shared_fixtures._no_lingering_fork_server)."""
    import multiprocessing.forkserver

    from shared_fixtures import stop_fork_server

    multiprocessing.forkserver.ensure_running()
    pid = multiprocessing.forkserver._forkserver._forkserver_pid
    assert pid is not None
    stop_fork_server()
    assert multiprocessing.forkserver._forkserver._forkserver_pid is None
    assert not Path(f"/proc/{pid}").exists()  # reaped, not just forgotten
