"""testkit/xdist_groups.py: a slow group goes to a free worker, never queued behind another
slow group on a busy one."""
import re
from pathlib import Path

import pytest

import testkit

pytest_plugins = ["pytester"]

SUITE = """
import time
import pytest

@pytest.mark.xdist_group("short")
@pytest.mark.parametrize("n", range(3))
def test_short(n):
    time.sleep(0.1)

@pytest.mark.xdist_group("slow1")
def test_slow1():
    time.sleep(1.5)

@pytest.mark.xdist_group("slow2")
def test_slow2():
    time.sleep(1.5)

@pytest.mark.parametrize("n", range(20))
def test_fast(n):
    pass
"""


@pytest.mark.parametrize("plugin, apart", [(["-p", "testkit.xdist_groups"], True), ([], False)],
                         ids=["slow-groups-apart", "xdist-alone"])
def test_a_one_test_group_does_not_take_the_next_slow_group_on_its_worker(pytester, plugin, apart):
    # Queue: short (3 tests), slow1, slow2, the fast tests. Alone, xdist gives slow1's worker
    # slow2 at once (two or fewer tests left there), while the other runs the short group.
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeini(f"[pytest]\npythonpath = {Path(testkit.__file__).parents[1]}\n")
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder", "-v", *plugin)
    result.assert_outcomes(passed=25)
    workers = {test: worker for worker, test in re.findall(r"\[(gw\d)\] \[[ \d]+%\] PASSED test_suite.py::(test_slow\d)",
                                                            result.stdout.str())}
    assert (workers["test_slow1"] != workers["test_slow2"]) is apart, result.stdout.str()
