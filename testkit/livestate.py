"""Which fast tests depend on the checkout's live state: the files `inv init` rewrites when a
user adopts a project (the source of truth and what is rendered from it) and the listing of
the checkout's root, where the adopted project's folder appears.

A fast test that reads one of them, lists the root or runs the tasks there (`inv`: they read
the source of truth) must carry the `live_state` mark; one that does so unmarked fails, naming what
it touched. tests/e2e/test_adopt.py runs the marked tests again in a checkout where another
project was adopted: the unmarked ones cannot tell the difference, as this guard sees. The
same test checks that `inv init` rewrote nothing outside LIVE_FILES, so the list stays true.

Seen through Python's audit hooks (PEP 578): `open`, `os.listdir`/`os.scandir` and
`subprocess.Popen` in the test's process, during its setup, call and teardown. What other
programs it starts read is not seen: a script of config/ reads the files it is given."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What `inv init` writes besides the adopted project's own folder (tests/e2e/test_adopt.py).
LIVE_FILES = ("config/stack.toml", "config/app-import.json", "docker-compose.yml", "Dockerfile", ".dockerignore")
MARK = "live_state"

_live = frozenset(os.path.join(ROOT, name) for name in LIVE_FILES)
_root = os.fspath(ROOT)
_touched: list[str] | None = None  # None: not inside a fast test


def _absolute(path) -> str | None:
    if isinstance(path, int):  # a file descriptor: opened earlier, by a path seen then
        return None
    try:
        return os.path.normpath(os.path.join(os.getcwd(), os.fsdecode(path)))
    except (TypeError, ValueError, OSError):
        return None


def _audit(event: str, args: tuple) -> None:
    touched = _touched
    if touched is None:
        return
    if event == "open":
        path = _absolute(args[0])
        if path in _live:
            touched.append(f"reads {os.path.relpath(path, _root)}")
    elif event in ("os.listdir", "os.scandir"):
        # Not the import system's listing of a folder on sys.path (FileFinder when its cache
        # is older than the folder, importlib.metadata looking for installed packages, pkgutil
        # for modules): any import may do that, and it reads no file there.
        caller = sys._getframe(1).f_code.co_filename
        if caller.startswith("<frozen importlib") or f"{os.sep}importlib{os.sep}" in caller or \
                caller.endswith(f"{os.sep}pkgutil.py"):
            return
        if _absolute(args[0] if args[0] is not None else ".") == _root:
            touched.append("lists the checkout's root")
    elif event == "subprocess.Popen":
        _, argv, cwd, _ = args
        words = [os.fsdecode(word) for word in argv] if isinstance(argv, (list, tuple)) else [os.fsdecode(argv)]
        if _absolute(cwd if cwd is not None else ".") == _root and _runs_the_tasks(words):
            touched.append(f"runs {os.path.basename(words[0])} in the checkout's root")


def _runs_the_tasks(words: list[str]) -> bool:
    """`inv`, `fab` or `python -m invoke`: the tasks, which read the source of truth. Other
    programs a test starts (scripts of config/, sh, gzip) read what they are given."""
    name = os.path.basename(words[0]) if words else ""
    return name in ("inv", "invoke", "fab") or any(a == "-m" and b in ("invoke", "fabric") for a, b in zip(words, words[1:]))


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", f"{MARK}: reads what `inv init` rewrites (testkit/livestate.py); "
                                       "run again after an adoption by tests/e2e/test_adopt.py")
    sys.addaudithook(_audit)  # for the life of the process: audit hooks cannot be removed


@pytest.fixture(autouse=True)
def _live_state_guard(request):
    """Fails a fast test that touches the live state unmarked (autouse fixtures set up first,
    so the other fixtures' setup and teardown are inside)."""
    global _touched
    if request.node.get_closest_marker("e2e") or request.node.get_closest_marker(MARK):
        yield
        return
    _touched = []
    try:
        yield
    finally:
        touched, _touched = _touched, None
    if touched:
        pytest.fail(f"touches the checkout's live state ({'; '.join(sorted(set(touched)))}): mark it "
                    f"@pytest.mark.{MARK} (testkit/livestate.py), or give it a copy of its own", pytrace=False)
