"""Which fast tests depend on the checkout's live state: the files `inv init` rewrites when a
user adopts a project (the source of truth and what is rendered from it) and the listing of
the checkout's root, where the adopted project's folder appears.

A fast test that opens one of them, lists the root or runs the tasks in the checkout (`inv`:
they read the source of truth) must carry the `live_state` mark, or it errs at teardown,
naming what it touched; a test module that does so when imported must be marked as a whole.
tests/e2e/test_adopt.py runs the marked tests again in a checkout where another project was
adopted, and checks that `inv init` rewrote nothing is_live() does not name.

Seen through Python's audit hooks (PEP 578): `open`, `os.listdir`/`os.scandir` and
`subprocess.Popen` in the test's process, from its setup to its teardown (its fixtures', of
any scope, but not the teardown of one an e2e or marked test set up) and while a test module
is imported. Not seen: what other programs it starts read (a script of config/ reads the files it is given), `os.stat`, a path reached through a
symbolic link, and a thread a test left running, whose reads are the next test's.
"""
from __future__ import annotations

import fnmatch
import functools
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What `inv init` writes besides the adopted project's own folder: the source of truth, what
# it found, and every file rendered from them (see live_files).
SOURCES = ("config/stack.toml", "config/app-import.json")
MARK = "live_state"

_root = os.fspath(ROOT)
_touched: list[str] | None = None  # None: not inside a fast test, nor importing a test module


@functools.cache
def live_files() -> tuple[frozenset[str], tuple[str, ...]]:
    """(paths, patterns) relative to the root: SOURCES, each file tasks/source/render.py
    writes for a checkout, and a cluster's (by name pattern). tests/test_livestate.py checks
    that render writes nothing else."""
    from tasks.source import render

    paths = {*SOURCES, *(os.fspath(path) for path in (
        render.DOCKERFILE, render.DOCKERIGNORE, render.COMPOSE_FILE, render.NGINX_CONF, render.NGINX_MAIN_CONF,
        render.FRONT_CONF, Path(f"{render.DJANGO_ENV}.example")))}
    return frozenset(paths), (os.fspath(render.stack_file("*")), os.fspath(render.cluster_nginx_conf("*")))


def is_live(relative: str) -> bool:
    """Whether the file at RELATIVE (to the root) is one `inv init` may rewrite."""
    paths, patterns = live_files()
    return relative in paths or any(fnmatch.fnmatchcase(relative, pattern) for pattern in patterns)


def _absolute(path) -> str | None:
    if isinstance(path, int):  # a file descriptor: opened earlier, by a path seen then
        return None
    try:
        return os.path.normpath(os.path.join(os.getcwd(), os.fsdecode(path)))
    except (TypeError, ValueError, OSError):
        return None


WATCHED = frozenset({"open", "os.listdir", "os.scandir", "subprocess.Popen"})


def _audit(event: str, args: tuple) -> None:
    touched = _touched
    # Every other event returns here at once, the ones the guard raises itself among them
    # (sys._getframe is audited too).
    if touched is None or event not in WATCHED:
        return
    try:
        _look(event, args, touched)
    except Exception:  # noqa: BLE001: the guard never changes what the test's own call does
        touched.append(f"an {event} event the guard could not read")


def _look(event: str, args: tuple, touched: list[str]) -> None:
    if event == "open":
        path = _absolute(args[0])
        if path is not None and path.startswith(_root + os.sep) and is_live(os.path.relpath(path, _root)):
            touched.append(f"opens {os.path.relpath(path, _root)}")
    elif event in ("os.listdir", "os.scandir"):
        # Not the import system's listing of a folder on sys.path (FileFinder when its cache
        # is older than the folder, importlib.metadata looking for installed packages, pkgutil
        # for modules): any import may do that, and it reads no file there.
        caller = sys._getframe(2).f_code.co_filename  # 0 _look, 1 _audit, 2 the code that listed
        if caller.startswith("<frozen importlib") or f"{os.sep}importlib{os.sep}" in caller or \
                caller.endswith(f"{os.sep}pkgutil.py"):
            return
        if _absolute(args[0] if args[0] is not None else ".") == _root:
            touched.append("lists the checkout's root")
    elif event == "subprocess.Popen":
        _, argv, cwd, _ = args
        words = [os.fsdecode(word) for word in argv] if isinstance(argv, (list, tuple)) else [os.fsdecode(argv)]
        where = _absolute(cwd if cwd is not None else ".")
        # Invoke looks for tasks.py in the folder it starts in and those above it.
        if where is not None and (where == _root or where.startswith(_root + os.sep)) and _runs_the_tasks(words):
            touched.append(f"runs {os.path.basename(words[0])} in the checkout")


def _runs_the_tasks(words: list[str]) -> bool:
    """`inv`, `fab` or `python -m invoke`: the tasks, which read the source of truth. Other
    programs a test starts (scripts of config/, sh, gzip) read what they are given."""
    name = os.path.basename(words[0]) if words else ""
    return name in ("inv", "invoke", "fab") or any(a == "-m" and b in ("invoke", "fabric") for a, b in zip(words, words[1:]))


def pytest_configure(config) -> None:
    live_files()  # tasks imported before any test is watched
    sys.addaudithook(_audit)  # for the life of the process: audit hooks cannot be removed


def _guarded(node) -> bool:
    return not (node.get_closest_marker("e2e") or node.get_closest_marker(MARK))


def _taken() -> list[str]:
    global _touched
    touched, _touched = _touched or [], None
    return sorted(set(touched))


def _refusal(touched: list[str], what: str) -> str:
    return (f"{what} the checkout's live state ({'; '.join(touched)}): mark it @pytest.mark.{MARK} "
            f"(testkit/livestate.py), or give it a copy of its own")


# One watch over a test's setup, call and teardown: its fixtures' too, whatever their scope
# (a module's fixture is set up with its first test and torn down with its last).
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    global _touched
    _touched = [] if _guarded(item) else None
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        touched = _taken()
        if touched:
            pytest.fail(_refusal(touched, "touches"), pytrace=False)


# A fixture's teardown is its setter-up's doing: a session's fixture that an e2e or marked test
# set up (the e2e suite's stack, taken down with `inv` in the checkout) is torn down inside the
# last test of the worker, whichever that is, and is not that test's touch.
_paused: dict[int, list[str] | None] = {}  # id(fixturedef): the watch its teardown paused


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    unwatched = _touched is None
    try:
        return (yield)
    finally:
        if unwatched:
            # Finalizers run last in, first out: this one just before the fixture's own teardown.
            fixturedef.addfinalizer(lambda: _pause(fixturedef))


def _pause(fixturedef) -> None:
    global _touched
    _paused[id(fixturedef)], _touched = _touched, None


def pytest_fixture_post_finalizer(fixturedef, request):
    global _touched
    if id(fixturedef) in _paused:
        _touched = _paused.pop(id(fixturedef))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """A test module that touches it when imported (a stack loaded at module level) is a
    collection error unless the module is marked."""
    global _touched
    if not isinstance(collector, pytest.Module):
        return (yield)
    _touched = []
    try:
        report = yield
    finally:
        touched = _taken()
    if touched and report.passed and _guarded(collector):
        report.outcome, report.longrepr = "failed", _refusal(touched, f"{collector.nodeid}: importing it touches")
    return report
