"""How the test run hands its slow groups to the workers (pytest-xdist, --dist loadgroup).

xdist gives a worker its next unit of work (a whole xdist_group, or one ungrouped test) as
soon as two or fewer of its tests are left to run, so that it never idles. For a slow group
that is a trap: a worker running a one-test group of ten minutes (the bench) took the next
slow group at once and queued it behind, and the run ended with one worker going through
three slow groups in a row while the others had finished. Here a worker that still has a
slow group's tests to run is given single tests (the fast ones, then the ungrouped slow
ones) to keep it fed, and takes another group only when none is left; the groups go to the
workers that are free, in the order of tests/e2e/conftest.py's LONGEST_FIRST.

The report ends with each worker's groups, their seconds and when the worker finished:
what LONGEST_FIRST is kept up to date from.
"""
from __future__ import annotations

import time
from collections import defaultdict

from xdist.scheduler import LoadGroupScheduling


def is_group(scope: str) -> bool:
    """An xdist_group's unit of work is named after the group; a single test's, its node id."""
    return "::" not in scope


class SlowGroupsApart(LoadGroupScheduling):
    def _assign_work_unit(self, node) -> None:
        held = self.assigned_work.get(node, {})
        busy = any(is_group(scope) and not all(unit.values()) for scope, unit in held.items())
        if busy and is_group(next(iter(self.workqueue))):
            singles = [scope for scope in self.workqueue if not is_group(scope)]
            fast = [scope for scope in singles if not scope.startswith("tests/e2e/")]
            if fast or singles:
                self.workqueue.move_to_end((fast or singles)[0], last=False)
        super()._assign_work_unit(node)


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") == "loadgroup":
        return SlowGroupsApart(config, log)
    return None


SINGLE = "(single tests)"


class Timeline:
    """Per worker, its groups in the order it ran them, with their seconds (setup, call and
    teardown of their tests), and when its last test ended."""

    def __init__(self):
        self.started = time.monotonic()
        self.groups = defaultdict(dict)  # worker -> {group: seconds}, in the order first seen
        self.finished = {}

    def pytest_runtest_logreport(self, report):
        node = getattr(report, "node", None)  # set on the controller's copy of a worker's report
        if node is None:
            return
        worker = node.gateway.id
        # The unit xdist scheduled: the group after the last "@", as xdist reads it.
        group = report.nodeid.rsplit("@", 1)[1] if "@" in report.nodeid else SINGLE
        self.groups[worker][group] = self.groups[worker].get(group, 0.0) + report.duration
        self.finished[worker] = time.monotonic() - self.started

    def pytest_terminal_summary(self, terminalreporter):
        if not self.groups:
            return
        terminalreporter.section("xdist groups per worker (seconds)")
        for worker in sorted(self.groups):
            # A test id with an "@" of its own (an e-mail address) is a group of its own to
            # xdist: those of less than a second go with the single tests.
            shown, rest = {}, 0.0
            for group, seconds in self.groups[worker].items():
                if group == SINGLE or seconds < 1:
                    rest += seconds
                else:
                    shown[group] = seconds
            groups = ", ".join([f"{group} {seconds:.0f}" for group, seconds in shown.items()] + [f"{SINGLE} {rest:.0f}"])
            terminalreporter.write_line(f"{worker} finished at {self.finished[worker]:.0f}: {groups}")


def pytest_configure(config):
    if config.getvalue("dist") == "loadgroup" and not hasattr(config, "workerinput"):
        config.pluginmanager.register(Timeline(), "xdist-group-timeline")
