"""File operations on a host, as the shell snippets a HostTarget runs over SSH.

Every path is quoted here, once. Writes go to a temporary file in the same directory and
are renamed over the target, so a dropped connection never leaves a half-written file.
"""
from __future__ import annotations

from .shell import quote as _q


def write(path, mode: int) -> str:
    """Writes standard input to PATH with MODE in one step."""
    q = _q(path)
    return f"umask 077; t={q}.$$.tmp; cat > \"$t\" && chmod {mode:o} \"$t\" && mv -f \"$t\" {q}"


def mkdir(path) -> str:
    return f"mkdir -p -m 700 {_q(path)}"


def exists(path) -> str:
    return f"test -e {_q(path)}"


def rename(source, target) -> str:
    return f"mv -f {_q(source)} {_q(target)}"


def remove(paths) -> str:
    return "rm -f -- " + " ".join(_q(p) for p in paths)


def read(path) -> str:
    return f"cat {_q(path)}"


def size(path) -> str:
    return f"stat -c %s {_q(path)}"
