"""testkit/livestate.py: a fast test that touches what `inv init` rewrites fails unless marked,
so the marked ones are all tests/e2e/test_adopt.py needs to run again after an adoption."""
import os
import re
import shlex
import sys

import pytest

from testkit import livestate

pytest_plugins = ["pytester"]

SUITE = f"""
import os
import subprocess
import sys

import pytest

ROOT = {str(livestate.ROOT)!r}


def test_reads_the_source_of_truth():
    open(os.path.join(ROOT, "config/stack.toml")).close()


def test_lists_the_root():
    os.listdir(ROOT)


def test_runs_the_tasks_there():
    subprocess.run([sys.executable, "-m", "invoke", "--version"], cwd=ROOT, capture_output=True)


@pytest.fixture
def reads_the_compose_file():
    yield
    open(os.path.join(ROOT, "docker-compose.yml")).close()


def test_a_fixture_reads_it_at_teardown(reads_the_compose_file):
    pass


@pytest.fixture(scope="module")
def reads_the_nginx_conf():
    open(os.path.join(ROOT, "config/nginx/default.conf")).close()


def test_a_module_fixture_reads_it(reads_the_nginx_conf):
    pass


@pytest.mark.live_state
def test_marked():
    open(os.path.join(ROOT, "config/stack.toml")).close()


def test_imports_while_the_import_system_lists_the_root_again():
    import importlib
    importlib.invalidate_caches()  # each folder on sys.path (the root among them) listed again
    with pytest.raises(ImportError):
        importlib.import_module("no_module_of_that_name")
    import importlib.metadata
    importlib.metadata.FastPath.__new__.cache_clear()  # as if the root had changed since pytest's start
    assert [d for d in importlib.metadata.distributions() if d.metadata["Name"] == "pytest"]


def test_reads_other_files_and_runs_other_programs_there(tmp_path):
    open(os.path.join(ROOT, "pytest.ini")).close()
    (tmp_path / "stack.toml").write_text("")
    open(tmp_path / "stack.toml").close()
    subprocess.run(["true"], cwd=ROOT, check=True)


@pytest.fixture(scope="session")
def the_stack_taken_down_at_the_end():
    yield
    subprocess.run([sys.executable, "-m", "invoke", "--version"], cwd=ROOT, capture_output=True)


@pytest.mark.live_state
def test_marked_with_a_session_fixture(the_stack_taken_down_at_the_end):
    pass


def test_last(request):
    # The session's fixtures are torn down inside the last test's teardown: the marked test's
    # one is not this test's touch.
    assert request.session.items[-1].name == "test_last"
"""


AT_IMPORT = f"""
import os

STACK = open(os.path.join({str(livestate.ROOT)!r}, "Dockerfile")).read()


def test_uses_it():
    assert STACK
"""


def test_an_unmarked_test_that_touches_the_live_state_fails_naming_what_it_touched(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(livestate.ROOT))
    monkeypatch.setenv("COLUMNS", "400")  # the summary's lines whole
    pytester.makepyfile(test_suite=SUITE, test_at_import=AT_IMPORT)
    result = pytester.runpytest_subprocess("-p", "testkit.livestate", "-p", "no:cacheprovider", "-p", "no:xdist",
                                           "-rA", "--continue-on-collection-errors")
    result.assert_outcomes(passed=10, errors=6)
    out = result.stdout.str()
    python = os.path.basename(sys.executable)
    for test, touched in [("test_reads_the_source_of_truth", "opens config/stack.toml"),
                          ("test_lists_the_root", "lists the checkout's root"),
                          ("test_runs_the_tasks_there", f"runs {python} in the checkout"),
                          ("test_a_fixture_reads_it_at_teardown", "opens docker-compose.yml"),
                          ("test_a_module_fixture_reads_it", "opens config/nginx/default.conf")]:
        assert re.search(rf"ERROR test_suite.py::{test} - Failed: touches the checkout's live state \({re.escape(touched)}\)",
                         out), out
    assert re.search(r"test_at_import.py: importing it touches the checkout's live state \(opens Dockerfile\)", out), out
    assert re.search(r"PASSED test_suite.py::test_marked\b", out), out
    for test in ("test_imports_while_the_import_system_lists_the_root_again",
                 "test_reads_other_files_and_runs_other_programs_there", "test_marked_with_a_session_fixture",
                 "test_last"):
        assert re.search(rf"PASSED test_suite.py::{test}\b", out), out


@pytest.mark.parametrize("argv, tasks", [
    (["/venv/bin/inv", "up"], True), (["fab", "-H", "x"], True), (["/usr/bin/python3", "-m", "invoke", "render"], True),
    (["python3", "config/build/requirements.py", "x"], False), (["sh", "-c", "inv up"], False), (["git", "status"], False),
], ids=lambda v: shlex.join(v) if isinstance(v, list) else str(v))
def test_which_programs_run_the_tasks(argv, tasks):
    # `sh -c 'inv …'` is not seen: the guard reads argv, not what a shell will run.
    assert livestate._runs_the_tasks(argv) is tasks


def test_every_file_render_writes_is_live(tmp_path):
    """inv init renders: whatever render writes for a checkout, a cluster's files among them,
    is a file the guard watches."""
    from tasks.source import render
    from tests.stacks import NODES, SWARM, stack

    written = render.rendered(stack(NODES, SWARM))
    assert any(str(path).startswith("docker-stack.") for path in written)
    assert [str(path) for path in written if not livestate.is_live(str(path))] == []
    assert livestate.is_live("config/stack.toml") and not livestate.is_live("pytest.ini")
