"""Writing files so that a failure never leaves one half-written.

Every write goes to a temporary file in the same directory, is flushed to disk, and is then
renamed over the target (atomic on POSIX). Secret files are created with mode 0600 from the
start and are never overwritten.

A temporary file's name ends with its writer (`.PID@HOST.tmp`): one whose writer is gone
was left by a killed task (`unfinished`), and is deleted by the next task that writes there.
"""
from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path

WRITER = re.compile(r"\.(?P<pid>\d+)@(?P<host>[^/@]+)\.tmp$")


def writer_mark() -> str:
    """The end of a temporary file's name: this process, on this machine."""
    return f".{os.getpid()}@{socket.gethostname()}.tmp"


def process_gone(host: str, pid: int) -> bool:
    """Whether process PID of machine HOST is known to be gone: it ran here, and no longer runs."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def unfinished(names) -> list[str]:
    """The temporary files among NAMES whose writer is gone: left by a killed task."""
    found = []
    for name in names:
        match = WRITER.search(name)
        if name.startswith(".") and match and process_gone(match.group("host"), int(match.group("pid"))):
            found.append(name)
    return found


def unfinished_in(directory: Path) -> list[Path]:
    """The temporary files a killed task left in DIRECTORY, on this machine."""
    names = [p.name for p in directory.glob(".*.tmp")] if directory.is_dir() else []
    return [directory / name for name in sorted(unfinished(names))]


def _write_temp(path: Path, text: str, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=writer_mark())
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace PATH with TEXT in one step."""
    tmp = _write_temp(path, text, mode)
    os.replace(tmp, path)


def write_all(files: dict[Path, str], mode: int = 0o644) -> None:
    """Write several files, each atomically; all temporary files are made before the first
    rename, so a failure while preparing them leaves every target untouched."""
    temps = []
    try:
        for path, text in files.items():
            temps.append((_write_temp(path, text, mode), path))
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in temps:
        os.replace(tmp, path)


def create_secret(path: Path, text: str) -> bool:
    """Create PATH (mode 0600) with TEXT unless it exists; True when it was created.

    The content is linked into place, which fails if the file appeared meanwhile, so an
    existing secret is never replaced, not even by a concurrent run.
    """
    if path.exists():
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = _write_temp(path, text, 0o600)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True
