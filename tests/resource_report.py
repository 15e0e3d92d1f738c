"""Peak memory per test and time per module, printed at the end of every run, so a test that grows or a
module that slows down shows up at once.

A thread samples the resident memory of the pytest process, and what its child processes (the CLI tests'
interpreters, a Ray cluster) hold together (each one's own pages, the shared libraries once), every few
milliseconds. The peak while each test runs is recorded; the end of the run
prints the whole run's peak and the tests with the largest peaks. `PRUNELAB_TEST_RSS_LIMIT_GB` (unset
by default) interrupts the run and names the test the moment the process passes that size,
which finds a runaway test without letting it take the machine down. `PRUNELAB_TEST_REPORT_JSON=FILE` also
writes every test's figures (time span, peaks, worker) and the whole run's memory every 0.2 s to FILE, to
see which tests overlap at a peak.

Under pytest-xdist each worker samples itself and sends each test's peak to the controller with the test's
report (and a limit passed, at its end); the controller samples the whole tree of processes (itself, the
workers and everything they started), which gives the run's total peak across workers. A test's own share
is its peak less what the process held when it began (a worker keeps what earlier tests left: libraries,
caches, the session's data), so a test that grows is told from a worker that has grown.

Each module's time (its tests' setup, call and teardown, summed) and each worker's busy time are printed
too: the worker with the most is the run's critical path. So is the CPU time each test used, in its process
and in the child processes it waited for (a Ray cluster's counts when its fixture ends): on 2 busy cores the
run's time is the CPU it needs, and a CPU figure moves less than a wall-clock one when the machine is slower.
"""
from __future__ import annotations

import _thread
import gc
import os
import sys
import threading
import time

import pytest

from engine.budget import release_freed_memory

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")
_GIB = 1024 ** 3


def _rss(pid: int) -> int:
    """Resident bytes of one process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _private_shared(pid: int) -> tuple[int, int]:
    """Resident bytes of one process that are its own (anonymous) and that are file-backed or shared memory
    (the torch libraries every interpreter maps); (0, 0) once it is gone. From statm: cheap, unlike
    smaps_rollup's exact PSS, which took 30 ms of CPU per read of a 1.4 GB process."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            fields = fh.read().split()
        resident, shared = int(fields[1]) * _PAGE, int(fields[2]) * _PAGE
        return resident - shared, shared
    except (OSError, ValueError, IndexError):
        return 0, 0


def _tree_memory(pids: list[int]) -> tuple[int, list[tuple[int, int, int]]]:
    """What a set of processes holds together: each one's own pages, and the largest shared part once
    (summing RSS counted the same libraries once per interpreter); and (pid, own, shared) of each."""
    parts = [(pid, *_private_shared(pid)) for pid in pids]
    return sum(own for _, own, _ in parts) + max((shared for _, _, shared in parts), default=0), parts


def _named(parts: list[tuple[int, int, int]]) -> list[tuple[str, int, int]]:
    """(command line, own, shared) of the processes that hold more than 8 MiB of their own, largest first."""
    out = []
    for pid, own, shared in sorted(parts, key=lambda p: -p[1]):
        if own < 8 * 1024 ** 2:
            break
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                name = fh.read(200).replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            name = "(gone)"
        out.append((name[:120], own, shared))
    return out


def _children(pid: int) -> dict[int, int]:
    """Direct and indirect child processes of `pid` with their parents, from /proc (no psutil needed): each
    thread's list of children where the kernel keeps one, which reads a few files where a scan of /proc read
    one per process on the machine (most of the sampler's cost)."""
    if _HAS_CHILDREN_LISTS:
        out, todo = {}, [pid]
        while todo:
            parent = todo.pop()
            try:
                tasks = os.listdir(f"/proc/{parent}/task")
            except OSError:
                continue
            for task in tasks:
                try:
                    with open(f"/proc/{parent}/task/{task}/children", "rb") as fh:
                        found = fh.read().split()
                except OSError:
                    continue
                for child in map(int, found):
                    if child not in out:
                        out[child] = parent
                        todo.append(child)
        return out
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    out, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child in kids.get(parent, []):
            out[child] = parent
            todo.append(child)
    return out


_HAS_CHILDREN_LISTS = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _command_and_start(pid: int) -> tuple[bytes, float]:
    """A process's command line and start (seconds after boot); (b"", 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            command = fh.read()
        with open(f"/proc/{pid}/stat") as fh:
            started = int(fh.read().rsplit(")", 1)[1].split()[19]) / _TICKS
    except (OSError, ValueError, IndexError):
        return b"", 0.0
    return command, started


# A child running its parent's command line counts once it is this old. `subprocess` starts a program with
# vfork, and until the exec the child shares its parent's memory, so /proc shows it holding all of the
# parent's pages: a worker that started xdotool at the wrong moment was counted twice (0.58 GiB more in the
# real window's tree, one run in three). That moment is short, but under load it once outlasted the 0.2 s
# between samples; a forked worker lives on, and only its first seconds go uncounted (its pages are still
# its parent's then anyway, shared until written).
CLONE_GRACE_S = 2.0


def counted_children(tree: dict[int, int]) -> list[int]:
    """The processes of `tree` whose memory counts: all but the young ones still running their parent's
    command line (between fork and exec)."""
    with open("/proc/uptime") as fh:
        now = float(fh.read().split()[0])
    commands = {pid: _command_and_start(pid) for pid in {*tree, *tree.values()}}
    return [pid for pid, parent in tree.items()
            if not (commands[pid][0] and commands[pid][0] == commands[parent][0]
                    and now - commands[pid][1] < CLONE_GRACE_S)]


# How often the sampler reads this process's size, and walks its children (which costs more). Every 5 ms, with
# a scan of all of /proc for the children, it took 3.9 % of a core in each of the run's three processes (the
# controller and two workers); every 20 ms with the kernel's lists, 0.8 %.
SELF_EVERY_S = 0.02
CHILDREN_EVERY_S = 0.2


class _Sampler(threading.Thread):
    """Samples this process every SELF_EVERY_S and its children every CHILDREN_EVERY_S."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="test-memory-sampler")
        self.pid = os.getpid()
        self.child_parts: list[tuple[str, int, int]] = []  # the children at the current test's child peak
        self.self_peak = self.child_peak = self.began = self.ended = 0  # during the current test; RSS when it
        # began, and when its teardown ended
        self.run_self_peak = self.run_child_peak = self.run_total_peak = 0
        self.run_total_peak_at = 0.0  # when the whole run's peak was sampled (time.time())
        self.timeline: list[tuple[float, int]] = []  # (time.time(), whole tree) every 0.2 s
        self.current = ""
        limit = os.environ.get("PRUNELAB_TEST_RSS_LIMIT_GB")
        self.limit = float(limit) * _GIB if limit else None
        self.exceeded = ""

    def run(self) -> None:
        tick = 0
        statm = os.open(f"/proc/{self.pid}/statm", os.O_RDONLY)  # read in place: an open() a sample cost 9x more
        while True:
            own = int(os.pread(statm, 128, 0).split()[1]) * _PAGE
            self.self_peak = max(self.self_peak, own)
            self.run_self_peak = max(self.run_self_peak, own)
            if tick % round(CHILDREN_EVERY_S / SELF_EVERY_S) == 0:
                kids, parts = _tree_memory(counted_children(_children(self.pid)))
                self.timeline.append((time.time(), own + kids))
                if kids > self.child_peak:
                    self.child_peak = kids
                    if kids > _NAME_CHILDREN_ABOVE:  # which processes: the JSON report says
                        self.child_parts = _named(parts)
                self.run_child_peak = max(self.run_child_peak, kids)
                if own + kids > self.run_total_peak:
                    self.run_total_peak, self.run_total_peak_at = own + kids, time.time()
            if self.limit and own > self.limit and not self.exceeded and self.current:
                # pytest captures file descriptor 2, so the message is printed by the summary hook; the
                # interrupt stops the run where it is, with the test's traceback
                self.exceeded = f"{own / _GIB:.1f} GiB > {self.limit / _GIB:.1f} GiB during {self.current}"
                _thread.interrupt_main()
            tick += 1
            time.sleep(SELF_EVERY_S)


# Bytes a test may leave in its process before freed heap is handed back after it: glibc keeps freed memory in
# its arenas, so a worker grew by what each large test had used (the memory-budget tests left 0.3-0.8 GiB each)
# until it held 2.2 GiB. Only after such a test: a full collection and a trim cost tens of ms.
_GIVE_BACK_ABOVE = 64 * 1024 ** 2


# A test whose child processes together pass this has them named, at their peak, in the JSON report.
_NAME_CHILDREN_ABOVE = 512 * 1024 ** 2

_SAMPLER: _Sampler | None = None
# (own peak, children's peak, test id, worker, RSS at start, RSS after teardown, children at their peak)
_PEAKS: list[tuple[int, int, str, str, int, int, list, float, float]] = []  # ..., CPU s: own, children
_TIMES: dict[tuple[str, str], float] = {}  # (module, worker) -> seconds of setup, call and teardown
_EXCEEDED: list[str] = []  # limits passed in xdist workers, as they reported them
_SPANS: dict[tuple[str, str], list[float]] = {}  # (test id, worker) -> [start of setup, end of teardown]
_KEY = "prunelab_peak"


def _sampler() -> _Sampler:
    global _SAMPLER
    if _SAMPLER is None:
        _SAMPLER = _Sampler()
        _SAMPLER.start()
    return _SAMPLER


def _is_controller(config) -> bool:
    """The process of an xdist run that only hands out tests (its workers run them)."""
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", None))


def pytest_sessionstart(session) -> None:
    """The xdist controller samples from the start: its children are the workers and all they started."""
    if _is_controller(session.config):
        _sampler()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Record the peak memory while one test (setup, call and teardown) runs."""
    s = _sampler()
    s.current = item.nodeid
    s.began = s.self_peak = _rss(s.pid)
    s.child_peak, s.child_parts = 0, []
    s.cpu_began = os.times()
    yield
    s.current = ""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Once the test's fixtures are gone: delete the windows it closed, hand back freed heap if it grew, then
    note what it kept."""
    yield
    s = _sampler()
    if "qtbot" in getattr(item, "fixturenames", ()) and _delete_closed_widgets():
        gc.collect()  # the windows' Python side: cycles through their signal connections
    if _rss(s.pid) - s.began > _GIVE_BACK_ABOVE:
        release_freed_memory()
    s.ended = _rss(s.pid)


def _delete_closed_widgets() -> bool:
    """Delete what a Qt test left: pytest-qt closes its widgets and asks Qt to delete them later, an event loop
    no teardown runs; and a hidden window without a parent (pyqtgraph's plot and view-box menus: 25 a main
    window) lives as long as its signals connect it to itself, which the cycle collector cannot see. Left, each
    GUI test kept about 16 MB (its plots and the islands of objects they reach): the workers grew to 2.2 GiB.
    True when Qt is in use."""
    core = sys.modules.get("PySide6.QtCore")
    widgets = sys.modules.get("PySide6.QtWidgets")
    if core is None or widgets is None or widgets.QApplication.instance() is None:
        return False
    for widget in widgets.QApplication.topLevelWidgets():
        if widget.parent() is None and not widget.isVisible():
            widget.deleteLater()
    core.QCoreApplication.sendPostedEvents(None, core.QEvent.Type.DeferredDelete)
    return True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """The test's peaks travel with its last report (to the xdist controller too)."""
    outcome = yield
    if call.when == "teardown" and _SAMPLER is not None:
        _SAMPLER.self_peak = max(_SAMPLER.self_peak, _rss(_SAMPLER.pid))  # one more sample, without a 10 ms
        # sleep per test (13 s of a run's wall time)
        now, began = os.times(), _SAMPLER.cpu_began
        own = now.user + now.system - began.user - began.system
        kids = max(0.0, now.children_user + now.children_system - began.children_user - began.children_system)
        outcome.get_result().user_properties.append((_KEY, (_SAMPLER.self_peak, _SAMPLER.child_peak,
                                                            _SAMPLER.began, _SAMPLER.ended,
                                                            _SAMPLER.child_parts, own, kids)))


def pytest_runtest_logreport(report) -> None:
    node = getattr(report, "node", None)  # the xdist worker that ran it, on the controller
    worker = getattr(getattr(node, "gateway", None), "id", "") or os.environ.get("PYTEST_XDIST_WORKER", "")
    module = (report.nodeid.split("::", 1)[0], worker)
    _TIMES[module] = _TIMES.get(module, 0.0) + getattr(report, "duration", 0.0)
    span = _SPANS.setdefault((report.nodeid, worker), [report.start, report.stop])
    span[0], span[1] = min(span[0], report.start), max(span[1], report.stop)
    if report.when != "teardown":
        return
    for key, value in report.user_properties:
        if key == _KEY:
            _PEAKS.append((value[0], value[1], report.nodeid, worker, value[2], value[3], value[4], value[5],
                           value[6]))


def pytest_sessionfinish(session, exitstatus) -> None:
    """A worker hands a limit it saw passed to the controller."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None and _SAMPLER is not None and _SAMPLER.exceeded:
        output["prunelab_exceeded"] = _SAMPLER.exceeded


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """(xdist controller) a worker ended: keep the limit it saw passed, if any."""
    exceeded = getattr(node, "workeroutput", {}).get("prunelab_exceeded")
    if exceeded and exceeded not in " ".join(_EXCEEDED):  # xdist may report a crashed worker down twice
        _EXCEEDED.append(f"{exceeded} (worker {node.gateway.id})")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Time per worker and the ten slowest modules; the run's peak memory, each worker's, the ten tests with
    the largest peaks and the ten that grew their process most."""
    if not _PEAKS or _SAMPLER is None:
        return
    tr = terminalreporter
    tr.section("time per module (setup, call and teardown of its tests) and per worker")
    busy: dict[str, float] = {}
    modules: dict[str, list] = {}
    for (module, worker), seconds in _TIMES.items():
        busy[worker] = busy.get(worker, 0.0) + seconds
        modules.setdefault(module, []).append((seconds, worker))
    tr.write_line("  ".join(f"{'worker ' + w if w else 'pytest'}: {t:.0f} s" for w, t in sorted(busy.items())))
    for module, parts in sorted(modules.items(), key=lambda m: -sum(t for t, _ in m[1]))[:10]:
        where = ", ".join(f"{w} {t:.0f} s" for t, w in sorted(parts, reverse=True)) if len(parts) > 1 or parts[0][1] \
            else ""
        tr.write_line(f"{sum(t for t, _ in parts):7.1f} s  {module}" + (f"  [{where}]" if where else ""))
    tr.section("peak memory (pytest: resident; its child processes: their own pages, shared ones once)")
    for exceeded in _EXCEEDED + ([_SAMPLER.exceeded] if _SAMPLER.exceeded else []):
        tr.write_line(f"PRUNELAB_TEST_RSS_LIMIT_GB passed: {exceeded}", red=True)
    workers = sorted({p[3] for p in _PEAKS})
    for worker in workers:
        mine = [p for p in _PEAKS if p[3] == worker]
        top_self = max(mine)
        top_child = max(mine, key=lambda p: p[1])
        tr.write_line(f"{'worker ' + worker if worker else 'pytest'}: {top_self[0] / _GIB:.2f} GiB in the process "
                      f"(during {top_self[2]}), {top_child[1] / _GIB:.2f} GiB in its children "
                      f"(during {top_child[2]})")
    at = _SAMPLER.run_total_peak_at
    during = sorted(f"{nodeid}" + (f" [{worker}]" if worker else "") for (nodeid, worker), (start, stop)
                    in _SPANS.items() if start <= at <= stop)
    tr.write_line(f"whole run: {_SAMPLER.run_total_peak / _GIB:.2f} GiB at most, pytest and every process it started "
                  "together (sampled every 0.2 s)" + (f", during {' and '.join(during)}" if during else ""))
    tr.write_line("largest peaks: the process, its children, the test's own growth of the process:")
    for own, kids, nodeid, worker, start, *_ in sorted(_PEAKS, key=lambda p: -(p[0] + p[1]))[:10]:
        tr.write_line(f"{own / _GIB:6.2f} GiB {kids / _GIB:6.2f} GiB {(own - start) / _GIB:+6.2f} GiB  {nodeid}"
                      + (f"  [{worker}]" if worker else ""))
    tr.write_line("largest growth of the process during one test:")
    for own, kids, nodeid, worker, start, *_ in sorted(_PEAKS, key=lambda p: p[4] - p[0])[:10]:
        tr.write_line(f"{own / _GIB:6.2f} GiB {kids / _GIB:6.2f} GiB {(own - start) / _GIB:+6.2f} GiB  {nodeid}"
                      + (f"  [{worker}]" if worker else ""))
    tr.write_line("largest growth kept after the test (what a worker accumulates; freed heap handed back):")
    for _, _, nodeid, worker, start, end, *_ in sorted(_PEAKS, key=lambda p: p[4] - p[5])[:10]:
        tr.write_line(f"{(end - start) / _GIB:+6.2f} GiB  {nodeid}" + (f"  [{worker}]" if worker else ""))
    _cpu_summary(tr)
    if os.environ.get("PRUNELAB_TEST_REPORT_JSON"):
        _write_json(os.environ["PRUNELAB_TEST_REPORT_JSON"])


def _cpu_summary(tr) -> None:
    """The CPU the tests used, in their processes and their children, and the ten tests that used most."""
    tr.section("CPU time (user and system) per test: in the test's process, in the child processes it waited for")
    own, kids = sum(p[7] for p in _PEAKS), sum(p[8] for p in _PEAKS)
    tr.write_line(f"all tests: {own + kids:.0f} s = {own:.0f} s in the pytest processes + {kids:.0f} s in their "
                  "children")
    for _, _, nodeid, worker, _, _, _, cpu, kids_cpu in sorted(_PEAKS, key=lambda p: -(p[7] + p[8]))[:10]:
        tr.write_line(f"{cpu + kids_cpu:6.1f} s = {cpu:5.1f} + {kids_cpu:5.1f} s  {nodeid}"
                      + (f"  [{worker}]" if worker else ""))


def _write_json(path: str) -> None:
    """Every test's span and peaks, and the whole run's memory over time."""
    import json

    tests = [{"test": nodeid, "worker": worker, "span": _SPANS.get((nodeid, worker)), "peak": own,
              "children": kids, "began": start, "ended": end, "cpu_s": round(cpu, 3),
              "children_cpu_s": round(kids_cpu, 3),
              **({"children_at_peak": [{"command": c, "own": o, "shared": sh} for c, o, sh in parts]} if parts else {})}
             for own, kids, nodeid, worker, start, end, parts, cpu, kids_cpu in _PEAKS]
    with open(path, "w") as fh:
        json.dump({"tests": tests, "timeline": _SAMPLER.timeline}, fh)
