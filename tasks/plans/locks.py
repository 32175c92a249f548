"""Plans for the locks that keep two tasks off the same thing, as shell that runs wherever
the thing is (this machine, or a host): a lock is a directory, made atomically by mkdir,
holding a line that says who took it and when."""
from __future__ import annotations

import shlex

from .shell import quote as _q

HELD = 3  # take()'s exit status when another task still holds the lock at the end of the wait


def take(path, owner: str, wait: int) -> str:
    """Take the lock at PATH, trying for WAIT seconds; a lock whose owner cannot be written
    (a full disk) is given back and the error says why."""
    lock = _q(path)
    return (f"mkdir -p -m 700 {_q(path.parent)}; i=0; "
            f"while ! mkdir {lock} 2>/dev/null; do i=$((i + 1)); [ $i -le {wait * 5} ] || exit {HELD}; sleep 0.2; done; "
            f"printf '%s\\n' {shlex.quote(owner)} > {lock}/owner || {{ rm -rf {lock}; exit 1; }}")


def holder(path) -> str:
    return f"cat {_q(path)}/owner 2>/dev/null || true"


def release(path) -> str:
    return f"rm -rf {_q(path)}"
