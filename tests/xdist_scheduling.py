"""The suite's xdist scheduler: `--dist loadgroup` with named modules kept together on one worker, and a
crashed worker that fails its test instead of hanging the run.

pytest-xdist 3.8.0's scope scheduling hangs after a worker dies: the dead worker's whole workload goes back
on the queue, finished units included, so a replacement is sent an empty unit it can never report done; a replacement given a single test waits for a second one that never comes;
a replacement still collecting is sent work before xdist knows its collection (an internal error); and the
test that crashed is started again, to crash its replacement too. A test that took 11 GiB made a
CI run sit idle until its time limit instead of failing in a minute.
"""
from __future__ import annotations

from xdist.scheduler import LoadGroupScheduling


def module_of(nodeid: str) -> str:
    """The test file's name of a node id."""
    return nodeid.split("::", 1)[0].rsplit("/", 1)[-1]


class ModulesTogether(LoadGroupScheduling):
    """Tests of the modules in `together`, and the tests and modules named in `heavy` (`file::test`, or `file`
    for a whole module), form one unit of work (one worker, in collection order); each module in `whole` is a
    unit of its own (its module-wide fixtures are built once, not once per worker); every other test is a
    unit of its own."""

    together: tuple[str, ...] = ()
    whole: tuple[str, ...] = ()
    heavy: tuple[str, ...] = ()

    def _split_scope(self, nodeid: str) -> str:
        module = module_of(nodeid)
        test = f"{module}::{nodeid.split('::', 1)[-1].split('[', 1)[0]}"
        if module in self.together or module in self.heavy or test in self.heavy:
            return "together"
        return module if module in self.whole else nodeid

    def remove_node(self, node) -> str | None:
        """The dead worker's unfinished tests go back on the queue, less the one it died on (already reported
        failed by xdist); None when it had nothing left."""
        workload = self.assigned_work.pop(node)  # its collection stays: xdist counts it until the run ends
        crashed = next((nodeid for unit in workload.values() for nodeid, done in unit.items() if not done), None)
        if crashed is None:
            return None
        workload[self._split_scope(crashed)][crashed] = True
        self.workqueue.update({scope: unit for scope, unit in workload.items() if not all(unit.values())})
        for other in self.assigned_work:
            self._reschedule(other)
        return crashed

    def _reschedule(self, node) -> None:
        """Keep at least two tests queued on a worker (it runs one only once it knows the next, or that none
        comes), and tell it none comes once the queue is empty. A replacement still collecting waits: its
        collection's arrival schedules it."""
        if node.shutting_down or node not in self.registered_collections:
            return
        if not self.workqueue:
            node.shutdown()
            return
        if self._pending_of(self.assigned_work[node]) > 2:
            return
        self._assign_work_unit(node)
        while self.workqueue and self._pending_of(self.assigned_work[node]) < 2:
            self._assign_work_unit(node)
        if not self.workqueue and self._pending_of(self.assigned_work[node]) < 2:
            node.shutdown()


def make_scheduler(config, log, together: tuple[str, ...], whole: tuple[str, ...] = (), heavy: tuple[str, ...] = ()):
    """A ModulesTogether scheduler for `together`, `whole` and `heavy`."""
    cls = type("Together", (ModulesTogether,), {"together": tuple(together), "whole": tuple(whole),
                                                "heavy": tuple(heavy)})
    return cls(config, log)
